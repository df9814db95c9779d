"""Install sdan-basicsr: ``pip install --no-build-isolation -e .`` after torch and basicsr 1.4.2.

Also builds the optional CPU kernel ``sdan_basicsr.ops._squared_warp`` (fused warp of the squared
deformable convolution's ``fast`` backend) when torch is importable; when it is not, or the compiler
fails, the package installs without it and falls back to pure PyTorch. Installs ``sdan_basicsr_autoload.pth`` into
site-packages too: with it, ``import basicsr`` loads the plugin (``python -m basicsr.train`` runs SDAN).
"""
import re
import sys

from setuptools import Distribution, find_packages, setup

#: The ``install_data`` command setuptools runs (it has no ``setuptools.command`` module of its own).
install_data = Distribution().get_command_class('install_data')

EXT_NAME = 'sdan_basicsr.ops._squared_warp'
#: Start-up file that installs the import hook of ``sdan_basicsr_autoload.py`` (``import basicsr`` loads the plugin).
AUTOLOAD_PTH = 'sdan_basicsr_autoload.pth'


class InstallDataIntoSitePackages(install_data):
    """Install ``data_files`` beside the packages (site-packages), where ``site`` reads ``.pth`` files.

    The same folder for a wheel, an editable wheel (``pip install -e .``) and a plain install, since every one
    of them sets ``install_lib``; editable installs copy data files instead of linking them.
    """

    def finalize_options(self):
        super().finalize_options()
        self.install_dir = self.get_finalized_command('install').install_lib


class DistributionWithEditableData(Distribution):
    """``pip install -e .`` installs ``data_files`` too.

    setuptools' ``editable_wheel`` runs ``install_data`` only when the distribution answers ``has_data()`` (setuptools
    84 and earlier), a method ``Distribution`` does not have, so editable installs silently skipped the ``.pth``.
    """

    def has_data(self) -> bool:
        return self.has_data_files()


def _extension_kwargs():
    """``ext_modules`` and the ``build_ext`` command for the optional C++ kernel, or nothing without torch."""
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError as err:
        print(f'warning: torch is not importable ({err}); building sdan-basicsr without {EXT_NAME}', file=sys.stderr)
        return [], {}

    def skipped(err):
        print(f'warning: could not build {EXT_NAME} ({err}); the fast backend uses pure PyTorch', file=sys.stderr)

    class OptionalBuildExtension(BuildExtension):
        """Build the kernel if possible; any build failure (set-up or compile) only prints a warning."""

        def run(self):
            try:
                super().run()
            except Exception as err:  # any build failure leaves the pure-PyTorch path
                skipped(err)

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as err:
                skipped(err)

    ext = CppExtension(EXT_NAME, ['sdan_basicsr/ops/csrc/squared_warp.cpp'],
                       extra_compile_args=['-O3', '-fopenmp'], extra_link_args=['-fopenmp'])
    return [ext], {'build_ext': OptionalBuildExtension.with_options(use_ninja=False)}


def _version() -> str:
    """``sdan_basicsr.__version__``, read from its file: importing the package needs torch and basicsr."""
    with open('sdan_basicsr/__init__.py', encoding='utf-8') as f:
        return re.search(r"^__version__ = '([^']+)'$", f.read(), re.MULTILINE).group(1)


ext_modules, build_ext = _extension_kwargs()


setup(
    name='sdan-basicsr',
    version=_version(),
    description='SDAN (Squared Deformable Alignment Network) and deformable video archs as a BasicSR plugin',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['sdan_basicsr', 'sdan_basicsr.*']),
    py_modules=['sdan_basicsr_autoload'],
    package_data={'sdan_basicsr.weights': ['*.pth', '*.md']},
    data_files=[('', [AUTOLOAD_PTH])],
    python_requires='>=3.9',
    install_requires=[
        'torch>=2.0',
        'torchvision',
        'basicsr==1.4.2',
        'numpy',
        'opencv-python',
        'scikit-image',
        'pyyaml',
        'tqdm',
        'rawpy',
        'tifffile',
        'Pillow',
        'lpips',
        'matplotlib',
        'scikit-learn',  # its bundled photographs are test scenes of the demo (make_demo.PHOTO_FILES)
    ],
    extras_require={
        'test': ['pytest', 'ruff'],
        'mmcv': ['mmcv>=2.0'],
    },
    entry_points={
        'console_scripts': [
            'sdan-train=sdan_basicsr.train:main',
            'sdan-test=sdan_basicsr.test:main',
            'sdan-prepare-srraw=sdan_basicsr.tools.prepare_srraw:main',
            'sdan-make-demo=sdan_basicsr.tools.make_demo:main',
            'sdan-zoom=sdan_basicsr.tools.zoom:main',
        ]
    },
    ext_modules=ext_modules,
    distclass=DistributionWithEditableData,
    cmdclass={'install_data': InstallDataIntoSitePackages, **build_ext},
)
