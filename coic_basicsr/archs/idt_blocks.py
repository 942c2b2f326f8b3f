"""Building blocks of IDT, the Image De-raining Transformer (Xiao et al., TPAMI 2022), for :class:`CoICIDT`.

Attribute names follow the official ``model.py`` (jiexiaou/IDT) so official checkpoints load with their own keys.
Features travel as tokens (B, H*W, C) in raster order with their size (H, W) passed alongside, which lifts the
official square-input assumption. Convs are built plain; the arch turns the chosen ones into CoI-M layers.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from coic_basicsr.archs.modulation import ContextEmbedding, ModulationContext
from basicsr.archs.swinir_arch import DropPath

Size = Tuple[int, int]


def relative_position_index(grid: Size, k_bound: int) -> Tensor:
    """(N, N) index into a ((2k-1)^2, heads) bias table; offsets between the N grid cells are clipped to +-(k-1)."""
    coords = torch.stack(torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing='ij')).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).clamp(1 - k_bound, k_bound - 1) + (k_bound - 1)
    return rel[0] * (2 * k_bound - 1) + rel[1]


def tokens_to_map(x: Tensor, size: Size) -> Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) view."""
    return x.transpose(1, 2).unflatten(2, size)


def map_to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C), contiguous. Plain convs keep the channels-last layout of ``tokens_to_map`` views
    (then this is free); modulated convs return NCHW maps, which are converted once here rather than making every
    following op work across two layouts."""
    return x.contiguous(memory_format=torch.channels_last).flatten(2).transpose(1, 2)


def embed_context(embed: Optional[ContextEmbedding], x: Tensor, size: Size) -> Optional[Tensor]:
    """Tokens ``x + context(z)``, or None when there is no embedding or no code."""
    if embed is None:
        return None
    x_map = tokens_to_map(x, size)
    out = embed(x_map)
    return None if out is x_map else map_to_tokens(out)


class _LinearProjection(nn.Module):
    """Official ``LinearProjection``: ``to_q`` (C -> C) and ``to_kv`` (C -> 3C: K, V, positional V)."""

    def __init__(self, dim: int, bias: bool) -> None:
        super().__init__()
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_kv = nn.Linear(dim, dim * 3, bias=bias)

    def forward(self, x: Tensor, kv: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        if kv is None:
            k, v, pos = self.to_kv(x).chunk(3, dim=-1)
        else:  # K/V rows on the context input; the positional rows stay on x (as the CoIC code does)
            c, weight, bias = x.shape[-1], self.to_kv.weight, self.to_kv.bias
            k, v = F.linear(kv, weight[:2 * c], None if bias is None else bias[:2 * c]).chunk(2, dim=-1)
            pos = F.linear(x, weight[2 * c:], None if bias is None else bias[2 * c:])
        return self.to_q(x), k, v, pos


class RelativeWindowAttention(nn.Module):
    """Multi-head self-attention over the N tokens of a (gh, gw) grid, with a clipped relative position bias and a
    positional branch (depthwise + grouped 1x1 conv, ``Position_Extract``) on a third projection of the tokens.

    Args:
        dim: token channels. grid: grid of the construction size (sets the kernel of ``Position_Extract``).
        k_bound: relative offsets are clipped to +-(k_bound-1).
    """

    def __init__(self, dim: int, grid: Size, num_heads: int, qkv_bias: bool, qk_scale: Optional[float],
                 k_bound: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.k_bound = k_bound
        self.scale = qk_scale or (dim // num_heads)**-0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * k_bound - 1)**2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=.02)
        distance = min(grid[0] - 1, 2)
        kernel = 2 * distance + 1 if distance > 0 else 1
        self.Position_Extract = nn.Sequential(  # noqa: N815 (official name)
            nn.Conv2d(dim, dim, kernel, 1, max(distance, 0), groups=dim), nn.Conv2d(dim, dim, 1, groups=num_heads))
        self.qkv = _LinearProjection(dim, qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer('relative_position_index', relative_position_index(grid, k_bound), persistent=False)

    def _bias(self, grid: Size) -> Tensor:
        n = grid[0] * grid[1]
        index = self.relative_position_index
        if index.shape[0] != n:  # another input size than the construction one
            index = relative_position_index(grid, self.k_bound).to(index.device)
        return self.relative_position_bias_table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: Tensor, grid: Size, kv: Optional[Tensor] = None) -> Tensor:
        """``x``: (B', N, C) tokens of a ``grid``; K/V from ``kv`` when given."""
        b, n, c = x.shape
        q, k, v, pos = self.qkv(x, kv)
        q, k, v = (t.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2) for t in (q, k, v))
        attn = ((q * self.scale) @ k.transpose(-2, -1) + self._bias(grid)).softmax(dim=-1)
        position = self.Position_Extract(tokens_to_map(pos, grid))
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c) + map_to_tokens(position))


