"""The third way of use: an existing BasicSR project imports coic_basicsr and trains and tests with BasicSR's own
``train_pipeline`` / ``test_pipeline`` (BasicSR 1.4.2, unpatched), here on the CPU in one process."""
import os
import subprocess
import sys

from helpers.demo import DEMO, SHRINK

TEST_OPTIONS = os.path.join(os.path.dirname(DEMO), 'test_coic_restormer_demo.yml')
PROJECT_SCRIPT = '''import os.path as osp

import coic_basicsr  # noqa: F401  (registers the CoIC types; lets basicsr 1.4.2 import on modern torchvision)
from basicsr.{stage} import {stage}_pipeline

if __name__ == '__main__':
    {stage}_pipeline(osp.dirname(osp.abspath(__file__)))
'''


def _run_project_script(root, stage: str, *args: str) -> subprocess.CompletedProcess:
    (root / f'{stage}.py').write_text(PROJECT_SCRIPT.format(stage=stage))
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, f'{stage}.py', *args], cwd=str(root), capture_output=True, text=True,
                          timeout=300, env=env)


def test_basicsr_own_pipelines_train_and_test_our_option_files_after_import(tmp_path):
    result = _run_project_script(tmp_path, 'train', '-opt', DEMO, '--force_yml', *SHRINK)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr
    assert 'Model [CoICModel] is created.' in log and 'Dataset [MixedSyntheticRainDataset]' in log
    assert 'l_con' in log and 'con_top1' in log  # stage 2 (z from the encoder + contrastive loss) ran
    for source in ('heavy_dense', 'slanted_long', 'mist'):
        assert f'[{source}] (1 images)' in log  # our per-source validation, through BasicSR's own validation call
    models = tmp_path / 'experiments' / 'coic_restormer_demo' / 'models'
    assert {'net_g_4.pth', 'net_enc_4.pth'} <= {p.name for p in models.iterdir()}
    assert (tmp_path / 'experiments' / 'coic_restormer_demo' / 'training_states' / '4.state').is_file()

    shrunk_net = [entry for entry in SHRINK if entry.startswith('network_g:')]
    result = _run_project_script(tmp_path, 'test', '-opt', TEST_OPTIONS, '--force_yml', *shrunk_net,
                                 'datasets:test_1:num_per_source=1')
    assert result.returncode == 0, result.stderr[-3000:]
    assert '[mist] (1 images)' in result.stderr
    assert (tmp_path / 'results' / 'test_coic_restormer_demo' / 'synthetic_mixed_rain_val_metrics.csv').is_file()
