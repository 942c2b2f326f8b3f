"""CoIC-IDT: the Image De-raining Transformer (Xiao et al., TPAMI 2022) with CoIC instance-level modulation.

Module names and shapes follow the official ``model.py`` (jiexiaou/IDT, including its ``dowsample_`` spelling), so an
official checkpoint loads with ``strict=True``; the modulation parameters keep their values.
"""
import math
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from coic_basicsr.archs.idt_blocks import ConvTokens, IDTBlock, IDTLayer, SpatialTransformerLayer
from coic_basicsr.archs.arch_util import (bad_option, check_at_least, check_flags, check_list_length,
                                          conditioned_forward, option_key)
from coic_basicsr.archs.conv_selection import modulate_convs
from coic_basicsr.archs.modulation import ContextEmbedding, ModulationContext
from coic_basicsr.utils.option_values import check_number
from basicsr.utils.registry import ARCH_REGISTRY

# Relative-position clipping of the spatial layers, hard-coded per level in the official model.
_ENC_K_BOUNDS = (16, 8, 4, 2)
_DEC_K_BOUNDS = (2, 4, 8, 16)
# Where CoI-M goes (the CoIC authors' placement): LeFF depthwise convs, input/output projections, down/up-sampling.
MODULATED_LAYERS = ('input_proj.proj.0', 'output_proj.proj.0', 'dowsample_*.conv.0', 'upsample_*.deconv.0',
                    '*.mlp.dwconv.0')


