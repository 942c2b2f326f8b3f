"""The CNN smoke option files (BRN, RCDNet, DGUNet with CoIC) train through both stages on CPU.

The three runs share one ``basicsr train`` process (``coic_basicsr.train.main`` called three times), so the
package is imported once instead of three times; each run is separated in the log by a marker line.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
ARCHS = ('brn', 'rcdnet', 'dgunet')
DRIVER = '''
import sys
from coic_basicsr.train import main
for path in sys.argv[1:]:
    print(f'=== RUN {path}', file=sys.stderr, flush=True)
    rc = main(['-opt', path])
    print(f'=== RC {rc}', file=sys.stderr, flush=True)
'''


@pytest.fixture(scope='module')
def smoke_runs(tmp_path_factory):
    cwd = tmp_path_factory.mktemp('cnn_smoke')
    paths = [str(ROOT / 'options' / 'smoke' / f'coic_{arch}_smoke.yml') for arch in ARCHS]
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, '-c', DRIVER, *paths], cwd=cwd, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    logs = dict(zip(ARCHS, result.stderr.split('=== RUN ')[1:]))
    return cwd, logs


@pytest.mark.parametrize('arch', ARCHS)
def test_smoke_option_trains_both_stages(smoke_runs, arch):
    cwd, logs = smoke_runs
    log = logs[arch]
    assert '=== RC 0' in log, log[-3000:]
    with open(ROOT / 'options' / 'smoke' / f'coic_{arch}_smoke.yml') as f:
        opt = yaml.safe_load(f)
    stage1, total = opt['train']['coic']['stage1_iter'], opt['train']['total_iter']
    lines = {it: next(line for line in log.splitlines() if f'iter:{it:8d},' in line) for it in range(1, total + 1)}
    assert all('l_con' not in lines[it] for it in range(1, stage1 + 1))
    assert all('l_con' in lines[it] for it in range(stage1 + 1, total + 1))
    models = cwd / 'experiments' / opt['name'] / 'models'
    params = torch.load(models / 'net_g_latest.pth', weights_only=True)['params']
    generators = [v for k, v in params.items() if '.generator.4.' in k]
    assert generators and any(v.abs().sum() > 0 for v in generators)  # stage 2 moved the zero-initialised MLPs
    assert set(torch.load(models / 'net_enc_latest.pth', weights_only=True)) == {'params', 'params_key'}
    assert '# [all]' in log and 'psnr' in log  # final validation ran
