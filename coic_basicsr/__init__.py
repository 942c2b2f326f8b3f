"""coic-basicsr: CoIC and RDMC deraining for BasicSR.

Importing this package makes ``import basicsr`` work on modern torchvision and registers every plugin
arch, loss, dataset, sampler and model class into the BasicSR registries.
"""
from coic_basicsr.compat import install_torchvision_shim

install_torchvision_shim()

import basicsr  # noqa: E402,F401  (imported after the shim on purpose)

from coic_basicsr import archs, data, losses, models  # noqa: E402,F401
from coic_basicsr.registry import SAMPLER_REGISTRY, SCHEDULER_REGISTRY  # noqa: E402,F401

__version__ = '0.1.0'
