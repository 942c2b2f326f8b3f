"""Procedural rain synthesis: streak layer + veiling haze composited onto a clean image.

The renderer is fully vectorised (one random draw for the drop seeds, one ``cv2.filter2D`` with a streak kernel, one
Gaussian blur), so a 128x128 image takes about a millisecond. Every parameter may be a scalar or a ``(low, high)``
range that is sampled per call from the seeded generator, so a preset describes a *family* of rain appearances.
"""
import math
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import cv2
import numpy as np

from coic_basicsr.utils.option_values import is_number

Range = Union[float, Tuple[float, float]]


@dataclass(frozen=True)
class RainParams:
    """Rain appearance; each field is a value or a ``(low, high)`` range sampled uniformly per render.

    Attributes:
        density: Fraction of pixels that seed a streak.
        length: Streak length in pixels.
        angle: Streak angle in degrees from vertical; positive leans the streak's lower end to the right ('\\').
        width: Streak width in pixels.
        intensity: Peak brightness added by a streak, in [0, 1].
        blur: Gaussian sigma (pixels) applied to the streak layer (defocus); 0 disables it.
        haze: Veiling (haze/mist) strength in [0, 1]; 0 disables it.
        haze_light: Brightness of the veiling light (atmospheric light), in [0, 1].
    """
    density: Range = 0.004
    length: Range = 15.0
    angle: Range = 0.0
    width: Range = 1.0
    intensity: Range = 0.6
    blur: Range = 0.5
    haze: Range = 0.0
    haze_light: Range = 0.85

    def sample(self, rng: np.random.Generator) -> Dict[str, float]:
        """Draw concrete values for every field (fixed field order, so results are reproducible by seed)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (tuple, list)):
                low, high = float(value[0]), float(value[1])
                out[f.name] = float(rng.uniform(low, high))
            else:
                out[f.name] = float(value)
        return out


#: Named rain families with clearly different statistics (density, length, orientation, haze).
RAIN_PRESETS: Dict[str, RainParams] = {
    'light_sparse': RainParams(density=(0.002, 0.004), length=(8, 14), angle=(-8, 8), width=1.0,
                               intensity=(0.5, 0.7), blur=0.4, haze=0.0),
    'heavy_dense': RainParams(density=(0.007, 0.012), length=(18, 28), angle=(-15, 15), width=(1.2, 2.0),
                              intensity=(0.7, 0.9), blur=0.8, haze=(0.1, 0.2)),
    'slanted_long': RainParams(density=(0.004, 0.007), length=(30, 45), angle=(30, 40), width=1.0,
                               intensity=(0.55, 0.75), blur=0.5, haze=0.0),
    'mist': RainParams(density=(0.04, 0.06), length=(2, 4), angle=(-5, 5), width=1.0, intensity=(0.15, 0.25),
                       blur=(1.2, 1.8), haze=(0.35, 0.5)),
}

_PARAM_NAMES = tuple(f.name for f in fields(RainParams))


def resolve_rain_params(preset_or_params: Union[str, Mapping[str, Any], RainParams],
                        where: str = 'rain') -> RainParams:
    """Turn a preset name, a params mapping or :class:`RainParams` into :class:`RainParams`.

    A mapping may name a base ``preset`` and override some of its fields, e.g. ``{preset: mist, haze: 0.6}``.

    Raises:
        ValueError: Unknown preset or unknown parameter name (the message names ``where``).
    """
    if isinstance(preset_or_params, RainParams):
        return preset_or_params
    if isinstance(preset_or_params, str):
        if preset_or_params not in RAIN_PRESETS:
            raise ValueError(f"{where}: unknown rain preset '{preset_or_params}'; choose from {sorted(RAIN_PRESETS)}")
        return RAIN_PRESETS[preset_or_params]
    if isinstance(preset_or_params, Mapping):
        overrides = dict(preset_or_params)
        base = resolve_rain_params(overrides.pop('preset'), where) if 'preset' in overrides else RainParams()
        unknown = sorted(set(overrides) - set(_PARAM_NAMES))
        if unknown:
            raise ValueError(f'{where}: unknown rain parameter(s) {unknown}; valid: {list(_PARAM_NAMES)}')
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        for name, value in overrides.items():
            numbers = value if isinstance(value, tuple) else (value,)
            if (isinstance(value, tuple) and len(value) != 2) or not all(is_number(v) for v in numbers):
                raise ValueError(f'{where}: params.{name}: expected a number or a [low, high] range, '
                                 f'got {preset_or_params[name]!r}')
            if isinstance(value, tuple) and value[0] > value[1]:
                raise ValueError(f'{where}: params.{name}: the range [low, high] has low > high: {list(value)}')
        return replace(base, **overrides)
    raise ValueError(f'{where}: expected a preset name or a parameter mapping, got {type(preset_or_params).__name__}')


@lru_cache(maxsize=256)
def _streak_kernel(length: float, angle: float, width: float) -> np.ndarray:
    """Anti-aliased line segment of unit peak, tapered towards both ends (cached on rounded arguments)."""
    half = max(length, 1.0) / 2.0
    radius = int(math.ceil(half + width / 2.0 + 1))
    coords = np.arange(-radius, radius + 1, dtype=np.float32)
    x, y = np.meshgrid(coords, coords)
    theta = math.radians(angle)
    dx, dy = math.sin(theta), math.cos(theta)  # image y points down: positive angle moves right going down
    t = np.clip(x * dx + y * dy, -half, half)
    dist = np.hypot(x - t * dx, y - t * dy)
    kernel = np.clip(width / 2.0 + 0.5 - dist, 0.0, 1.0) * (1.0 - 0.5 * (t / half)**2)
    return kernel.astype(np.float32)


def render_rain(clean: np.ndarray,
                preset_or_params: Union[str, Mapping[str, Any], RainParams],
                seed: Optional[int] = None) -> np.ndarray:
    """Render rain onto a clean image.

    Args:
        clean: ``(H, W, 3)`` float image in [0, 1] (any channel order; rain and haze are achromatic).
        preset_or_params: A key of :data:`RAIN_PRESETS`, a parameter mapping (optionally with a base ``preset``)
            or :class:`RainParams`.
        seed: Seed of the generator; the same seed, image size and parameters give the same rain.

    Returns:
        ``(H, W, 3)`` float32 rainy image in [0, 1]: ``1 - (1 - hazy) * (1 - streaks)`` (screen blend), where
        ``hazy = clean * (1 - V) + V * haze_light`` with a smooth veil ``V``.
    """
    if clean.ndim != 3 or clean.shape[2] != 3:
        raise ValueError(f'render_rain expects an (H, W, 3) image, got shape {clean.shape}')
    params = resolve_rain_params(preset_or_params)
    rng = np.random.default_rng(seed)
    p = params.sample(rng)
    h, w = clean.shape[:2]
    kernel = _streak_kernel(round(p['length'], 1), round(p['angle'], 1), round(p['width'], 2))
    pad = kernel.shape[0] // 2
    # one uniform draw gives both the seed mask and (rescaled) the per-drop amplitude in [0.5, 1)
    u = rng.random((h + 2 * pad, w + 2 * pad), dtype=np.float32)
    density = max(p['density'], 1e-8)
    seeds = np.where(u < density, 0.5 + 0.5 * u / density, 0.0).astype(np.float32)
    streaks = cv2.filter2D(seeds, -1, kernel, borderType=cv2.BORDER_CONSTANT)[pad:pad + h, pad:pad + w]
    np.clip(streaks, 0.0, 1.0, out=streaks)
    if p['blur'] > 0.05:
        streaks = cv2.GaussianBlur(streaks, (0, 0), p['blur'])
    rain = (p['intensity'] * streaks)[..., None]

    img = clean.astype(np.float32, copy=False)
    if p['haze'] > 0:
        coarse = rng.random((4, 4), dtype=np.float32)
        veil = p['haze'] * (0.75 + 0.25 * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC))
        veil = np.clip(veil, 0.0, 1.0)[..., None]
        img = img * (1.0 - veil) + veil * p['haze_light']
    rainy = 1.0 - (1.0 - img) * (1.0 - rain)
    return np.clip(rainy, 0.0, 1.0).astype(np.float32, copy=False)
