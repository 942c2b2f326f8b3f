"""The torchvision shim that lets BasicSR 1.4.2 import, on torchvision with and without functional_tensor."""
import importlib.abc
import importlib.util
import sys
import types
import warnings

import pytest
import torchvision.transforms.functional as functional

from coic_basicsr.compat import install_torchvision_shim

NAME = 'torchvision.transforms.functional_tensor'


class _DeprecatedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Provides the module as torchvision 0.15/0.16 did: importing it warns."""

    def find_spec(self, fullname, path, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname == NAME else None

    def create_module(self, spec):
        return types.ModuleType(spec.name)

    def exec_module(self, module):
        warnings.warn('The torchvision.transforms.functional_tensor module is deprecated', UserWarning)
        module.rgb_to_grayscale = functional.rgb_to_grayscale


@pytest.fixture
def without_the_module(monkeypatch):
    monkeypatch.delitem(sys.modules, NAME, raising=False)
    monkeypatch.delattr('torchvision.transforms.functional_tensor', raising=False)


class _RemovedModuleFinder(importlib.abc.MetaPathFinder):
    """The module as torchvision >= 0.17 has it: gone (also where the installed torchvision still ships it)."""

    def find_spec(self, fullname, path, target=None):
        if fullname == NAME:
            raise ModuleNotFoundError(f'No module named {NAME!r}', name=NAME)
        return None


def test_without_the_module_the_public_functional_stands_in(without_the_module, monkeypatch):
    monkeypatch.setattr(sys, 'meta_path', [_RemovedModuleFinder(), *sys.meta_path])
    install_torchvision_shim()
    from torchvision.transforms.functional_tensor import rgb_to_grayscale
    assert rgb_to_grayscale is functional.rgb_to_grayscale


def test_an_existing_deprecated_module_is_used_without_its_warning(without_the_module, monkeypatch):
    finder = _DeprecatedModuleFinder()
    monkeypatch.setattr(sys, 'meta_path', [finder, *sys.meta_path])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        install_torchvision_shim()
    assert not caught
    assert sys.modules[NAME] is not functional and sys.modules[NAME].rgb_to_grayscale is functional.rgb_to_grayscale
