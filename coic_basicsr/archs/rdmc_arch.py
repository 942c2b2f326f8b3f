"""RDMC: recursive dynamic multi-scale deraining network (Jiang et al., arXiv 2305.18092); see docs/rdmc.md."""
from typing import List, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from basicsr.utils.registry import ARCH_REGISTRY

from coic_basicsr.archs.arch_util import (bad_option, check_at_least, check_choice, check_flag, check_int_list, crop,
                                         option_key, pad_to_multiple)

RECRUITMENT_MODES = ('dynamic', 'static', 'none')


class DilatedConvBlock(nn.Sequential):
    """conv3x3-BN-ReLU, then a 3x3 conv with ``dilation`` (receptive field 2*dilation + 1)-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, 1, 1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class DoubleConvBlock(nn.Sequential):
    """(conv3x3-BN-ReLU) x 2."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, 1, 1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ScaleBranch(nn.Module):
    """One encoder branch: level 0 at full resolution, then max-pool 2x + :class:`DilatedConvBlock` per level."""

    def __init__(self, in_channels: int, widths: Sequence[int], dilation: int) -> None:
        super().__init__()
        levels = [DilatedConvBlock(in_channels, widths[0], dilation)]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            levels.append(nn.Sequential(nn.MaxPool2d(2), DilatedConvBlock(c_in, c_out, dilation)))
        self.levels = nn.ModuleList(levels)

    def forward(self, x: Tensor) -> List[Tensor]:
        """Features of every level, shallow to deep."""
        feats = []
        for level in self.levels:
            x = level(x)
            feats.append(x)
        return feats


class DecoderStep(nn.Module):
    """Bilinear up-sampling of the deeper map to the skip's size, concatenation ``[skip, up]``, double conv."""

    def __init__(self, deep_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConvBlock(deep_channels + skip_channels, out_channels)

    def forward(self, deep: Tensor, skip: Tensor) -> Tensor:
        up = F.interpolate(deep, size=skip.shape[-2:], mode='bilinear', align_corners=False)
        return self.conv(torch.cat([skip, up], dim=1))


class RecruitGate(nn.Module):
    """Per-channel gate in (0, 1) for a recruited feature map.

    ``dynamic``: ``sigmoid(MLP([GAP(target) | GAP(recruited)]))``, computed per sample from both maps, so the
    amount of cross-level information taken depends on the image. ``static``: ``sigmoid(logit)`` with one learned
    logit per channel, the same for every input (the fixed-gate ablation, closest to DRNet's searched gates).
    """

    def __init__(self, channels: int, mode: str, reduction: int = 4) -> None:
        super().__init__()
        if mode not in ('dynamic', 'static'):
            raise ValueError(f"RecruitGate: mode must be 'dynamic' or 'static', got '{mode}'")
        self.mode = mode
        if mode == 'dynamic':
            hidden = max(channels // reduction, 4)
            self.mlp = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True),
                                     nn.Linear(hidden, channels))
        else:
            self.logit = nn.Parameter(torch.zeros(channels))

    def forward(self, target: Tensor, recruited: Tensor) -> Tensor:
        """Gate of shape (B, C, 1, 1) (dynamic) or (1, C, 1, 1) (static)."""
        if self.mode == 'static':
            return torch.sigmoid(self.logit)[None, :, None, None]
        pooled = torch.cat([target.mean(dim=(2, 3)), recruited.mean(dim=(2, 3))], dim=1)
        return torch.sigmoid(self.mlp(pooled))[:, :, None, None]


