"""Overhead of CoI-M modulated convs over plain convs, and the module's path vs five other ways to run it.

Implementations compared (all use the same kernel scales from ``layer.kernel_scale``):
  module      the module's own path (per-sample on the CPU, fold on CUDA, the plain op at batch 1)
  fold        batch folded into groups: one grouped conv of (1, B*C_in, H, W) with B*groups groups
  per-sample  one conv per sample over ``x.split(1)``, outputs concatenated
  slice-loop  the same with ``x[i:i+1]`` slices (whose backward allocates a zero gradient per sample)
  unfold      im2col (F.unfold / F.fold) plus one batched matmul per group
  vmap        torch.func.vmap of F.conv2d / F.conv_transpose2d over (sample, kernel)
``--channels-last`` feeds channels-last inputs (as IDT's token maps arrive at its depthwise convs).

Example: python benchmarks/modulated_conv_overhead.py --device cpu --batch 4 --size 64 --threads 1
"""
import argparse
from typing import Callable, Dict, List

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench_common import add_runtime_args, median_ms, positive_int, setup_runtime
from coic_basicsr.archs import modulation
from coic_basicsr.archs.modulation import ModulatedConv2d, ModulatedConvTranspose2d

CTX = 128


def _scaled(layer: nn.Module, x: Tensor, z: Tensor) -> Tensor:
    return layer.modulated_kernels(x.mean(dim=(2, 3)), z)  # (B, *weight.shape)


