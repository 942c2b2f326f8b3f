"""Cost of CoIC per backbone: parameters, training step, forward and peak memory, z vs z=None.

For every CoIC backbone at its paper configuration (CoICRestormer, CoICDRSformer, CoICIDT, CoICBRN, CoICRCDNet,
CoICDGUNet), one training step is forward + L1 loss (summed over the stage outputs of the multi-stage nets, as
their option files' losses are) + backward + AdamW step of the generator (the CoIC encoder and contrastive loss are
not included). ``z=None`` is the plain backbone (stage 1); with ``z`` every CoI-M layer and K/V context is active
(stage 2). The two kinds of steps alternate and the medians are compared, so a machine whose load drifts affects
both alike. The input size the net runs at is reported: IDT pads to a multiple of 128 (its windows are fixed by
img_size 128), Restormer, DRSformer and DGUNet to a multiple of 8, BRN and RCDNet not at all. The forward is timed
in eval mode without gradients. Peak memory of one training step is measured in a fresh process per arch and
mode: on CUDA the allocator's peak above what was allocated before the step, on the CPU (Linux) the growth of the
process's peak resident set (VmHWM) over the step (activations, gradients and optimizer state).

Example: python benchmarks/coic_overhead.py --threads 1 --repeats 5   (~6 minutes on 2 idle cores)
         python benchmarks/coic_overhead.py --threads 1 --repeats 3 --batch 4 --channels-last
         python benchmarks/coic_overhead.py --threads 1 --repeats 5 --generator-width 4
         python benchmarks/coic_overhead.py --device cuda --batch 4 --size 128
"""
import argparse
import multiprocessing
import statistics
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench_common import add_runtime_args, positive_int, setup_runtime, sync, timed
from coic_basicsr.archs.coic_brn_arch import CoICBRN
from coic_basicsr.archs.coic_dgunet_arch import CoICDGUNet
from coic_basicsr.archs.coic_drsformer_arch import CoICDRSformer
from coic_basicsr.archs.coic_idt_arch import CoICIDT
from coic_basicsr.archs.coic_rcdnet_arch import CoICRCDNet
from coic_basicsr.archs.coic_restormer_arch import CoICRestormer
from coic_basicsr.archs.conv_selection import split_modulation_parameters
from coic_basicsr.archs.modulation import ContextEmbedding, KernelScaleGenerator

CONTEXT_DIM = 128
ARCHS: Dict[str, Callable[..., nn.Module]] = {'CoICRestormer': CoICRestormer, 'CoICDRSformer': CoICDRSformer,
                                              'CoICIDT': CoICIDT, 'CoICBRN': CoICBRN, 'CoICRCDNet': CoICRCDNet,
                                              'CoICDGUNet': CoICDGUNet}


def count(params: List[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def l1_over_outputs(out: Union[Tensor, Sequence[Tensor]], gt: Tensor) -> Tensor:
    """L1 of the output, or the sum over the stage outputs of a multi-stage net."""
    return F.l1_loss(out, gt) if isinstance(out, Tensor) else sum(F.l1_loss(o, gt) for o in out)


def make_step(net: nn.Module, x: Tensor) -> Callable[[Optional[Tensor]], None]:
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    gt = torch.rand_like(x)

    def step(code: Optional[Tensor]) -> None:
        net.train()
        optimizer.zero_grad(set_to_none=True)
        l1_over_outputs(net(x, code), gt).backward()
        optimizer.step()

    return step


def make_forward(net: nn.Module, x: Tensor) -> Callable[[Optional[Tensor]], None]:
    def forward(code: Optional[Tensor]) -> None:
        net.eval()
        with torch.no_grad():
            net(x, code)

    return forward


def time_alternating(run: Callable[[Optional[Tensor]], None], z: Tensor, repeats: int,
                     device: str) -> Tuple[float, float, float]:
    """Median seconds of ``run(None)`` and ``run(z)`` (alternating, after one warm-up each), and the median ratio
    of neighbouring runs (robust to a load that drifts during the run)."""
    run(None), run(z)
    plain, modulated = [], []
    for _ in range(repeats):
        plain.append(timed(lambda: run(None), device))
        modulated.append(timed(lambda: run(z), device))
    ratio = statistics.median(m / p for p, m in zip(plain, modulated))
    return statistics.median(plain), statistics.median(modulated), ratio


def build(name: str, batch: int, size: int, device: str, channels_last: bool = False,
          generator_width: Optional[int] = None) -> Tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    net = ARCHS[name](context_dim=CONTEXT_DIM, generator_width=generator_width).to(device)
    with torch.no_grad():  # non-trivial scales and embeddings, as after training (the cost does not depend on it)
        for m in net.modules():
            if isinstance(m, (KernelScaleGenerator, ContextEmbedding)):
                for p in m.parameters():
                    p.normal_(0.0, 0.05)
    x = torch.rand(batch, 3, size, size, device=device)
    z = F.normalize(torch.randn(batch, CONTEXT_DIM, device=device), dim=1)
    if channels_last:  # what the top-level channels_last option does
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    return net, x, z


def peak_step_memory(name: str, batch: int, size: int, device: str, with_z: bool, threads: int,
                     channels_last: bool, generator_width: Optional[int]) -> float:
    """MiB one training step adds to the peak (run in a fresh process: peaks cannot be reset on the CPU)."""
    if threads:
        torch.set_num_threads(threads)
    net, x, z = build(name, batch, size, device, channels_last, generator_width)
    step = make_step(net, x)
    if device == 'cuda':
        sync(device)
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(z if with_z else None)
        sync(device)
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    # ru_maxrss survives exec (a spawned child starts with its parent's peak): reset and read the kernel's VmHWM
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    before = _status_kib('VmRSS')
    step(z if with_z else None)
    return (_status_kib('VmHWM') - before) / 1024


def _status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ':'))


