"""Source bookkeeping shared by the rain datasets: option checks, pair listing, lazy per-source readers."""
import re
from os import path as osp
from typing import Any, Dict, List, Mapping, MutableMapping, Optional, Sequence, Tuple

import numpy as np
from basicsr.utils import get_root_logger
from torch.utils import data

from coic_basicsr.data.image_files import IMG_EXTENSIONS, list_images
from coic_basicsr.data.option_keys import check_dataset_keys
from coic_basicsr.data.transforms import build_pair_item

#: Path options of a rain dataset section or of one of its sources. ``~`` is expanded in them here, not only by our
#: option parser: BasicSR's (a project calling its train_pipeline) expands only a section's dataroot_gt/dataroot_lq.
PATH_KEYS = ('dataroot_gt', 'dataroot_lq', 'meta_info_file', 'clean_folder')


def expand_user_paths(section: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Expand ``~`` in the :data:`PATH_KEYS` string values of ``section``, in place; returns ``section``."""
    for key in PATH_KEYS:
        if isinstance(section.get(key), str):
            section[key] = osp.expanduser(section[key])
    return section


def checked_sources(opt: Mapping[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    """Validate ``opt['sources']`` (non-empty list of mappings with unique string names).

    Returns:
        ``(where, source_opt)`` per source, ``where`` being e.g. ``"datasets.train.sources[1] (name 'rain200h')"``,
        ``source_opt`` a copy with ``~`` expanded in its paths.
    """
    prefix = f"datasets.{opt.get('phase', 'train')}"
    sources = opt.get('sources')
    if not isinstance(sources, (list, tuple)) or not sources:
        raise ValueError(f'{prefix}.sources: expected a non-empty list of sources, got {sources!r}')
    seen: Dict[str, int] = {}
    out = []
    for i, src in enumerate(sources):
        if not isinstance(src, Mapping):
            raise ValueError(f'{prefix}.sources[{i}]: expected a mapping with a name and its data or rain (e.g. '
                             f"{{name: light, preset: light_sparse}}), got {src!r}")
        if not isinstance(src.get('name'), str) or not src['name']:
            raise ValueError(f'{prefix}.sources[{i}]: every source needs a non-empty string "name"')
        name = src['name']
        if name == 'all':
            raise ValueError(f"{prefix}.sources[{i}]: the name 'all' is reserved for the overall row of the per-source "
                             'metric tables; rename this source')
        if name in seen:
            raise ValueError(f"{prefix}.sources[{i}] (name '{name}'): duplicate source name "
                             f'(also sources[{seen[name]}])')
        seen[name] = i
        out.append((f"{prefix}.sources[{i}] (name '{name}')", expand_user_paths(dict(src))))
    return out


def _strip_ext(name: str) -> str:
    base, ext = osp.splitext(name)
    return base if ext.lower() in IMG_EXTENSIONS else name


# BasicSR's lmdb meta_info.txt line: '<name> (h,w,c) <compress level>'; the name may hold spaces ('rain 1.png')
_META_LINE = re.compile(r'^(.+?)(?:\s+\(\d+,\s*\d+,\s*\d+\)(?:\s+\d+)?)?$')
_BASICSR_META_LINE = re.compile(r'^(.+?)\s+\(\d+,\s*\d+,\s*\d+\)(?:\s+\d+)?$')  # the shape is required


def _lmdb_keys(root: str, where: str, which: str) -> List[str]:
    meta = osp.join(root, 'meta_info.txt')
    if not osp.isfile(meta):
        raise FileNotFoundError(f"{where}: dataroot_{which} '{root}' has no meta_info.txt (not a BasicSR lmdb)")
    with open(meta, encoding='utf-8-sig') as f:  # a BOM (Windows editors) is not part of a key
        return [_strip_ext(_META_LINE.match(line.strip()).group(1)) for line in f if line.strip()]


def _read_meta_info(meta_file: str, tmpl: str, where: str) -> List[Tuple[int, str, str]]:
    """Lines ``lq_rel gt_rel`` or BasicSR-style ``gt_rel (h,w,c) [compress]`` -> ``(line_no, lq_rel, gt_rel)``."""
    if not osp.isfile(meta_file):
        raise FileNotFoundError(f"{where}: meta_info_file '{meta_file}' does not exist")
    rows = []
    with open(meta_file, encoding='utf-8-sig') as f:
        for no, line in enumerate(f, 1):
            tokens = line.split()
            if not tokens or tokens[0].startswith('#'):
                continue
            basicsr_style = _BASICSR_META_LINE.match(line.strip())  # its names may hold spaces ('rain 1.png')
            if basicsr_style is None and len(tokens) >= 2:
                rows.append((no, tokens[0], tokens[1]))
            else:
                gt_rel = basicsr_style.group(1) if basicsr_style else tokens[0]
                rows.append((no, _lq_name(gt_rel, tmpl), gt_rel))
    return rows


def _lq_name(gt_rel: str, tmpl: str) -> str:
    folder, base = osp.split(gt_rel)
    stem, ext = osp.splitext(base)
    return osp.join(folder, tmpl.format(stem) + ext)


def list_source_pairs(src: Mapping[str, Any], where: str) -> Tuple[str, List[str], List[str]]:
    """List one source's pairs.

    Returns:
        ``(backend, lq_paths, gt_paths)``: full file paths for ``disk``, lmdb keys for ``lmdb``.

    Raises:
        FileNotFoundError: Missing root, meta-info file, or a listed file/key that is absent.
        ValueError: Unknown backend, unpaired files, or an empty source.
    """
    backend = (src.get('io_backend') or {'type': 'disk'}).get('type', 'disk')
    if backend not in ('disk', 'lmdb'):
        raise ValueError(f"{where}: io_backend.type must be 'disk' or 'lmdb', got {backend!r}")
    roots = {}
    for which in ('lq', 'gt'):
        root = src.get(f'dataroot_{which}')
        if not root or not osp.isdir(root):
            raise FileNotFoundError(f"{where}: dataroot_{which} '{root}' does not exist")
        roots[which] = root
    tmpl = src.get('filename_tmpl', '{}')
    meta_file = src.get('meta_info_file')

    if backend == 'lmdb':
        lq_keys, gt_keys = (set(_lmdb_keys(roots[w], where, w)) for w in ('lq', 'gt'))
        if meta_file:
            pairs = [(no, _strip_ext(lq), _strip_ext(gt)) for no, lq, gt in _read_meta_info(meta_file, tmpl, where)]
            for no, lq, gt in pairs:
                for which, key, keys in (('lq', lq, lq_keys), ('gt', gt, gt_keys)):
                    if key not in keys:
                        raise FileNotFoundError(f"{where}: key '{key}' ({meta_file}:{no}) is not in the {which} "
                                                f"lmdb '{roots[which]}'")
            lq_paths, gt_paths = [p[1] for p in pairs], [p[2] for p in pairs]
        else:
            for key in sorted(lq_keys ^ gt_keys):
                side = 'gt' if key in lq_keys else 'lq'
                raise FileNotFoundError(f"{where}: key '{key}' has no match in the {side} lmdb '{roots[side]}'")
            lq_paths = gt_paths = sorted(lq_keys)
    elif meta_file:
        lq_paths, gt_paths = [], []
        for no, lq, gt in _read_meta_info(meta_file, tmpl, where):
            for which, rel in (('lq', lq), ('gt', gt)):
                if not osp.isfile(osp.join(roots[which], rel)):
                    raise FileNotFoundError(f"{where}: key '{rel}' ({meta_file}:{no}): {which} file "
                                            f"'{osp.join(roots[which], rel)}' does not exist")
            lq_paths.append(osp.join(roots['lq'], lq))
            gt_paths.append(osp.join(roots['gt'], gt))
    else:
        if osp.realpath(roots['lq']) == osp.realpath(roots['gt']) and tmpl == '{}':
            raise ValueError(f"{where}: dataroot_lq and dataroot_gt are the same folder '{roots['gt']}': every image "
                             "would be paired with itself (set filename_tmpl, e.g. '{}x2', or a meta_info_file)")
        gt_rel = list_images(roots['gt'])[0]  # hidden files and folders skipped, symlinked folders followed
        lq_rel = set(list_images(roots['lq'])[0])
        if osp.realpath(roots['lq']) == osp.realpath(roots['gt']):  # one folder: the lq names are not gt images
            lq_names = {_lq_name(rel, tmpl) for rel in gt_rel}
            gt_rel = [rel for rel in gt_rel if rel not in lq_names]
            lq_rel -= set(gt_rel)
        lq_paths, gt_paths = [], []
        for rel in gt_rel:
            lq_name = _lq_name(rel, tmpl)
            if lq_name not in lq_rel:
                raise FileNotFoundError(f"{where}: key '{rel}': no lq file '{osp.join(roots['lq'], lq_name)}'")
            lq_rel.discard(lq_name)
            lq_paths.append(osp.join(roots['lq'], lq_name))
            gt_paths.append(osp.join(roots['gt'], rel))
        if lq_rel:
            raise FileNotFoundError(f"{where}: key '{sorted(lq_rel)[0]}': lq file has no gt in '{roots['gt']}'")
    if not lq_paths:
        raise ValueError(f'{where}: no image pairs found')
    return backend, lq_paths, gt_paths


class RainSourcesDataset(data.Dataset):
    """Base of the rain datasets: common item options, per-source bookkeeping and item assembly.

    Common YAML keys:
        name (str): Dataset name (used in logs). Default: class name.
        phase (str): 'train' crops/augments; 'val'/'test' return full images. Set by BasicSR. Default: 'train'.
        gt_size (int): Training crop size. Required for phase 'train' (subclasses may default it).
        global_size (int): Side of the global views fed to the representation encoder. Default: 128.
        use_hflip (bool): Random horizontal flips (train). Default: True.
        use_rot (bool): Random vertical flips / 90-degree rotations (train). Default: True.
        val_size (int | None): Centre-crop val/test images to at most this size. Default: None.

    Subclasses list their keys in ``OPTION_KEYS`` and the keys of a ``sources`` entry in ``SOURCE_KEYS``; any other
    key (besides the data loader's, :data:`~coic_basicsr.data.option_keys.PIPELINE_KEYS`) is refused, here and
    before the run starts.
    """
    OPTION_KEYS = frozenset({'name', 'phase', 'sources', 'gt_size', 'global_size', 'use_hflip', 'use_rot',
                             'val_size'})
    SOURCE_KEYS = frozenset({'name', 'real'})

    def __init__(self, opt: Dict[str, Any], default_gt_size: Optional[int] = None) -> None:
        super().__init__()
        self.opt = expand_user_paths(opt)
        check_dataset_keys(opt, type(self), f"datasets.{opt.get('phase', 'train')}")
        opt.setdefault('name', type(self).__name__)
        self.phase = opt.get('phase', 'train')
        self.train = self.phase == 'train'
        self.gt_size = opt.get('gt_size', default_gt_size)
        if self.train and not isinstance(self.gt_size, int):
            raise ValueError(f'datasets.{self.phase}.gt_size: an integer crop size is required, got {self.gt_size!r}')
        self.global_size = int(opt.get('global_size') or 128)  # checked: a positive integer or null (the default)
        self.use_hflip, self.use_rot = (opt.get(key) is not False for key in ('use_hflip', 'use_rot'))  # or null
        self.val_size = opt.get('val_size')
        self.source_names: List[str] = []
        self.source_indices: List[List[int]] = []
        self.source_is_real: List[bool] = []

    def _set_sources(self, names: Sequence[str], counts: Sequence[int], is_real: Sequence[bool]) -> None:
        start = 0
        for name, count, real in zip(names, counts, is_real):
            self.source_names.append(name)
            self.source_indices.append(list(range(start, start + count)))
            self.source_is_real.append(bool(real))
            start += count
        self._starts = np.cumsum([0] + list(counts))
        summary = ', '.join(f'{n}: {c}{" (real)" if r else ""}' for n, c, r in zip(names, counts, is_real))
        get_root_logger().info(f"Dataset [{type(self).__name__}] - {self.opt['name']} ({self.phase}): "
                               f'{start} pairs from {len(names)} sources ({summary})')

    def locate(self, index: int) -> Tuple[int, int]:
        """Map a dataset index to ``(source, position within the source)``."""
        if not 0 <= index < int(self._starts[-1]):
            raise IndexError(f"{self.opt['name']}: index {index} out of range (len {int(self._starts[-1])})")
        source = int(np.searchsorted(self._starts, index, side='right')) - 1
        return source, index - int(self._starts[source])

    def make_item(self, img_lq: np.ndarray, img_gt: np.ndarray, source: int, lq_path: str, gt_path: str,
                  where: str) -> Dict[str, Any]:
        """Assemble an item from a BGR float32 pair (crop/augment/global views per phase)."""
        item = build_pair_item(img_lq, img_gt, train=self.train, gt_size=self.gt_size, global_size=self.global_size,
                               use_hflip=self.use_hflip, use_rot=self.use_rot, val_size=self.val_size, where=where)
        item.update(source=source, lq_path=lq_path, gt_path=gt_path)
        return item

    def __len__(self) -> int:
        return int(self._starts[-1])

