"""Convert deraining downloads (Rain200L/H, Rain800, DID, DDN, SPA; official or re-packaged) into paired lq/gt LMDBs.

For each dataset and split this writes ``<out>/<name>_<split>_lq.lmdb`` and ``<out>/<name>_<split>_gt.lmdb`` holding
PNG bytes under the SAME key for both images of a pair (what BasicSR's ``paired_paths_from_lmdb`` expects), and
``<out>/<name>_<split>_pairs.txt`` with one ``lq_key gt_key`` line per pair. Many-to-one datasets (DDN: 14 rainy
renderings per clean scene; SPA: many frames per clean patch) store the clean image again under every pair key.

A build writes into ``<x>.lmdb.partial`` folders and renames them only when every pair is in, then writes the pair
list. Re-running the same command after an interruption (even a hard kill) keeps what was committed and writes the
rest; re-running a finished build only verifies it.
"""
import argparse
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache, partial
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import cv2
import lmdb
import numpy as np
from basicsr.utils.lmdb_util import LmdbMaker
from tqdm import tqdm

from coic_basicsr.tools.count_check import DEFAULT_META_DIR, check_counts
from coic_basicsr.tools.layout_files import Pair
from coic_basicsr.tools.official_layouts import DATASETS, SPLITS, canonical_name, list_pairs, read_image, take_half

Encoded = Tuple[bytes, Tuple[int, int, int]]


class ResumableLmdbMaker(LmdbMaker):
    """BasicSR's :class:`LmdbMaker` that reopens a half-written LMDB instead of refusing it.

    On opening, the keys stored in the LMDB and the lines of its ``meta_info.txt`` are reconciled: a killed build can
    leave a line whose transaction never committed, or a committed key whose line was still buffered. Keys present
    in both are kept (``done``); the others are dropped and will be written again.
    """

    def __init__(self, lmdb_path: str, map_size: int = 1024**4, batch: int = 5000, compress_level: int = 1) -> None:
        # LmdbMaker.__init__ exits when the folder exists, so set up the attributes its put()/close() use here.
        os.makedirs(lmdb_path, exist_ok=True)
        self.lmdb_path, self.batch, self.compress_level, self.counter = lmdb_path, batch, compress_level, 0
        self.env = lmdb.open(lmdb_path, map_size=map_size)
        self.done: Set[str] = self._reconcile(os.path.join(lmdb_path, 'meta_info.txt'))
        self.txn = self.env.begin(write=True)
        self.txt_file = open(os.path.join(lmdb_path, 'meta_info.txt'), 'a')

    def _reconcile(self, meta_path: str) -> Set[str]:
        lines: Dict[str, str] = {}
        if os.path.exists(meta_path):
            with open(meta_path) as fin:
                for line in fin:
                    if line.endswith('\n') and ' ' in line:  # a torn last line is dropped
                        lines.setdefault(line.split('.')[0], line)
        with self.env.begin(write=True) as txn:
            stored = [key.decode('ascii') for key in txn.cursor().iternext(keys=True, values=False)]
            for key in stored:
                if key not in lines:
                    txn.delete(key.encode('ascii'))
        done = set(stored) & set(lines)
        with open(meta_path, 'w') as fout:
            fout.writelines(line for key, line in lines.items() if key in done)
        return done

    def put(self, img_byte: bytes, key: str, img_shape: Tuple[int, int, int]) -> None:
        super().put(img_byte, key, img_shape)
        if self.counter % self.batch == 0:  # LmdbMaker just committed: persist the matching meta lines too
            self.txt_file.flush()


def _encode(img: np.ndarray, level: int) -> Encoded:
    ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:
        raise ValueError(f'PNG encoding failed for an image of shape {img.shape}')
    return buf.tobytes(), img.shape


@lru_cache(maxsize=32)
def _encoded_file(path: str, level: int) -> Encoded:
    # many-to-one datasets list the same clean file for consecutive pairs: encode it once
    return _encode(read_image(path), level)


def _encode_pair(pair: Pair, level: int) -> Tuple[Encoded, Encoded]:
    source = read_image(pair.lq_path)
    lq = _encode(take_half(source, pair.lq_half), level)
    if pair.gt_path == pair.lq_path:
        gt = _encode(take_half(source, pair.gt_half), level)
    else:
        gt = _encoded_file(pair.gt_path, level)
    if lq[1] != gt[1]:
        raise ValueError(f"pair '{pair.key}': rainy {lq[1]} and clean {gt[1]} sizes differ "
                         f"('{pair.lq_path}', '{pair.gt_path}')")
    return lq, gt


def _meta_keys(lmdb_path: Path) -> List[str]:
    with open(lmdb_path / 'meta_info.txt') as fin:
        return [line.split('.')[0] for line in fin]


def _verify(lmdb_path: Path, pairs: Sequence[Pair]) -> None:
    keys = _meta_keys(lmdb_path)
    missing, extra = {p.key for p in pairs} - set(keys), set(keys) - {p.key for p in pairs}
    if missing or extra or len(keys) != len(pairs):
        raise ValueError(f"'{lmdb_path}' does not match the pairs found now ({len(keys)} keys for {len(pairs)} "
                         f'pairs; missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}); '
                         'delete it or pass --overwrite to rebuild')


#: Written into every LMDB this tool builds: only those are ever renamed or resumed (a user's own is not touched).
BUILD_MARKER = 'coic_prepare_data.txt'


