"""The top-level ``cpu_malloc_cache`` option: keep freed CPU memory in the process for reuse (glibc).

glibc serves every block above its mmap threshold (adaptive, at most 32 MiB) from a fresh mapping and unmaps it on
free, so on the CPU each large activation or gradient of each training step page-faults its memory in anew (on the
project's 2-core box a depthwise 3x3 conv over a 2 x 254 x 128 x 128 map took 45-50 ms that way, 14-17 ms with the
blocks kept; training steps in docs/benchmarks.md). The cost: memory the process frees stays with it (its resident
size keeps its peak), as with jemalloc or tcmalloc, which PyTorch's CPU tuning guide recommends for the same reason.
"""
import ctypes
import logging
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
CACHE_LIMIT_BYTES = 1 << 30
OPTION = 'cpu_malloc_cache'


def keep_freed_memory(limit_bytes: int = CACHE_LIMIT_BYTES) -> bool:
    """Serve blocks up to ``limit_bytes`` from glibc's heap and keep up to that much freed memory there (``mallopt``
    M_MMAP_THRESHOLD and M_TRIM_THRESHOLD). Returns False, changing nothing, where the C library has no ``mallopt``
    that accepts them (not Linux, musl)."""
    if not sys.platform.startswith('linux'):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, limit_bytes) == 1 and mallopt(_M_TRIM_THRESHOLD, limit_bytes) == 1


def check_cpu_malloc_option(opt: dict) -> None:
    """One-line error for a value of ``cpu_malloc_cache`` that is not a boolean."""
    value = opt.get(OPTION, True)
    if not isinstance(value, bool):
        raise ValueError(f'{OPTION}: expected true or false, got {value!r}')


def apply_cpu_malloc_option(opt: dict, logger: logging.Logger) -> bool:
    """Apply ``cpu_malloc_cache`` (default true) when this process runs on the CPU; log what happened."""
    check_cpu_malloc_option(opt)
    if not opt.get(OPTION, True) or opt.get('device', 'cpu') != 'cpu':
        return False
    applied = keep_freed_memory()
    logger.info(f'{OPTION}: ' + ('freed blocks up to 1 GiB stay in the process for reuse (glibc mallopt).' if applied
                                 else 'no glibc mallopt in this process; the allocator is left as is.'))
    return applied
