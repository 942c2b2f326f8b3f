"""Cost of CoIC in the Transformer backbones: parameters plain vs CoIC and training-step time with z vs z=None.

For CoICRestormer, CoICDRSformer and CoICIDT at the paper's width, one training step is forward + L1 loss +
backward + AdamW step of the generator (the CoIC encoder and contrastive loss are not included). ``z=None`` is the
plain backbone (stage 1); with ``z`` every CoI-M layer and K/V context is active (stage 2). The two kinds of steps
alternate and the medians are compared, so a machine whose load drifts affects both alike. IDT pads inputs to a
multiple of 128 (its windows are fixed by img_size 128), so its effective input size is reported.

Example: python benchmarks/coic_overhead.py --device cpu        (~2 minutes on 2 idle cores)
         python benchmarks/coic_overhead.py --device cuda --batch 4 --size 128
"""
import argparse
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from coic_basicsr.archs.coic_drsformer_arch import CoICDRSformer
from coic_basicsr.archs.coic_idt_arch import CoICIDT
from coic_basicsr.archs.coic_restormer_arch import CoICRestormer
from coic_basicsr.archs.modulation import ContextEmbedding, KernelScaleGenerator, split_modulation_parameters

CONTEXT_DIM = 128
ARCHS: Dict[str, Callable[..., nn.Module]] = {'CoICRestormer': CoICRestormer, 'CoICDRSformer': CoICDRSformer,
                                              'CoICIDT': CoICIDT}


def count(params: List[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def time_steps(net: nn.Module, x: Tensor, z: Tensor, repeats: int, device: str) -> Tuple[float, float, float]:
    """Median seconds of a training step with z=None and with z (alternating, after one warm-up step each), and the
    median ratio of neighbouring steps (robust to a load that drifts during the run)."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    gt = torch.rand_like(x)

    def step(code: Optional[Tensor]) -> float:
        _sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.l1_loss(net(x, code), gt).backward()
        optimizer.step()
        _sync(device)
        return time.perf_counter() - start

    step(None), step(z)
    plain, modulated = [], []
    for _ in range(repeats):
        plain.append(step(None))
        modulated.append(step(z))
    ratio = statistics.median(m / p for p, m in zip(plain, modulated))
    return statistics.median(plain), statistics.median(modulated), ratio


def measure(name: str, batch: int, size: int, repeats: int, device: str) -> dict:
    cls = ARCHS[name]
    n_plain = count(list(cls(modulate=False).parameters()))
    net = cls(context_dim=CONTEXT_DIM).to(device).train()
    backbone, modulation = split_modulation_parameters(net)
    if count(backbone) != n_plain:
        raise RuntimeError(f'{name}: backbone of the CoIC arch ({count(backbone)}) != plain arch ({n_plain})')
    with torch.no_grad():  # non-trivial scales and embeddings, as after training (the cost does not depend on it)
        for m in net.modules():
            if isinstance(m, (KernelScaleGenerator, ContextEmbedding)):
                for p in m.parameters():
                    p.normal_(0.0, 0.05)
    x = torch.rand(batch, 3, size, size, device=device)
    z = F.normalize(torch.randn(batch, CONTEXT_DIM, device=device), dim=1)
    t_plain, t_mod, ratio = time_steps(net, x, z, repeats, device)
    multiple = getattr(net, 'size_multiple', 8)
    return dict(name=name, size=-(-size // multiple) * multiple, plain=n_plain, extra=count(modulation),
                t_plain=t_plain, t_mod=t_mod, ratio=ratio)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--batch', type=int, default=None, help='default: 1 on CPU, 4 on CUDA (paper batch)')
    parser.add_argument('--size', type=int, default=None, help='input side; default: 64 on CPU, 128 on CUDA')
    parser.add_argument('--repeats', type=int, default=None, help='timed steps per mode; default: 3 CPU, 10 CUDA')
    parser.add_argument('--threads', type=int, default=0, help='CPU intra-op threads (0: leave as is)')
    parser.add_argument('--archs', nargs='+', choices=list(ARCHS), default=list(ARCHS))
    args = parser.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device available')
    cuda = args.device == 'cuda'
    batch = args.batch or (4 if cuda else 1)
    size = args.size or (128 if cuda else 64)
    repeats = args.repeats or (10 if cuda else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f'device={args.device} batch={batch} input={size}x{size} threads={torch.get_num_threads()} '
          f'context_dim={CONTEXT_DIM}\n(medians of {repeats} alternating steps per mode; ratio: median of z / z=None '
          'over neighbouring steps)')
    header = (f'{"arch":<14} {"input":>7} {"params plain":>13} {"+CoI-M params":>14} {"+%":>6} '
              f'{"step z=None":>12} {"step z":>9} {"ratio":>6}')
    rows = []
    for name in args.archs:
        row = measure(name, batch, size, repeats, args.device)
        rows.append(row)
        print(f'  measured {name}', flush=True)
    print(header)
    for r in rows:
        print(f'{r["name"]:<14} {r["size"]:>7} {r["plain"]:>13,} {r["extra"]:>14,} '
              f'{100 * r["extra"] / r["plain"]:>6.1f} {r["t_plain"]:>11.3f}s {r["t_mod"]:>8.3f}s '
              f'{r["ratio"]:>6.2f}')


if __name__ == '__main__':
    main()
