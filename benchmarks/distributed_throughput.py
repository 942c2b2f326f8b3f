"""Training throughput of one process vs two gloo processes on the CPU, through the real training path.

Each configuration is started the way users start training (``python -m torch.distributed.run --nproc_per_node=N``
with ``--launcher pytorch`` for N > 1), builds the option file's train loader and model with the same functions as
``basicsr train`` (sampler sharding, DDP without device_ids, the contrastive loss gathering the rain archive across
ranks in stage 2) and times ``feed_data`` + ``optimize_parameters`` after a warm-up. Throughput is global samples per
second (world size x batch_size_per_gpu x iterations / seconds, slowest rank). Configurations on a 2-core machine:
1 process x 2 intra-op threads, 1 process x 1 thread, 2 processes x 1 thread (gloo).

Example: python benchmarks/distributed_throughput.py                     (~2 minutes on 2 idle cores, the demo options)
         python benchmarks/distributed_throughput.py -opt options/coic_restormer_demo.yml --iters 30 --stages 2
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Tuple

from bench_common import positive_int

CONFIGS = ('1x2', '1x1', '2x1')  # processes x intra-op threads per process
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OPT = 'options/coic_restormer_demo.yml'  # relative to the repository root


def worker(args: argparse.Namespace) -> None:
    """One rank: build data + model from the option file, time the training iterations of the asked stage."""
    import torch
    from torch import distributed as dist

    import coic_basicsr  # noqa: F401  (registration)
    from basicsr.utils import get_root_logger
    from coic_basicsr.models.portable import build_model
    from coic_basicsr.train import create_dataloaders
    from coic_basicsr.utils.dist import barrier
    from coic_basicsr.utils.options import parse_options

    torch.set_num_threads(args.threads)
    launcher = 'pytorch' if int(os.environ.get('WORLD_SIZE', '1')) > 1 else 'none'
    opt, _ = parse_options(['-opt', args.opt, '--launcher', launcher], args.root, is_train=True)
    train_loader, *_ = create_dataloaders(opt, get_root_logger())
    model = build_model(opt)
    first_iter = 1
    if args.stage == 2:
        coic = getattr(model, 'coic_opt', None)  # the model's resolved train.coic (defaults filled in)
        if not coic:
            raise SystemExit(f'{args.opt}: stage 2 needs a CoICModel option file with train.coic (use --stages 1)')
        first_iter = int(coic['stage1_iter']) + 1
    batches = iter(train_loader)

    def run(n: int, start: int) -> None:
        nonlocal batches
        for i in range(n):
            try:
                data = next(batches)
            except StopIteration:
                batches = iter(train_loader)
                data = next(batches)
            model.feed_data(data)
            model.optimize_parameters(start + i)

    run(args.warmup, first_iter)
    barrier()
    begin = time.perf_counter()
    run(args.iters, first_iter + args.warmup)
    elapsed = torch.tensor([time.perf_counter() - begin])
    train_loader.worker_init_fn.release()  # loader workers that are left may end with the process
    if opt['dist']:
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    if opt['rank'] == 0:
        samples = opt['world_size'] * opt['datasets']['train']['batch_size_per_gpu'] * args.iters
        with open(args.result, 'w') as f:
            json.dump({'seconds': elapsed.item(), 'samples': samples, 'world_size': opt['world_size']}, f)
    if opt['dist']:
        dist.destroy_process_group()


def launch(opt: str, stage: int, processes: int, threads: int, iters: int, warmup: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, 'result.json')
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={processes}', '--master_port',
               str(29500 + os.getpid() % 1000), os.path.abspath(__file__), '--worker', '-opt', opt, '--stage',
               str(stage), '--threads', str(threads), '--iters', str(iters), '--warmup', str(warmup), '--result',
               result, '--root', tmp]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f'{processes} process(es), stage {stage} failed:\n{proc.stderr[-3000:]}')
        with open(result) as f:
            return json.load(f)


def parse_config(config: str) -> Tuple[int, int]:
    """'PROCESSESxTHREADS' -> (processes, threads), both >= 1; a malformed value is a one-line error."""
    parts = config.split('x')
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise SystemExit(f"--configs: '{config}' is not PROCESSESxTHREADS (e.g. 2x1)")
    return int(parts[0]), int(parts[1])


def option_file(opt: Optional[str]) -> str:
    """Absolute path of -opt (the default relative to the repository root, a given one to the working folder)."""
    path = os.path.join(ROOT, DEFAULT_OPT) if opt is None else os.path.abspath(opt)
    if not os.path.isfile(path):
        raise SystemExit(f"-opt: option file '{path}' does not exist")
    return path


def backends(configs: List[Tuple[int, int]]) -> str:
    """What the configurations run: one process, and/or gloo for the multi-process ones."""
    parts = ['1 process'] if any(p == 1 for p, _ in configs) else []
    multi = sorted({p for p, _ in configs if p > 1})
    if multi:
        parts.append(f"gloo for {' / '.join(map(str, multi))} processes")
    return ', '.join(parts)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', default=None, help=f'training option file (default: {DEFAULT_OPT} of the repository)')
    parser.add_argument('--iters', type=positive_int, default=20, help='timed iterations per configuration')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--stages', type=int, nargs='+', choices=[1, 2], default=[1, 2])
    parser.add_argument('--configs', nargs='+', default=list(CONFIGS), help='PROCESSESxTHREADS, e.g. 2x1')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--stage', type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument('--threads', type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument('--result', help=argparse.SUPPRESS)
    parser.add_argument('--root', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    configs = [parse_config(config) for config in args.configs]
    opt = option_file(args.opt)
    print(f'{opt}: {args.iters} timed iterations after {args.warmup} warm-up, CPU, {backends(configs)}')
    print(f'{"stage":>5} {"processes":>9} {"threads":>7} {"seconds":>8} {"samples/s":>9} {"vs first":>8}')
    for stage in args.stages:
        base = None
        for processes, threads in configs:
            r = launch(opt, stage, processes, threads, args.iters, args.warmup)
            rate = r['samples'] / r['seconds']
            base = base or rate
            print(f'{stage:>5} {processes:>9} {threads:>7} {r["seconds"]:>8.2f} {rate:>9.1f} {rate / base:>7.2f}x',
                  flush=True)


if __name__ == '__main__':
    main()
