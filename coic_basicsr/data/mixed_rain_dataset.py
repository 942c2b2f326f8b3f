"""Paired deraining dataset over several named sources (synthetic sets and real SPA-Data), disk or LMDB."""
from collections import Counter
from os import path as osp
from typing import Any, Dict, List, Optional

from basicsr.utils import get_root_logger
from basicsr.utils.registry import DATASET_REGISTRY

from coic_basicsr.data.pair_reader import BadPairError, PairReader
from coic_basicsr.data.rain_sources import RainSourcesDataset, checked_sources, list_source_pairs


def image_names(lq_paths: List[str], root: Optional[str]) -> List[str]:
    """Names for saved results: the path under ``root`` (an lmdb key as it is) without its extension, which is kept
    where two images would share a name ('scene1/000' and 'scene2/000' stay apart; 'x.png', 'x.jpg' -> 'x_png',
    'x_jpg')."""
    rel = [osp.relpath(p, root) if root else p for p in lq_paths]
    stems = [osp.splitext(r)[0] for r in rel]
    repeated = {s for s, n in Counter(stems).items() if n > 1}
    return [f'{s}_{osp.splitext(r)[1].lstrip(".")}' if s in repeated else s for s, r in zip(stems, rel)]


@DATASET_REGISTRY.register()
class MixedRainDataset(RainSourcesDataset):
    """Mix of paired rain datasets; every item carries the index of the source it came from.

    Items (train): ``lq``, ``gt`` (aligned ``gt_size`` crops, RGB float32 CHW in [0, 1], same flip/rot90),
    ``lq_global``, ``gt_global`` (whole images through :func:`~coic_basicsr.data.transforms.global_view`, with the
    crop's flip/rotation), ``source`` (int), ``lq_path``, ``gt_path`` (file path, or lmdb key), ``image_name``
    (:func:`image_names`). Val/test: full ``lq``, ``gt``, ``lq_global`` and the same metadata. Indices of source
    ``s`` are ``source_indices[s]`` (contiguous, in the order of ``sources``).

    Pairs of a source come from ``meta_info_file`` when given (lines ``lq_rel gt_rel``, or BasicSR-style
    ``gt_rel (h,w,c) ...`` with the lq name from ``filename_tmpl``; for lmdb, names are keys with or without the
    image extension); otherwise from the lmdb ``meta_info.txt`` keys (same key in both LMDBs, as
    ``paired_paths_from_lmdb``), or, for disk folders, from identical relative names (after ``filename_tmpl``).

    YAML keys:
        name (str): Dataset name. Default: 'MixedRainDataset'.
        sources (list[dict]): One entry per source with keys
            name (str): Unique source name (e.g. 'rain200h'). Required.
            dataroot_gt (str): Clean images: a folder or a ``*.lmdb`` folder. Required.
            dataroot_lq (str): Rainy images: a folder or a ``*.lmdb`` folder. Required.
            io_backend (dict): ``{type: disk | lmdb}``. Default: {type: disk}.
            meta_info_file (str | None): Pair list (see above). Default: None.
            filename_tmpl (str): Template mapping a gt stem to the lq stem, e.g. '{}x2'. Default: '{}'.
            real (bool): Real (not synthetic) rain, e.g. SPA-Data; used by MixedDatasetSampler. Default: False.
        gt_size (int): Training crop size. Required for phase 'train'.
        global_size (int): Side of the global views. Default: 128.
        use_hflip (bool): Random horizontal flips (train). Default: True.
        use_rot (bool): Random vertical flips and 90-degree rotations (train). Default: True.
        val_size (int | None): Centre-crop val/test images to at most this size. Default: None.
        skip_bad (int): Skip up to this many unreadable/corrupt items (logged, replaced by the next item of the
            same source) before raising; counted per DataLoader worker. Training only. Default: 0.
    """
    OPTION_KEYS = RainSourcesDataset.OPTION_KEYS | {'skip_bad'}
    SOURCE_KEYS = RainSourcesDataset.SOURCE_KEYS | {'dataroot_gt', 'dataroot_lq', 'io_backend', 'meta_info_file',
                                                    'filename_tmpl'}

    def __init__(self, opt: Dict[str, Any]) -> None:
        super().__init__(opt)
        self.skip_bad = int(opt.get('skip_bad', 0))
        if self.skip_bad and not self.train:
            raise ValueError(f'datasets.{self.phase}.skip_bad: only for training (a skipped {self.phase} image would be '
                             'replaced by the next one and scored twice)')
        self.num_skipped = 0
        self.readers: List[PairReader] = []
        self.wheres: List[str] = []
        self.lq_paths: List[str] = []
        self.gt_paths: List[str] = []
        self.image_names: List[str] = []
        counts, names, is_real = [], [], []
        for where, src in checked_sources(opt):
            backend, lq_paths, gt_paths = list_source_pairs(src, where)
            self.readers.append(PairReader(backend, src['dataroot_lq'], src['dataroot_gt'], where))
            self.wheres.append(where)
            self.lq_paths.extend(lq_paths)
            self.gt_paths.extend(gt_paths)
            self.image_names.extend(image_names(lq_paths, src['dataroot_lq'] if backend == 'disk' else None))
            names.append(src['name'])
            counts.append(len(lq_paths))
            is_real.append(bool(src.get('real', False)))
        self._set_sources(names, counts, is_real)

    def _load(self, index: int) -> Dict[str, Any]:
        source, _ = self.locate(index)
        lq_path, gt_path = self.lq_paths[index], self.gt_paths[index]
        img_lq, img_gt = self.readers[source].read(lq_path, gt_path)
        where = f"{self.wheres[source]}: key '{gt_path}'"
        return dict(self.make_item(img_lq, img_gt, source, lq_path, gt_path, where),
                    image_name=self.image_names[index])

    def __getitem__(self, index: int) -> Dict[str, Any]:
        while True:
            try:
                return self._load(index)
            except BadPairError as err:
                if self.num_skipped >= self.skip_bad:
                    if self.skip_bad:
                        raise BadPairError(f'{err} (skip_bad={self.skip_bad} exhausted)') from err
                    raise
                self.num_skipped += 1
                get_root_logger().warning(f'Skipping bad item {self.num_skipped}/{self.skip_bad}: {err}')
                source, pos = self.locate(index)
                members = self.source_indices[source]
                index = members[(pos + 1) % len(members)]
