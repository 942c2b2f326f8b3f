"""Compatibility shims applied before :mod:`basicsr` is imported (the one place they live)."""
import sys
import warnings


def install_torchvision_shim() -> None:
    """Make ``torchvision.transforms.functional_tensor`` importable on torchvision >= 0.17.

    BasicSR 1.4.2 imports ``rgb_to_grayscale`` from that private module, which torchvision removed;
    the public ``torchvision.transforms.functional`` provides the same function. Where the module still exists
    (torchvision 0.15/0.16), it is imported without its deprecation warning, which every command would print.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            import torchvision.transforms.functional_tensor  # noqa: F401
    except ImportError:
        import torchvision.transforms.functional as functional
        sys.modules['torchvision.transforms.functional_tensor'] = functional
