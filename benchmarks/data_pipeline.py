"""Throughput (items/s) of the mixed rain data pipeline: LMDB vs PNG folders, DataLoader workers 0 and 2.

Builds a 3-source mix of rendered rain pairs (Rain200-sized 321x481 by default) in a temporary folder, then times a
torch DataLoader (batch 8, crop 128, MixedDatasetSampler) over MixedRainDataset for each backend and worker count;
also times MixedSyntheticRainDataset (rain rendered on the fly). Usage:

    /work/venv/bin/python benchmarks/data_pipeline.py [--pairs 24] [--height 321 --width 481] [--batches 25]
        [--threads 1]   # torch intra-op threads of the main process (matters for workers=0 on a busy machine)
"""
import argparse
import contextlib
import io
import os
import tempfile
import time
from os import path as osp
from typing import Dict, List

import cv2
import numpy as np
import torch

import coic_basicsr  # noqa: F401  (shim + registries before basicsr)
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from coic_basicsr.data.mixed_rain_dataset import MixedRainDataset
from coic_basicsr.data.mixed_sampler import MixedDatasetSampler
from coic_basicsr.data.samplers import ResumableSampler, SeededDraws
from coic_basicsr.data.synthetic_rain import render_rain
from coic_basicsr.data.synthetic_rain_dataset import MixedSyntheticRainDataset, load_skimage_background

PRESETS = ('light_sparse', 'heavy_dense', 'slanted_long')


def build_sources(root: str, pairs: int, height: int, width: int) -> Dict[str, List[dict]]:
    """Write each preset's pairs as PNG folders and as BasicSR LMDBs; return the two ``sources`` lists."""
    rng = np.random.default_rng(0)
    backgrounds = [load_skimage_background(n) for n in ('astronaut', 'coffee', 'chelsea', 'rocket')]
    png, lmdb = [], []
    for name in PRESETS:
        keys = [f'{name}_{i:04d}' for i in range(pairs)]
        for i, key in enumerate(keys):
            clean = cv2.resize(backgrounds[rng.integers(len(backgrounds))], (width, height)).astype(np.float32) / 255
            rainy = render_rain(clean, name, seed=i)
            for which, img in (('gt', clean), ('lq', rainy)):
                os.makedirs(osp.join(root, name, which), exist_ok=True)
                cv2.imwrite(osp.join(root, name, which, f'{key}.png'), np.round(img * 255).astype(np.uint8))
        for which in ('gt', 'lq'):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                make_lmdb_from_imgs(osp.join(root, name, which), osp.join(root, f'{name}_{which}.lmdb'),
                                    [f'{k}.png' for k in keys], keys)
        png.append(dict(name=name, dataroot_gt=osp.join(root, name, 'gt'), dataroot_lq=osp.join(root, name, 'lq')))
        lmdb.append(dict(name=name, dataroot_gt=osp.join(root, f'{name}_gt.lmdb'),
                         dataroot_lq=osp.join(root, f'{name}_lq.lmdb'), io_backend=dict(type='lmdb')))
    return {'png': png, 'lmdb': lmdb}


def items_per_second(dataset: torch.utils.data.Dataset, workers: int, batches: int, batch_size: int) -> float:
    """Time ``batches`` batches after 2 warm-up batches (workers started) through a DataLoader."""
    # wrapped as basicsr train wraps them: indices carry their draw's seed, the dataset seeds each item from it
    sampler = ResumableSampler(MixedDatasetSampler(dataset, 1, 0, ratio=100, seed=0, weighting='balanced'), seed=0)
    loader = torch.utils.data.DataLoader(SeededDraws(dataset), batch_size=batch_size, sampler=sampler,
                                         num_workers=workers, drop_last=True)
    iterator = iter(loader)
    for _ in range(2):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    elapsed = time.perf_counter() - start
    del iterator
    return batches * batch_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--pairs', type=int, default=24, help='pairs per source')
    parser.add_argument('--height', type=int, default=321)
    parser.add_argument('--width', type=int, default=481)
    parser.add_argument('--batches', type=int, default=25)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--crop', type=int, default=128)
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    parser.add_argument('--threads', type=int, default=0, help='torch threads of the main process (0: default)')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    common = dict(phase='train', gt_size=args.crop, global_size=128, use_hflip=True, use_rot=True)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        sources = build_sources(root, args.pairs, args.height, args.width)
        datasets = {f'{k} {args.height}x{args.width}': MixedRainDataset(dict(common, name=k, sources=v))
                    for k, v in sources.items()}
        datasets['synthetic on the fly 192x192'] = MixedSyntheticRainDataset(
            dict(common, name='syn', bg_size=192, num_per_source=args.pairs,
                 sources=[dict(name=n, preset=n) for n in PRESETS]))
        for label, dataset in datasets.items():
            for workers in args.workers:
                rows.append((label, workers, items_per_second(dataset, workers, args.batches, args.batch_size)))
    print(f'\nMixed rain pipeline: batch {args.batch_size}, crop {args.crop}, global 128, {len(PRESETS)} sources, '
          f'{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}')
    print(f'| {"data":<30} | workers | items/s |')
    print(f'|{"-" * 32}|---------|---------|')
    for label, workers, speed in rows:
        print(f'| {label:<30} | {workers:>7} | {speed:>7.1f} |')


if __name__ == '__main__':
    main()
