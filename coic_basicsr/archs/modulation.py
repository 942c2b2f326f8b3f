"""Context-based instance-specific modulation (CoI-M): the one implementation every CoIC arch reuses.

A modulated conv rescales its kernel per sample: an MLP (:class:`KernelScaleGenerator`) maps the instance code
``z`` concatenated with the global average of the layer input to ``a = [a_out | a_in | a_k]`` and the kernel used
for that sample is ``W * s`` with ``s[o, i, :] = k*k * softmax(sigmoid(a_out[o] + a_in[i]) * a_k)``.

Design choice: the last Linear of every generator (and of every :class:`ContextEmbedding`) is zero-initialised, so
``s == 1`` (embedding ``== 0``) exactly at construction: switching modulation on in a trained backbone starts from
the plain network's function. Without a code (``z`` None and an empty context) every layer calls its parent forward.

How the per-sample kernels are applied was chosen by measurement (``benchmarks/modulated_conv_overhead.py``): a
batch of one runs the plain conv op with the scaled kernel; on CUDA the batch is folded into the groups of one conv
call; on the CPU each sample runs its own conv (``split``/``cat``, whose backward does not allocate a zero gradient
per sample) — folding forces a copy to NCHW and a slow grouped path, 2-5x slower for channels-last inputs. Convs
with zero padding go through :func:`grouped_conv.conv2d` (faster CPU gradients for grouped kernels).

The code reaches the layers through a shared :class:`ModulationContext` (thread-local, so DataParallel replicas
each see their own chunk). Recomputation by activation checkpointing happens outside ``context.use`` and would
see no code: do not combine it with modulated layers.
"""
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.modules.utils import _pair

from coic_basicsr.archs import grouped_conv
from coic_basicsr.archs.modulation_core import (ContextEmbedding, KernelScaleGenerator, ModulationContext,
                                                ScaledKernels, WithChannelMeans, generator_widths,
                                                kernel_scale_from_logits, keep_modulation_if_missing, resolve_z)

__all__ = ['GATE_LAYOUTS', 'ContextEmbedding', 'KernelScaleGenerator', 'ModulatedConv2d', 'ModulatedConvTranspose2d',
           'ModulationContext']  # which convs are modulated: conv_selection


GATE_LAYOUTS = ('paper', 'official')  # see _ModulatedMixin.scale_from_means


def _fold_batch_into_groups(x: Tensor) -> bool:
    """True: one grouped conv call for the whole batch (CUDA); False: one conv per sample (CPU)."""
    return x.is_cuda


class _ModulatedMixin:
    """Shared setup of the modulated conv classes (weight layout rows x cols = weight dims 0 x 1)."""

    def _setup(self, context: Optional[ModulationContext], context_dim: int) -> None:
        if context is not None and not isinstance(context, ModulationContext):
            raise TypeError(f'{type(self).__name__}: context must be a ModulationContext, got {type(context)}')
        self.context = context
        self.context_dim = int(context_dim)
        rows, cols = self.weight.shape[:2]
        kk = self.kernel_size[0] * self.kernel_size[1]
        widths = generator_widths(self.out_channels, self.groups, None if context is None else context.generator_width)
        self.generator = KernelScaleGenerator(self.context_dim + self.in_channels, widths[0], rows + cols + kk,
                                              widths[1]).to(device=self.weight.device, dtype=self.weight.dtype)
        self._register_load_state_dict_pre_hook(keep_modulation_if_missing, with_module=True)
        self.gate_layout = 'paper'  # or 'official': see scale_from_means

    def kernel_scale(self, x: Tensor, z: Tensor) -> Tensor:
        """Per-sample scale of the kernel in the weight layout: (B, C_out, C_in // groups, kh, kw) for a conv,
        (B, C_in, C_out // groups, kh, kw) for a transposed conv."""
        return self.scale_from_means(x.mean(dim=(2, 3)), z)

    def scale_from_means(self, means: Tensor, z: Tensor) -> Tensor:
        """:meth:`kernel_scale` from the (B, C_in) channel means of the input."""
        a = self._generator_output(means, z)
        rows, cols = self.weight.shape[:2]
        if self.gate_layout == 'official':
            # The CoIC authors' code (``CoIM.py``): its first output block has ``rows`` entries, the second ``cols``,
            # and the (cols, rows) gate is re-read in memory order as (rows, cols). Same as the paper layout for
            # square layers up to the order of the two blocks; for non-square layers only this reproduces their
            # checkpoints.
            scale = kernel_scale_from_logits(a[:, rows:rows + cols], a[:, :rows], a[:, rows + cols:], self.kernel_size)
            return scale.reshape(a.shape[0], rows, cols, *self.kernel_size)
        return kernel_scale_from_logits(*self._paper_logits(a), self.kernel_size)

    def _generator_output(self, means: Tensor, z: Tensor) -> Tensor:
        """``[z | GAP(x)] -> a`` (B, rows + cols + kh * kw)."""
        return self.generator(torch.cat([z.to(means.dtype), means], dim=1))

    def _paper_logits(self, a: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Generator output ``[a_out | a_in | a_k]`` -> (weight-row logits, weight-column logits, tap logits)."""
        rows, cols = self.weight.shape[:2]
        n_out = cols if self.transposed else rows
        a_out, a_in, a_k = a[:, :n_out], a[:, n_out:rows + cols], a[:, rows + cols:]
        return (a_in, a_out, a_k) if self.transposed else (a_out, a_in, a_k)

    def modulated_kernels(self, means: Tensor, z: Tensor) -> Tensor:
        """(B, *weight.shape) per-sample kernels ``W * s`` from the input's (B, C_in) channel means."""
        if self.gate_layout == 'official':
            return self.weight.unsqueeze(0) * self.scale_from_means(means, z).to(self.weight.dtype)
        return ScaledKernels.apply(self.weight, *self._paper_logits(self._generator_output(means, z)), self.kernel_size)

    def _modulated(self, x: Tensor, z: Tensor, conv: Callable[..., Tensor]) -> Tensor:
        """``conv(input, kernels, bias, groups)`` applied with each sample's own kernel (see the module docstring)."""
        x, means = WithChannelMeans.apply(x)
        kernels = self.modulated_kernels(means, z)
        b = x.shape[0]
        if b == 1:
            return conv(x, kernels[0], self.bias, self.groups)
        if not _fold_batch_into_groups(x):
            return torch.cat([conv(xi, ki, self.bias, self.groups) for xi, ki in zip(x.split(1), kernels.unbind(0))])
        bias = None if self.bias is None else self.bias.repeat(b)
        out = conv(x.reshape(1, -1, *x.shape[-2:]), kernels.flatten(0, 1), bias, b * self.groups)
        return out.view(b, self.out_channels, *out.shape[-2:])

    @classmethod
    def _from(cls, conv: nn.Module, base: type, context: ModulationContext, context_dim: int, **extra) -> nn.Module:
        if not isinstance(conv, base):
            raise TypeError(f'{cls.__name__}.from_conv expects an {base.__name__}, got {type(conv).__name__}')
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, **extra,
                  context=context, context_dim=context_dim, device=conv.weight.device, dtype=conv.weight.dtype)
        new.weight = conv.weight  # shared Parameters: optimiser state and EMA keep working
        new.bias = conv.bias
        new.train(conv.training)
        return new


