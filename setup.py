"""Install sdan-basicsr: ``pip install --no-build-isolation -e .`` after torch and basicsr 1.4.2."""
from setuptools import find_packages, setup

setup(
    name='sdan-basicsr',
    version='0.1.0',
    description='SDAN (Squared Deformable Alignment Network) and deformable video archs as a BasicSR plugin',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['sdan_basicsr', 'sdan_basicsr.*']),
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
)