def measure(name: str, batch: int, size: int, repeats: int, device: str, threads: int, memory: bool,
            channels_last: bool, generator_width: Optional[int]) -> dict:
    n_plain = count(list(ARCHS[name](modulate=False).parameters()))
    net, x, z = build(name, batch, size, device, channels_last, generator_width)
    backbone, modulation = split_modulation_parameters(net)
    if count(backbone) != n_plain:
        raise RuntimeError(f'{name}: backbone of the CoIC arch ({count(backbone)}) != plain arch ({n_plain})')
    multiple = getattr(net, 'size_multiple', 1)  # BRN and RCDNet run at any size
    row = dict(name=name, size=-(-size // multiple) * multiple, plain=n_plain, extra=count(modulation))
    row['step'] = time_alternating(make_step(net, x), z, repeats, device)
    row['forward'] = time_alternating(make_forward(net, x), z, repeats, device)
    row['memory'] = (float('nan'), float('nan'))
    if memory:
        del net
        with multiprocessing.get_context('spawn').Pool(1, maxtasksperchild=1) as pool:
            row['memory'] = tuple(
                pool.apply(peak_step_memory,
                           (name, batch, size, device, with_z, threads, channels_last, generator_width))
                for with_z in (False, True))
    return row


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runtime_args(parser)
    parser.add_argument('--batch', type=positive_int, default=None, help='default: 1 on CPU, 4 on CUDA (paper batch)')
    parser.add_argument('--size', type=positive_int, default=None, help='input side; default: 64 on CPU, 128 on CUDA')
    parser.add_argument('--repeats', type=positive_int, default=None,
                        help='timed steps per mode; default: 3 CPU, 10 CUDA')
    parser.add_argument('--archs', nargs='+', choices=list(ARCHS), default=list(ARCHS))
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory processes')
    parser.add_argument('--channels-last', action='store_true', help='channels-last weights and input')
    parser.add_argument('--generator-width', type=positive_int, default=None,
                        help="network_g.generator_width (compact CoI-M generators); default: the CoIC authors' widths")
    args = parser.parse_args(argv)
    setup_runtime(args)
    cuda = args.device == 'cuda'
    batch = args.batch if args.batch is not None else (4 if cuda else 1)
    size = args.size if args.size is not None else (128 if cuda else 64)
    repeats = args.repeats if args.repeats is not None else (10 if cuda else 3)
    memory_format = 'channels_last' if args.channels_last else 'contiguous'
    print(f'device={args.device} batch={batch} input={size}x{size} threads={torch.get_num_threads()} '
          f'context_dim={CONTEXT_DIM} memory_format={memory_format} generator_width={args.generator_width} '
          f'malloc_cache={args.device == "cpu" and not args.no_malloc_cache}\n'
          f'(seconds: medians of {repeats} alternating runs per mode; ratio: median of z / z=None over neighbouring '
          'runs; memory: MiB one training step adds to the peak)')
    rows = []
    for name in args.archs:
        rows.append(measure(name, batch, size, repeats, args.device, args.threads, not args.no_memory,
                            args.channels_last, args.generator_width))
        print(f'  measured {name}', flush=True)
    print(f'{"arch":<14} {"input":>5} {"params plain":>13} {"+CoI-M":>11} {"+%":>5} | {"step None":>9} {"step z":>8} '
          f'{"ratio":>5} | {"fwd None":>8} {"fwd z":>7} {"ratio":>5} | {"mem None":>8} {"mem z":>7} {"ratio":>5}')
    for r in rows:
        (sp, sm, sr), (fp, fm, fr), (mp, mm) = r['step'], r['forward'], r['memory']
        print(f'{r["name"]:<14} {r["size"]:>5} {r["plain"]:>13,} {r["extra"]:>11,} {100 * r["extra"] / r["plain"]:>5.1f}'
              f' | {sp:>9.3f} {sm:>8.3f} {sr:>5.2f} | {fp:>8.3f} {fm:>7.3f} {fr:>5.2f} | {mp:>8.0f} {mm:>7.0f} '
              f'{mm / mp if mp > 0 else float("nan"):>5.2f}')


if __name__ == '__main__':
    main()