class ModulatedConv2d(_ModulatedMixin, nn.Conv2d):
    """nn.Conv2d whose kernel is rescaled per sample from the instance code ``z`` (plain conv without a code)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = 'zeros', *,
                 context: Optional[ModulationContext] = None, context_dim: int = 128, device=None, dtype=None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype)
        self._setup(context, context_dim)

    def forward(self, x: Tensor, z: Optional[Tensor] = None) -> Tensor:
        z = resolve_z(self, x, z)
        if self.padding_mode == 'zeros':
            if z is None:
                return grouped_conv.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                           self.groups)
            return self._modulated(x, z, lambda inp, kernel, bias, groups: grouped_conv.conv2d(
                inp, kernel, bias, self.stride, self.padding, self.dilation, groups))
        if z is None:
            return super().forward(x)
        return self._modulated(x, z, lambda inp, kernel, bias, groups: F.conv2d(
            F.pad(inp, self._reversed_padding_repeated_twice, mode=self.padding_mode), kernel, bias, self.stride,
            _pair(0), self.dilation, groups))

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, context: ModulationContext, context_dim: int = 128) -> 'ModulatedConv2d':
        """Modulated twin of ``conv`` that SHARES its weight and bias Parameters."""
        return cls._from(conv, nn.Conv2d, context, context_dim, dilation=conv.dilation, groups=conv.groups,
                         bias=conv.bias is not None, padding_mode=conv.padding_mode)


class ModulatedConvTranspose2d(_ModulatedMixin, nn.ConvTranspose2d):
    """nn.ConvTranspose2d counterpart of :class:`ModulatedConv2d` (weight layout (C_in, C_out / groups, kh, kw))."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0,
                 groups: int = 1, bias: bool = True, dilation=1, padding_mode: str = 'zeros', *,
                 context: Optional[ModulationContext] = None, context_dim: int = 128, device=None, dtype=None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
                         dilation, padding_mode, device=device, dtype=dtype)
        self._setup(context, context_dim)

    def forward(self, x: Tensor, z: Optional[Tensor] = None, output_size: Optional[List[int]] = None) -> Tensor:
        if z is not None and not isinstance(z, Tensor):  # nn.ConvTranspose2d's positional output_size
            z, output_size = None, z
        z = resolve_z(self, x, z)
        if z is None:
            return super().forward(x, output_size)
        output_padding = self._output_padding(x, output_size, self.stride, self.padding, self.kernel_size, 2,
                                              self.dilation)
        return self._modulated(x, z, lambda inp, kernel, bias, groups: F.conv_transpose2d(
            inp, kernel, bias, self.stride, self.padding, output_padding, groups, self.dilation))

    @classmethod
    def from_conv(cls, conv: nn.ConvTranspose2d, context: ModulationContext,
                  context_dim: int = 128) -> 'ModulatedConvTranspose2d':
        """Modulated twin of ``conv`` that SHARES its weight and bias Parameters."""
        return cls._from(conv, nn.ConvTranspose2d, context, context_dim, output_padding=conv.output_padding,
                         groups=conv.groups, bias=conv.bias is not None, dilation=conv.dilation,
                         padding_mode=conv.padding_mode)
