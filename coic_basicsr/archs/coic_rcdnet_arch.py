"""CoIC-RCDNet: the rain convolutional dictionary network (Wang et al., CVPR 2020) with CoIC modulation.

RCDNet models the rain layer as ``R = sum_k C_k * M_k`` (rain kernels ``C`` convolved with rain maps ``M``) and
unfolds proximal gradient steps that alternately update ``M`` (proxNet ``M``) and the background ``B`` (proxNet
``B``). Parameter names follow the CoIC code's RCDNet (``m_step``, ``b_step``, ``c0``, ``c``, ``cz``, ``tau``,
``proxNet_M_S``, ``proxNet_B_S``, ``proxNet_B_0``, ``proxNet_B_L``) so its checkpoints convert by renaming only.
"""
import functools
from os import path as osp
from typing import List, Optional

import torch
from scipy.io import loadmat
from torch import Tensor, nn
from torch.nn import functional as F

from coic_basicsr.archs.arch_util import (bad_option, check_at_least, check_choice, check_context, check_flag,
                                          option_key)
from coic_basicsr.archs.conv_selection import modulate_convs
from coic_basicsr.archs.modulation import GATE_LAYOUTS, ModulationContext
from coic_basicsr.utils.option_values import check_number
from basicsr.utils.registry import ARCH_REGISTRY

#: Initial rain kernels of the authors (MATLAB array ``C9``, shape (3, 32, 9, 9)), shipped as package data.
INIT_KERNEL_PATH = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'data', 'assets',
                            'rcdnet_init_kernel.mat')


@functools.lru_cache(maxsize=1)
def _load_init_kernel(path: str) -> Tensor:
    if not osp.isfile(path):
        raise FileNotFoundError(f"RCDNet initial rain kernel file '{path}' does not exist")
    return torch.from_numpy(loadmat(path)['C9']).float()


def init_rain_kernel(num_map: int, channels: int = 3, path: str = INIT_KERNEL_PATH) -> Tensor:
    """The first ``num_map`` of the authors' initial rain kernels, shape (channels, num_map, 9, 9)."""
    kernel = _load_init_kernel(path)
    shape = f"the initial rain kernels in '{path}' have shape {tuple(kernel.shape)}"
    if kernel.shape[0] != channels:
        raise bad_option('CoICRCDNet', 'in_channels', f'{kernel.shape[0]}', channels, shape)
    if num_map > kernel.shape[1]:
        raise bad_option('CoICRCDNet', 'num_map', f'at most {kernel.shape[1]}', num_map, shape)
    return kernel[:, :num_map].clone()


class ResBlockBN(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN (keys conv1, bn1, conv2, bn2); the skip is added by the proximal net."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))


class ProxNet(nn.Module):
    """``num_block`` residual units ``x = relu(x + block(x))``; the rain-map version (``sparse=True``) ends with a
    learned soft threshold ``relu(x - tau)`` per map."""

    def __init__(self, channels: int, num_block: int, sparse: bool) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[ResBlockBN(channels) for _ in range(num_block)])
        self.tau = nn.Parameter(torch.full((1, channels, 1, 1), 0.5)) if sparse else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.layer:
            x = torch.relu(x + block(x))
        return x if self.tau is None else torch.relu(x - self.tau)


