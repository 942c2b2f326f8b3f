"""Reading back what ``basicsr prepare-data`` wrote, the way BasicSR's lmdb pairing and FileClient deliver it."""
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
from basicsr.data.data_util import paired_paths_from_lmdb  # conftest imports coic_basicsr first (torchvision shim)
from basicsr.utils import FileClient, imfrombytes


def read_back(out: Path, name: str, split: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Pairs as BasicSR's lmdb pairing and FileClient deliver them."""
    lq_db, gt_db = str(out / f'{name}_{split}_lq.lmdb'), str(out / f'{name}_{split}_gt.lmdb')
    client = FileClient('lmdb', db_paths=[lq_db, gt_db], client_keys=['lq', 'gt'])
    pairs = {}
    for item in paired_paths_from_lmdb([lq_db, gt_db], ['lq', 'gt']):
        pairs[item['lq_path']] = (imfrombytes(client.get(item['lq_path'], 'lq')),
                                  imfrombytes(client.get(item['gt_path'], 'gt')))
    return pairs


def assert_same(got: Dict[str, Tuple[np.ndarray, np.ndarray]], exp: Dict[str, Tuple[np.ndarray, np.ndarray]]):
    assert sorted(got) == sorted(exp)
    for key, (lq, gt) in exp.items():
        assert np.array_equal(got[key][0], lq), key
        assert np.array_equal(got[key][1], gt), key
        assert got[key][0].mean() > got[key][1].mean() + 50, f'{key}: rainy and clean swapped'
