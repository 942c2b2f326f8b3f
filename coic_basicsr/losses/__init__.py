"""Losses: every ``*_loss.py`` here registers its class into BasicSR's ``LOSS_REGISTRY``."""
from os import path as osp

from coic_basicsr.utils.registration import import_modules_with_suffix

_loss_modules = import_modules_with_suffix(__name__, osp.dirname(osp.abspath(__file__)), ('_loss.py', ))
