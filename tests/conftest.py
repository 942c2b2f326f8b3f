import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/helpers

import coic_basicsr  # noqa: E402,F401  (shim + registration for every test)


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """Test tensors are tiny: one intra-op thread avoids OpenMP threads spinning against other processes (on a busy
    2-core machine two threads made small convolutions up to ~80x slower). Subprocesses get OMP_NUM_THREADS=1."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