def run_unfold(layer: nn.Module, x: Tensor, z: Tensor) -> Tensor:
    b, _, h, w = x.shape
    g, (kh, kw) = layer.groups, layer.kernel_size
    weight = _scaled(layer, x, z)
    if isinstance(layer, nn.ConvTranspose2d):  # (B, C_in, C_out/g, kh, kw) -> per-group (C_out/g*kk, C_in/g)
        w_g = weight.view(b, g, layer.in_channels // g, -1).transpose(2, 3)
        cols = torch.matmul(w_g, x.view(b, g, layer.in_channels // g, h * w))
        out_h = (h - 1) * layer.stride[0] - 2 * layer.padding[0] + layer.dilation[0] * (kh - 1) + 1 + \
            layer.output_padding[0]
        out_w = (w - 1) * layer.stride[1] - 2 * layer.padding[1] + layer.dilation[1] * (kw - 1) + 1 + \
            layer.output_padding[1]
        out = F.fold(cols.view(b, -1, h * w), (out_h, out_w), (kh, kw), layer.dilation, layer.padding, layer.stride)
    else:
        cols = F.unfold(x, (kh, kw), layer.dilation, layer.padding, layer.stride)  # (B, C_in*kk, L)
        out_h = (h + 2 * layer.padding[0] - layer.dilation[0] * (kh - 1) - 1) // layer.stride[0] + 1
        out_w = (w + 2 * layer.padding[1] - layer.dilation[1] * (kw - 1) - 1) // layer.stride[1] + 1
        out = torch.matmul(weight.view(b, g, layer.out_channels // g, -1), cols.view(b, g, -1, cols.shape[-1]))
        out = out.view(b, layer.out_channels, out_h, out_w)
    return out if layer.bias is None else out + layer.bias.view(1, -1, 1, 1)


def run_vmap(layer: nn.Module, x: Tensor, z: Tensor) -> Tensor:
    weight = _scaled(layer, x, z)
    if isinstance(layer, nn.ConvTranspose2d):
        def one(xi: Tensor, wi: Tensor) -> Tensor:
            return F.conv_transpose2d(xi[None], wi, layer.bias, layer.stride, layer.padding, layer.output_padding,
                                      layer.groups, layer.dilation)[0]
    else:
        def one(xi: Tensor, wi: Tensor) -> Tensor:
            return F.conv2d(xi[None], wi, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)[0]
    return torch.func.vmap(one)(x, weight)


def run_loop(layer: nn.Module, x: Tensor, z: Tensor) -> Tensor:
    weight = _scaled(layer, x, z)
    if isinstance(layer, nn.ConvTranspose2d):
        return torch.cat([
            F.conv_transpose2d(x[i:i + 1], weight[i], layer.bias, layer.stride, layer.padding, layer.output_padding,
                               layer.groups, layer.dilation) for i in range(x.shape[0])
        ])
    return torch.cat([
        F.conv2d(x[i:i + 1], weight[i], layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)
        for i in range(x.shape[0])
    ])


def run_forced(fold: bool) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    """The module's forward with the batch strategy forced (fold into groups, or one conv per sample)."""
    def run(layer: nn.Module, x: Tensor, z: Tensor) -> Tensor:
        chosen = modulation._fold_batch_into_groups
        modulation._fold_batch_into_groups = lambda _: fold
        try:
            return layer(x, z)
        finally:
            modulation._fold_batch_into_groups = chosen
    return run


def _time(fn: Callable[[], Tensor], backward: bool, device: str, repeats: int) -> float:
    """Median milliseconds of ``fn`` (and its backward)."""
    def once() -> None:
        out = fn()
        if backward:
            out.square().mean().backward()
    return median_ms(once, device, repeats, warmup=2)


def layers(size: int) -> Dict[str, tuple]:
    """name -> (modulated layer, input shape without batch)."""
    return {
        'dense 3x3 48->48': (ModulatedConv2d(48, 48, 3, padding=1, context_dim=CTX), (48, size, size)),
        'depthwise 3x3 96': (ModulatedConv2d(96, 96, 3, padding=1, groups=96, context_dim=CTX), (96, size, size)),
        'depthwise 3x3 254': (ModulatedConv2d(254, 254, 3, padding=1, groups=254, context_dim=CTX), (254, size, size)),
        'stride-2 3x3 48->96': (ModulatedConv2d(48, 96, 3, stride=2, padding=1, context_dim=CTX), (48, size, size)),
        'transposed 4x4/2 96->48': (ModulatedConvTranspose2d(96, 48, 4, stride=2, padding=1, context_dim=CTX),
                                    (96, size // 2, size // 2)),
    }


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runtime_args(parser)
    parser.add_argument('--batch', type=positive_int, default=4)
    parser.add_argument('--size', type=positive_int, default=64)
    parser.add_argument('--repeats', type=positive_int, default=10)
    parser.add_argument('--channels-last', action='store_true', help='channels-last inputs')
    args = parser.parse_args(argv)
    setup_runtime(args)
    impls = {'module': None, 'fold': run_forced(True), 'per-sample': run_forced(False), 'slice-loop': run_loop,
             'unfold': run_unfold, 'vmap': run_vmap}
    print(f'device={args.device} batch={args.batch} size={args.size} threads={torch.get_num_threads()} '
          f'channels_last={args.channels_last} (median of {args.repeats}; ms)')
    print(f'{"layer":<24} {"impl":<10} {"fwd plain":>9} {"fwd mod":>9} {"ratio":>6} {"f+b plain":>9} {"f+b mod":>9} '
          f'{"ratio":>6}')
    for name, (layer, shape) in layers(args.size).items():
        layer = layer.to(args.device)
        for m in layer.generator:  # non-trivial scales, as after training
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.1)
        memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        x = torch.randn(args.batch, *shape, device=args.device).contiguous(memory_format=memory_format)
        x.requires_grad_(True)
        z = torch.randn(args.batch, CTX, device=args.device)
        reference = layer(x, z)
        for impl, fn in impls.items():
            run = (lambda: layer(x, z)) if fn is None else (lambda fn=fn: fn(layer, x, z))
            err = (run() - reference).abs().max().item()
            if err > 1e-3 * max(1.0, reference.abs().max().item()):
                raise RuntimeError(f'{name} / {impl}: differs from the module by {err}')
            timings = []
            for backward in (False, True):
                plain = _time(lambda: layer(x), backward, args.device, args.repeats)
                timings += [plain, _time(run, backward, args.device, args.repeats)]
            print(f'{name:<24} {impl:<10} {timings[0]:9.2f} {timings[1]:9.2f} {timings[1] / timings[0]:6.2f} '
                  f'{timings[2]:9.2f} {timings[3]:9.2f} {timings[3] / timings[2]:6.2f}')


if __name__ == '__main__':
    main()
