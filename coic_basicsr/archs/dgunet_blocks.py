"""Building blocks of DGUNet (Mou et al., CVPR 2022), with the official module names (for checkpoint keys).

All convs are plain ``nn.Conv2d`` / ``nn.ConvTranspose2d`` here; :class:`CoICDGUNet` (``coic_dgunet_arch.py``) turns
the ones with a kernel larger than 1x1 into CoI-M modulated layers.
"""
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def conv(in_ch: int, out_ch: int, kernel_size: int, bias: bool = False, stride: int = 1) -> nn.Conv2d:
    """'same' conv (padding kernel_size // 2)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)


class ResBlock(nn.Module):
    """Gradient-descent proximal map phi / phi^T: ``x + conv(PReLU(conv(x)))`` through 64 hidden channels."""

    def __init__(self, channels: int, kernel_size: int = 3, hidden: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(channels, hidden, kernel_size, bias=True), nn.PReLU(),
                                  conv(hidden, channels, kernel_size, bias=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + x


class CALayer(nn.Module):
    """Squeeze-and-excitation channel attention (1x1 convs, ``conv_du``)."""

    def __init__(self, channels: int, reduction: int, bias: bool) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1, bias=bias), nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1, bias=bias), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv_du(x.mean(dim=(2, 3), keepdim=True))


class CAB(nn.Module):
    """Channel attention block: ``x + CA(conv(act(conv(x))))``; ``act`` may be shared between blocks."""

    def __init__(self, channels: int, kernel_size: int, reduction: int, bias: bool, act: nn.Module) -> None:
        super().__init__()
        self.CA = CALayer(channels, reduction, bias)
        self.body = nn.Sequential(conv(channels, channels, kernel_size, bias), act,
                                  conv(channels, channels, kernel_size, bias))

    def forward(self, x: Tensor) -> Tensor:
        return self.CA(self.body(x)) + x


class SAM(nn.Module):
    """Supervised attention between stages: returns ``(features + conv1(features), image + conv2(features))``."""

    def __init__(self, channels: int, kernel_size: int, bias: bool, img_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = conv(channels, channels, kernel_size, bias)
        self.conv2 = conv(channels, img_channels, kernel_size, bias)

    def forward(self, x: Tensor, x_img: Tensor) -> Tuple[Tensor, Tensor]:
        return self.conv1(x) + x, self.conv2(x) + x_img


class MergeBlock(nn.Module):
    """Merges the previous stage's features (``bridge``) after projecting them onto a learned subspace."""

    def __init__(self, channels: int, kernel_size: int, bias: bool, subspace_dim: int = 16) -> None:
        super().__init__()
        self.conv_block = conv(channels * 2, channels, kernel_size, bias)
        self.num_subspace = subspace_dim
        self.subnet = conv(channels * 2, subspace_dim, kernel_size, bias)

    def forward(self, x: Tensor, bridge: Tensor) -> Tensor:
        b, c, h, w = bridge.shape
        basis = self.subnet(torch.cat([x, bridge], 1)).view(b, self.num_subspace, h * w)
        basis = basis / (1e-6 + basis.abs().sum(dim=2, keepdim=True))  # (B, K, N): V^T
        gram = basis @ basis.transpose(1, 2)
        coeff = torch.linalg.solve(gram, basis) @ bridge.view(b, c, h * w).transpose(1, 2)  # (V^T V)^-1 V^T bridge
        projected = (basis.transpose(1, 2) @ coeff).transpose(1, 2).reshape(b, c, h, w)
        return self.conv_block(torch.cat([x, projected], 1)) + x


