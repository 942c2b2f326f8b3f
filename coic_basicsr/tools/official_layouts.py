"""Readers for the folder layouts of Rain200L/H, Rain800, DID-Data, DDN-Data and SPA-Data: the official ones, and the
re-packaged ones of :mod:`layout_variants` (tried after them).

Each reader turns one split of a download into :class:`Pair` records: one key shared by the rainy (lq) and
clean (gt) image, the two source files and, for side-by-side files, which half holds which image. The facts behind
each layout, with their sources, are in ``datasets_meta/<name>.md``. Hidden files and folders (macOS ``._x.jpg``,
``.DS_Store``) are skipped; a dangling symlink stops the listing with its path instead of vanishing.
"""
import re
from functools import partial
from pathlib import Path
from typing import Dict, Iterator, NamedTuple, Optional, Tuple

import cv2
import numpy as np

from coic_basicsr.tools.layout_files import Layout, Listing, NameRule, find_dir, paired_folders, side_by_side
from coic_basicsr.tools.layout_variants import DID_BUNDLE, RAIN800_BUNDLE_LAYOUT, SPLITS, coic_bundle, variants
from coic_basicsr.tools.spa_layout import list_spa_train

_KEY_RE = re.compile(r'^[A-Za-z0-9_-]+$')  # BasicSR cuts meta_info keys at the first '.'; keys are ASCII


class LayoutSpec(NamedTuple):
    """One dataset: its title, the names its folder goes by, and its layouts (official first)."""
    name: str
    title: str
    folders: Tuple[str, ...]
    layouts: Tuple[Layout, ...]


# rain/X2/norain-<i>x2.png (older archives) or rain/norain-<i>x2.png  <->  norain/norain-<i>.png
RAIN200 = NameRule(r'^norain-(\d+)x2\.png$', 'norain-{0}', 'norain-{0}.png')
# rainy_image/<i>_<j>.jpg (14 rain renderings j of scene i)  <->  ground_truth/<i>.jpg; key <i>_<j>
DDN = NameRule(r'^((\d+)_\d+)(\.[^.]+)$', '{0}', '{1}{2}')
SPA_TEST = NameRule(r'^([^.]+)(\.[^.]+)$', '{0}', '{0}gt{1}')  # rain/<n>.png  <->  gt/<n>gt.png


def _list_rain800(split_dir: Path, split: str) -> Listing:
    # ID-CGAN trains pix2pix 'BtoA': the right half (B) is the rainy input, the left half (A) the clean target.
    return Listing(side_by_side(split_dir, lq_half='right', gt_half='left'))


DID_DENSITIES = (('heavy', 'Rain_Heavy'), ('medium', 'Rain_Medium'), ('light', 'Rain_Light'))


def _list_did(split_dir: Path, split: str) -> Listing:
    # DID-MDN's loaders feed the left half as input and the right half as target.
    if split == 'test':
        return Listing(side_by_side(split_dir, lq_half='left', gt_half='right'))
    pairs = []
    for tag, folder in DID_DENSITIES:
        pairs += side_by_side(split_dir / folder / 'train2018new', 'left', 'right', prefix=f'{tag}-')
    return Listing(pairs)


def _list_spa(split_dir: Path, split: str) -> Listing:
    if split == 'train':
        return list_spa_train(split_dir, split)
    return paired_folders(split_dir, split, lq_dirs=('rain', ), gt_dir='gt', rule=SPA_TEST)


def _spec(name: str, title: str, folders: Tuple[str, ...], train: Tuple[str, ...], test: Tuple[str, ...],
          required: Tuple[Tuple[str, ...], Tuple[str, ...]], lister, *extra: Layout) -> LayoutSpec:
    """A dataset with its official layout (split folders tried, what they hold, reader), then the re-packaged ones."""
    official = Layout('official', {'train': train, 'test': test}, dict(zip(SPLITS, required)), lister)
    return LayoutSpec(name, title, folders, (official, ) + variants(*extra))


