"""Architectures: every ``*_arch.py`` here registers its class into BasicSR's ``ARCH_REGISTRY``."""
from os import path as osp

from coic_basicsr.utils.registration import import_modules_with_suffix

_arch_modules = import_modules_with_suffix(__name__, osp.dirname(osp.abspath(__file__)), ('_arch.py', ))
