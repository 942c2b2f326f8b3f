"""Errors the pipeline reports to the user in one line, and how running out of memory is recognised."""
import re

import torch

#: What the CPU allocator's RuntimeError says (Linux, Windows): torch has no exception class for it.
CPU_OUT_OF_MEMORY = re.compile(r"DefaultCPUAllocator|can't allocate memory|not enough memory")


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive training steps had a non-finite loss or gradient (``train.max_nonfinite_steps``)."""


def is_out_of_memory(err: BaseException) -> bool:
    """Python's MemoryError, CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    return isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)) or (
        isinstance(err, RuntimeError) and CPU_OUT_OF_MEMORY.search(str(err)) is not None)
