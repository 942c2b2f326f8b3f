"""The embedded default (options/coic_restormer_demo.yml) runs end to end, shrunk with --force_yml."""
import socket

import cv2
import numpy as np
import yaml

from helpers.demo import DEMO, SHRINK
from helpers.run import basicsr, torchrun


def test_demo_option_file_trains_both_stages_validates_and_tests(tmp_path):
    result = basicsr(['train', '-opt', DEMO, '--force_yml', *SHRINK], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'l_con' in result.stderr and 'con_top1' in result.stderr  # stage 2 ran
    for source in ('heavy_dense', 'slanted_long', 'mist'):
        assert f'[{source}] (1 images)' in result.stderr
    exp = tmp_path / 'experiments' / 'coic_restormer_demo'
    assert (exp / 'models' / 'net_g_latest.pth').is_file() and (exp / 'models' / 'net_enc_latest.pth').is_file()
    assert (exp / 'training_states' / '4.state').is_file()
    assert list((tmp_path / 'tb_logger' / 'coic_restormer_demo').glob('events.*'))
    # the experiment's option copy is the file as run (--force_yml applied), so the tools rebuild the trained network
    copied = yaml.safe_load((exp / 'coic_restormer_demo.yml').read_text())
    assert copied['network_g']['dim'] == 8 and copied['train']['total_iter'] == 4
    (tmp_path / 'rainy').mkdir()
    cv2.imwrite(str(tmp_path / 'rainy' / 'a.png'), np.random.default_rng(0).integers(0, 255, (20, 28, 3), np.uint8))
    result = basicsr(['derain', '-opt', str(exp), str(tmp_path / 'rainy'), str(tmp_path / 'derained')],
                     cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert cv2.imread(str(tmp_path / 'derained' / 'a.png')).shape == (20, 28, 3)


def test_demo_option_file_under_torchrun_two_processes_gloo(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    result = torchrun(2, ['-m', 'coic_basicsr.train', '-opt', DEMO, '--launcher', 'pytorch', '--force_yml', *SHRINK],
                      cwd=str(tmp_path), port=port)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'World size: 2' in result.stderr and 'l_con' in result.stderr and '[mist] (1 images)' in result.stderr
    assert (tmp_path / 'experiments' / 'coic_restormer_demo' / 'models' / 'net_enc_latest.pth').is_file()
