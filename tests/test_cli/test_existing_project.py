"""The third way of use: an existing BasicSR project imports coic_basicsr and trains with BasicSR's own
``train_pipeline`` (BasicSR 1.4.2, unpatched), here on the CPU in one process."""
import os
import subprocess
import sys

from helpers.demo import DEMO, SHRINK

PROJECT_TRAIN_PY = '''import os.path as osp

import coic_basicsr  # noqa: F401  (registers the CoIC types; lets basicsr 1.4.2 import on modern torchvision)
from basicsr.train import train_pipeline

if __name__ == '__main__':
    train_pipeline(osp.dirname(osp.abspath(__file__)))
'''


def test_basicsr_train_pipeline_trains_our_option_file_after_import(tmp_path):
    (tmp_path / 'train.py').write_text(PROJECT_TRAIN_PY)
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, 'train.py', '-opt', DEMO, '--force_yml', *SHRINK], cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr
    assert 'Model [CoICModel] is created.' in log and 'Dataset [SyntheticRainDataset]' in log
    assert 'l_con' in log and 'con_top1' in log  # stage 2 (z from the encoder + contrastive loss) ran
    for source in ('heavy_dense', 'slanted_long', 'mist'):
        assert f'[{source}] (1 images)' in log  # our per-source validation, through BasicSR's own validation call
    models = tmp_path / 'experiments' / 'coic_restormer_demo' / 'models'
    assert {'net_g_4.pth', 'net_enc_4.pth'} <= {p.name for p in models.iterdir()}
    assert (tmp_path / 'experiments' / 'coic_restormer_demo' / 'training_states' / '4.state').is_file()
