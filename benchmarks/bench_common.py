"""Options and helpers shared by the benchmark scripts (device, CPU threads, synchronised timing)."""
import argparse
import statistics
import time
from typing import Callable

import torch

from coic_basicsr.utils.cpu_memory import keep_freed_memory


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse names the flag in its one-line error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--threads', type=int, default=0, help='CPU intra-op threads (0: leave as is)')
    parser.add_argument('--no-malloc-cache', action='store_true',
                        help="CPU: leave glibc's malloc as is (default: keep freed blocks, as training does with "
                             'the cpu_malloc_cache option)')


def setup_runtime(args: argparse.Namespace) -> None:
    """Check the device, set the CPU threads and the allocator as ``basicsr train`` does, and seed 0."""
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device available')
    if args.device == 'cpu' and not args.no_malloc_cache:
        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)


def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], object], device: str, repeats: int, warmup: int = 1) -> float:
    """Median milliseconds of ``repeats`` synchronised calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return 1e3 * statistics.median(timed(fn, device) for _ in range(repeats))


def timed(fn: Callable[[], object], device: str) -> float:
    """Seconds ``fn()`` takes, with the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start
