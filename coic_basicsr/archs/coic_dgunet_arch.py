"""CoIC-DGUNet: the deep generalized unfolding network (Mou et al., CVPR 2022) with CoIC modulation.

DGUNet unfolds ``depth + 2`` proximal gradient stages: each stage takes a learned gradient step (``phi`` / ``phi^T``
residual blocks) and a proximal U-Net step; the intermediate stages share one :class:`BasicBlock`. Module names
follow the official DGUNet (and the CoIC code's variant of it) so their checkpoints convert by renaming only.
"""
from typing import List, Optional

import torch
from torch import Tensor, nn

from coic_basicsr.archs.dgunet_blocks import CAB, SAM, BasicBlock, Decoder, Encoder, ResBlock, conv
from coic_basicsr.archs.arch_util import (bad_option, check_at_least, check_choice, check_flags, check_parity,
                                          conditioned_forward, option_key)
from coic_basicsr.archs.conv_selection import modulate_convs
from coic_basicsr.archs.modulation import GATE_LAYOUTS, ModulationContext
from basicsr.utils.registry import ARCH_REGISTRY

_SIZE_MULTIPLE = 8  # three 2x down-samplings in each U-Net


@ARCH_REGISTRY.register()
class CoICDGUNet(nn.Module):
    """DGUNet with CoI-M on every conv / transposed conv with a kernel larger than 1x1; ``z=None`` is exactly the
    plain DGUNet. ``forward`` returns the ``depth + 2`` stage images (final last) for the multi-stage losses.

    Inputs whose height/width is not a multiple of 8 are reflect-padded on the bottom/right and every output is cropped
    back; both sides must be at least 9 pixels (the U-Nets' instance norms need 2x2 maps at 1/8 resolution).

    YAML keys (``network_g``):
        in_channels (int): image channels. Default: 3.
        n_feat (int): channels of the first U-Net level; even (every U-Net level splits its channels in half for
            the half instance norm). Default: 40.
        scale_unetfeats (int): channels added per U-Net level; even, like n_feat. Default: 20.
        scale_orsnetfeats (int): extra channels of the last stage's fusion conv (``concat67``). Default: 16.
        num_cab (int): accepted for the official signature; DGUNet's forward uses one CAB per stage
            (its ORSNet with ``num_cab`` CABs was dropped from MPRNet), so this value (an integer >= 1) changes nothing.
            Default: 8.
        kernel_size (int): kernel of the feature convs; odd (they pad kernel_size // 2 to keep the size). Default: 3.
        reduction (int): channel-attention reduction. Default: 4.
        bias (bool): bias of the feature convs. Default: False.
        depth (int): intermediate stages (weight-shared BasicBlock); depth + 2 outputs. Default: 5.
        context_dim (int): dimension of the instance context z. Default: 128.
        modulate (bool): make the convs CoI-M modulated; False gives the plain DGUNet. Default: True.
        gate_layout (str): 'paper' (gate sigmoid(a_out[o] + a_in[i])) or 'official' (the CoIC authors' memory
            layout, set by ``basicsr convert-official`` so their checkpoints compute exactly what they did).
            Default: 'paper'.
        generator_width (int | None): upper bound on both hidden widths of every CoI-M kernel-scale generator
            (fewer parameters, docs/benchmarks.md); null keeps the CoIC authors' widths (C_out, or C_out / 16 for
            grouped convs, then 16), which their checkpoints need. Default: null.
    """

    size_multiple = _SIZE_MULTIPLE  # inputs are padded to this (read by benchmarks)

    def __init__(self, in_channels: int = 3, n_feat: int = 40, scale_unetfeats: int = 20, scale_orsnetfeats: int = 16,
                 num_cab: int = 8, kernel_size: int = 3, reduction: int = 4, bias: bool = False, depth: int = 5,
                 context_dim: int = 128, modulate: bool = True, gate_layout: str = 'paper',
                 generator_width: Optional[int] = None) -> None:
        super().__init__()
        arch = 'CoICDGUNet'
        check_at_least(arch, 1, (('in_channels', in_channels), ('n_feat', n_feat), ('kernel_size', kernel_size),
                                 ('reduction', reduction), ('context_dim', context_dim), ('num_cab', num_cab)))
        check_flags(arch, (('bias', bias), ('modulate', modulate)))
        check_choice(arch, 'gate_layout', gate_layout, GATE_LAYOUTS)
        check_at_least(arch, 0, (('scale_unetfeats', scale_unetfeats), ('scale_orsnetfeats', scale_orsnetfeats),
                                 ('depth', depth)))
        half_norm = 'each U-Net level, n_feat + i * scale_unetfeats channels, is halved for the half instance norm'
        check_parity(arch, 'n_feat', n_feat, False, half_norm)
        check_parity(arch, 'scale_unetfeats', scale_unetfeats, False, half_norm)
        check_parity(arch, 'kernel_size', kernel_size, True, 'its convs pad kernel_size // 2 to keep the size')
        if n_feat // reduction < 1:
            raise bad_option(arch, 'reduction', f"at most {option_key('n_feat')} ({n_feat})", reduction,
                             'channel attention squeezes n_feat to n_feat // reduction channels')
        self.depth, self.num_cab = int(depth), int(num_cab)
        self.context_dim, self.modulate = int(context_dim), modulate
        act = nn.PReLU()  # shared by the first and last stage's CABs, as in the official code
        self.basic = BasicBlock(n_feat, scale_unetfeats, kernel_size, reduction, bias, in_channels)
        self.shallow_feat1 = nn.Sequential(conv(in_channels, n_feat, kernel_size, bias),
                                           CAB(n_feat, kernel_size, reduction, bias, act))
        self.shallow_feat7 = nn.Sequential(conv(in_channels, n_feat, kernel_size, bias),
                                           CAB(n_feat, kernel_size, reduction, bias, act))
        self.stage1_encoder = Encoder(n_feat, scale_unetfeats, csff=False)
        self.stage1_decoder = Decoder(n_feat, scale_unetfeats)
        self.sam12 = SAM(n_feat, 1, bias, in_channels)
        self.phi_0, self.phit_0 = ResBlock(in_channels, 3), ResBlock(in_channels, 3)
        self.phi_6, self.phit_6 = ResBlock(in_channels, 3), ResBlock(in_channels, 3)
        self.r0 = nn.Parameter(torch.tensor([0.5]))
        self.r6 = nn.Parameter(torch.tensor([0.5]))
        self.concat67 = conv(n_feat * 2, n_feat + scale_orsnetfeats, kernel_size, bias)
        self.tail = conv(n_feat + scale_orsnetfeats, in_channels, kernel_size, bias)
        self.context = ModulationContext(generator_width, option_key('generator_width'))
        if self.modulate:
            modulate_convs(self, self.context, self.context_dim, gate_layout=gate_layout)

    def forward(self, x: Tensor, z: Optional[Tensor] = None) -> List[Tensor]:
        """Derain ``x`` (B, C, H, W); returns the ``depth + 2`` stage outputs (final last), each (B, C, H, W)."""
        return conditioned_forward(self, x, z, self._unfold, self.size_multiple, min_size=self.size_multiple)

    def _unfold(self, img: Tensor) -> List[Tensor]:
        stages = []
        x1_img = img - self.r0 * self.phit_0(self.phi_0(img) - img)
        feats, bottom = self.stage1_encoder(self.shallow_feat1(x1_img))
        decoded = self.stage1_decoder(bottom, feats)
        sam_feats, stage_img = self.sam12(decoded[-1], x1_img)
        stages.append(stage_img)
        for _ in range(self.depth):
            sam_feats, stage_img, feats, decoded = self.basic(img, stage_img, feats, decoded, sam_feats)
            stages.append(stage_img)
        x7_img = stage_img - self.r6 * self.phit_6(self.phi_6(stage_img) - img)
        fused = self.concat67(torch.cat([self.shallow_feat7(x7_img), sam_feats], 1))
        stages.append(self.tail(fused) + img)
        return stages

