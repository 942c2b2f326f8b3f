"""Package-qualified suffix scan that imports every plugin module so its classes register."""
import importlib
import os
from os import path as osp
from types import ModuleType
from typing import List


def import_modules_with_suffix(package: str, folder: str, suffixes: tuple) -> List[ModuleType]:
    """Import ``<package>.<name>`` for every ``<name><suffix>.py`` file directly inside ``folder``."""
    names = sorted(osp.splitext(f)[0] for f in os.listdir(folder)
                   if f.endswith(suffixes) and not f.startswith('_'))
    return [importlib.import_module(f'{package}.{name}') for name in names]
