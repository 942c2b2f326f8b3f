"""CoIC-DRSformer: DRSformer (Chen et al., CVPR 2023) with CoIC instance-level modulation.

Module names and shapes follow the official ``DRSformer_arch.py`` (cschenxiang/DRSformer), so an official ``params``
checkpoint loads with ``strict=True``; the modulation parameters keep their values (pre-hooks of ``modulation.py``).
"""
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from coic_basicsr.archs.arch_util import check_flags, conditioned_forward, option_key
from coic_basicsr.archs.drsformer_blocks import FeatureCompensator, SparseTransformerBlock
from coic_basicsr.archs.conv_selection import modulate_convs
from coic_basicsr.archs.modulation import ModulationContext
from coic_basicsr.archs.restormer_blocks import PatchEmbed, Resample, check_unet_options
from basicsr.utils.registry import ARCH_REGISTRY

_SIZE_MULTIPLE = 8  # three 2x down-samplings
# Where CoI-M goes (the CoIC authors' placement); modulate_convs skips 1x1 convs, so in the compensators only the
# separable / dilated depthwise convs are modulated. The output conv stays plain, as in CoICRestormer.
MODULATED_LAYERS = ('patch_embed.proj', 'down*.body.0', 'up*.body.0', '*.ffn.dwconv*', 'encoder_level0.*',
                    'refinement.*')


@ARCH_REGISTRY.register()
class CoICDRSformer(nn.Module):
    """DRSformer with CoIC modulation: CoI-M convs and a context-conditioned K/V in every sparse transformer block.

    CoI-M (``ModulatedConv2d``) replaces the patch embedding, the four MSFN depthwise convs of every block, the
    mixture-of-experts feature compensators' (MEFC) separable/dilated depthwise convs and the down/up-sampling convs;
    the attention convs (sliced for the K/V context, see ``MDTAttention``) and the output conv stay plain. Each block
    takes K/V from ``norm1(x + context_embed(z))``. ``forward(x, z=None)`` with ``z=None`` is exactly the official
    DRSformer. Inputs whose height/width is not a multiple of 8 are reflect-padded on the bottom/right (replicate when
    the image is too small to reflect) and the output is cropped back.

    YAML keys (``network_g``):
        inp_channels (int): input image channels. Default: 3.
        out_channels (int): output image channels; the output adds the input image, so it must equal
            inp_channels (or inp_channels be 1). Default: 3.
        dim (int): channels of level 1 (level k has dim * 2**(k-1)); even and >= 2 (the first down-sampling
            convolves to dim // 2 channels and pixel-unshuffles them to the 2 * dim of level 2). Default: 48.
        num_blocks (list[int]): sparse transformer blocks per level 1..4. Default: [4, 6, 6, 8].
        heads (list[int]): attention heads per level 1..4; each must divide its level's channels into heads
            of >= 2 channels. Default: [1, 2, 4, 8].
        ffn_expansion_factor (float): MSFN hidden expansion; int(dim * ffn_expansion_factor) must be >= 1.
            Default: 2.66.
        bias (bool): bias in the 1x1/attention/FFN convs. Default: False.
        LayerNorm_type (str): 'WithBias' or 'BiasFree'. Default: 'WithBias'.
        mefc (bool): build the two feature compensators (``encoder_level0``, ``refinement``); false gives the
            published variant used for Rain200L and SPA-Data (``DRSformer_arch_200L+SPA.py``). Default: true.
        context_dim (int): dimension of the instance context z. Default: 128.
        modulate (bool): build the CoIC additions; false gives the plain DRSformer (z must then be None).
            Default: true.
        generator_width (int | None): upper bound on both hidden widths of every CoI-M kernel-scale generator
            (fewer parameters, docs/benchmarks.md); null keeps the CoIC authors' widths (C_out, or C_out / 16 for
            grouped convs, then 16), which their checkpoints need. Default: null.
    """

    size_multiple = _SIZE_MULTIPLE  # inputs are padded to this (read by benchmarks)

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = (4, 6, 6, 8), heads: Sequence[int] = (1, 2, 4, 8),
                 ffn_expansion_factor: float = 2.66, bias: bool = False, LayerNorm_type: str = 'WithBias',
                 mefc: bool = True, context_dim: int = 128, modulate: bool = True,
                 generator_width: Optional[int] = None) -> None:  # noqa: N803
        super().__init__()
        check_unet_options('CoICDRSformer', inp_channels, out_channels, dim, num_blocks, heads, ffn_expansion_factor,
                           LayerNorm_type, global_residual=True, context_dim=context_dim, min_head_channels=2,
                           head_note=' into heads of at least 2 channels (top-k attention keeps int(C/2) of C)')
        check_flags('CoICDRSformer', (('bias', bias), ('mefc', mefc), ('modulate', modulate)))
        self.context_dim = context_dim
        self.modulate = modulate
        self.mefc = mefc
        self.context = ModulationContext(generator_width, option_key('generator_width'))
        ctx = self.context if modulate else None

        def stage(level: int, n: int, channels: Optional[int] = None) -> nn.Sequential:
            ch = channels or dim * 2**level
            return nn.Sequential(*[
                SparseTransformerBlock(ch, heads[level], ffn_expansion_factor, bias, LayerNorm_type, ctx, context_dim)
                for _ in range(n)
            ])

        self.patch_embed = PatchEmbed(inp_channels, dim, None, context_dim)
        if mefc:
            self.encoder_level0 = FeatureCompensator(dim)
        self.encoder_level1 = stage(0, num_blocks[0])
        self.down1_2 = Resample(dim, True, None, context_dim)
        self.encoder_level2 = stage(1, num_blocks[1])
        self.down2_3 = Resample(dim * 2, True, None, context_dim)
        self.encoder_level3 = stage(2, num_blocks[2])
        self.down3_4 = Resample(dim * 4, True, None, context_dim)
        self.latent = stage(3, num_blocks[3])
        self.up4_3 = Resample(dim * 8, False, None, context_dim)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, 1, bias=bias)
        self.decoder_level3 = stage(2, num_blocks[2])
        self.up3_2 = Resample(dim * 4, False, None, context_dim)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, 1, bias=bias)
        self.decoder_level2 = stage(1, num_blocks[1])
        self.up2_1 = Resample(dim * 2, False, None, context_dim)
        self.decoder_level1 = stage(0, num_blocks[0], dim * 2)  # 2*dim channels with heads[0], as in the official
        if mefc:
            self.refinement = FeatureCompensator(dim * 2)
        self.output = nn.Conv2d(dim * 2, out_channels, 3, 1, 1, bias=bias)
        self.modulated_layers = modulate_convs(self, self.context, context_dim, include=MODULATED_LAYERS) \
            if modulate else []

    def forward(self, x: Tensor, z: Optional[Tensor] = None) -> Tensor:
        """Restore ``x`` (B, inp_channels, H, W), conditioned on the context ``z`` (B or 1, context_dim) if given."""
        return conditioned_forward(self, x, z, self._forward_padded, self.size_multiple)

    def _forward_padded(self, inp_img: Tensor) -> Tensor:
        emb = self.patch_embed(inp_img)
        enc1 = self.encoder_level1(self.encoder_level0(emb) if self.mefc else emb)
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1))
        if self.mefc:
            dec1 = self.refinement(dec1)
        return self.output(dec1) + inp_img
