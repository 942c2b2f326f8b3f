"""Our CoIC network vs the CoIC authors' published one: training step and forward, same input.

The reference is imported from a local copy of https://github.com/Schizophreni/CoIC (``--reference-dir``: the
folder holding ``models/DRSformer_CoIM.py`` and ``models/BRN_CoIM.py``). Keep that copy outside this repository and
never commit it; its DRSformer needs ``pip install einops``. ``--arch drsformer`` (default) builds both at the
paper's width (dim 48, blocks [4, 6, 6, 8]), ``--arch brn`` both BRNs as published (32 channels, 8 recursions); the
context is 128-d. Both networks receive the same input, code z and L1 target, and are stepped with AdamW; their
steps alternate so a drifting load affects both alike. Reported: parameters, the median training step (forward + L1
+ backward + AdamW) and the median forward (eval, no grad) of each with z ("tran" mode in the reference) and without
("normal" mode), and the speed-up ours / reference.

Example: python benchmarks/reference_step.py --reference-dir /tmp/coic_ref --threads 1     (~8 min on 2 cores)
         python benchmarks/reference_step.py --reference-dir /tmp/coic_ref --threads 1 --arch brn --batch 1
         python benchmarks/reference_step.py --reference-dir /tmp/coic_ref --threads 1 --channels-last \
             --generator-width 4
"""
import argparse
import contextlib
import copy
import importlib
import io
import os.path as osp
import statistics
import sys
from types import SimpleNamespace
from typing import Callable, Dict, List, NamedTuple, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench_common import add_runtime_args, positive_int, setup_runtime, timed
from coic_basicsr.archs.coic_brn_arch import CoICBRN
from coic_basicsr.archs.coic_drsformer_arch import CoICDRSformer

CONTEXT_DIM = 128


class Pair(NamedTuple):
    module: str  # the reference's module under models/
    reference: Callable[[object, str], nn.Module]  # (imported module, device) -> the authors' network
    ours: Callable[..., nn.Module]  # our registered class, built with context_dim and generator_width


PAIRS = {
    'drsformer': Pair('DRSformer_CoIM', lambda module, device: module.DRSformer(opt=None), CoICDRSformer),
    # use_GPU only decides where the reference puts its zero LSTM states
    'brn': Pair('BRN_CoIM', lambda module, device: module.BRN(SimpleNamespace(
        inter_iter=8, dim_in=CONTEXT_DIM, use_GPU=device == 'cuda')), CoICBRN),
}


def load_reference(reference_dir: str, arch: str = 'drsformer', device: str = 'cpu') -> nn.Module:
    """The authors' network for ``arch`` at its published configuration."""
    module_name = PAIRS[arch].module
    if not osp.isfile(osp.join(reference_dir, 'models', f'{module_name}.py')):
        raise SystemExit(f'--reference-dir {reference_dir}: no models/{module_name}.py there (a copy of '
                         'https://github.com/Schizophreni/CoIC is expected)')
    sys.path.insert(0, osp.abspath(reference_dir))
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the reference prints a banner on import
            module = importlib.import_module(f'models.{module_name}')
    except ImportError as err:
        raise SystemExit(f'cannot import the reference model ({err}); its DRSformer needs: pip install einops'
                         ) from err
    finally:
        sys.path.pop(0)
    return PAIRS[arch].reference(module, device)


def make_runners(net: nn.Module, call: Callable[[Optional[Tensor]], Tensor], z: Tensor,
                 gt: Tensor) -> Dict[str, Callable[[], None]]:
    """Training step and forward of ``net`` (through ``call``) with code ``z`` or None; the step's L1 target is
    ``gt``, shared by every network."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step(code: Optional[Tensor]) -> None:
        net.train()
        optimizer.zero_grad(set_to_none=True)
        F.l1_loss(call(code), gt).backward()
        optimizer.step()

    def forward(code: Optional[Tensor]) -> None:
        net.eval()
        with torch.no_grad():
            call(code)

    return {'step z': lambda: step(z), 'step z=None': lambda: step(None), 'forward z': lambda: forward(z),
            'forward z=None': lambda: forward(None)}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--reference-dir', required=True, help='local copy of github.com/Schizophreni/CoIC')
    parser.add_argument('--arch', choices=sorted(PAIRS), default='drsformer', help='which pair of networks')
    add_runtime_args(parser)
    parser.add_argument('--batch', type=positive_int, default=4)
    parser.add_argument('--size', type=positive_int, default=64)
    parser.add_argument('--repeats', type=positive_int, default=3, help='timed runs per measurement and network')
    parser.add_argument('--channels-last', action='store_true',
                        help='also time ours with channels-last weights and input (the top-level channels_last key)')
    parser.add_argument('--generator-width', type=positive_int, default=None,
                        help='also time ours with network_g.generator_width set to this (compact CoI-M generators)')
    args = parser.parse_args(argv)
    setup_runtime(args)
    reference = load_reference(args.reference_dir, args.arch, args.device).to(args.device)
    ours_class = PAIRS[args.arch].ours
    ours = ours_class(context_dim=CONTEXT_DIM).to(args.device)
    x = torch.rand(args.batch, 3, args.size, args.size, device=args.device)
    z = F.normalize(torch.randn(args.batch, CONTEXT_DIM, device=args.device), dim=1)
    gt = torch.rand_like(x)  # one L1 target for every network
    runners = {
        'reference': make_runners(reference, lambda c: reference(x, c, 'normal' if c is None else 'tran'), z, gt),
        'ours': make_runners(ours, lambda c: ours(x, c), z, gt),
    }
    if args.channels_last:
        ours_cl = copy.deepcopy(ours).to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        runners['ours channels-last'] = make_runners(ours_cl, lambda c: ours_cl(x_cl, c), z, gt)
    if args.generator_width:
        compact = ours_class(context_dim=CONTEXT_DIM, generator_width=args.generator_width).to(args.device)
        runners[f'ours width {args.generator_width}'] = make_runners(compact, lambda c: compact(x, c), z, gt)
    nets = [('reference', reference), ('ours', ours)]
    if args.generator_width:
        nets.append((f'ours width {args.generator_width}', compact))
    params = {name: sum(p.numel() for p in net.parameters()) for name, net in nets}
    print(f'arch={args.arch} device={args.device} batch={args.batch} input={args.size}x{args.size} '
          f'threads={torch.get_num_threads()} malloc_cache={args.device == "cpu" and not args.no_malloc_cache} '
          f'(medians of {args.repeats} alternating runs, seconds)')
    print('parameters: ' + '  '.join(f'{name} {count:,}' for name, count in params.items()))
    ours_names = [name for name in runners if name != 'reference']
    header = ''.join(f'{name:>20} {"speed-up":>9}' for name in ours_names)
    print(f'{"measurement":<16} {"reference":>10}{header}')
    for what in ('step z', 'step z=None', 'forward z', 'forward z=None'):
        for name in runners:  # warm-up
            runners[name][what]()
        times: Dict[str, List[float]] = {name: [] for name in runners}
        for _ in range(args.repeats):
            for name in runners:
                times[name].append(timed(runners[name][what], args.device))
        ref = statistics.median(times['reference'])
        cells = ''.join(f'{statistics.median(times[name]):>20.3f} {ref / statistics.median(times[name]):>8.2f}x'
                        for name in ours_names)
        print(f'{what:<16} {ref:>10.3f}{cells}', flush=True)


if __name__ == '__main__':
    main()
