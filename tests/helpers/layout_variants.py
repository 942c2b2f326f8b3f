"""Miniature replicas of the re-packaged dataset layouts ``basicsr prepare-data`` reads besides the official ones
(CoIC authors' bundle, DRSformer's input/target, PReNet's DDN copy) and of SPA-Data with SPANet's
``real_world.txt``; each maker returns the pairs it wrote as cv2 decodes them."""
from pathlib import Path
from typing import Dict

import numpy as np

from helpers.official_layouts import W, Expected, _clean, _rainy, _write, make_rain200


def make_coic_bundle(root: Path, rng: np.random.Generator) -> Dict[str, Expected]:
    """The CoIC authors' bundle: ``<root>/<X>/{train,test}/{rain,norain}``, DID-Data merged into ``<X>/<split>/<n>.jpg``
    side by side (left rainy), Rain200H with its official names."""
    exp: Dict[str, Expected] = {name: {'train': {}, 'test': {}} for name in ('rain800', 'ddn', 'did')}
    for split, count, scene in (('train', 2, 1), ('test', 1, 901)):
        for n in range(1, count + 1):
            lq = _write(root / 'Rain800' / split / 'rain' / f'rain-{n:03d}.png', _rainy(rng))
            exp['rain800'][split][f'norain-{n:03d}'] = (
                lq, _write(root / 'Rain800' / split / 'norain' / f'norain-{n:03d}.png', _clean(rng)))
            img = _write(root / 'DID' / split / f'{n}.jpg', np.hstack([_rainy(rng), _clean(rng)]))
            exp['did'][split][str(n)] = (img[:, :W], img[:, W:])
        gt = _write(root / 'DDN' / split / 'norain' / f'{scene}.jpg', _clean(rng))
        for j in (1, 2):
            lq = _write(root / 'DDN' / split / 'rain' / f'{scene}_{j}.jpg', _rainy(rng))
            exp['ddn'][split][f'{scene}_{j}'] = (lq, gt)
    exp['rain200h'] = make_rain200(root / 'Rain200H', rng)
    return exp


def make_input_target(root: Path, rng: np.random.Generator, folder: str) -> Expected:
    """DRSformer's ``Datasets/{train,test}/<folder>/{input,target}/<n>.png``, renumbered from 1."""
    exp: Expected = {'train': {}, 'test': {}}
    for split, count in (('train', 3), ('test', 2)):
        for n in range(1, count + 1):
            base = root / 'Datasets' / split / folder
            exp[split][str(n)] = (_write(base / 'input' / f'{n}.png', _rainy(rng)),
                                  _write(base / 'target' / f'{n}.png', _clean(rng)))
    return exp


def make_prenet_ddn(root: Path, rng: np.random.Generator) -> Expected:
    """PReNet's DDN copy: ``Rain12600/`` (train) and ``Rain1400/`` (test) holding rainy_image/ and ground_truth/."""
    exp: Expected = {'train': {}, 'test': {}}
    for split, folder, scene in (('train', 'Rain12600', 3), ('test', 'Rain1400', 950)):
        gt = _write(root / folder / 'ground_truth' / f'{scene}.jpg', _clean(rng))
        for j in (1, 14):
            exp[split][f'{scene}_{j}'] = (_write(root / folder / 'rainy_image' / f'{scene}_{j}.jpg', _rainy(rng)), gt)
    return exp


def make_spa_listed(split_dir: Path, rng: np.random.Generator) -> Expected:
    """SPA-Data training set with SPANet's ``real_world.txt`` (lines ``/real_world/... /real_world_gt/...``), where
    the patches of frame 14 of video 274 are stored as folders holding the image (SPANet issue #24)."""
    exp: Expected = {'train': {}}
    lines, gts = [], {}
    for video, frame, spot in (('001', '1', '0_3'), ('001', '2', '0_3'), ('274', '14', '0_3'), ('274', '14', '1_1')):
        key = f'{video}-{frame}_{spot}'
        rel, gt_rel = f'real_world/{video}/{video}-{frame}/{key}.png', f'real_world_gt/{video}/{video}_{spot}.png'
        stored = split_dir / rel / f'rain_s208_resize-{frame}_{spot}.png' if video == '274' else split_dir / rel
        if gt_rel not in gts:
            gts[gt_rel] = _write(split_dir / gt_rel, _clean(rng))
        exp['train'][key] = (_write(stored, _rainy(rng)), gts[gt_rel])
        lines.append(f'/{rel} /{gt_rel}\n')
    _write(split_dir / 'real_world' / '001' / '001-9' / '001-9_0_3.png', _rainy(rng))  # on disk, not listed
    (split_dir / 'real_world.txt').write_text(''.join(lines))
    return exp
