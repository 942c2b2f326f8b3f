"""Gradients of DRSformer's grouped / depthwise convs: the plain op's backward vs the rewrites of grouped_conv.py.

For each layer shape of CoIC-DRSformer at a 64x64 input (MSFN depthwise and channel-pair convs per level, MEFC
experts), in channels-last memory (``--nchw``: contiguous NCHW), times the kernel gradient (weight-only
``convolution_backward`` of the plain op vs the ``'as_conv'`` rewrite) and the input gradient
(input-only ``convolution_backward`` vs ``'as_forward'``), checks every rewrite against the plain op, and names what
``weight_grad_strategy`` / ``input_grad_strategy`` pick (``plain`` = the op itself). Batch 1 is what each sample of
the per-sample path of ``modulation.py`` runs; batch 4 is the plain (z=None) step.

Example: python benchmarks/grouped_conv_weight_grad.py --threads 1 [--nchw]     (~1-2 minutes on 2 cores)
"""
import argparse
from typing import Callable, List, Optional

import torch
from torch import Tensor
from torch.nn import functional as F

from bench_common import add_runtime_args, median_ms, positive_int, setup_runtime
from coic_basicsr.archs.grouped_conv import (input_grad_as_forward, input_grad_strategy, weight_grad_as_conv,
                                             weight_grad_strategy)

# (in channels, input channels per group, map side, kernel, dilation) at a 64x64 input
DRSFORMER_SHAPES = [(254, 1, 64, 5, 1), (254, 2, 64, 5, 1), (254, 2, 64, 3, 1), (510, 1, 64, 5, 1),
                    (510, 2, 64, 5, 1), (510, 2, 64, 3, 1), (510, 1, 32, 5, 1), (510, 2, 32, 5, 1), (510, 2, 32, 3, 1),
                    (1020, 1, 16, 5, 1), (1020, 2, 16, 5, 1), (1020, 2, 16, 3, 1), (2042, 1, 8, 5, 1),
                    (2042, 2, 8, 5, 1), (2042, 2, 8, 3, 1), (96, 1, 64, 7, 1), (96, 1, 64, 5, 1), (96, 1, 64, 7, 2)]
TINY_SHAPES = [(8, 1, 8, 5, 1), (8, 2, 8, 5, 1), (4, 1, 12, 7, 2), (8, 2, 8, 3, 1)]


def _checked_ms(fn: Callable[[], Tensor], expected: Tensor, name: str, repeats: int, device: str) -> str:
    error = ((fn() - expected).abs().max() / expected.abs().max()).item()
    if error > 1e-4:
        raise RuntimeError(f'{name} differs from the plain op by {error:.1e} (relative)')
    return f'{median_ms(fn, device, repeats):>10.1f}'


def measure(batch: int, channels: int, per_group: int, side: int, kernel: int, dilation: int, repeats: int,
            device: str, memory_format: torch.memory_format) -> str:
    groups = channels // per_group
    x = torch.randn(batch, channels, side, side, device=device).contiguous(memory_format=memory_format)
    grad_out = torch.randn(batch, groups, side, side, device=device).contiguous(memory_format=memory_format)
    weight = torch.randn(groups, per_group, kernel, kernel, device=device, requires_grad=True)
    pad = dilation * (kernel - 1) // 2
    x_pad = F.pad(x, (pad, pad, pad, pad))

    def plain(which: int) -> Callable[[], Tensor]:
        mask = (which == 0, which == 1, False)
        return lambda: torch.ops.aten.convolution_backward(grad_out, x, weight, None, [1, 1], [pad, pad],
                                                           [dilation] * 2, False, [0, 0], groups, mask)[which]

    def as_conv() -> Tensor:
        return weight_grad_as_conv(x_pad, grad_out, (dilation, dilation), per_group)

    def as_forward() -> Tensor:
        return input_grad_as_forward(grad_out, weight.detach(), (pad, pad), (dilation, dilation), groups)

    cells = [f'{median_ms(plain(1), device, repeats):>8.1f}',
             _checked_ms(as_conv, plain(1)(), 'as_conv', repeats, device),
             f'{weight_grad_strategy(x, weight, (1, 1), (pad, pad), groups) or "plain":>10}',
             f'{median_ms(plain(0), device, repeats):>8.1f}',
             _checked_ms(as_forward, plain(0)(), 'as_forward', repeats, device)]
    picked = input_grad_strategy(x.requires_grad_(), weight, (1, 1), (pad, pad), (dilation, dilation), groups)
    label = f'{batch:>5} {channels:>8} {per_group:>5} {side:>4}x{side:<4} {kernel}x{kernel} d{dilation}'
    return f'{label} {" ".join(cells)} {picked or "plain":>10}'


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runtime_args(parser)
    parser.add_argument('--batches', type=positive_int, nargs='+', default=[1, 4])
    parser.add_argument('--repeats', type=positive_int, default=5)
    parser.add_argument('--tiny', action='store_true', help='tiny shapes (a smoke run)')
    parser.add_argument('--nchw', action='store_true', help='contiguous NCHW tensors (default: channels-last)')
    args = parser.parse_args(argv)
    setup_runtime(args)
    memory_format = torch.contiguous_format if args.nchw else torch.channels_last
    print(f'device={args.device} threads={torch.get_num_threads()} {"NCHW" if args.nchw else "channels-last"}; ms per '
          f'gradient (median of {args.repeats}); kernel gradient: plain, as_conv, picked; input gradient: '
          'plain, as_forward, picked')
    print(f'{"batch":>5} {"channels":>8} {"per_g":>5} {"map":>9} {"kernel":>9} {"plain":>8} {"as_conv":>10} '
          f'{"picked":>10} {"plain":>8} {"as_forward":>10} {"picked":>10}')
    for batch in args.batches:
        for shape in TINY_SHAPES if args.tiny else DRSFORMER_SHAPES:
            print(measure(batch, *shape, args.repeats, args.device, memory_format), flush=True)


if __name__ == '__main__':
    main()
