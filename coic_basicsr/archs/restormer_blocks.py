"""Building blocks of Restormer (Zamir et al., CVPR 2022) for :class:`CoICRestormer` (and DRSformer's blocks).

Attribute names and shapes follow the official ``restormer_arch.py`` so official checkpoints load with their own keys.
The blocks build their CoI-M layers themselves when given a :class:`ModulationContext` (plain layers without one).
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from coic_basicsr.archs.arch_util import (bad_option, check_at_least, check_choice, check_list_length, check_parity,
                                          is_channels_last, option_key)
from coic_basicsr.archs.modulation import ContextEmbedding, ModulatedConv2d, ModulationContext
from coic_basicsr.utils.option_values import check_number

LAYER_NORM_TYPES = ('WithBias', 'BiasFree')


def check_unet_options(arch: str, inp_channels: int, out_channels: int, dim: int, num_blocks: Sequence[int],
                       heads: Sequence[int], ffn_expansion_factor: float, layer_norm_type: str, global_residual: bool,
                       context_dim: int, min_head_channels: int = 1, head_note: str = '') -> None:
    """The ``network_g`` checks of the Restormer U-Net (CoICRestormer, CoICDRSformer), each a one-line ValueError
    naming the key: level k (1..4) runs dim * 2**(k-1) channels with heads[k-1] heads (the level-1 decoder 2 * dim
    with heads[0]); every head needs ``min_head_channels`` channels; ``global_residual`` adds the input image to the
    output."""
    for key, values in (('num_blocks', num_blocks), ('heads', heads)):
        check_list_length(arch, key, values, 4, 'levels 1..4')
    check_choice(arch, 'LayerNorm_type', layer_norm_type, LAYER_NORM_TYPES)
    check_at_least(arch, 1, [('inp_channels', inp_channels), ('out_channels', out_channels),
                             ('context_dim', context_dim)]
                   + [(f'heads[{level}]', n_heads) for level, n_heads in enumerate(heads)])
    check_at_least(arch, 0, [(f'num_blocks[{level}]', n_blocks) for level, n_blocks in enumerate(num_blocks)])
    check_at_least(arch, 2, [('dim', dim)])
    check_number(option_key('ffn_expansion_factor'), ffn_expansion_factor, f'a positive number for {arch}',
                 lambda v: v > 0)
    check_parity(arch, 'dim', dim, False, 'the first down-sampling convolves to dim // 2 channels, which '
                 'PixelUnshuffle(2) must turn into the 2 * dim channels of level 2')
    for level, n_heads in enumerate(heads):
        channels = dim * 2**level
        if channels % n_heads or channels // n_heads < min_head_channels:
            raise bad_option(arch, f'heads[{level}]', f'a number of heads that divides the {channels} channels of '
                             f'level {level + 1}{head_note}', n_heads)
    if int(dim * ffn_expansion_factor) < 1:
        raise bad_option(arch, 'ffn_expansion_factor', 'a factor leaving int(dim * ffn_expansion_factor) >= 1 hidden '
                         'FFN channels', ffn_expansion_factor, f"{option_key('dim')} is {dim}")
    if global_residual and out_channels != inp_channels and inp_channels != 1:
        raise bad_option(arch, 'out_channels', f"{option_key('inp_channels')} ({inp_channels})", out_channels,
                         'the output adds the input image, unless inp_channels is 1')


def _conv3x3(in_ch: int, out_ch: int, groups: int, bias: bool, context: Optional[ModulationContext],
             context_dim: int) -> nn.Conv2d:
    """3x3 'same' conv: modulated (CoI-M) when a context is given, plain otherwise."""
    if context is None:
        return nn.Conv2d(in_ch, out_ch, 3, 1, 1, groups=groups, bias=bias)
    return ModulatedConv2d(in_ch, out_ch, 3, 1, 1, groups=groups, bias=bias, context=context, context_dim=context_dim)


class _LayerNormBody(nn.Module):
    """Layer norm over dim 1 of a (B, C, H, W) map; holds ``weight`` (and ``bias`` unless bias-free) like the official
    one. Computed in the input's memory format (over dim 1 of an NCHW map, over the last dim of a channels-last map's
    (B, H, W, C) view): normalising in the other format mixes formats, and the gradients then meet the residual's in
    slow transposing adds (~1.4x slower per block on CPU)."""

    def __init__(self, dim: int, with_bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if with_bias else None

    def forward(self, x: Tensor) -> Tensor:
        if is_channels_last(x):
            return self._normalise_last_dim(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        weight = self.weight[:, None, None]
        if self.bias is None:  # bias-free variant scales without centring
            return x * torch.rsqrt(x.var(1, keepdim=True, unbiased=False) + 1e-5) * weight
        centred = x - x.mean(1, keepdim=True)
        return centred * torch.rsqrt(centred.pow(2).mean(1, keepdim=True) + 1e-5) * weight + self.bias[:, None, None]

    def _normalise_last_dim(self, x: Tensor) -> Tensor:
        if self.bias is None:
            return x * torch.rsqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-5) * self.weight
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class ChannelLayerNorm(nn.Module):
    """Per-pixel layer norm of a (B, C, H, W) map over C (state-dict keys ``body.weight`` / ``body.bias``)."""

    def __init__(self, dim: int, layer_norm_type: str) -> None:
        super().__init__()
        self.body = _LayerNormBody(dim, layer_norm_type == 'WithBias')

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class GatedDconvFFN(nn.Module):
    """GDFN: 1x1 expansion, (modulated) 3x3 depthwise conv, GELU gating, 1x1 projection."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool, context: Optional[ModulationContext],
                 context_dim: int) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = _conv3x3(hidden * 2, hidden * 2, hidden * 2, bias, context, context_dim)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class MDTAttention(nn.Module):
    """MDTA: channel-wise ("transposed") multi-head attention with a learnable per-head temperature.

    ``forward(x, kv_input)`` takes Q from ``x`` and K, V from ``kv_input``. The 1x1 ``qkv`` conv and the depthwise
    ``qkv_dwconv`` are then applied as slices of the same parameters (Q rows on ``x``, K/V rows on ``kv_input``), so
    the cost equals the single-input path and the official keys are kept.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, 1, 1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def _split_qkv(self, x: Tensor, kv_input: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        dim = x.shape[1]
        dw = self.qkv_dwconv
        parts = []
        for inp, rows in ((x, slice(0, dim)), (kv_input, slice(dim, 3 * dim))):
            pw_bias = None if self.qkv.bias is None else self.qkv.bias[rows]
            dw_bias = None if dw.bias is None else dw.bias[rows]
            y = F.conv2d(inp, self.qkv.weight[rows], pw_bias)
            parts.append(F.conv2d(y, dw.weight[rows], dw_bias, dw.stride, dw.padding, dw.dilation, y.shape[1]))
        k, v = parts[1].chunk(2, dim=1)
        return parts[0], k, v

    def _heads(self, x: Tensor, kv_input: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """Q, K, V as (B, heads, C / heads, H * W); K/V from ``kv_input`` when given."""
        b, c, h, w = x.shape
        if kv_input is None:
            q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        else:
            q, k, v = self._split_qkv(x, kv_input)
        return tuple(t.reshape(b, self.num_heads, c // self.num_heads, h * w) for t in (q, k, v))

    def _project_heads(self, heads: Tensor, like: Tensor) -> Tensor:
        """``project_out`` of the (B, heads, C / heads, H * W) result, laid out in memory like ``like``: mixing a
        channels-last network with NCHW maps here would make every later gradient sum a slow transposing add."""
        out = heads.reshape(like.shape)
        if is_channels_last(like):
            out = out.contiguous(memory_format=torch.channels_last)
        return self.project_out(out)

    def forward(self, x: Tensor, kv_input: Optional[Tensor] = None) -> Tensor:
        q, k, v = self._heads(x, kv_input)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self._project_heads(attn @ v, x)


class CoICTransformerBlock(nn.Module):
    """Restormer block; with a context, K/V come from ``norm1(x + context_embed(z))``.

    Following the CoIC code's transformer variants, the instance context is added to the block input and then
    layer-normalised (here with the block's own ``norm1``, keeping the official keys). Without z the block is
    exactly Restormer's ``x + attn(norm1(x))``, ``x + ffn(norm2(x))``.
    """

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, layer_norm_type: str,
                 context: Optional[ModulationContext], context_dim: int) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim, layer_norm_type)
        self.attn = MDTAttention(dim, num_heads, bias)
        self.norm2 = ChannelLayerNorm(dim, layer_norm_type)
        self.ffn = GatedDconvFFN(dim, ffn_expansion_factor, bias, context, context_dim)
        self.context_embed = None if context is None else ContextEmbedding(dim, context=context,
                                                                           context_dim=context_dim)

    def forward(self, x: Tensor) -> Tensor:
        kv_input = None
        if self.context_embed is not None:
            with_context = self.context_embed(x)
            if with_context is not x:  # ContextEmbedding returns x itself when z is None
                kv_input = self.norm1(with_context)
        x = x + self.attn(self.norm1(x), kv_input)
        return x + self.ffn(self.norm2(x))


class PatchEmbed(nn.Module):
    """Overlapped 3x3 patch embedding (key ``proj``); bias-free as in the official arch."""

    def __init__(self, in_ch: int, dim: int, context: Optional[ModulationContext], context_dim: int) -> None:
        super().__init__()
        self.proj = _conv3x3(in_ch, dim, 1, False, context, context_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class Resample(nn.Module):
    """``body = [3x3 conv, PixelUnshuffle(2)]`` (down, n -> 2n) or ``[3x3 conv, PixelShuffle(2)]`` (up, n -> n/2)."""

    def __init__(self, n_feat: int, down: bool, context: Optional[ModulationContext], context_dim: int) -> None:
        super().__init__()
        out_ch = n_feat // 2 if down else n_feat * 2
        shuffle = nn.PixelUnshuffle(2) if down else nn.PixelShuffle(2)
        self.body = nn.Sequential(_conv3x3(n_feat, out_ch, 1, False, context, context_dim), shuffle)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)
