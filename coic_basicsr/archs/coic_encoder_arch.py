"""CoICEncoder: instance-code encoder of CoIC (adapted from AirNet's degradation encoder) and its MoCo update."""
from typing import Tuple

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from coic_basicsr.archs.arch_util import check_at_least


class _DownResBlock(nn.Module):
    """Stride-2 residual block: (conv3x3-BN-LReLU-conv3x3-BN) + (conv1x1-BN) shortcut, then LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, 2, 1, bias=False), nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(negative_slope, inplace=True), nn.Conv2d(out_channels, out_channels, 3, 1, 1),
            nn.BatchNorm2d(out_channels))
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, 2, 0, bias=False), nn.BatchNorm2d(out_channels))
        self.act = nn.LeakyReLU(negative_slope, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


@ARCH_REGISTRY.register()
class CoICEncoder(nn.Module):
    """Encoder of the instance code ``z`` and of the feature map used by the contrastive loss.

    conv3x3 (in_channels -> base_channels), then ``num_blocks`` stride-2 residual blocks doubling the channels
    (32 -> 64 -> 128 -> 256 by default, 1/8 resolution); ``z`` is the L2-normalised MLP (256 -> context_dim ->
    context_dim) of the globally pooled last features, and the last feature map itself (L2-normalised over channels)
    feeds :class:`~coic_basicsr.losses.coic_contrastive_loss.CoICContrastiveLoss`.

    Args:
        in_channels (int): Channels of the input image. Default: 3.
        context_dim (int): Length of the code ``z``. Default: 128.
        base_channels (int): Channels after the first conv; doubled by each block. Default: 32.
        num_blocks (int): Number of stride-2 residual blocks. Default: 3.
        negative_slope (float): LeakyReLU slope. Default: 0.1.
    """

    def __init__(self, in_channels: int = 3, context_dim: int = 128, base_channels: int = 32, num_blocks: int = 3,
                 negative_slope: float = 0.1) -> None:
        super().__init__()
        check_at_least('CoICEncoder', 1, (('in_channels', in_channels), ('context_dim', context_dim),
                                          ('base_channels', base_channels), ('num_blocks', num_blocks)),
                       section='network_enc')
        self.context_dim = int(context_dim)
        self.conv_first = nn.Conv2d(in_channels, base_channels, 3, 1, 1)
        channels = [base_channels * 2**i for i in range(num_blocks + 1)]
        self.blocks = nn.Sequential(*[
            _DownResBlock(c_in, c_out, negative_slope) for c_in, c_out in zip(channels[:-1], channels[1:])
        ])
        self.feat_channels = channels[-1]
        self.mlp = nn.Sequential(
            nn.Linear(channels[-1], context_dim), nn.LeakyReLU(negative_slope, inplace=True),
            nn.Linear(context_dim, context_dim))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Return ``(z, feat)``: z (B, context_dim) unit vectors, feat (B, C, h, w) unit vectors over C."""
        feat = self.blocks(self.conv_first(x))
        z = F.normalize(self.mlp(feat.mean(dim=(2, 3))), dim=1)
        return z, F.normalize(feat, dim=1)


@torch.no_grad()
def momentum_update(key_encoder: nn.Module, query_encoder: nn.Module, momentum: float) -> None:
    """MoCo update ``key = momentum * key + (1 - momentum) * query`` of parameters AND floating buffers.

    Integer buffers (BatchNorm's ``num_batches_tracked``) are copied. Both encoders must have the same structure.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f'momentum_update: momentum must be in [0, 1], got {momentum}')
    pairs = [(dict(key_encoder.named_parameters()), dict(query_encoder.named_parameters())),
             (dict(key_encoder.named_buffers()), dict(query_encoder.named_buffers()))]
    for key_tensors, query_tensors in pairs:
        if key_tensors.keys() != query_tensors.keys():
            diff = sorted(set(key_tensors) ^ set(query_tensors))
            raise ValueError(f'momentum_update: key and query encoders differ in {diff[:5]}')
        for name, key_tensor in key_tensors.items():
            query_tensor = query_tensors[name].detach()
            if key_tensor.is_floating_point():
                key_tensor.mul_(momentum).add_(query_tensor.to(key_tensor.dtype), alpha=1.0 - momentum)
            else:
                key_tensor.copy_(query_tensor)
