"""Reading a source's (lq, gt) images: disk files through BasicSR's FileClient, LMDBs through one environment per
database and process, shared by every reader (py-lmdb refuses to open a path twice in a process: a val set on the
training LMDBs, one LMDB holding both sides, or two sources on one LMDB failed)."""
import os
import threading
from os import path as osp
from typing import Any, Dict, Optional, Tuple

import lmdb
import numpy as np
from basicsr.utils import FileClient, imfrombytes

_ENVS: Dict[str, lmdb.Environment] = {}
_ENVS_PID = [os.getpid()]
_ENVS_LOCK = threading.Lock()  # prefetch threads (BasicSR's CPUPrefetcher makes two) may open one LMDB at once


def _fresh_lock_in_child() -> None:
    global _ENVS_LOCK
    _ENVS_LOCK = threading.Lock()  # a thread of the parent may have held it when the loader worker was forked


os.register_at_fork(after_in_child=_fresh_lock_in_child)


class BadPairError(ValueError):
    """An item that cannot be read (missing at read time, corrupt bytes); ``skip_bad`` may skip these."""


def lmdb_env(path: str) -> lmdb.Environment:
    """This process's read-only environment of the LMDB at ``path`` (BasicSR's LmdbBackend settings)."""
    with _ENVS_LOCK:
        if _ENVS_PID[0] != os.getpid():  # forked after the parent read: inherited environments must not be used
            for env in _ENVS.values():
                env.close()
            _ENVS.clear()
            _ENVS_PID[0] = os.getpid()
        key = osp.realpath(path)
        if key not in _ENVS:
            _ENVS[key] = lmdb.open(path, readonly=True, lock=False, readahead=False)
        return _ENVS[key]


class PairReader:
    """Reads one source's (lq, gt) pairs: ``disk`` paths or ``lmdb`` keys."""

    def __init__(self, backend: str, lq_root: str, gt_root: str, where: str) -> None:
        self.backend, self.lq_root, self.gt_root, self.where = backend, lq_root, gt_root, where
        self._disk: Optional[FileClient] = None

    def __getstate__(self) -> Dict[str, Any]:
        return dict(self.__dict__, _disk=None)

    def _bytes(self, path: str, which: str) -> Optional[bytes]:
        if self.backend == 'lmdb':
            with lmdb_env(self.lq_root if which == 'lq' else self.gt_root).begin(write=False) as txn:
                return txn.get(path.encode('utf-8'))
        if self._disk is None:
            self._disk = FileClient('disk')
        return self._disk.get(path)

    def _read(self, path: str, which: str) -> np.ndarray:
        try:
            buf = self._bytes(path, which)
        except (OSError, lmdb.Error) as err:
            reason = getattr(err, 'strerror', None) or str(err)
            raise BadPairError(f"{self.where}: key '{path}': cannot read {which} image ({reason})") from err
        if buf is None:
            root = self.lq_root if which == 'lq' else self.gt_root
            raise BadPairError(f"{self.where}: key '{path}' is missing from the {which} lmdb '{root}'")
        img = imfrombytes(buf) if len(buf) else None  # float32=True would crash on undecodable bytes
        if img is None:
            raise BadPairError(f"{self.where}: key '{path}': {which} image is corrupt or not an image")
        return img.astype(np.float32) / 255.

    def read(self, lq_path: str, gt_path: str) -> Tuple[np.ndarray, np.ndarray]:
        """Return BGR float32 ``(H, W, 3)`` arrays in [0, 1]."""
        return self._read(lq_path, 'lq'), self._read(gt_path, 'gt')
