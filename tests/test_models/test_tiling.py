"""Tiled inference: windows placed at the network's output scale."""
import pytest
import torch
from torch.nn import functional as F

from coic_basicsr.models.tiling import tiled_forward


def test_restoration_and_super_resolution_tiles_equal_the_whole_image_result():
    x = torch.rand(2, 3, 20, 27)
    restore = lambda t: t * 2  # noqa: E731  (pixel-wise: tiling cannot change it)
    upscale = lambda t: F.interpolate(t, scale_factor=3, mode='nearest')  # noqa: E731
    assert torch.allclose(tiled_forward(restore, x, tile=8, overlap=2), restore(x))
    assert torch.allclose(tiled_forward(upscale, x, tile=8, overlap=2), upscale(x))  # was a size-mismatch crash
    with pytest.raises(ValueError, match='tiling needs the same size or a whole multiple'):
        tiled_forward(lambda t: t[..., :-1, :], x, tile=8, overlap=2)
