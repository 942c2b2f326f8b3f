"""Miniature replicas of the six official deraining dataset layouts (Rain200L/H, Rain800, DID, DDN, SPA), for
``basicsr prepare-data``; each maker returns the pairs it wrote as cv2 decodes them."""
from pathlib import Path
from typing import Dict, Tuple

import cv2
import numpy as np

H, W = 16, 24
Expected = Dict[str, Dict[str, Tuple[np.ndarray, np.ndarray]]]  # split -> key -> (lq, gt) as cv2 decodes them


def _rainy(rng: np.random.Generator, width: int = W) -> np.ndarray:
    return rng.integers(170, 256, (H, width, 3), dtype=np.uint8)  # bright, so the sides can be told apart


def _clean(rng: np.random.Generator, width: int = W) -> np.ndarray:
    return rng.integers(0, 86, (H, width, 3), dtype=np.uint8)


def _write(path: Path, img: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return cv2.imread(str(path), cv2.IMREAD_COLOR)  # JPEG: compare with what cv2 decodes


def make_rain200(root: Path, rng: np.random.Generator, n_train: int = 3) -> Expected:
    exp: Expected = {'train': {}, 'test': {}}
    for split, count, rain_dir in (('train', n_train, 'rain'), ('test', 2, 'rain/X2')):
        for i in range(1, count + 1):
            lq = _write(root / split / rain_dir / f'norain-{i}x2.png', _rainy(rng))
            exp[split][f'norain-{i}'] = (lq, _write(root / split / 'norain' / f'norain-{i}.png', _clean(rng)))
    return exp


def make_rain800(root: Path, rng: np.random.Generator) -> Expected:
    exp: Expected = {'train': {}, 'test': {}}
    for split, folder, count in (('train', 'training', 3), ('test', 'test_syn', 2)):
        for n in range(1, count + 1):
            odd = split == 'test' and n == 2  # odd width: the middle column belongs to neither half
            img = _write(root / folder / f'{n}.jpg',
                         np.hstack([_clean(rng), _rainy(rng, W + 1)]) if odd else np.hstack([_clean(rng), _rainy(rng)]))
            exp[split][str(n)] = (img[:, W + 1:] if odd else img[:, W:], img[:, :W])  # right rainy, left clean
    return exp


def make_did(root: Path, rng: np.random.Generator) -> Expected:
    exp: Expected = {'train': {}, 'test': {}}
    base = root / 'DID-MDN-datasets'
    for tag, folder in (('heavy', 'Rain_Heavy'), ('medium', 'Rain_Medium'), ('light', 'Rain_Light')):
        for n in (0, 1):
            img = _write(base / 'DID-MDN-training' / folder / 'train2018new' / f'{n}.jpg',
                         np.hstack([_rainy(rng), _clean(rng)]))
            exp['train'][f'{tag}-{n}'] = (img[:, :W], img[:, W:])  # left rainy, right clean
    for n in (1, 2):
        img = _write(base / 'DID-MDN-test' / f'{n}.jpg', np.hstack([_rainy(rng), _clean(rng)]))
        exp['test'][str(n)] = (img[:, :W], img[:, W:])
    return exp


def make_ddn(root: Path, rng: np.random.Generator) -> Expected:
    exp: Expected = {'train': {}, 'test': {}}
    for split, folder, scenes in (('train', 'training', (1, 2)), ('test', 'testing', (901, ))):
        for i in scenes:
            gt = _write(root / 'rainy_image_dataset' / folder / 'ground_truth' / f'{i}.jpg', _clean(rng))
            for j in range(1, 15):
                lq = _write(root / 'rainy_image_dataset' / folder / 'rainy_image' / f'{i}_{j}.jpg', _rainy(rng))
                exp[split][f'{i}_{j}'] = (lq, gt)
    return exp


def make_spa(root: Path, rng: np.random.Generator) -> Expected:
    exp: Expected = {'train': {}, 'test': {}}
    for video, frames, spots in (('000', ('1', '2'), ((1, 1), (2, 1))), ('001', ('7', ), ((1, 2), ))):
        for x, y in spots:
            gt = _write(root / 'real_world_gt' / video / f'{video}_{x}_{y}.png', _clean(rng))
            for f in frames:
                key = f'{video}-{f}_{x}_{y}'
                lq = _write(root / 'real_world' / video / f'{video}-{f}' / f'{key}.png', _rainy(rng))
                exp['train'][key] = (lq, gt)
    for n in ('000', '001'):
        lq = _write(root / 'real_test_1000' / 'rain' / f'{n}.png', _rainy(rng))
        exp['test'][n] = (lq, _write(root / 'real_test_1000' / 'gt' / f'{n}gt.png', _clean(rng)))
    return exp


MAKERS = {'rain200l': ('Rain200L', make_rain200), 'rain200h': ('Rain200H', make_rain200),
          'rain800': ('Rain800', make_rain800), 'did': ('DID-Data', make_did), 'ddn': ('DDN-Data', make_ddn),
          'spa': ('SPA-Data', make_spa)}
