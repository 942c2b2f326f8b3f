"""``cpu_malloc_cache``: freed CPU memory stays in the process, so large blocks stop page-faulting every step."""
import json
import platform
import subprocess
import sys

import pytest

from coic_basicsr.utils.cpu_memory import apply_cpu_malloc_option, check_cpu_malloc_option, keep_freed_memory

_FAULTS = """
import json, resource, sys, torch
from coic_basicsr.utils.cpu_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == 'keep' else None
for _ in range(2):  # the first uses of a 64 MiB block fault its pages in either way
    torch.empty(64 << 18).fill_(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    torch.empty(64 << 18).fill_(1)
print(json.dumps({'applied': applied, 'faults': resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, '-c', _FAULTS, mode], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='needs glibc mallopt (e.g. not musl, not macOS)')
def test_kept_blocks_are_reused_instead_of_faulting_in_again():
    default, kept = _faults('default'), _faults('keep')
    assert kept['applied'] is True, kept  # on glibc the setting must take effect
    pages_per_block = (64 << 20) // 4096
    assert default['faults'] >= 6 * pages_per_block, (default, kept)  # glibc maps and unmaps each 64 MiB block
    # kept: at most one fresh block in 8 uses (a small allocation may split the freed block once, growing the heap)
    assert kept['faults'] < 2 * pages_per_block, (default, kept)


class _Log:
    def __init__(self) -> None:
        self.lines = []

    def info(self, line: str) -> None:
        self.lines.append(line)


def test_option_is_applied_on_the_cpu_only_and_can_be_switched_off(monkeypatch):
    calls = []
    monkeypatch.setattr('coic_basicsr.utils.cpu_memory.keep_freed_memory', lambda: calls.append(1) or True)
    log = _Log()
    assert apply_cpu_malloc_option({'device': 'cpu'}, log) and calls == [1]
    assert 'cpu_malloc_cache: freed blocks up to 1 GiB' in log.lines[0]
    assert not apply_cpu_malloc_option({'device': 'cpu', 'cpu_malloc_cache': False}, log)
    assert not apply_cpu_malloc_option({'device': 'cuda:0'}, log)
    assert calls == [1] and len(log.lines) == 1


@pytest.mark.parametrize('value', ['yes', 1, None])
def test_non_boolean_values_are_refused(value):
    with pytest.raises(ValueError, match=f'cpu_malloc_cache: expected true or false, got {value!r}'):
        check_cpu_malloc_option({'cpu_malloc_cache': value})


def test_keep_freed_memory_reports_whether_it_applied():
    assert isinstance(keep_freed_memory(), bool)