@ARCH_REGISTRY.register()
class CoICRCDNet(nn.Module):
    """RCDNet with CoI-M on the 3x3 convs of every proximal net; ``z=None`` is exactly the plain RCDNet.

    The network works on intensities in [0, ``img_range``] like the authors' code (their weights expect 255): the
    input is multiplied by ``img_range`` and every output divided by it. ``forward`` returns the list of background
    estimates ``[B0, B1, ..., B_S, B]`` (``num_stage + 2`` tensors, final last) for the multi-stage loss; the
    rain-kernel convolutions are functional and not modulated.

    YAML keys (``network_g``):
        in_channels (int): image channels (the shipped rain kernels need 3). Default: 3.
        num_map (int): rain maps M, at most 32 (the first num_map shipped kernels initialise C). Default: 32.
        num_channel (int): extra channels Z carried with the background. Default: 32.
        num_block (int): residual units per proximal net. Default: 4.
        num_stage (int): unfolded stages S. Default: 17.
        img_range (float): intensity scale the network computes in. Default: 255.
        context_dim (int): dimension of the instance context z. Default: 128.
        modulate (bool): make the proximal convs CoI-M modulated; False gives the plain RCDNet. Default: True.
        gate_layout (str): 'paper' (gate sigmoid(a_out[o] + a_in[i])) or 'official' (the CoIC authors' memory
            layout, set by ``basicsr convert-official`` so their checkpoints compute exactly what they did).
            Default: 'paper'.
        generator_width (int | None): upper bound on both hidden widths of every CoI-M kernel-scale generator
            (fewer parameters, docs/benchmarks.md); null keeps the CoIC authors' widths (C_out, or C_out / 16 for
            grouped convs, then 16), which their checkpoints need. Default: null.
    """

    def __init__(self, in_channels: int = 3, num_map: int = 32, num_channel: int = 32, num_block: int = 4,
                 num_stage: int = 17, img_range: float = 255., context_dim: int = 128, modulate: bool = True,
                 gate_layout: str = 'paper', generator_width: Optional[int] = None) -> None:
        super().__init__()
        check_at_least('CoICRCDNet', 1, (('in_channels', in_channels), ('num_map', num_map),
                                         ('num_channel', num_channel), ('num_block', num_block),
                                         ('num_stage', num_stage), ('context_dim', context_dim)))
        check_flag('CoICRCDNet', 'modulate', modulate)
        check_choice('CoICRCDNet', 'gate_layout', gate_layout, GATE_LAYOUTS)
        check_number(option_key('img_range'), img_range, 'a positive number for CoICRCDNet', lambda v: v > 0)
        self.in_channels, self.num_stage, self.img_range = int(in_channels), int(num_stage), float(img_range)
        self.context_dim, self.modulate = int(context_dim), modulate
        kernel = init_rain_kernel(int(num_map), self.in_channels)
        self.m_step = nn.Parameter(torch.ones(self.num_stage - 1, 1))
        self.b_step = nn.Parameter(torch.full((self.num_stage, 1), 5.0))
        self.c0 = nn.Parameter(kernel.clone())
        self.c = nn.Parameter(kernel.clone())
        self.cz = nn.Parameter(torch.full((num_channel, self.in_channels, 3, 3), 1.0 / 9))
        self.tau = nn.Parameter(torch.ones(1))
        bz_channels = num_channel + self.in_channels
        self.proxNet_M_S = nn.Sequential(*[ProxNet(num_map, num_block, True) for _ in range(self.num_stage)])
        self.proxNet_B_S = nn.Sequential(*[ProxNet(bz_channels, num_block, False) for _ in range(self.num_stage)])
        self.proxNet_B_0 = ProxNet(bz_channels, num_block, False)
        self.proxNet_B_L = ProxNet(bz_channels, num_block, False)
        self.context = ModulationContext(generator_width, option_key('generator_width'))
        if self.modulate:
            modulate_convs(self, self.context, self.context_dim, gate_layout=gate_layout)

    def forward(self, x: Tensor, z: Optional[Tensor] = None) -> List[Tensor]:
        """Derain ``x`` (B, in_channels, H, W) in [0, 1]; returns ``[B0, B1, ..., B_S, B]`` in [0, 1] (final last)."""
        check_context(self, x, z)
        if x.shape[1] != self.in_channels:
            raise ValueError(f'CoICRCDNet: expected {self.in_channels} input channels, got {x.shape[1]}')
        with self.context.use(z):
            stages = self._unfold(x * self.img_range)
        return [b / self.img_range for b in stages]

    def _unfold(self, x: Tensor) -> List[Tensor]:
        n = self.in_channels
        c, c0 = self.c / 10, self.c0 / 10  # /10 slows the kernels' updates down, as in RCDNet
        bz = self.proxNet_B_0(torch.cat([x, F.conv2d(x, self.cz, padding=1)], 1))
        b0, zfeat = bz[:, :n], bz[:, n:]
        # stage 1: M from the sparse residual of the initial background, then B
        m = self.proxNet_M_S[0](F.conv_transpose2d(torch.relu(x - b0 - self.tau), c0, padding=4))
        rain = F.conv2d(m, c, padding=4)
        b = b0
        stages = [b0]
        for s in range(self.num_stage):
            if s > 0:  # gradient step on M for ||x - B - C * M||^2, then its proximal net
                grad_m = F.conv_transpose2d(rain - (x - b), c, padding=4)
                m = self.proxNet_M_S[s](m - self.m_step[s - 1] / 10 * grad_m)
                rain = F.conv2d(m, c, padding=4)
            step = self.b_step[s] / 10
            bz = self.proxNet_B_S[s](torch.cat([(1 - step) * b + step * (x - rain), zfeat], 1))
            b, zfeat = bz[:, :n], bz[:, n:]
            stages.append(b)
        stages.append(self.proxNet_B_L(bz)[:, :n])
        return stages
