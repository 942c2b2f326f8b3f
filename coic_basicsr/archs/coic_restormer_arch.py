"""CoIC-Restormer: Restormer (Zamir et al., CVPR 2022) with CoIC instance-level modulation.

Module names and shapes follow the official Restormer, so an official ``params`` checkpoint loads with
``strict=True`` (the modulation parameters keep their values through the pre-hooks of ``modulation.py``).
"""
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from coic_basicsr.archs.arch_util import check_at_least, check_flags, conditioned_forward, option_key
from coic_basicsr.archs.modulation import ModulationContext
from coic_basicsr.archs.restormer_blocks import CoICTransformerBlock, PatchEmbed, Resample, check_unet_options
from basicsr.utils.registry import ARCH_REGISTRY

_SIZE_MULTIPLE = 8  # three 2x down-samplings


@ARCH_REGISTRY.register()
class CoICRestormer(nn.Module):
    """Restormer with CoIC modulation: CoI-M on the 3x3 convs and a context-conditioned K/V in every block.

    CoI-M (``ModulatedConv2d``) replaces the patch embedding, the FFN depthwise convs and the down/up-sampling convs;
    ``qkv_dwconv`` (sliced, see ``MDTAttention``) and ``output`` stay plain. ``forward(x, z=None)`` with ``z=None``
    is exactly the official Restormer. Inputs whose height/width is not a multiple of 8 are reflect-padded on the
    bottom/right (replicate when the image is too small to reflect) and the output is cropped back.

    YAML keys (``network_g``):
        inp_channels (int): input image channels. Default: 3.
        out_channels (int): output image channels; unless dual_pixel_task the output adds the input image, so it
            must equal inp_channels (or inp_channels be 1). Default: 3.
        dim (int): channels of level 1 (level k has dim * 2**(k-1)); even and >= 2 (the first down-sampling
            convolves to dim // 2 channels and pixel-unshuffles them to the 2 * dim of level 2). Default: 48.
        num_blocks (list[int]): transformer blocks per level 1..4. Default: [4, 6, 6, 8].
        num_refinement_blocks (int): blocks of the refinement stage; 0 for none. Default: 4.
        heads (list[int]): attention heads per level 1..4; each must divide its level's channels.
            Default: [1, 2, 4, 8].
        ffn_expansion_factor (float): GDFN hidden expansion; int(dim * ffn_expansion_factor) must be >= 1.
            Default: 2.66.
        bias (bool): bias in the 1x1/attention/FFN convs. Default: False.
        LayerNorm_type (str): 'WithBias' or 'BiasFree'. Default: 'WithBias'.
        dual_pixel_task (bool): dual-pixel defocus variant (skip_conv, no global residual). Default: False.
        context_dim (int): dimension of the instance context z. Default: 128.
        modulate (bool): build the CoIC additions; False gives the plain Restormer (z must then be None).
            Default: True.
        generator_width (int | None): upper bound on both hidden widths of every CoI-M kernel-scale generator
            (fewer parameters, docs/benchmarks.md); null keeps the CoIC authors' widths (C_out, or C_out / 16 for
            grouped convs, then 16), which their checkpoints need. Default: null.
    """

    size_multiple = _SIZE_MULTIPLE  # inputs are padded to this (read by benchmarks)

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = (4, 6, 6, 8), num_refinement_blocks: int = 4,
                 heads: Sequence[int] = (1, 2, 4, 8), ffn_expansion_factor: float = 2.66, bias: bool = False,
                 LayerNorm_type: str = 'WithBias', dual_pixel_task: bool = False, context_dim: int = 128,
                 modulate: bool = True,
                 generator_width: Optional[int] = None) -> None:  # noqa: N803 (official option name)
        super().__init__()
        check_unet_options('CoICRestormer', inp_channels, out_channels, dim, num_blocks, heads, ffn_expansion_factor,
                           LayerNorm_type, global_residual=not dual_pixel_task, context_dim=context_dim)
        check_at_least('CoICRestormer', 0, [('num_refinement_blocks', num_refinement_blocks)])
        check_flags('CoICRestormer', (('bias', bias), ('dual_pixel_task', dual_pixel_task), ('modulate', modulate)))
        self.context_dim = context_dim
        self.modulate = modulate
        self.dual_pixel_task = dual_pixel_task
        self.context = ModulationContext(generator_width, option_key('generator_width'))
        ctx = self.context if modulate else None

        def stage(level: int, n: int, channels: Optional[int] = None) -> nn.Sequential:
            ch = channels or dim * 2**level
            return nn.Sequential(*[
                CoICTransformerBlock(ch, heads[level], ffn_expansion_factor, bias, LayerNorm_type, ctx, context_dim)
                for _ in range(n)
            ])

        self.patch_embed = PatchEmbed(inp_channels, dim, ctx, context_dim)
        self.encoder_level1 = stage(0, num_blocks[0])
        self.down1_2 = Resample(dim, True, ctx, context_dim)
        self.encoder_level2 = stage(1, num_blocks[1])
        self.down2_3 = Resample(dim * 2, True, ctx, context_dim)
        self.encoder_level3 = stage(2, num_blocks[2])
        self.down3_4 = Resample(dim * 4, True, ctx, context_dim)
        self.latent = stage(3, num_blocks[3])
        self.up4_3 = Resample(dim * 8, False, ctx, context_dim)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, 1, bias=bias)
        self.decoder_level3 = stage(2, num_blocks[2])
        self.up3_2 = Resample(dim * 4, False, ctx, context_dim)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, 1, bias=bias)
        self.decoder_level2 = stage(1, num_blocks[1])
        self.up2_1 = Resample(dim * 2, False, ctx, context_dim)
        # level 1 decoder and refinement run on 2*dim channels with heads[0] (no channel reduction)
        self.decoder_level1 = stage(0, num_blocks[0], dim * 2)
        self.refinement = stage(0, num_refinement_blocks, dim * 2)
        if dual_pixel_task:
            self.skip_conv = nn.Conv2d(dim, dim * 2, 1, bias=bias)
        self.output = nn.Conv2d(dim * 2, out_channels, 3, 1, 1, bias=bias)

    def forward(self, x: Tensor, z: Optional[Tensor] = None) -> Tensor:
        """Restore ``x`` (B, inp_channels, H, W), conditioned on the context ``z`` (B, context_dim) if given."""
        return conditioned_forward(self, x, z, self._forward_padded, self.size_multiple)

    def _forward_padded(self, inp_img: Tensor) -> Tensor:
        emb1 = self.patch_embed(inp_img)
        enc1 = self.encoder_level1(emb1)
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        dec1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1)))
        if self.dual_pixel_task:
            return self.output(dec1 + self.skip_conv(emb1))
        return self.output(dec1) + inp_img