class RecruitPath(nn.Module):
    """Brings a feature map from another level to a decoder level and adds it through a :class:`RecruitGate`.

    ``kind`` 'up': a deeper (half-resolution) map is bilinearly up-sampled, then a double conv; 'down': a shallower
    (double-resolution) map goes through a stride-2 conv3x3-BN-LeakyReLU; 'same': a same-resolution map (the
    recursion input) through a conv1x1-BN-LeakyReLU.
    """

    def __init__(self, kind: str, in_channels: int, out_channels: int, mode: str, reduction: int = 4) -> None:
        super().__init__()
        self.kind = kind
        if kind == 'up':
            self.transform = DoubleConvBlock(in_channels, out_channels)
        elif kind in ('down', 'same'):
            k, stride = (3, 2) if kind == 'down' else (1, 1)
            self.transform = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, k, stride, k // 2), nn.BatchNorm2d(out_channels),
                nn.LeakyReLU(0.2, inplace=True))
        else:
            raise ValueError(f"RecruitPath: kind must be 'up', 'down' or 'same', got '{kind}'")
        self.gate = RecruitGate(out_channels, mode, reduction)

    def forward(self, target: Tensor, source: Tensor) -> Tensor:
        """The gated contribution ``gate * transform(source)`` for ``target`` (same shape as ``target``)."""
        if self.kind == 'up':
            source = F.interpolate(source, size=target.shape[-2:], mode='bilinear', align_corners=False)
        recruited = self.transform(source)
        if recruited.shape[-2:] != target.shape[-2:]:
            recruited = F.interpolate(recruited, size=target.shape[-2:], mode='bilinear', align_corners=False)
        return self.gate(target, recruited) * recruited


def build_recruit_paths(enc_channels: Sequence[int], dec_channels: Sequence[int], input_channels: int, mode: str,
                        reduction: int) -> Optional[nn.ModuleDict]:
    """Paths of every decoder level d: 'up<d>' from encoder level d + 1 (when that level is not the bottleneck,
    which the decoder already uses) and 'down<d>' from encoder level d - 1 (the recursion input for d = 0)."""
    if mode == 'none':
        return None
    paths = nn.ModuleDict()
    num_levels = len(enc_channels)
    for d, channels in enumerate(dec_channels):
        if d + 1 < num_levels - 1:
            paths[f'up{d}'] = RecruitPath('up', enc_channels[d + 1], channels, mode, reduction)
        source = enc_channels[d - 1] if d > 0 else input_channels
        paths[f'down{d}'] = RecruitPath('down' if d > 0 else 'same', source, channels, mode, reduction)
    return paths


