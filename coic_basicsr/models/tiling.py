"""Tiled inference for images too large to restore in one pass."""
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor


DEFAULT_OVERLAP = 32
#: Smallest tile of ``val.tile.size`` and ``--tile`` (1-pixel tiles ran for minutes and gave garbage).
MIN_TILE = 16
SMALL_TILE_REASON = 'smaller tiles leave the network too little context'


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
    for key, value, low in (('size', size, MIN_TILE), ('overlap', overlap, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            why = f' ({SMALL_TILE_REASON})' if key == 'size' else ''
            raise ValueError(f'val.tile.{key}: expected an integer >= {low}{why}, got {value!r}')
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
    """Apply ``fn`` on overlapping ``tile``x``tile`` windows of ``x`` and average the overlaps.

    Args:
        fn: maps a (B, C, h, w) window to a (B, C_out, s*h, s*w) result: a restoration (s = 1) or an s-times
            super-resolution (the scale is read from the first window).
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
            patch = x[..., top:top + tile, left:left + tile]
            window = fn(patch)
            if output is None:
                scale = window.shape[-1] // patch.shape[-1]
                if scale < 1 or tuple(window.shape[-2:]) != (scale * patch.shape[-2], scale * patch.shape[-1]):
                    raise ValueError(f'val.tile: the network turns a {patch.shape[-2]}x{patch.shape[-1]} tile into '
                                     f'{window.shape[-2]}x{window.shape[-1]}; tiling needs the same size or a whole '
                                     'multiple of it')
                output = x.new_zeros(x.shape[0], window.shape[1], height * scale, width * scale)
                weight = x.new_zeros(1, 1, height * scale, width * scale)
            rows = slice(top * scale, top * scale + window.shape[-2])
            cols = slice(left * scale, left * scale + window.shape[-1])
            output[..., rows, cols] += window
            weight[..., rows, cols] += 1
    return output / weight
