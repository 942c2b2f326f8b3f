"""Kernel gradient of DRSformer's grouped / depthwise convs: the plain op vs the two rewrites of grouped_conv.py.

For each layer shape of CoIC-DRSformer at a 64x64 input (MSFN depthwise and channel-pair convs per level, MEFC
experts), in channels-last memory, times the weight-only ``convolution_backward`` of the plain op and the
``'as_conv'`` and ``'per_offset'`` rewrites, checks both against the plain op, and names the strategy
``weight_grad_strategy`` picks (``plain`` = the op itself). Batch 1 is what each sample of the per-sample path of
``modulation.py`` runs; batch 4 is the plain (z=None) step.

Example: python benchmarks/grouped_conv_weight_grad.py --threads 1      (~1 minute on 2 cores)
"""
import argparse
from typing import List, Optional

import torch
from torch import Tensor
from torch.nn import functional as F

from bench_common import add_runtime_args, median_ms, setup_runtime
from coic_basicsr.archs.grouped_conv import weight_grad_as_conv, weight_grad_per_offset, weight_grad_strategy

# (in channels, input channels per group, map side, kernel, dilation) at a 64x64 input
DRSFORMER_SHAPES = [(254, 1, 64, 5, 1), (254, 2, 64, 5, 1), (510, 1, 64, 5, 1), (510, 2, 64, 5, 1),
                    (510, 1, 32, 5, 1), (510, 2, 32, 5, 1), (1020, 1, 16, 5, 1), (1020, 2, 16, 5, 1),
                    (2042, 1, 8, 5, 1), (2042, 2, 8, 5, 1), (96, 1, 64, 7, 1), (96, 1, 64, 5, 1), (96, 1, 64, 7, 2)]
TINY_SHAPES = [(8, 1, 8, 5, 1), (8, 2, 8, 5, 1), (4, 1, 12, 7, 2)]


def measure(batch: int, channels: int, per_group: int, side: int, kernel: int, dilation: int, repeats: int,
            device: str) -> str:
    groups = channels // per_group
    x = torch.randn(batch, channels, side, side, device=device).contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(batch, groups, side, side, device=device).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(groups, per_group, kernel, kernel, device=device, requires_grad=True)
    pad = dilation * (kernel - 1) // 2
    x_pad = F.pad(x, (pad, pad, pad, pad))

    def plain() -> Tensor:
        return torch.ops.aten.convolution_backward(grad_out, x, weight, None, [1, 1], [pad, pad], [dilation] * 2, False,
                                                   [0, 0], groups, (False, True, False))[1]

    rewrites = {'as_conv': lambda: weight_grad_as_conv(x_pad, grad_out, (dilation, dilation), per_group)}
    if per_group == 1:
        rewrites['per_offset'] = lambda: weight_grad_per_offset(x_pad, grad_out, (dilation, dilation), (kernel, ) * 2)
    expected = plain()
    cells = [f'{median_ms(plain, device, repeats):>8.1f}']
    for name in ('as_conv', 'per_offset'):
        if name not in rewrites:
            cells.append(f'{"-":>10}')
            continue
        error = ((rewrites[name]() - expected).abs().max() / expected.abs().max()).item()
        if error > 1e-4:
            raise RuntimeError(f'{name} differs from the plain op by {error:.1e} (relative)')
        cells.append(f'{median_ms(rewrites[name], device, repeats):>10.1f}')
    chosen = weight_grad_strategy(x, weight, (1, 1), (pad, pad), groups) or 'plain'
    label = f'{batch:>5} {channels:>8} {per_group:>5} {side:>4}x{side:<4} {kernel}x{kernel} d{dilation}'
    return f'{label} {" ".join(cells)}  {chosen}'


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runtime_args(parser)
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 4])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--tiny', action='store_true', help='tiny shapes (a smoke run)')
    args = parser.parse_args(argv)
    setup_runtime(args)
    print(f'device={args.device} threads={torch.get_num_threads()} channels-last; ms per kernel gradient (median of '
          f'{args.repeats})')
    print(f'{"batch":>5} {"channels":>8} {"per_g":>5} {"map":>9} {"kernel":>9} {"plain":>8} {"as_conv":>10} '
          f'{"per_offset":>10}  picked')
    for batch in args.batches:
        for shape in TINY_SHAPES if args.tiny else DRSFORMER_SHAPES:
            print(measure(batch, *shape, args.repeats, args.device), flush=True)


if __name__ == '__main__':
    main()
