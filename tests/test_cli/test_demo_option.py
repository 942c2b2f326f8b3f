"""The embedded default (options/coic_restormer_demo.yml) runs end to end, shrunk with --force_yml."""
import socket

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


def test_demo_option_file_under_torchrun_two_processes_gloo(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    result = torchrun(2, ['-m', 'coic_basicsr.train', '-opt', DEMO, '--launcher', 'pytorch', '--force_yml', *SHRINK],
                      cwd=str(tmp_path), port=port)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'World size: 2' in result.stderr and 'l_con' in result.stderr and '[mist] (1 images)' in result.stderr
    assert (tmp_path / 'experiments' / 'coic_restormer_demo' / 'models' / 'net_enc_latest.pth').is_file()
