"""Readers for the official folder layouts of Rain200L/H, Rain800, DID-Data, DDN-Data and SPA-Data.

Each reader turns one split of an official download into :class:`Pair` records: one key shared by the rainy (lq) and
clean (gt) image, the two source files and, for side-by-side files, which half holds which image. The facts behind
each layout, with their sources, are in ``datasets_meta/<name>.md``. Hidden files and folders (macOS ``._x.jpg``,
``.DS_Store``) are skipped; a dangling symlink stops the listing with its path instead of vanishing.
"""
import os
import re
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np

IMG_EXTS = ('.png', '.jpg', '.jpeg', '.bmp')
SPLITS = ('train', 'test')
_KEY_RE = re.compile(r'^[A-Za-z0-9_-]+$')  # BasicSR cuts meta_info keys at the first '.'; keys are ASCII


class Pair(NamedTuple):
    """One rainy/clean pair; ``*_half`` is 'left'/'right' for side-by-side files, None for whole images."""
    key: str
    lq_path: str
    gt_path: str
    lq_half: Optional[str] = None
    gt_half: Optional[str] = None


class LayoutSpec(NamedTuple):
    """How to find and read one dataset: folder names tried, sub-folders a split folder must hold, reader."""
    name: str
    title: str
    folders: Tuple[str, ...]
    split_dirs: Dict[str, Tuple[str, ...]]
    required: Dict[str, Tuple[str, ...]]
    lister: Callable[[Path, str], List[Pair]]


def _natural_key(name: str) -> list:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r'(\d+)', name)]


def _check_not_dangling(entry: os.DirEntry) -> None:
    # is_file()/is_dir() are False for a link whose target is gone (an unmounted disk): it would vanish unnoticed
    if entry.is_symlink() and not os.path.exists(entry.path):
        raise FileNotFoundError(f"'{entry.path}' is a symlink to '{os.readlink(entry.path)}', which does not exist")


def _images(folder: Path) -> List[Path]:
    """Image files of ``folder``, hidden ones (macOS ``._x.jpg``, ``.DS_Store``) left out."""
    files = []
    with os.scandir(folder) as entries:  # DirEntry.is_file() needs no stat call per file (SPA has 638k)
        for e in entries:
            if e.name.startswith('.') or os.path.splitext(e.name)[1].lower() not in IMG_EXTS:
                continue
            _check_not_dangling(e)
            if e.is_file():
                files.append(Path(e.path))
    return sorted(files, key=lambda p: _natural_key(p.name))


def _subdirs(folder: Path) -> List[Path]:
    dirs = []
    with os.scandir(folder) as entries:
        for e in entries:
            if not e.name.startswith('.'):
                _check_not_dangling(e)
                if e.is_dir():
                    dirs.append(Path(e.path))
    return sorted(dirs, key=lambda p: _natural_key(p.name))


def _gt_file(gt: Path, lq: Path) -> str:
    if not gt.is_file():
        raise FileNotFoundError(f"ground truth '{gt}' for rainy image '{lq}' does not exist")
    return str(gt)


def _list_rain200(split_dir: Path, split: str) -> List[Pair]:
    # rain/X2/norain-<i>x2.png (older archives) or rain/norain-<i>x2.png  <->  norain/norain-<i>.png
    rain_dir = split_dir / 'rain' / 'X2' if (split_dir / 'rain' / 'X2').is_dir() else split_dir / 'rain'
    pairs = []
    for path in _images(rain_dir):
        match = re.match(r'^norain-(\d+)x2\.png$', path.name)
        if match:
            key = f'norain-{match.group(1)}'
            pairs.append(Pair(key, str(path), _gt_file(split_dir / 'norain' / f'{key}.png', path)))
    return pairs


def _side_by_side(folder: Path, lq_half: str, gt_half: str, prefix: str = '') -> List[Pair]:
    return [Pair(prefix + p.stem, str(p), str(p), lq_half, gt_half) for p in _images(folder)]


