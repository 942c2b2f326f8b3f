"""CoIC-BRN: the bilateral recurrent network (Ren et al., TIP 2020) with CoIC instance-level modulation.

BRN unfolds two coupled recurrent ResNets: a rain branch estimating the rain layer and a background branch
estimating the clean image. Each stage feeds the previous estimates back in, and the two convolutional LSTMs see
each other's hidden state (the "bilateral" LSTM). Module names follow the CoIC code's BRN
(``conv0.conv``, ``res_conv1.conv1``, ...); ``basicsr convert-official`` maps the original BRN keys onto them.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from coic_basicsr.archs.arch_util import check_at_least, check_choice, check_context, check_flag, option_key
from coic_basicsr.archs.conv_selection import modulate_convs
from coic_basicsr.archs.modulation import GATE_LAYOUTS, ModulationContext
from basicsr.utils.registry import ARCH_REGISTRY

def _identity(t: Tensor) -> Tensor:
    return t


_ACTIVATIONS = {'relu': torch.relu, 'sigmoid': torch.sigmoid, 'tanh': torch.tanh, None: _identity}


class ConvUnit(nn.Module):
    """3x3 conv followed by an activation ('relu', 'sigmoid', 'tanh' or None); key ``conv``."""

    def __init__(self, in_channels: int, out_channels: int, activation: Optional[str]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.act = _ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x))


class ResUnit(nn.Module):
    """relu(conv2(relu(conv1(x)))); the skip connection is added by the caller (as in BRN)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))))


@ARCH_REGISTRY.register()
class CoICBRN(nn.Module):
    """BRN with CoI-M on every 3x3 conv (all of BRN's convs); ``z=None`` is exactly the plain BRN.

    Each recursion: the rain branch takes ``[input, r]``, updates its LSTM from ``[feat, h_r, h]`` and refines with
    ``num_rain_res_blocks`` residual units into a rain estimate ``r``; the background branch takes
    ``[input, x, r]``, updates its LSTM from ``[feat, h, h_r]`` and refines with ``num_res_blocks`` units into the
    background estimate ``x`` (predicted directly, no global residual). The output is ``x`` of the last recursion.

    YAML keys (``network_g``):
        in_channels (int): image channels. Default: 3.
        channels (int): feature channels of both branches and LSTMs. Default: 32.
        num_res_blocks (int): residual units of the background branch. Default: 5.
        num_rain_res_blocks (int): residual units of the rain branch. Default: 3.
        iterations (int): recursions (stages); the published weights are tested with 8. Default: 8.
        context_dim (int): dimension of the instance context z. Default: 128.
        modulate (bool): make the convs CoI-M modulated; False gives the plain BRN (z must be None). Default: True.
        gate_layout (str): 'paper' (gate sigmoid(a_out[o] + a_in[i])) or 'official' (the CoIC authors' memory
            layout, set by ``basicsr convert-official`` so their checkpoints compute exactly what they did).
            Default: 'paper'.
        generator_width (int | None): upper bound on both hidden widths of every CoI-M kernel-scale generator
            (fewer parameters, docs/benchmarks.md); null keeps the CoIC authors' widths (C_out, or C_out / 16 for
            grouped convs, then 16), which their checkpoints need. Default: null.
    """

    def __init__(self, in_channels: int = 3, channels: int = 32, num_res_blocks: int = 5, num_rain_res_blocks: int = 3,
                 iterations: int = 8, context_dim: int = 128, modulate: bool = True,
                 gate_layout: str = 'paper', generator_width: Optional[int] = None) -> None:
        super().__init__()
        check_at_least('CoICBRN', 1, (('in_channels', in_channels), ('channels', channels),
                                      ('num_res_blocks', num_res_blocks), ('num_rain_res_blocks', num_rain_res_blocks),
                                      ('iterations', iterations), ('context_dim', context_dim)))
        check_flag('CoICBRN', 'modulate', modulate)
        check_choice('CoICBRN', 'gate_layout', gate_layout, GATE_LAYOUTS)
        self.channels, self.iterations = int(channels), int(iterations)
        self.num_res_blocks, self.num_rain_res_blocks = int(num_res_blocks), int(num_rain_res_blocks)
        self.context_dim, self.modulate = int(context_dim), modulate
        c = self.channels
        # background branch
        self.conv0 = ConvUnit(3 * in_channels, c, 'relu')
        for k in range(1, self.num_res_blocks + 1):
            setattr(self, f'res_conv{k}', ResUnit(c))
        self._add_gates('', c)
        self.conv = ConvUnit(c, in_channels, None)
        # rain branch
        self.conv0_r = ConvUnit(2 * in_channels, c, 'relu')
        for k in range(1, self.num_rain_res_blocks + 1):
            setattr(self, f'res_conv{k}_r', ResUnit(c))
        self._add_gates('_r', c)
        self.conv_r = ConvUnit(c, in_channels, None)
        self.context = ModulationContext(generator_width, option_key('generator_width'))
        if self.modulate:
            modulate_convs(self, self.context, self.context_dim, gate_layout=gate_layout)

    def _add_gates(self, suffix: str, c: int) -> None:
        for gate, act in (('i', 'sigmoid'), ('f', 'sigmoid'), ('g', 'tanh'), ('o', 'sigmoid')):
            setattr(self, f'conv_{gate}{suffix}', ConvUnit(3 * c, c, act))

    def _lstm(self, feat: Tensor, cell: Tensor, suffix: str) -> Tuple[Tensor, Tensor]:
        i, f = getattr(self, f'conv_i{suffix}')(feat), getattr(self, f'conv_f{suffix}')(feat)
        g, o = getattr(self, f'conv_g{suffix}')(feat), getattr(self, f'conv_o{suffix}')(feat)
        cell = f * cell + i * g
        return o * torch.tanh(cell), cell

    def _residuals(self, h: Tensor, count: int, suffix: str) -> Tensor:
        out = h
        for k in range(1, count + 1):
            out = torch.relu(getattr(self, f'res_conv{k}{suffix}')(out) + out)
        return out

    def forward(self, x: Tensor, z: Optional[Tensor] = None) -> Tensor:
        """Derain ``x`` (B, in_channels, H, W), conditioned on the context ``z`` (B, context_dim) if given."""
        check_context(self, x, z)
        inp = x
        b, _, height, width = inp.shape
        h, c, h_r, c_r = (inp.new_zeros(b, self.channels, height, width) for _ in range(4))
        bg, rain = inp, inp
        with self.context.use(z):
            for _ in range(self.iterations):
                feat_r = torch.cat([self.conv0_r(torch.cat([inp, rain], 1)), h_r, h], 1)
                h_r, c_r = self._lstm(feat_r, c_r, '_r')
                rain = self.conv_r(self._residuals(h_r, self.num_rain_res_blocks, '_r'))
                feat = torch.cat([self.conv0(torch.cat([inp, bg, rain], 1)), h, h_r], 1)
                h, c = self._lstm(feat, c, '')
                bg = self.conv(self._residuals(h, self.num_res_blocks, ''))
        return bg