class LeFF(nn.Module):
    """Locally-enhanced FFN: Linear + GELU, depthwise 3x3 conv + GELU with a residual, Linear."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU())
        self.dwconv = nn.Sequential(nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1, groups=hidden_dim), nn.GELU())
        self.linear2 = nn.Sequential(nn.Linear(hidden_dim, dim))

    def forward(self, x: Tensor, size: Size) -> Tensor:
        x = tokens_to_map(self.linear1(x), size)
        return self.linear2(map_to_tokens(self.dwconv(x).contiguous(memory_format=torch.channels_last) + x))


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0 else nn.Identity()


class IDTBlock(nn.Module):
    """Window transformer block: ``x + attn(norm1(x))`` in non-overlapping ``win_size`` windows, ``x + LeFF(norm2(x))``.

    With a context, K/V come from ``norm1(x + context_embed(z))``. The CoIC code averages ``0.5 * (x + context)``
    and normalises with an extra norm; the layer norm makes the 0.5 immaterial (up to eps) and sharing ``norm1``
    keeps the official keys, so a zero-initialised embedding leaves the block exactly plain.
    """

    def __init__(self, dim: int, num_heads: int, win_size: int, mlp_ratio: float, qkv_bias: bool,
                 qk_scale: Optional[float], drop_path: float, context: Optional[ModulationContext],
                 context_dim: int) -> None:
        super().__init__()
        self.win_size = win_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = RelativeWindowAttention(dim, (win_size, win_size), num_heads, qkv_bias, qk_scale, k_bound=8)
        self.drop_path = _drop_path(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = LeFF(dim, int(dim * mlp_ratio))
        self.context_embed = None if context is None else ContextEmbedding(dim, context=context,
                                                                           context_dim=context_dim)

    def _windows(self, x: Tensor, size: Size) -> Tensor:
        (h, w), s, c = size, self.win_size, x.shape[-1]
        return x.reshape(-1, h // s, s, w // s, s, c).transpose(2, 3).reshape(-1, s * s, c)

    def _merge(self, windows: Tensor, size: Size) -> Tensor:
        (h, w), s, c = size, self.win_size, windows.shape[-1]
        return windows.reshape(-1, h // s, w // s, s, s, c).transpose(2, 3).reshape(-1, h * w, c)

    def forward(self, x: Tensor, size: Size) -> Tensor:
        kv = embed_context(self.context_embed, x, size)
        kv = None if kv is None else self._windows(self.norm1(kv), size)
        grid = (self.win_size, self.win_size)
        x = x + self.drop_path(self._merge(self.attn(self._windows(self.norm1(x), size), grid, kv), size))
        return x + self.drop_path(self.mlp(self.norm2(x), size))


class SpatialTransformerLayer(nn.Module):
    """Attention ACROSS windows: per channel, tokens are the ``window``x``window`` patches (features = pixels).

    No pre-norm, as in the official layer. Its output is in window-major token order (patch, pixel) and is added to
    the raster-ordered shortcut exactly like the official code does (trained weights depend on it). With a context,
    K/V come from ``x + context_embed(z)`` (the CoIC code uses ``0.5 * (x + context)``; without the 0.5 a
    zero-initialised embedding leaves the layer exactly plain).
    """

    def __init__(self, channels: int, grid: int, num_heads: int, window: int, mlp_ratio: float, qkv_bias: bool,
                 qk_scale: Optional[float], drop_path: float, k_bound: int, context: Optional[ModulationContext],
                 context_dim: int) -> None:
        super().__init__()
        self.window = window
        self.attn = RelativeWindowAttention(window * window, (grid, grid), num_heads, qkv_bias, qk_scale, k_bound)
        self.drop_path = _drop_path(drop_path)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = LeFF(channels, int(window * window * mlp_ratio))  # official: hidden from window**2, not channels
        self.context_embed = None if context is None else ContextEmbedding(channels, context=context,
                                                                           context_dim=context_dim)

    def _patches(self, x: Tensor, size: Size) -> Tensor:
        """(B, H*W, C) -> (B*C, patches, window**2)."""
        (h, w), s, (b, _, c) = size, self.window, x.shape
        x = tokens_to_map(x, size).reshape(b, c, h // s, s, w // s, s).permute(0, 1, 2, 4, 3, 5)
        return x.reshape(b * c, (h // s) * (w // s), s * s)

    def forward(self, x: Tensor, size: Size) -> Tensor:
        b, length, c = x.shape
        kv = embed_context(self.context_embed, x, size)
        grid = (size[0] // self.window, size[1] // self.window)
        out = self.attn(self._patches(x, size), grid, None if kv is None else self._patches(kv, size))
        x = x + self.drop_path(out.reshape(b, c, length).transpose(1, 2))
        return x + self.drop_path(self.mlp(self.norm2(x), size))


class IDTLayer(nn.Module):
    """Official ``BasicIDTLayer``: ``blocks`` = window blocks, then (optionally) one spatial transformer layer."""

    def __init__(self, blocks: List[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor, size: Size) -> Tensor:
        for block in self.blocks:
            x = block(x, size)
        return x


class ConvTokens(nn.Module):
    """A conv stack applied to tokens; ``attr`` names the official Sequential (``proj``, ``conv`` or ``deconv``)."""

    def __init__(self, attr: str, *layers: nn.Module, to_tokens: bool = True) -> None:
        super().__init__()
        self.attr, self.to_tokens = attr, to_tokens
        setattr(self, attr, nn.Sequential(*layers))

    def forward(self, x: Tensor, size: Size) -> Tuple[Tensor, Size]:
        """Tokens (or a (B, C, H, W) map when ``size`` is None) -> (tokens or map, new size)."""
        out = getattr(self, self.attr)(x if size is None else tokens_to_map(x, size))
        return (map_to_tokens(out) if self.to_tokens else out), tuple(out.shape[-2:])