def _list_rain800(split_dir: Path, split: str) -> List[Pair]:
    # ID-CGAN trains pix2pix 'BtoA': the right half (B) is the rainy input, the left half (A) the clean target.
    return _side_by_side(split_dir, lq_half='right', gt_half='left')


DID_DENSITIES = (('heavy', 'Rain_Heavy'), ('medium', 'Rain_Medium'), ('light', 'Rain_Light'))


def _list_did(split_dir: Path, split: str) -> List[Pair]:
    # DID-MDN's loaders feed the left half as input and the right half as target.
    if split == 'test':
        return _side_by_side(split_dir, lq_half='left', gt_half='right')
    pairs = []
    for tag, folder in DID_DENSITIES:
        pairs += _side_by_side(split_dir / folder / 'train2018new', 'left', 'right', prefix=f'{tag}-')
    return pairs


def _list_ddn(split_dir: Path, split: str) -> List[Pair]:
    # rainy_image/<i>_<j>.jpg (14 rain renderings j of scene i)  <->  ground_truth/<i>.jpg
    pairs = []
    for path in _images(split_dir / 'rainy_image'):
        match = re.match(r'^(\d+)_(\d+)$', path.stem)
        if match:
            gt = split_dir / 'ground_truth' / f'{match.group(1)}{path.suffix}'
            pairs.append(Pair(path.stem, str(path), _gt_file(gt, path)))
    return pairs


def _list_spa(split_dir: Path, split: str) -> List[Pair]:
    if split == 'test':  # rain/<n>.png  <->  gt/<n>gt.png
        return [Pair(p.stem, str(p), _gt_file(split_dir / 'gt' / f'{p.stem}gt{p.suffix}', p))
                for p in _images(split_dir / 'rain')]
    # real_world/<v>/<v>-<f>/<v>-<f>_<x>_<y>.png (frame f of video v)  <->  real_world_gt/<v>/<v>_<x>_<y>.png
    pairs = []
    for scene in _subdirs(split_dir / 'real_world'):
        gt_dir = split_dir / 'real_world_gt' / scene.name
        gt_names = {p.name for p in gt_dir.iterdir()} if gt_dir.is_dir() else set()
        for frame_dir in _subdirs(scene):
            for path in _images(frame_dir):
                match = re.match(r'^(.+)-[^-_]+_(\d+)_(\d+)$', path.stem)
                if not match:
                    continue
                gt_name = f'{match.group(1)}_{match.group(2)}_{match.group(3)}{path.suffix}'
                if gt_name not in gt_names:  # one listing per scene instead of 638k stat calls
                    _gt_file(gt_dir / gt_name, path)
                pairs.append(Pair(path.stem, str(path), str(gt_dir / gt_name)))
    return pairs


