"""Self-contained rain dataset: procedural rain (one preset per source) over crops of bundled clean images."""
from os import path as osp
from typing import Any, Dict, List

import cv2
import numpy as np
from basicsr.utils.registry import DATASET_REGISTRY

from coic_basicsr.data.image_files import list_images
from coic_basicsr.data.rain_sources import RainSourcesDataset, checked_sources
from coic_basicsr.data.synthetic_rain import RainParams, render_rain, resolve_rain_params

#: scikit-image sample images that ship inside the package (no download needed).
DEFAULT_BACKGROUNDS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'camera', 'coins', 'moon', 'brick', 'grass',
                       'gravel', 'immunohistochemistry')
_SKIMAGE_CACHE: Dict[str, np.ndarray] = {}


def load_skimage_background(name: str) -> np.ndarray:
    """Return the scikit-image sample ``name`` as a BGR uint8 ``(H, W, 3)`` array (cached per process)."""
    if name not in _SKIMAGE_CACHE:
        from skimage import data as skdata
        img = np.asarray(getattr(skdata, name)())
        if img.dtype != np.uint8:
            img = (np.clip(img.astype(np.float64) / max(float(img.max()), 1e-12), 0, 1) * 255).astype(np.uint8)
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR)
        _SKIMAGE_CACHE[name] = img
    return _SKIMAGE_CACHE[name]


@DATASET_REGISTRY.register()
class MixedSyntheticRainDataset(RainSourcesDataset):
    """Rainy/clean pairs rendered on the fly; each source is one rain preset (or parameter set).

    Item ``k`` of source ``s`` is a pure function of ``(seed, phase, s, k)``: a random crop (scale, position,
    horizontal flip) of one background resized to ``bg_size`` and rain rendered by
    :func:`~coic_basicsr.data.synthetic_rain.render_rain`. Train items are then cropped/augmented by the shared
    item code (random per draw, as in BasicSR); val/test items are the full, fixed ``bg_size`` pairs, drawn from a
    different stream than train. Items have the same keys as MixedRainDataset.

    YAML keys:
        name (str): Dataset name. Default: 'MixedSyntheticRainDataset'.
        sources (list[dict]): One entry per source with keys
            name (str): Unique source name. Required.
            preset (str): A key of RAIN_PRESETS ('light_sparse', 'heavy_dense', 'slanted_long', 'mist').
            params (dict): RainParams fields (values or [low, high] ranges); with ``preset`` too, it overrides
                only the fields it names, the others keep the preset's values. One of ``preset``/``params`` is
                required.
            real (bool): Flag the source as real for MixedDatasetSampler (demos). Default: False.
        num_per_source (int): Items per source. Default: 64.
        bg_size (int): Side of the clean backgrounds (and of val/test images). Default: 96.
        gt_size (int): Training crop size (<= bg_size). Default: 64.
        global_size (int): Side of the global views. Default: 128.
        use_hflip (bool): Random horizontal flips (train). Default: True.
        use_rot (bool): Random vertical flips and 90-degree rotations (train). Default: True.
        val_size (int | None): Centre-crop val/test images to at most this size. Default: None.
        seed (int): Seed of all backgrounds and rain. Default: 0.
        clean_folder (str | None): Folder of clean images to use instead of the scikit-image samples. Default: None.
        backgrounds (list[str]): scikit-image sample names used when ``clean_folder`` is unset.
            Default: DEFAULT_BACKGROUNDS.
    """
    OPTION_KEYS = RainSourcesDataset.OPTION_KEYS | {'num_per_source', 'bg_size', 'seed', 'clean_folder',
                                                    'backgrounds'}
    SOURCE_KEYS = RainSourcesDataset.SOURCE_KEYS | {'preset', 'params'}

    def __init__(self, opt: Dict[str, Any]) -> None:
        super().__init__(opt, default_gt_size=64)
        prefix = f'datasets.{self.phase}'
        self.bg_size = int(opt.get('bg_size', 96))
        self.seed = int(opt.get('seed', 0))
        self.num_per_source = int(opt.get('num_per_source', 64))  # checked by option_keys.VALUE_RULES
        if self.train and self.gt_size > self.bg_size:
            raise ValueError(f'{prefix}.gt_size: {self.gt_size} is larger than bg_size {self.bg_size}')
        self.params: List[RainParams] = []
        self.wheres: List[str] = []
        names, real = [], []
        for where, src in checked_sources(opt):
            if 'params' in src:
                spec = dict(src['params'] or {})
                if 'preset' in src:
                    spec.setdefault('preset', src['preset'])
            elif 'preset' in src:
                spec = src['preset']
            else:
                raise ValueError(f'{where}: needs a rain "preset" or "params"')
            self.params.append(resolve_rain_params(spec, where))
            self.wheres.append(where)
            names.append(src['name'])
            real.append(bool(src.get('real', False)))
        self.clean_paths: List[str] = []
        self.bg_images: List[np.ndarray] = []
        folder = opt.get('clean_folder')
        if folder:
            if not osp.isdir(folder):
                raise FileNotFoundError(f"{prefix}.clean_folder: '{folder}' does not exist")
            self.clean_paths = sorted(
                osp.join(folder, p) for p in list_images(folder)[0])
            if not self.clean_paths:
                raise ValueError(f"{prefix}.clean_folder: no images in '{folder}'")
        else:
            from skimage import data as skdata
            for name in opt.get('backgrounds', DEFAULT_BACKGROUNDS):
                if not callable(getattr(skdata, name, None)):
                    raise ValueError(f"{prefix}.backgrounds: '{name}' is not a scikit-image sample image")
                self.bg_images.append(load_skimage_background(name))
        self._set_sources(names, [self.num_per_source] * len(names), real)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """Random square crop (scale and position) of a clean image, resized to ``bg_size``, float32 BGR."""
        if self.clean_paths:
            path = self.clean_paths[int(rng.integers(len(self.clean_paths)))]
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"datasets.{self.phase}.clean_folder: '{path}' is corrupt or not an image")
        else:
            img = self.bg_images[int(rng.integers(len(self.bg_images)))]
        h, w = img.shape[:2]
        short = min(h, w)
        side = int(rng.integers(min(short, self.bg_size), short + 1))
        top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = img[top:top + side, left:left + side]
        interp = cv2.INTER_AREA if side > self.bg_size else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (self.bg_size, self.bg_size), interpolation=interp)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return np.ascontiguousarray(crop, dtype=np.float32) / 255.0

    def __getitem__(self, index: int) -> Dict[str, Any]:
        source, k = self.locate(index)
        rng = np.random.default_rng([self.seed, 0 if self.train else 1, source, k])
        clean = self._background(rng)
        rainy = render_rain(clean, self.params[source], seed=int(rng.integers(2**62)))
        name = self.source_names[source]
        lq_path, gt_path = f'{name}/{name}_{k:05d}_rain', f'{name}/{name}_{k:05d}_clean'
        return self.make_item(rainy, clean, source, lq_path, gt_path, f'{self.wheres[source]}: item {k}')
