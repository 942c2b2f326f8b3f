"""Tiled inference for images too large to restore in one pass."""
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor


DEFAULT_OVERLAP = 32


def tile_settings(val_opt: Optional[dict]) -> Optional[Tuple[int, int]]:
    """``val.tile`` (``{size: int, overlap: int}``) as ``(size, overlap)``; None without tiling. Bad values get a
    one-line error naming the key (checked before any work by ``check_options``)."""
    tile = (val_opt or {}).get('tile')
    if tile is None:
        return None
    if not isinstance(tile, dict) or 'size' not in tile or set(tile) - {'size', 'overlap'}:
        shown = dict(tile) if isinstance(tile, dict) else tile
        raise ValueError(f'val.tile: expected {{size: int, overlap: int}} (overlap optional), got {shown!r}')
    size, overlap = tile['size'], tile.get('overlap', DEFAULT_OVERLAP)
    for key, value, low in (('size', size, 1), ('overlap', overlap, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f'val.tile.{key}: expected an integer >= {low}, got {value!r}')
    if overlap >= size:
        default = '' if 'overlap' in tile else ', the default'
        raise ValueError(f'val.tile.overlap ({overlap}{default}) must be smaller than val.tile.size ({size})')
    return size, overlap


def _starts(length: int, tile: int, stride: int):
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


@torch.no_grad()
def tiled_forward(fn: Callable[[Tensor], Tensor], x: Tensor, tile: int, overlap: int = 32) -> Tensor:
    """Apply ``fn`` (same-size restoration) on overlapping ``tile``x``tile`` windows of ``x`` and average the overlaps.

    Args:
        fn: maps a (B, C, h, w) window to a (B, C_out, h, w) restoration.
        x: input batch (B, C, H, W).
        tile: window size; images no larger than this are processed in one call.
        overlap: pixels shared by neighbouring windows (blended by averaging). Must be smaller than ``tile``.
    """
    if overlap >= tile:
        raise ValueError(f'val.tile: overlap ({overlap}) must be smaller than the tile size ({tile})')
    height, width = x.shape[-2:]
    if height <= tile and width <= tile:
        return fn(x)
    output = weight = None
    for top in _starts(height, tile, tile - overlap):
        for left in _starts(width, tile, tile - overlap):
            window = fn(x[..., top:top + tile, left:left + tile])
            if output is None:
                output = x.new_zeros(x.shape[0], window.shape[1], height, width)
                weight = x.new_zeros(1, 1, height, width)
            output[..., top:top + window.shape[-2], left:left + window.shape[-1]] += window
            weight[..., top:top + window.shape[-2], left:left + window.shape[-1]] += 1
    return output / weight
