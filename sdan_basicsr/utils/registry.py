"""Auto-import of a package's ``*_<suffix>.py`` files, so that their classes land in BasicSR's registries."""
import importlib
from pathlib import Path
from types import ModuleType
from typing import List


def import_modules(package: str, folder: str, suffix: str) -> List[ModuleType]:
    """Import every ``<folder>/*<suffix>.py`` as ``<package>.<name>`` (the Real-ESRGAN/HAT pattern)."""
    names = sorted(p.stem for p in Path(folder).glob(f'*{suffix}.py'))
    return [importlib.import_module(f'{package}.{name}') for name in names]