_R200 = ('rain', 'norain')
DATASETS: Dict[str, LayoutSpec] = {
    'rain200l': LayoutSpec('rain200l', 'Rain200L', ('Rain200L', 'rain200l'),
                           {'train': ('train', 'rain_data_train_Light'),
                            'test': ('test', 'rain_light_test', 'rain_data_test_Light/rain_light_test',
                                     'rain_data_test_Light')},
                           {'train': _R200, 'test': _R200}, _list_rain200),
    'rain200h': LayoutSpec('rain200h', 'Rain200H', ('Rain200H', 'rain200h'),
                           {'train': ('train', 'rain_data_train_Heavy'),
                            'test': ('test', 'rain_heavy_test', 'rain_data_test_Heavy/rain_heavy_test',
                                     'rain_data_test_Heavy')},
                           {'train': _R200, 'test': _R200}, _list_rain200),
    'rain800': LayoutSpec('rain800', 'Rain800', ('Rain800', 'rain800'),
                          {'train': ('training', 'Rain800/training'), 'test': ('test_syn', 'Rain800/test_syn')},
                          {'train': (), 'test': ()}, _list_rain800),
    'did': LayoutSpec('did', 'DID-Data', ('DID-Data', 'DID', 'did', 'Rain1200'),
                      {'train': ('DID-MDN-training', 'DID-MDN-datasets/DID-MDN-training'),
                       'test': ('DID-MDN-test', 'DID-MDN-datasets/DID-MDN-test')},
                      {'train': tuple(f'{folder}/train2018new' for _, folder in DID_DENSITIES), 'test': ()},
                      _list_did),
    'ddn': LayoutSpec('ddn', 'DDN-Data', ('DDN-Data', 'DDN', 'ddn', 'Rain1400'),
                      {'train': ('training', 'rainy_image_dataset/training'),
                       'test': ('testing', 'rainy_image_dataset/testing')},
                      {'train': ('rainy_image', 'ground_truth'), 'test': ('rainy_image', 'ground_truth')}, _list_ddn),
    'spa': LayoutSpec('spa', 'SPA-Data', ('SPA-Data', 'SPA', 'spa'),
                      {'train': ('.', 'Training'),
                       'test': ('real_test_1000', 'real_test_1000/real_test_1000', 'Testing/real_test_1000',
                                'Testing/real_test_1000/real_test_1000')},
                      {'train': ('real_world', 'real_world_gt'), 'test': ('rain', 'gt')}, _list_spa),
}
ALIASES = {'did-data': 'did', 'did_data': 'did', 'rain1200': 'did', 'ddn-data': 'ddn', 'ddn_data': 'ddn',
           'rain1400': 'ddn', 'spa-data': 'spa', 'spa_data': 'spa', 'spadata': 'spa'}


def canonical_name(name: str) -> str:
    """Map a dataset name or alias (case-insensitive) to its key in :data:`DATASETS`."""
    low = name.strip().lower()
    low = ALIASES.get(low, low)
    if low not in DATASETS:
        raise ValueError(f"--dataset: unknown dataset '{name}' (known: {', '.join(DATASETS)}, or 'all')")
    return low


def resolve_split_dir(name: str, root: Path, split: str) -> Path:
    """Find the folder of ``split`` under ``root`` (the dataset folder itself or a parent holding it)."""
    spec = DATASETS[name]
    if not root.is_dir():
        raise FileNotFoundError(f"--root '{root}' does not exist or is not a folder")
    for base in [root] + [root / folder for folder in spec.folders]:
        for cand in spec.split_dirs[split]:
            folder = base / cand
            if folder.is_dir() and all((folder / sub).is_dir() for sub in spec.required[split]):
                return folder
    needs = f" holding {', '.join(s + '/' for s in spec.required[split])}" if spec.required[split] else ''
    raise FileNotFoundError(f"--root '{root}': no {spec.title} {split} folder found (tried "
                            f"{', '.join(spec.split_dirs[split])}{needs}, directly under it or under "
                            f"{', '.join(f + '/' for f in spec.folders)})")


def list_pairs(name: str, root: Path, split: str) -> List[Pair]:
    """All pairs of one split of an official download, in natural file order; keys are unique and ASCII."""
    split_dir = resolve_split_dir(name, root, split)
    pairs = DATASETS[name].lister(split_dir, split)
    if not pairs:
        raise FileNotFoundError(f"{DATASETS[name].title} {split}: no image pairs found under '{split_dir}'")
    seen = set()
    for pair in pairs:
        if not _KEY_RE.match(pair.key) or pair.key in seen:
            raise ValueError(f"{DATASETS[name].title} {split}: key '{pair.key}' from '{pair.lq_path}' is "
                             'duplicated or not a plain ASCII name')
        seen.add(pair.key)
    return pairs


def read_image(path: str) -> np.ndarray:
    """Read an image as 8-bit BGR (the colour flag BasicSR's ``imfrombytes`` uses)."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image '{path}'")
    return img


def take_half(img: np.ndarray, half: Optional[str]) -> np.ndarray:
    """Left or right half of a side-by-side image (an odd middle column belongs to neither); whole if None."""
    if half is None:
        return img
    width = img.shape[1] // 2
    return img[:, :width] if half == 'left' else img[:, img.shape[1] - width:]
