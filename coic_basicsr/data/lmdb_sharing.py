"""One process cannot open an LMDB twice (py-lmdb refuses). Our rain datasets share one handle per LMDB and process
(``pair_reader.lmdb_env``), but BasicSR's own datasets open theirs through ``FileClient``: such a dataset cannot
read an LMDB that another dataset reads in the same process. Found up front instead of at the first item read."""
from os import path as osp
from typing import Iterator, Mapping, Tuple


def _lmdb_roots(where: str, section: Mapping) -> Iterator[Tuple[str, str, bool]]:
    """(option path, real path, read through our shared handles) of every LMDB the dataset section reads."""
    sources = section.get('sources')
    if isinstance(sources, (list, tuple)):  # MixedRainDataset: one io_backend per source, our shared handles
        for i, src in enumerate(sources):
            if isinstance(src, Mapping) and (src.get('io_backend') or {}).get('type') == 'lmdb':
                for key in ('dataroot_lq', 'dataroot_gt'):
                    if isinstance(src.get(key), str):
                        yield f'{where}.sources[{i}].{key}', osp.realpath(src[key]), True
        return
    if (section.get('io_backend') or {}).get('type') == 'lmdb':
        for key in ('dataroot_lq', 'dataroot_gt'):
            if isinstance(section.get(key), str):
                yield f'{where}.{key}', osp.realpath(section[key]), False


def _cannot_share(other: Tuple[str, bool], own_handle: bool) -> bool:
    """Whether two readers of one LMDB conflict: only our rain datasets share one handle."""
    return not (own_handle and other[1])


def check_shared_lmdbs(opt: Mapping) -> None:
    """Refuse an LMDB that a BasicSR dataset reads in the main process where another reader opens it too (val and
    test sets are read there, and a training set without loader workers), and one that the training set's loader
    workers read while the main process has it open: workers started again every epoch are forked with that handle."""
    readers, in_workers = {}, {}
    for phase, section in (opt.get('datasets') or {}).items():
        if not isinstance(section, Mapping):
            continue
        forked = phase == 'train' and bool(section.get('num_worker_per_gpu'))
        for where, root, own_handle in _lmdb_roots(f'datasets.{phase}', section):
            if forked:
                in_workers.setdefault(root, (where, own_handle))
                continue
            if root in readers and _cannot_share(readers[root], own_handle):
                stock = f'datasets.{phase}' if not own_handle else readers[root][0].rsplit('.', 1)[0]
                workers = (', or give the training set num_worker_per_gpu >= 1 and persistent_workers: true (its '
                           'workers read it)') if 'datasets.train.' in where + readers[root][0] else ''
                raise ValueError(f"{where}: '{root}' is also read by {readers[root][0]} in the same process, but "
                                 f"{stock} reads LMDBs through BasicSR's FileClient, which cannot share an open LMDB: "
                                 f'use MixedRainDataset for both (they share one handle){workers}')
            readers.setdefault(root, (where, own_handle))
    train = (opt.get('datasets') or {}).get('train')
    if isinstance(train, Mapping) and train.get('persistent_workers'):
        return
    for root, (where, own_handle) in in_workers.items():
        if root in readers and _cannot_share(readers[root], own_handle):
            raise ValueError(f"{where}: '{root}' is also read by {readers[root][0]} in the main process; the training "
                             "set's loader workers, started again every epoch, would inherit that open LMDB and could "
                             "not open it (lmdb: already open in this process): set datasets.train.persistent_workers: "
                             'true, or use MixedRainDataset for both (they share one handle)')
