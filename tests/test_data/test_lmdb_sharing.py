"""An LMDB that BasicSR's FileClient opens cannot be opened a second time in the same process."""
import os

import pytest

from coic_basicsr.data.lmdb_sharing import check_shared_lmdbs
from helpers.run import basicsr
from helpers.stock import make_paired_folders, stock_sr_options, write_options


def _mixed(root: str, workers: int = 0) -> dict:
    return {'type': 'MixedRainDataset', 'num_worker_per_gpu': workers, 'sources': [
        {'name': 'a', 'dataroot_lq': f'{root}/lq.lmdb', 'dataroot_gt': f'{root}/gt.lmdb', 'io_backend': {'type': 'lmdb'}}]}


def _stock(root: str) -> dict:
    return {'type': 'PairedImageDataset', 'dataroot_lq': f'{root}/lq.lmdb', 'dataroot_gt': f'{root}/gt.lmdb',
            'io_backend': {'type': 'lmdb'}}


@pytest.mark.parametrize('datasets', [
    {'train': _mixed('/d'), 'val': _mixed('/d')},  # our datasets share one handle per process
    # the training set reads in workers started once, before validation opens the LMDB
    {'train': dict(_mixed('/d', workers=2), persistent_workers=True), 'val': _stock('/d')},
    {'train': dict(_stock('/d'), num_worker_per_gpu=1, persistent_workers=True), 'val': _stock('/d')},
    {'train': _mixed('/d', workers=2), 'val': _mixed('/d')},  # a forked worker closes our inherited handles
    {'train': _stock('/d'), 'val': _stock('/other')},
    {'train': _mixed('/d'), 'val': dict(_stock('/d'), io_backend={'type': 'disk'})},
])
def test_readers_that_can_share_are_accepted(datasets):
    check_shared_lmdbs({'datasets': datasets})


@pytest.mark.parametrize('datasets, message', [
    ({'train': _mixed('/d'), 'val': _stock('/d')},
     "datasets.val.dataroot_lq: '/d/lq.lmdb' is also read by datasets.train.sources[0].dataroot_lq in the same "
     "process, but datasets.val reads LMDBs through BasicSR's FileClient, which cannot share an open LMDB: use "
     'MixedRainDataset for both (they share one handle), or give the training set num_worker_per_gpu >= 1 and '
     'persistent_workers: true (its workers read it)'),
    ({'test_1': _stock('/d'), 'test_2': _mixed('/d')},
     "datasets.test_2.sources[0].dataroot_lq: '/d/lq.lmdb' is also read by datasets.test_1.dataroot_lq in the same "
     "process, but datasets.test_1 reads LMDBs through BasicSR's FileClient, which cannot share an open LMDB: use "
     'MixedRainDataset for both (they share one handle)'),
    ({'val': _stock('/d'), 'val_2': _stock('/d')}, 'is also read by datasets.val.dataroot_lq'),
])
def test_a_basicsr_dataset_sharing_an_lmdb_in_one_process_is_refused(datasets, message):
    # it failed with lmdb.Error "already open in this process" at the first item, or after training
    with pytest.raises(ValueError) as err:
        check_shared_lmdbs({'datasets': datasets})
    assert message in str(err.value)


@pytest.mark.parametrize('train, val', [(_mixed('/d', workers=2), _stock('/d')),
                                        (dict(_stock('/d'), num_worker_per_gpu=1), _stock('/d')),
                                        (dict(_stock('/d'), num_worker_per_gpu=1), _mixed('/d'))])
def test_workers_started_every_epoch_after_the_main_process_opened_the_lmdb_are_refused(train, val):
    # they failed at the first epoch after a validation with lmdb.Error 'already open in this process'
    with pytest.raises(ValueError, match=r"datasets\.train\.(sources\[0\]\.)?dataroot_lq: '/d/lq\.lmdb' is also read by "
                       r"datasets\.val\.(sources\[0\]\.)?dataroot_lq in the main process; .*: set "
                       r'datasets\.train\.persistent_workers: true'):
        check_shared_lmdbs({'datasets': {'train': train, 'val': val}})


def test_a_stock_lmdb_read_by_persistent_workers_and_validation_trains_over_epochs(tmp_path):
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    folders = make_paired_folders(str(tmp_path / 'data'))
    names = sorted(os.listdir(folders['gt']))
    for which, folder in folders.items():
        make_lmdb_from_imgs(folder, str(tmp_path / f'{which}.lmdb'), names, [n[:-4] for n in names])
    opt = stock_sr_options(str(tmp_path / 'data'), total_iter=8)  # 3 iterations per epoch, validated every 2
    for phase in ('train', 'val'):
        opt['datasets'][phase].update(dataroot_gt=str(tmp_path / 'gt.lmdb'), dataroot_lq=str(tmp_path / 'lq.lmdb'),
                                      io_backend={'type': 'lmdb'})
    opt['datasets']['train'].update(num_worker_per_gpu=1, persistent_workers=True)
    result = basicsr(['train', '-opt', write_options(opt, str(tmp_path / 'train.yml'))], cwd=str(tmp_path))
    assert result.returncode == 0 and 'End of training' in result.stderr, result.stderr[-2000:]


def test_threads_opening_one_lmdb_at_once_share_one_environment(tmp_path):
    import threading
    import lmdb
    from coic_basicsr.data import pair_reader
    path = str(tmp_path / 'x.lmdb')
    with lmdb.open(path, map_size=1 << 20) as env, env.begin(write=True) as txn:
        txn.put(b'a', b'1')
    failures = []
    for _ in range(200):  # without the lock 15 of 200 trials raised "already open in this process"
        for env in pair_reader._ENVS.values():
            env.close()
        pair_reader._ENVS.clear()
        barrier, opened = threading.Barrier(2), []

        def open_it() -> None:
            barrier.wait()
            try:
                opened.append(pair_reader.lmdb_env(path))
            except lmdb.Error as err:  # BasicSR's CPUPrefetcher runs two prefetch threads at the first epoch
                failures.append(str(err))

        threads = [threading.Thread(target=open_it) for _ in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert failures or opened[0] is opened[1]
    assert not failures, failures[:1]


def test_one_lmdb_reached_by_two_spellings_is_one_environment(tmp_path):
    # py-lmdb refuses to open one environment twice in a process: a trailing slash or a symlink must not try
    import cv2
    import numpy as np
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    from coic_basicsr.data.pair_reader import lmdb_env
    os.makedirs(tmp_path / 'p')
    cv2.imwrite(str(tmp_path / 'p' / 'a.png'), np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    make_lmdb_from_imgs(str(tmp_path / 'p'), str(tmp_path / 'x.lmdb'), ['a.png'], ['a'])
    os.symlink(tmp_path / 'x.lmdb', tmp_path / 'link.lmdb')
    env = lmdb_env(str(tmp_path / 'x.lmdb'))
    assert lmdb_env(str(tmp_path / 'x.lmdb') + '/') is env
    assert lmdb_env(str(tmp_path / 'link.lmdb')) is env
