"""Import hook that lets BasicSR's own launchers run the plugin: ``python -m basicsr.train -opt X.yml``.

``sdan_basicsr_autoload.pth``, installed into site-packages with sdan-basicsr, calls :func:`install` at start-up.
The first ``import basicsr`` then imports ``sdan_basicsr`` before basicsr's ``__init__`` runs: the fixes of
``sdan_basicsr/compat.py`` come before any basicsr module loads, and the plugin registers its archs, datasets,
losses, metrics and models once they have. ``SDAN_BASICSR_AUTOLOAD=0`` turns the hook off. Standard library only:
every Python process of the environment imports this module.
"""
import os
import sys

#: Environment variable that turns the hook off when set to ``0``.
ENV_VAR = 'SDAN_BASICSR_AUTOLOAD'


class PluginFirstLoader:
    """Wraps basicsr's own loader: ``import sdan_basicsr`` first, then basicsr's ``__init__``."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        try:
            import sdan_basicsr  # noqa: F401  (compat fixes, basicsr's modules, then the plugin's registrations)
        except Exception as err:
            raise ImportError(f'sdan-basicsr could not set up basicsr ({type(err).__name__}: {err}); '
                              f'{ENV_VAR}=0 imports basicsr without the plugin') from err
        self.loader.exec_module(module)

    def __getattr__(self, name):  # get_code, get_source, get_resource_reader… of basicsr's loader
        return getattr(self.loader, name)


class BasicsrFinder:
    """``sys.meta_path`` finder that answers for the top-level ``basicsr`` only, with the other finders' spec."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != 'basicsr':
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
            spec.loader = PluginFirstLoader(spec.loader)
        return spec


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once), unless ``SDAN_BASICSR_AUTOLOAD=0``."""
    if os.environ.get(ENV_VAR, '1') == '0' or any(isinstance(f, BasicsrFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, BasicsrFinder())
