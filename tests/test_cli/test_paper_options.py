"""The paper-scale option files run as shipped on the LMDBs that ``basicsr prepare-data`` writes: their dataset paths
and source names match the converter's output (miniature official layouts; networks and iterations shrunk)."""
import json
from os import path as osp

import numpy as np

from helpers.official_layouts import MAKERS
from helpers.run import basicsr

OPTIONS = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', 'options'))
SMALL_NET = ['network_g:dim=8', 'network_g:num_blocks=[1,1,1,1]', 'network_g:num_refinement_blocks=1']


def test_coic_restormer_trains_and_tests_on_prepared_lmdbs(tmp_path):
    rng = np.random.default_rng(0)
    for folder, make in MAKERS.values():
        make(tmp_path / 'official' / folder, rng)
    result = basicsr(['prepare-data', '--dataset', 'all', '--root', str(tmp_path / 'official'),
                      '--out', 'datasets/lmdb', '--no-count-check'], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]

    result = basicsr(['train', '-opt', osp.join(OPTIONS, 'coic_restormer.yml'), '--force_yml', *SMALL_NET,
                      'train:total_iter=4', 'train:scheduler:periods=[2,2]', 'train:coic:stage1_iter=2',
                      'datasets:train:gt_size=8', 'datasets:train:global_size=16',
                      'datasets:train:num_worker_per_gpu=0', 'val:val_freq=4', 'logger:save_checkpoint_freq=4',
                      'logger:print_freq=1'], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert '43 pairs from 5 sources (rain200l: 3, rain200h: 3, rain800: 3, did: 6, ddn: 28)' in result.stderr
    assert 'l_con' in result.stderr and 'Validation rain200h_test' in result.stderr
    assert 'UserWarning' not in result.stderr  # e.g. pin_memory: true of the GPU loader settings, on the CPU

    result = basicsr(['test', '-opt', osp.join(OPTIONS, 'test_coic_restormer.yml'), '--force_yml', *SMALL_NET],
                     cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    results = tmp_path / 'results' / 'test_coic_restormer_mixed5'
    for name, count in (('rain200l', 2), ('rain200h', 2), ('rain800', 2), ('did', 2), ('ddn', 14)):
        table = json.loads((results / f'{name}_test_metrics.json').read_text())
        assert table['all']['count'] == count and np.isfinite(table['all']['psnr']), name
