import logging
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


@pytest.fixture(autouse=True)
def _no_handlers_on_closed_streams():
    """BasicSR's root logger gets its StreamHandler once, on the sys.stderr of the first test that logs — under capsys
    a stream that is closed after that test; later log calls would print 'Logging error' tracebacks into other tests'
    stderr. Before each test, point such handlers back at the real stderr."""
    for handler in logging.getLogger('basicsr').handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler.stream, 'closed', False):
            handler.stream = sys.__stderr__  # not setStream: it would flush the closed stream first
    yield


@pytest.fixture(scope='session', autouse=True)
def _hermetic_environment(tmp_path_factory):
    """A user's shell must not change what the commands under test do: COIC_TRACEBACK turns one-line errors into
    tracebacks, launcher variables (WORLD_SIZE exported in a cluster pod) make a plain run refuse to start. TMPDIR
    keeps what subprocesses leave there (torchrun's torchelastic_* folders) under pytest's own temporary folder.
    Session-scoped, so that module-scoped fixtures running commands see it too."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if _changes_commands(name):
                patch.delenv(name)
        patch.setenv('TMPDIR', str(tmp_path_factory.mktemp('subprocess_tmp')))
        yield


def _changes_commands(name: str) -> bool:
    return name in ('COIC_TRACEBACK', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'GROUP_RANK',
                    'MASTER_ADDR', 'MASTER_PORT', 'TORCHELASTIC_RUN_ID') or name.startswith('SLURM_')


@pytest.fixture(autouse=True)
def _no_leaked_environment():
    """A test that leaves launcher variables set (WORLD_SIZE=8 once did) breaks every later run: fail that test."""
    yield
    leaked = sorted(name for name in os.environ if _changes_commands(name))
    assert not leaked, f'the test left {leaked} in os.environ'
