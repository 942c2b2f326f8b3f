"""Stride-1 grouped / depthwise conv on the CPU with faster gradients than the plain op's backward.

Measured on the 2-core CPU box (``benchmarks/grouped_conv_weight_grad.py``, one thread), for grouped convs with one
output channel per group (DRSformer's MSFN and MEFC layers) — every gradient is exact up to float round-off (e.g. at
most 4.7e-10 from the plain op's float32 gradients of a 5x5 depthwise conv), only the computation differs:

- Kernel gradient ``dL/dW[g, j, p, q] = sum_{b,h,w} x_pad[b, g*m+j, h + p*d, w + q*d] * dy[b, g, h, w]``: oneDNN's
  is slow for kernels of 5x5 and more and, in NCHW, for 3x3 too. ``'as_conv'`` computes it per sample as one
  grouped conv whose input is the padded x with (j, g) as (batch, channels) and whose kernel is dy (its output
  positions are the k*k kernel offsets; stride = dilation), and sums over the batch: e.g. 25.6 -> 3.4 ms at batch 1
  and 103.8 -> 14.7 ms at batch 4 for the 510 -> 255 channel-pair 5x5 conv at 64x64 in NCHW (folding the batch into
  that conv's channels instead is as slow as oneDNN). Channels-last 3x3 convs keep the plain op.
- Input gradient: for NCHW (not channels-last) inputs and for dilated convs the plain backward is 2-30x slower than
  ``'as_forward'``, a forward conv of the output gradient with the flipped, per-group transposed kernel (e.g. 38.1
  -> 9.0 ms for the channel-pair conv above, 17.5 -> 0.5 ms for the dilated 7x7 depthwise one). Undilated
  channels-last convs keep the plain backward (as fast).

Depthwise 3x3 convs (fast in oneDNN), CUDA, strides, other group layouts and calls without gradients run the plain
op. Forward values are the plain op's; the rewritten backward is once-differentiable (no double backward).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F
from torch.nn.modules.utils import _pair


def _rewritable(x: Tensor, weight: Tensor, stride, padding, groups: int) -> bool:
    """A stride-1, zero-padded CPU conv with one output channel per group and not a depthwise 3x3 one."""
    out_channels, per_group, kh, kw = weight.shape
    if x.device.type != 'cpu' or x.dim() != 4 or tuple(stride) != (1, 1) or isinstance(padding, str):
        return False
    if groups == 1 or out_channels != groups:
        return False
    return per_group > 1 or min(kh, kw) >= 5  # oneDNN's depthwise 3x3 kernels are fast


def _channels_last(x: Tensor) -> bool:
    """Not contiguous NCHW: channels-last (or another layout, which keeps the plain backward too)."""
    return not x.is_contiguous()


def weight_grad_strategy(x: Tensor, weight: Tensor, stride, padding, groups: int) -> Optional[str]:
    """'as_conv' or None (the plain op's) for the kernel gradient of ``conv2d(x, weight, ...)``."""
    if not weight.requires_grad or not _rewritable(x, weight, stride, padding, groups):
        return None
    return 'as_conv' if min(weight.shape[-2:]) >= 5 or not _channels_last(x) else None


def input_grad_strategy(x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Optional[str]:
    """'as_forward' or None (the plain op's) for the input gradient of ``conv2d(x, weight, ...)``."""
    if not x.requires_grad or not _rewritable(x, weight, stride, padding, groups):
        return None
    if _channels_last(x) and _pair(dilation) == (1, 1):
        return None
    reach = [d * (k - 1) for d, k in zip(_pair(dilation), weight.shape[-2:])]
    return 'as_forward' if all(0 <= p <= r for p, r in zip(_pair(padding), reach)) else None


def input_grad_as_forward(grad_out: Tensor, weight: Tensor, padding: Tuple[int, int], dilation: Tuple[int, int],
                          groups: int) -> Tensor:
    """Input gradient of a stride-1 conv with one output channel per group, as one forward conv of ``grad_out``
    whose kernel for input channel ``g*m + j`` is ``weight[g, j]`` flipped."""
    kh, kw = weight.shape[-2:]
    flipped = weight.reshape(-1, 1, kh, kw).flip(-2, -1)
    reversed_padding = (dilation[0] * (kh - 1) - padding[0], dilation[1] * (kw - 1) - padding[1])
    return F.conv2d(grad_out, flipped, None, 1, reversed_padding, dilation, groups)


def weight_grad_as_conv(x_pad: Tensor, grad_out: Tensor, dilation: Tuple[int, int], per_group: int) -> Tensor:
    """Kernel gradient (groups, per_group, kh, kw) from the padded input and the output gradient, one conv a sample."""
    groups = grad_out.shape[1]
    grad = None
    for x_one, grad_one in zip(x_pad.split(1), grad_out.split(1)):
        inputs = x_one.reshape(groups, per_group, *x_one.shape[-2:]).transpose(0, 1)  # (per_group, groups, Hp, Wp)
        sample = F.conv2d(inputs, grad_one.transpose(0, 1), stride=dilation, groups=groups).transpose(0, 1)
        grad = sample if grad is None else grad.add_(sample)
    return grad


class _GroupedConv2d(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], padding: Tuple[int, int],
                dilation: Tuple[int, int], groups: int, strategies: Tuple[Optional[str], Optional[str]]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv = (padding, dilation, groups, strategies, bias is not None)
        return F.conv2d(x, weight, bias, 1, padding, dilation, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        padding, dilation, groups, (input_strategy, weight_strategy), has_bias = ctx.conv
        need_x, need_w = ctx.needs_input_grad[:2]
        plain_mask = (need_x and input_strategy is None, need_w and weight_strategy is None, False)
        grad_x = grad_w = grad_b = None
        if any(plain_mask):
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(grad_out, x, weight, None, [1, 1], list(padding),
                                                                    list(dilation), False, [0, 0], groups,
                                                                    plain_mask)
        if need_x and input_strategy == 'as_forward':
            grad_x = input_grad_as_forward(grad_out, weight, padding, dilation, groups)
        if need_w and weight_strategy is not None:
            x_pad = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
            grad_w = weight_grad_as_conv(x_pad, grad_out, dilation, weight.shape[1]).to(weight.dtype)
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None


def conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding, dilation, groups: int) -> Tensor:
    """``F.conv2d`` with the faster gradients where they were measured to help (the ``*_grad_strategy`` functions)."""
    strategies = (None, None)
    if torch.is_grad_enabled():
        strategies = (input_grad_strategy(x, weight, stride, padding, dilation, groups),
                      weight_grad_strategy(x, weight, stride, padding, groups))
    if strategies == (None, None):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return _GroupedConv2d.apply(x, weight, bias, _pair(padding), _pair(dilation), groups, strategies)