@ARCH_REGISTRY.register()
class RDMCNet(nn.Module):
    """Recursive dynamic multi-scale network: one weight-shared U-Net applied ``iterations`` times.

    Every pass sees ``cat(rainy, estimate)`` (the first pass ``cat(rainy, rainy)``) and its output, added to the
    rainy image, is the next estimate. The encoder has one branch per entry of ``dilations`` (each level: a conv3x3
    and a 3x3 conv with that dilation, conv-BN-ReLU; max-pool between levels); the branches' maps are concatenated
    per level. Decoder level d (bilinear up-sampling, concatenation with the encoder level, double conv to half the
    encoder channels) then *recruits* the deeper encoder level d + 1 ('up'; not at the deepest decoder level, whose
    d + 1 is the bottleneck it decodes) and the shallower level d - 1 ('down'; the pass input at level 0), each
    through a per-channel gate (``recruitment``). A 1x1 conv gives the residual.

    ``forward(x, z=None)`` returns the final estimate, or the list of all pass estimates (final last) with
    ``return_stages``. RDMCNet has no modulation of its own: for CoIC wrap it in ``CoICNet`` (all k > 1 convs,
    dilated and strided ones included, become modulated; BatchNorm layers stay plain). Inputs whose sides are not
    multiples of ``2 ** (len(widths) - 1)`` are padded (reflect, replicate when too small) and cropped back.

    YAML keys (``network_g``):
        in_channels (int): Image channels (the network sees twice as many). Default: 3.
        out_channels (int): Output channels; must equal in_channels (residual on the input). Default: 3.
        iterations (int): Recursive passes T (shared weights). Default: 3.
        widths (list[int]): Channels of one branch per encoder level, shallow to deep. Default: [32, 64, 128, 256, 256].
        dilations (list[int]): Dilation of the second conv of each branch; one branch per entry. Default: [1, 2, 3].
        recruitment (str): Cross-level gates: 'dynamic' (input-dependent), 'static' (learned, input-independent)
            or 'none' (no recruitment paths). Default: 'dynamic'.
        gate_reduction (int): Hidden width divisor of the dynamic gates' MLP: ``max(C // gate_reduction, 4)``
            hidden units for C gated channels (at least 4). Default: 4.
        return_stages (bool): Return the list of every pass's estimate instead of the final one. Default: False.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, iterations: int = 3,
                 widths: Sequence[int] = (32, 64, 128, 256, 256), dilations: Sequence[int] = (1, 2, 3),
                 recruitment: str = 'dynamic', gate_reduction: int = 4, return_stages: bool = False) -> None:
        super().__init__()
        check_at_least('RDMCNet', 1, (('in_channels', in_channels), ('out_channels', out_channels),
                                      ('iterations', iterations), ('gate_reduction', gate_reduction)))
        if out_channels != in_channels:
            raise bad_option('RDMCNet', 'out_channels', f"{option_key('in_channels')} ({in_channels})", out_channels,
                             'it predicts a residual on the input')
        widths = check_int_list('RDMCNet', 'widths', widths, min_length=2)
        dilations = check_int_list('RDMCNet', 'dilations', dilations)
        check_choice('RDMCNet', 'recruitment', recruitment, RECRUITMENT_MODES)
        check_flag('RDMCNet', 'return_stages', return_stages)
        self.iterations = int(iterations)
        self.return_stages = return_stages
        self.size_multiple = 2**(len(widths) - 1)
        pass_channels = 2 * in_channels
        self.branches = nn.ModuleList(ScaleBranch(pass_channels, widths, d) for d in dilations)
        enc = [len(dilations) * w for w in widths]
        dec = [max(c // 2, 1) for c in enc[:-1]]
        deeper = dec[1:] + [enc[-1]]  # decoder level d consumes decoder level d + 1 (the bottleneck for the last)
        self.decoder = nn.ModuleList(DecoderStep(deeper[d], enc[d], dec[d]) for d in range(len(dec)))
        self.recruit = build_recruit_paths(enc, dec, pass_channels, recruitment, int(gate_reduction))
        self.head = nn.Conv2d(dec[0], out_channels, 1)

    def forward(self, x: Tensor, z: Optional[Tensor] = None) -> Union[Tensor, List[Tensor]]:
        """Derain ``x`` (B, C, H, W); ``z`` must be None (use ``CoICNet`` for instance modulation)."""
        if z is not None:
            raise ValueError('RDMCNet has no modulated layers and takes no z; for CoIC use network_g: '
                             '{type: CoICNet, backbone: {type: RDMCNet, ...}}')
        rainy, size = pad_to_multiple(x, self.size_multiple)
        estimate, stages = rainy, []
        for _ in range(self.iterations):
            estimate = self.single_pass(rainy, estimate)
            stages.append(crop(estimate, size))
        return stages if self.return_stages else stages[-1]

    def single_pass(self, rainy: Tensor, estimate: Tensor) -> Tensor:
        """One recursion step on padded maps: the next estimate ``rainy + residual``."""
        inp = torch.cat([rainy, estimate], dim=1)
        per_branch = [branch(inp) for branch in self.branches]
        enc = [torch.cat(level, dim=1) for level in zip(*per_branch)]
        feat = enc[-1]
        for d in reversed(range(len(self.decoder))):
            feat = self.decoder[d](feat, enc[d])
            if self.recruit is not None:
                base = feat  # both gates of a level see the same, not yet compensated, map
                if f'up{d}' in self.recruit:
                    feat = feat + self.recruit[f'up{d}'](base, enc[d + 1])
                feat = feat + self.recruit[f'down{d}'](base, enc[d - 1] if d > 0 else inp)
        return rainy + self.head(feat)