_R200 = (('rain/', 'norain/'), ) * 2
_RAIN200 = partial(paired_folders, lq_dirs=('rain/X2', 'rain'), gt_dir='norain', rule=RAIN200)
DATASETS: Dict[str, LayoutSpec] = {
    'rain200l': _spec('rain200l', 'Rain200L', ('Rain200L', ), ('train', 'rain_data_train_Light'),
                      ('test', 'rain_light_test', 'rain_data_test_Light/rain_light_test', 'rain_data_test_Light'),
                      _R200, _RAIN200),
    'rain200h': _spec('rain200h', 'Rain200H', ('Rain200H', ), ('train', 'rain_data_train_Heavy'),
                      ('test', 'rain_heavy_test', 'rain_data_test_Heavy/rain_heavy_test', 'rain_data_test_Heavy'),
                      _R200, _RAIN200),
    'rain800': _spec('rain800', 'Rain800', ('Rain800', ), ('training', 'Rain800/training'),
                     ('test_syn', 'Rain800/test_syn'), ((), ()), _list_rain800, RAIN800_BUNDLE_LAYOUT),
    'did': _spec('did', 'DID-Data', ('DID-Data', 'DID', 'Rain1200'),
                 ('DID-MDN-training', 'DID-MDN-datasets/DID-MDN-training'),
                 ('DID-MDN-test', 'DID-MDN-datasets/DID-MDN-test'),
                 (tuple(f'{folder}/train2018new/' for _, folder in DID_DENSITIES), ()), _list_did, DID_BUNDLE),
    'ddn': _spec('ddn', 'DDN-Data', ('DDN-Data', 'DDN', 'Rain1400'),
                 ('training', 'rainy_image_dataset/training', 'Rain12600', 'train/Rain12600'),  # Rain12600/1400: PReNet
                 ('testing', 'rainy_image_dataset/testing', 'Rain1400', 'test/Rain1400'),
                 (('rainy_image/', 'ground_truth/'), ) * 2,
                 partial(paired_folders, lq_dirs=('rainy_image', ), gt_dir='ground_truth', rule=DDN), coic_bundle(DDN)),
    'spa': _spec('spa', 'SPA-Data',
                 ('SPA-Data', 'SPA', 'Real_Rain_Streaks_Dataset_CVPR19', 'real_world_rain_dataset_CVPR19'),
                 ('.', 'Training'), ('real_test_1000', 'real_test_1000/real_test_1000', 'Testing/real_test_1000',
                                     'Testing/real_test_1000/real_test_1000'),
                 (('real_world/', 'real_world_gt/'), ('rain/', 'gt/')), _list_spa),
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


def _candidates(spec: LayoutSpec, layout: Layout, split: str) -> Iterator[str]:
    for cand in layout.split_dirs[split]:
        yield from ([cand.replace('*', folder) for folder in spec.folders] if '*' in cand else [cand])


def _holds(folder: Path, required: Tuple[str, ...]) -> bool:
    return all((folder / need).is_dir() if need.endswith('/') else (folder / need).is_file() for need in required)


def resolve_split_dir(name: str, root: Path, split: str) -> Tuple[Path, Layout]:
    """Find the folder of ``split`` under ``root`` (the dataset folder itself or a parent holding it) and its layout;
    folder names match in any letter case."""
    spec = DATASETS[name]
    if not root.is_dir():
        raise FileNotFoundError(f"--root: '{root}' does not exist or is not a folder")
    bases = dict.fromkeys([root] + [find_dir(root, folder) for folder in spec.folders])
    for base in (b for b in bases if b is not None):
        for layout in spec.layouts:
            for cand in _candidates(spec, layout, split):
                folder = find_dir(base, cand)
                if folder is not None and _holds(folder, layout.required[split]):
                    return folder, layout
    tried = '; '.join(', '.join(layout.split_dirs[split]) + (f" holding {', '.join(layout.required[split])}"
                                                                if layout.required[split] else '')
                      for layout in spec.layouts)
    raise FileNotFoundError(f"--root: '{root}' holds no {spec.title} {split} folder (tried {tried}; directly under it "
                            f"or under {' or '.join(f + '/' for f in spec.folders)}, * standing for those names, in "
                            'any letter case)')


def list_pairs(name: str, root: Path, split: str) -> Listing:
    """All pairs of one split of a download; keys are unique and ASCII."""
    split_dir, layout = resolve_split_dir(name, root, split)
    listing = layout.lister(split_dir, split)
    title = DATASETS[name].title
    if not listing.pairs:
        raise FileNotFoundError(f"{title} {split}: no image pairs found under '{split_dir}' ({layout.label} layout)"
                                + (f'; {listing.describe_missing()}' if listing.missing else ''))
    seen = set()
    for pair in listing.pairs:
        if not _KEY_RE.match(pair.key) or pair.key in seen:
            raise ValueError(f"{title} {split}: key '{pair.key}' from '{pair.lq_path}' is "
                             'duplicated or not a plain ASCII name')
        seen.add(pair.key)
    return listing


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