def prepare(name: str, split: str, root: Path, out: Path, count_check: bool = True,
            meta_dir: Path = DEFAULT_META_DIR, workers: int = 4, compress_level: int = 1, commit_every: int = 1000,
            overwrite: bool = False, map_size: int = 1024**4) -> Dict[str, Path]:
    """Build (or resume, or verify) the lq/gt LMDBs and pair list of one dataset split.

    Returns:
        dict: paths under keys ``lq``, ``gt`` and ``pairs``.
    """
    listing = list_pairs(name, Path(root), split)
    pairs = listing.pairs
    if listing.missing:  # known flaws of an official download (SPA-Data): reported, not silently dropped
        print(f'basicsr prepare-data: warning: {name}/{split}: {listing.describe_missing()}', file=sys.stderr)
    if count_check:
        check_counts(name, split, listing, Path(meta_dir), Path(root))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {side: out / f'{name}_{split}_{side}.lmdb' for side in ('lq', 'gt')}
    paths['pairs'] = out / f'{name}_{split}_pairs.txt'
    partials = {side: Path(f'{paths[side]}.partial') for side in ('lq', 'gt')}
    if overwrite:
        for path in list(paths.values()) + list(partials.values()):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    finished = all(paths[side].is_dir() and not partials[side].exists() for side in ('lq', 'gt'))
    if finished and paths['pairs'].is_file():
        for side in ('lq', 'gt'):
            _verify(paths[side], pairs)
        print(f'{name}/{split}: complete, {len(pairs)} pairs in {out}')
        return paths
    makers = {}
    for side, part in partials.items():
        if paths[side].exists() and part.exists():
            raise ValueError(f"both '{paths[side]}' and '{part}' exist; delete one, or pass --overwrite")
        if paths[side].exists():  # renamed, but the pair list was never written: finish it like a partial build
            if not (paths[side] / BUILD_MARKER).is_file():
                raise ValueError(f"'{paths[side]}' exists but was not built by prepare-data (no {BUILD_MARKER}); "
                                 'it is left as it is: move it away, or pass --overwrite to delete and rebuild it')
            paths[side].rename(part)
        makers[side] = ResumableLmdbMaker(str(part), map_size, commit_every, compress_level)
        (part / BUILD_MARKER).write_text(f'{name} {split}\n')
    todo = [p for p in pairs if p.key not in makers['lq'].done or p.key not in makers['gt'].done]
    encode = partial(_encode_pair, level=compress_level)
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool, \
                tqdm(total=len(pairs), initial=len(pairs) - len(todo), unit='pair', desc=f'{name}/{split}') as bar:
            for start in range(0, len(todo), 64):
                chunk = todo[start:start + 64]
                for pair, encoded in zip(chunk, pool.map(encode, chunk)):
                    for side, (img_byte, shape) in zip(('lq', 'gt'), encoded):
                        if pair.key not in makers[side].done:
                            makers[side].put(img_byte, pair.key, shape)
                    bar.update(1)
    finally:  # commit what was written, so that a re-run resumes from here
        for maker in makers.values():
            maker.close()
    for side, part in partials.items():
        _verify(part, pairs)
        part.rename(paths[side])
    tmp = Path(f"{paths['pairs']}.tmp")
    tmp.write_text(''.join(f'{p.key} {p.key}\n' for p in pairs))
    os.replace(tmp, paths['pairs'])
    print(f"{name}/{split}: wrote {len(todo)} of {len(pairs)} pairs -> {paths['lq'].name}, {paths['gt'].name}")
    return paths


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``basicsr prepare-data``."""
    parser = argparse.ArgumentParser(prog='basicsr prepare-data', description=__doc__.split('\n')[0])
    parser.add_argument('--dataset', required=True,
                        help=f"{', '.join(DATASETS)}, a comma-separated list of them, or 'all'")
    parser.add_argument('--split', default='all', choices=SPLITS + ('all',), help='default: all')
    parser.add_argument('--root', required=True, type=Path,
                        help='the download (official or a known re-packaged layout, see datasets_meta/README.md): the '
                             'dataset folder, or a parent holding it (e.g. Rain200H/)')
    parser.add_argument('--out', required=True, type=Path, help='folder for the LMDBs and pair lists')
    parser.add_argument('--no-count-check', action='store_true',
                        help='skip checking pair counts against datasets_meta/datasets.yml (partial/miniature copies)')
    parser.add_argument('--meta-dir', type=Path, default=DEFAULT_META_DIR, help='default: %(default)s')
    parser.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1), help='image-encoding threads')
    parser.add_argument('--compress-level', type=int, default=1, choices=range(10), metavar='0-9',
                        help='PNG compression level (lossless either way); default: 1')
    parser.add_argument('--commit-every', type=int, default=1000, help='pairs per LMDB transaction; default: 1000')
    parser.add_argument('--overwrite', action='store_true', help='delete existing outputs and rebuild')
    return parser


def _run(argv: Optional[List[str]]) -> None:
    args = build_parser().parse_args(argv)
    names = list(DATASETS) if args.dataset.strip().lower() == 'all' else \
        [canonical_name(n) for n in args.dataset.split(',') if n.strip()]
    splits = SPLITS if args.split == 'all' else (args.split,)
    if args.commit_every < 1:
        raise ValueError(f'--commit-every: expected an integer >= 1, got {args.commit_every}')
    for name in names:
        for split in splits:
            prepare(name, split, args.root, args.out, not args.no_count_check, args.meta_dir, args.workers,
                    args.compress_level, args.commit_every, args.overwrite)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``basicsr prepare-data``; returns the exit status (2 and one error line for bad input, as the
    other commands; 130 when interrupted)."""
    from coic_basicsr.cli import run_reporting_errors
    try:
        return run_reporting_errors('basicsr prepare-data', _run, argv)
    except KeyboardInterrupt:
        print('basicsr prepare-data: interrupted; run the same command again to resume', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
