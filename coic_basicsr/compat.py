"""Compatibility shims applied before :mod:`basicsr` is imported (the one place they live)."""
import sys


def install_torchvision_shim() -> None:
    """Make ``torchvision.transforms.functional_tensor`` importable on torchvision >= 0.17.

    BasicSR 1.4.2 imports ``rgb_to_grayscale`` from that private module, which torchvision removed;
    the public ``torchvision.transforms.functional`` provides the same function.
    """
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
    except ImportError:
        import torchvision.transforms.functional as functional
        sys.modules['torchvision.transforms.functional_tensor'] = functional
