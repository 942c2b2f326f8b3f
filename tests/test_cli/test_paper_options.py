"""The paper-scale option files run as shipped on the LMDBs that ``basicsr prepare-data`` writes: their dataset paths
and source names match the converter's output (miniature official layouts; networks and iterations shrunk)."""
import json
import re
from os import path as osp

import numpy as np
import pytest

from helpers.official_layouts import MAKERS
from helpers.run import basicsr

OPTIONS = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', 'options'))
SHORT_RUN = ['train:total_iter=4', 'train:coic:stage1_iter=2', 'datasets:train:gt_size=8',
             'datasets:train:global_size=16', 'datasets:train:num_worker_per_gpu=0', 'val:val_freq=4',
             'logger:save_checkpoint_freq=4', 'logger:print_freq=1']


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    """A working folder holding ``datasets/lmdb`` as prepare-data writes it from all six official layouts."""
    root = tmp_path_factory.mktemp('paper')
    rng = np.random.default_rng(0)
    for folder, make in MAKERS.values():
        make(root / 'official' / folder, rng)
    result = basicsr(['prepare-data', '--dataset', 'all', '--root', str(root / 'official'), '--out', 'datasets/lmdb',
                      '--no-count-check'], cwd=str(root))
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def test_coic_restormer_trains_and_tests_on_prepared_lmdbs(prepared):
    small_net = ['network_g:dim=8', 'network_g:num_blocks=[1,1,1,1]', 'network_g:num_refinement_blocks=1']
    result = basicsr(['train', '-opt', osp.join(OPTIONS, 'coic_restormer.yml'), '--force_yml', *small_net, *SHORT_RUN,
                      'train:scheduler:periods=[2,2]'], cwd=str(prepared))
    assert result.returncode == 0, result.stderr[-3000:]
    assert '43 pairs from 5 sources (rain200l: 3, rain200h: 3, rain800: 3, did: 6, ddn: 28)' in result.stderr
    assert 'l_con' in result.stderr and 'Validation rain200h_test' in result.stderr
    assert 'UserWarning' not in result.stderr  # e.g. pin_memory: true of the GPU loader settings, on the CPU

    result = basicsr(['test', '-opt', osp.join(OPTIONS, 'test_coic_restormer.yml'), '--force_yml', *small_net],
                     cwd=str(prepared))
    assert result.returncode == 0, result.stderr[-3000:]
    results = prepared / 'results' / 'test_coic_restormer_mixed5'
    for name, count in (('rain200l', 2), ('rain200h', 2), ('rain800', 2), ('did', 2), ('ddn', 14)):
        table = json.loads((results / f'{name}_test_metrics.json').read_text())
        assert table['all']['count'] == count and np.isfinite(table['all']['psnr']), name


def test_coic_drsformer_with_spa_draws_as_many_real_as_synthetic_pairs(prepared):
    small_net = ['network_g:dim=8', 'network_g:num_blocks=[1,1,1,1]', 'network_g:heads=[1,2,2,4]']
    result = basicsr(['train', '-opt', osp.join(OPTIONS, 'coic_drsformer_spa.yml'), '--force_yml', *small_net,
                      *SHORT_RUN, 'train:scheduler:periods=[1,1,2]'], cwd=str(prepared))
    assert result.returncode == 0, result.stderr[-3000:]
    assert '48 pairs from 6 sources' in result.stderr and 'spa: 5 (real)' in result.stderr
    draws = re.search(r'MixedDatasetSampler epoch 0: \d+ draws \((.*)\)', result.stderr).group(1)
    counts = {name: int(n) for name, n in re.findall(r'(\w+)(?: \(real\))?: (\d+)', draws)}
    assert counts['spa'] == sum(n for name, n in counts.items() if name != 'spa') == 43
    assert 'Validation spa_test' in result.stderr and 'l_con' in result.stderr
