"""``~`` in every path option of the rain datasets, also when the options do not come through our parser (a project
calling BasicSR's own train_pipeline builds the datasets from BasicSR's parse, which expands only dataroot_gt/lq)."""
import os
from os import path as osp

import cv2
import numpy as np

from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from basicsr.utils.registry import DATASET_REGISTRY
from coic_basicsr.utils.options import _set_paths


def _home(tmp_path, monkeypatch):
    home = tmp_path / 'home'
    rng = np.random.default_rng(0)
    for i in range(2):
        for which in ('gt', 'lq'):
            os.makedirs(home / 'rain' / which, exist_ok=True)
            cv2.imwrite(str(home / 'rain' / which / f'{i}.png'), rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    for which in ('gt', 'lq'):
        make_lmdb_from_imgs(str(home / 'rain' / which), str(home / f'{which}.lmdb'), ['0.png', '1.png'], ['0', '1'])
    (home / 'pairs.txt').write_text('1.png 1.png\n')
    monkeypatch.setenv('HOME', str(home))
    assert osp.expanduser('~') == str(home)
    return home


def test_tilde_in_source_paths_and_clean_folder(tmp_path, monkeypatch):
    home = _home(tmp_path, monkeypatch)
    disk = dict(name='disk', dataroot_gt='~/rain/gt', dataroot_lq='~/rain/lq')
    lmdb = dict(name='lmdb', dataroot_gt='~/gt.lmdb', dataroot_lq='~/lq.lmdb', io_backend=dict(type='lmdb'),
                meta_info_file='~/pairs.txt')
    listed = dict(disk, name='listed', meta_info_file='~/pairs.txt')
    opt = dict(name='v', phase='val', global_size=8, sources=[disk, lmdb, listed])
    ds = DATASET_REGISTRY.get('MixedRainDataset')(opt)
    assert len(ds) == 4 and ds.lq_paths[0] == str(home / 'rain' / 'lq' / '0.png')
    assert [ds[i]['gt'].shape for i in range(len(ds))] == [(3, 24, 24)] * 4
    assert opt['sources'][0]['dataroot_gt'] == '~/rain/gt'  # the caller's sources are left as they are
    synthetic = DATASET_REGISTRY.get('MixedSyntheticRainDataset')(
        dict(name='s', phase='val', bg_size=16, num_per_source=2, clean_folder='~/rain/gt',
             sources=[dict(name='mist', preset='mist')]))
    assert synthetic.clean_paths == [str(home / 'rain' / 'gt' / f'{i}.png') for i in range(2)]


def test_our_option_parser_expands_the_same_paths(tmp_path, monkeypatch):
    home = _home(tmp_path, monkeypatch)
    source = dict(name='disk', dataroot_gt='~/rain/gt', dataroot_lq='~/rain/lq', meta_info_file='~/pairs.txt')
    datasets = dict(test_1=dict(type='MixedRainDataset', sources=[source]),
                    test_2=dict(type='PairedImageDataset', dataroot_gt='~/rain/gt', dataroot_lq='~/rain/lq',
                                meta_info_file='~/pairs.txt', io_backend=dict(type='disk')),
                    test_3=dict(type='MixedSyntheticRainDataset', clean_folder='~/rain/gt',
                                sources=[dict(name='mist', preset='mist')]))
    opt = dict(name='t', datasets=datasets)
    _set_paths(opt, str(tmp_path), is_train=False)  # the path part of parse_options
    expected = dict(dataroot_gt=f'{home}/rain/gt', dataroot_lq=f'{home}/rain/lq', meta_info_file=f'{home}/pairs.txt')
    for got in (opt['datasets']['test_1']['sources'][0], opt['datasets']['test_2']):
        assert {k: got[k] for k in expected} == expected
    assert opt['datasets']['test_3']['clean_folder'] == f'{home}/rain/gt'