class UNetConvBlock(nn.Module):
    """Conv-(half instance norm)-LReLU-conv-LReLU + 1x1 identity; optional cross-stage feature fusion (csff) and a
    strided 4x4 down-sampling conv (then returns ``(down, full)``)."""

    def __init__(self, in_size: int, out_size: int, downsample: bool, relu_slope: float, use_csff: bool = False,
                 use_HIN: bool = False) -> None:  # noqa: N803 (official argument name)
        super().__init__()
        self.identity = nn.Conv2d(in_size, out_size, 1, 1, 0)
        self.conv_1 = nn.Conv2d(in_size, out_size, 3, padding=1, bias=True)
        self.relu_1 = nn.LeakyReLU(relu_slope, inplace=False)
        self.conv_2 = nn.Conv2d(out_size, out_size, 3, padding=1, bias=True)
        self.relu_2 = nn.LeakyReLU(relu_slope, inplace=False)
        self.use_csff = bool(downsample and use_csff)
        if self.use_csff:
            self.csff_enc = nn.Conv2d(out_size, out_size, 3, 1, 1)
            self.csff_dec = nn.Conv2d(in_size, out_size, 3, 1, 1)
            self.phi = nn.Conv2d(out_size, out_size, 3, 1, 1)
            self.gamma = nn.Conv2d(out_size, out_size, 3, 1, 1)
        self.use_HIN = use_HIN
        if use_HIN:
            self.norm = nn.InstanceNorm2d(out_size // 2, affine=True)
        self.downsample = nn.Conv2d(out_size, out_size, 4, 2, 1, bias=False) if downsample else None

    def forward(self, x: Tensor, enc: Optional[Tensor] = None,
                dec: Optional[Tensor] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        out = self.conv_1(x)
        if self.use_HIN:
            half_a, half_b = torch.chunk(out, 2, dim=1)
            out = torch.cat([self.norm(half_a), half_b], dim=1)
        out = self.relu_2(self.conv_2(self.relu_1(out))) + self.identity(x)
        if enc is not None and dec is not None:
            if not self.use_csff:
                raise ValueError('UNetConvBlock: encoder/decoder features given to a block built without csff')
            skip = F.leaky_relu(self.csff_enc(enc) + self.csff_dec(dec), 0.1)
            out = out * torch.sigmoid(self.phi(skip)) + self.gamma(skip) + out
        if self.downsample is not None:
            return self.downsample(out), out
        return out


class UNetUpBlock(nn.Module):
    """2x transposed-conv up-sampling, concatenation with the skip, and a UNetConvBlock."""

    def __init__(self, in_size: int, out_size: int, relu_slope: float) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_size, out_size, kernel_size=2, stride=2, bias=True)
        self.conv_block = UNetConvBlock(out_size * 2, out_size, False, relu_slope)

    def forward(self, x: Tensor, bridge: Tensor) -> Tensor:
        return self.conv_block(torch.cat([self.up(x), bridge], 1))


class Encoder(nn.Module):
    """``depth`` UNetConvBlocks, channels ``n_feat + scale * level``; all but the last down-sample."""

    def __init__(self, n_feat: int, scale_unetfeats: int, csff: bool, depth: int = 4) -> None:
        super().__init__()
        widths = [n_feat + scale_unetfeats * i for i in range(depth)]
        self.body = nn.ModuleList(
            [UNetConvBlock(widths[i], widths[i + 1], True, 0.2, use_csff=csff, use_HIN=True) for i in range(depth - 1)]
            + [UNetConvBlock(widths[-1], widths[-1], False, 0.2, use_csff=csff, use_HIN=True)])

    def forward(self, x: Tensor, encoder_outs: Optional[List[Tensor]] = None,
                decoder_outs: Optional[List[Tensor]] = None) -> Tuple[List[Tensor], Tensor]:
        skips = []
        for i, block in enumerate(self.body[:-1]):
            if encoder_outs is not None and decoder_outs is not None:
                x, full = block(x, encoder_outs[i], decoder_outs[-i - 1])
            else:
                x, full = block(x)
            skips.append(full)
        return skips, self.body[-1](x)


class Decoder(nn.Module):
    """``depth - 1`` up-blocks, each fed the 3x3-convolved (``skip_conv``) encoder skip of its level."""

    def __init__(self, n_feat: int, scale_unetfeats: int, depth: int = 4) -> None:
        super().__init__()
        widths = [n_feat + scale_unetfeats * i for i in range(depth)]
        self.body = nn.ModuleList([UNetUpBlock(widths[depth - i - 1], widths[depth - i - 2], 0.2)
                                   for i in range(depth - 1)])
        self.skip_conv = nn.ModuleList([nn.Conv2d(widths[depth - i - 1], widths[depth - i - 2], 3, 1, 1)
                                        for i in range(depth - 1)])

    def forward(self, x: Tensor, bridges: List[Tensor]) -> List[Tensor]:
        outs = []
        for i, (up, skip) in enumerate(zip(self.body, self.skip_conv)):
            x = up(x, skip(bridges[-i - 1]))
            outs.append(x)
        return outs


class BasicBlock(nn.Module):
    """One intermediate DGUNet stage (weights shared by all of them): gradient descent (GDM) then the proximal
    U-Net (PMM) fed with the previous stage's features."""

    def __init__(self, n_feat: int, scale_unetfeats: int, kernel_size: int, reduction: int, bias: bool,
                 img_channels: int = 3) -> None:
        super().__init__()
        self.phi_1 = ResBlock(img_channels, 3)
        self.phit_1 = ResBlock(img_channels, 3)
        self.shallow_feat2 = nn.Sequential(conv(img_channels, n_feat, kernel_size, bias),
                                           CAB(n_feat, kernel_size, reduction, bias, nn.PReLU()))
        self.stage2_encoder = Encoder(n_feat, scale_unetfeats, csff=True)
        self.stage2_decoder = Decoder(n_feat, scale_unetfeats)
        self.sam23 = SAM(n_feat, 1, bias, img_channels)
        self.r1 = nn.Parameter(torch.tensor([0.5]))
        self.merge12 = MergeBlock(n_feat, 3, True)

    def forward(self, img: Tensor, prev_img: Tensor, feats: List[Tensor], decoded: List[Tensor],
                sam_feats: Tensor) -> Tuple[Tensor, Tensor, List[Tensor], List[Tensor]]:
        x_img = prev_img - self.r1 * self.phit_1(self.phi_1(prev_img) - img)
        x = self.merge12(self.shallow_feat2(x_img), sam_feats)
        feats, bottom = self.stage2_encoder(x, feats, decoded)
        decoded = self.stage2_decoder(bottom, feats)
        sam_feats, stage_img = self.sam23(decoded[-1], x_img)
        return sam_feats, stage_img, feats, decoded