@ARCH_REGISTRY.register()
class CoICIDT(nn.Module):
    """IDT with CoIC modulation: CoI-M convs and a context-conditioned K/V in every window and spatial transformer.

    A 4-level U-shaped transformer: each level runs window blocks (``depths[i]`` of them) and one spatial transformer
    layer (attention across ``spatial_win_size`` patches), the bottleneck runs window blocks only. CoI-M
    (``ModulatedConv2d`` / ``ModulatedConvTranspose2d``) replaces every LeFF depthwise conv, the input/output
    projections and the 4x4 down-sampling / 2x2 transposed up-sampling convs; the positional convs stay plain.
    ``forward(x, z=None)`` with ``z=None`` is exactly the official IDT at ``img_size``; window sizes are fixed by
    ``img_size`` at construction (as in the official model) and other inputs are padded (reflect, or replicate when
    too small) on the bottom/right to a multiple of ``size_multiple`` (128 for the defaults) and cropped back. IDT
    was trained and is tested on 128x128 patches: set ``val.tile.size: 128`` for whole images.

    YAML keys (``network_g``):
        img_size (int): training patch size; sets the windows of every level. Default: 128.
        in_chans (int): image channels. Default: 3.
        embed_dim (int): channels of level 0 (level i has embed_dim * 2**i). Default: 32.
        depths (list[int]): window blocks of the 9 layers (4 encoder, bottleneck, 4 decoder); also drives the
            drop-path schedule (the official class hard-codes these counts; its training script passes the same
            list). Default: [3, 3, 2, 2, 1, 1, 2, 2, 3].
        num_heads (list[int]): heads of the 9 layers; each must divide its layer's channels and, outside the
            bottleneck, spatial_win_size**2. Default: [1, 2, 4, 8, 16, 16, 8, 4, 2].
        win_size (int): window side of the window blocks. Default: 8.
        mlp_ratio (float): LeFF hidden expansion; int(C * mlp_ratio) must be >= 1 for C = embed_dim and
            C = spatial_win_size**2 (the spatial layers' LeFF expands the patch pixels). Default: 4.0.
        qkv_bias (bool): bias of the Q/K/V projections. Default: true.
        qk_scale (float): attention scale; null for head_dim**-0.5. Default: null.
        drop_path_rate (float): stochastic depth rate (training only). Default: 0.1.
        spatial_win_size (int): patch side of the spatial transformer layers (8 in the official model; smaller values
            only for tiny test networks). Default: 8.
        context_dim (int): dimension of the instance context z. Default: 128.
        modulate (bool): build the CoIC additions; false gives the plain IDT (z must then be None). Default: true.
        generator_width (int | None): upper bound on both hidden widths of every CoI-M kernel-scale generator
            (fewer parameters, docs/benchmarks.md); null keeps the CoIC authors' widths (C_out, or C_out / 16 for
            grouped convs, then 16), which their checkpoints need. Default: null.
    """

    def __init__(self, img_size: int = 128, in_chans: int = 3, embed_dim: int = 32,
                 depths: Sequence[int] = (3, 3, 2, 2, 1, 1, 2, 2, 3),
                 num_heads: Sequence[int] = (1, 2, 4, 8, 16, 16, 8, 4, 2), win_size: int = 8, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, drop_path_rate: float = 0.1,
                 spatial_win_size: int = 8, context_dim: int = 128, modulate: bool = True,
                 generator_width: Optional[int] = None) -> None:
        super().__init__()
        arch = 'CoICIDT'
        for key, values in (('depths', depths), ('num_heads', num_heads)):
            check_list_length(arch, key, values, 9, '4 encoder layers, the bottleneck, 4 decoder layers')
        check_at_least(arch, 1, [('in_chans', in_chans), ('embed_dim', embed_dim), ('img_size', img_size),
                                 ('win_size', win_size), ('spatial_win_size', spatial_win_size),
                                 ('context_dim', context_dim)]
                       + [(f'depths[{i}]', depth) for i, depth in enumerate(depths)]
                       + [(f'num_heads[{i}]', heads) for i, heads in enumerate(num_heads)])
        check_flags(arch, (('qkv_bias', qkv_bias), ('modulate', modulate)))
        check_number(option_key('mlp_ratio'), mlp_ratio, f'a positive number for {arch}', lambda v: v > 0)
        check_number(option_key('drop_path_rate'), drop_path_rate, f'a number in [0, 1) for {arch}',
                     lambda v: 0 <= v < 1)
        if qk_scale is not None:
            check_number(option_key('qk_scale'), qk_scale, f'a positive number or null for {arch}', lambda v: v > 0)
        narrowest = min(embed_dim, spatial_win_size**2)  # LeFF inputs: level channels, spatial_win_size**2 pixels
        if int(narrowest * mlp_ratio) < 1:
            raise bad_option(arch, 'mlp_ratio', 'a ratio leaving int(C * mlp_ratio) >= 1 hidden LeFF channels',
                             mlp_ratio, f"C down to min({option_key('embed_dim')}, {option_key('spatial_win_size')}**2)"
                             f' = {narrowest}')
        self.context_dim = context_dim
        self.modulate = modulate
        self.context = ModulationContext(generator_width, option_key('generator_width'))
        ctx = self.context if modulate else None
        level_dims = [embed_dim * 2**i for i in (0, 1, 2, 3, 4, 4, 3, 2, 1)]  # decoders run on concatenations
        levels = (0, 1, 2, 3, 4, 3, 2, 1, 0)
        windows = [self._window(img_size, level, win_size, spatial_win_size) for level in range(5)]
        self.size_multiple = math.lcm(*(2**level * w for level, w in enumerate(windows)),
                                      *(2**level * spatial_win_size for level in range(4)))
        enc_dpr = torch.linspace(0, drop_path_rate, sum(depths[:4])).tolist()
        dec_dpr = enc_dpr[::-1]

        def layer(i: int) -> IDTLayer:
            dim, heads, level = level_dims[i], num_heads[i], levels[i]
            if dim % heads or (i != 4 and spatial_win_size**2 % heads):
                window = '' if i == 4 else f" and {option_key('spatial_win_size')}**2 ({spatial_win_size**2})"
                raise bad_option(arch, f'num_heads[{i}]', f'a number of heads that divides the {dim} channels of '
                                 f'layer {i}{window}', heads)
            if i < 4:
                rates = enc_dpr[sum(depths[:i]):sum(depths[:i + 1])]
            elif i == 4:
                rates = [drop_path_rate]
            else:
                rates = dec_dpr[sum(depths[5:i]):sum(depths[5:i + 1])] or [0.0]
            blocks: List[nn.Module] = [
                IDTBlock(dim, heads, windows[level], mlp_ratio, qkv_bias, qk_scale, rates[0], ctx, context_dim)
                for _ in range(depths[i])
            ]
            if i != 4:
                k_bound = _ENC_K_BOUNDS[i] if i < 4 else _DEC_K_BOUNDS[i - 5]
                blocks.append(SpatialTransformerLayer(dim, (img_size >> level) // spatial_win_size, heads,
                                                      spatial_win_size, mlp_ratio, qkv_bias, qk_scale, rates[-1],
                                                      k_bound, ctx, context_dim))
            return IDTLayer(blocks)

        e = embed_dim
        self.input_proj = ConvTokens('proj', nn.Conv2d(in_chans, e, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.output_proj = ConvTokens('proj', nn.Conv2d(2 * e, in_chans, 3, 1, 1), to_tokens=False)
        for i in range(4):
            setattr(self, f'encoderlayer_{i}', layer(i))
            setattr(self, f'dowsample_{i}', ConvTokens('conv', nn.Conv2d(e * 2**i, e * 2**(i + 1), 4, 2, 1)))
        self.bottle = layer(4)
        for j, (c_in, c_out) in enumerate(((16 * e, 8 * e), (16 * e, 4 * e), (8 * e, 2 * e), (4 * e, e))):
            setattr(self, f'upsample_{j}', ConvTokens('deconv', nn.ConvTranspose2d(c_in, c_out, 2, 2)))
            setattr(self, f'decoderlayer_{j}', layer(5 + j))
        self._init_weights()
        self.modulated_layers = modulate_convs(self, self.context, context_dim, include=MODULATED_LAYERS) \
            if modulate else []

    @staticmethod
    def _window(img_size: int, level: int, win_size: int, spatial_win_size: int) -> int:
        """Window of the window blocks at ``level``: ``win_size``, or the whole map once it is no larger."""
        res = img_size >> level
        if img_size % 16 or res % min(win_size, res) or (level < 4 and res % spatial_win_size):
            raise bad_option('CoICIDT', 'img_size', f"a multiple of 16 whose every level (img_size / 2**level, here "
                             f"{res} at level {level}) is a multiple of {option_key('win_size')} ({win_size}) and, "
                             f"for levels 0-3, of {option_key('spatial_win_size')} ({spatial_win_size})", img_size)
        return min(win_size, res)

    def _init_weights(self) -> None:
        """The official init: truncated-normal Linear weights (std 0.02), zero biases; context embeddings stay 0."""
        skip = {id(m.proj) for m in self.modules() if isinstance(m, ContextEmbedding)}
        for m in self.modules():
            if isinstance(m, nn.Linear) and id(m) not in skip:
                nn.init.trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, z: Optional[Tensor] = None) -> Tensor:
        """Restore ``x`` (B, in_chans, H, W), conditioned on the context ``z`` (B or 1, context_dim) if given."""
        return conditioned_forward(self, x, z, self._forward_padded, self.size_multiple)

    def _forward_padded(self, img: Tensor) -> Tensor:
        y, size = self.input_proj(img, None)
        skips = []
        for i in range(4):
            y = getattr(self, f'encoderlayer_{i}')(y, size)
            skips.append(y)
            y, size = getattr(self, f'dowsample_{i}')(y, size)
        y = self.bottle(y, size)
        for j in range(4):
            y, size = getattr(self, f'upsample_{j}')(y, size)
            y = getattr(self, f'decoderlayer_{j}')(torch.cat([y, skips[3 - j]], dim=-1), size)
        return img + self.output_proj(y, size)[0]
