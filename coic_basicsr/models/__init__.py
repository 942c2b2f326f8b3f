"""Models: every ``*_model.py`` here registers its class into BasicSR's ``MODEL_REGISTRY``."""
from os import path as osp

from coic_basicsr.utils.registration import import_modules_with_suffix

_model_modules = import_modules_with_suffix(__name__, osp.dirname(osp.abspath(__file__)), ('_model.py', ))

from coic_basicsr.models import lr_schedulers  # noqa: E402,F401  (registers schedulers)
