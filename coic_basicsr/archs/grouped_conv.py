"""Stride-1 grouped / depthwise conv on the CPU with a faster kernel-gradient computation.

Measured on the 2-core CPU box (``benchmarks/grouped_conv_weight_grad.py``, one thread): oneDNN's weight gradient of
grouped convs with one output channel per group is slow for kernels of 5x5 and more at batch 1 (the per-sample path
of ``modulation.py``: 1.2-49x slower than below, e.g. 39.4 vs 0.8 ms for 2042 channels at 8x8) and for small maps at
any batch. Two exact rewrites of ``dL/dW[g, j, p, q] = sum_{b,h,w} x_pad[b, g*m+j, h + p*d, w + q*d] * dy[b, g, h, w]``
are used instead:

- ``'as_conv'``: one grouped conv whose input is the padded x with (j, g*b) as (batch, channels) and whose kernel is
  dy; its output positions are the k*k kernel offsets (stride = dilation). Used at batch 1.
- ``'per_offset'``: one multiply-and-sum per kernel offset. Used for depthwise convs on maps up to 16x16.

Everything else (CUDA, other shapes, no gradient) runs the plain op. Forward values and input gradients are the
plain op's; the rewritten backward is once-differentiable (no double backward through these convs).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

_MAX_PER_OFFSET_PIXELS = 16 * 16


def weight_grad_strategy(x: Tensor, weight: Tensor, stride, padding, groups: int) -> Optional[str]:
    """'as_conv', 'per_offset' or None (use the plain op) for ``conv2d(x, weight, None, stride, padding, ...)``."""
    out_channels, per_group, kh, kw = weight.shape
    if x.device.type != 'cpu' or x.dim() != 4 or tuple(stride) != (1, 1) or isinstance(padding, str):
        return None
    if groups == 1 or out_channels != groups:
        return None
    if not weight.requires_grad or min(kh, kw) < 5:  # oneDNN's 3x3 kernels are fast
        return None
    if x.shape[0] == 1:
        return 'as_conv'
    if per_group == 1 and x.shape[2] * x.shape[3] <= _MAX_PER_OFFSET_PIXELS:
        return 'per_offset'
    return None


def weight_grad_as_conv(x_pad: Tensor, grad_out: Tensor, dilation: Tuple[int, int], per_group: int) -> Tensor:
    """Kernel gradient (groups, per_group, kh, kw) from the padded input and the output gradient, as one conv."""
    b, channels, hp, wp = x_pad.shape
    groups = grad_out.shape[1]
    inputs = x_pad.reshape(b, groups, per_group, hp, wp).permute(2, 1, 0, 3, 4).reshape(per_group, groups * b, hp, wp)
    kernels = grad_out.transpose(0, 1).contiguous()  # (groups, b, H_out, W_out)
    return F.conv2d(inputs, kernels, stride=dilation, groups=groups).transpose(0, 1)


def weight_grad_per_offset(x_pad: Tensor, grad_out: Tensor, dilation: Tuple[int, int],
                            kernel_size: Tuple[int, int]) -> Tensor:
    """Kernel gradient (C, 1, kh, kw) of a depthwise conv, one multiply-and-sum per kernel offset."""
    h, w = grad_out.shape[-2:]
    grad = x_pad.new_empty(grad_out.shape[1], 1, *kernel_size)
    for p in range(kernel_size[0]):
        for q in range(kernel_size[1]):
            window = x_pad[..., p * dilation[0]:p * dilation[0] + h, q * dilation[1]:q * dilation[1] + w]
            grad[:, 0, p, q] = (window * grad_out).sum((0, 2, 3))
    return grad


class _GroupedConv2d(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], padding: Tuple[int, int],
                dilation: Tuple[int, int], groups: int, strategy: str) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv = (padding, dilation, groups, strategy, bias is not None)
        return F.conv2d(x, weight, bias, 1, padding, dilation, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        padding, dilation, groups, strategy, has_bias = ctx.conv
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad_out, x, weight, None, [1, 1], list(padding),
                                                         list(dilation), False, [0, 0], groups,
                                                         (True, False, False))[0]
        if ctx.needs_input_grad[1]:
            x_pad = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
            grad_w = weight_grad_as_conv(x_pad, grad_out, dilation, weight.shape[1]) if strategy == 'as_conv' \
                else weight_grad_per_offset(x_pad, grad_out, dilation, weight.shape[-2:])
            grad_w = grad_w.to(weight.dtype)
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None


def conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding, dilation, groups: int) -> Tensor:
    """``F.conv2d`` with the faster kernel gradient where it was measured to help (:func:`weight_grad_strategy`)."""
    strategy = weight_grad_strategy(x, weight, stride, padding, groups) if torch.is_grad_enabled() else None
    if strategy is None:
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return _GroupedConv2d.apply(x, weight, bias, tuple(padding), tuple(dilation), groups, strategy)
