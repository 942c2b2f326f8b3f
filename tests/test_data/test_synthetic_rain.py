"""render_rain / RAIN_PRESETS statistics and determinism; MixedSyntheticRainDataset items, phases and errors."""
import time

import cv2
import numpy as np
import pytest
import torch

import coic_basicsr  # noqa: F401
from basicsr.utils.registry import DATASET_REGISTRY
from coic_basicsr.data.synthetic_rain import RAIN_PRESETS, render_rain, resolve_rain_params
from coic_basicsr.data.transforms import global_view

MixedSyntheticRainDataset = DATASET_REGISTRY.get('MixedSyntheticRainDataset')
GRAY = np.full((64, 64, 3), 0.4, np.float32)


def _layer(preset, seed=0, clean=GRAY):
    return (render_rain(clean, preset, seed) - clean).mean(axis=2)


def _streak_angle(layer):
    """Dominant streak direction in degrees from vertical (structure tensor; streaks are across the gradient)."""
    gy, gx = np.gradient(layer)
    jxx, jyy, jxy = (gx * gx).sum(), (gy * gy).sum(), (gx * gy).sum()
    return -np.degrees(0.5 * np.arctan2(2 * jxy, jxx - jyy))


def test_output_range_shape_and_determinism():
    clean = np.random.default_rng(0).random((48, 40, 3)).astype(np.float32)
    for name in RAIN_PRESETS:
        a, b = render_rain(clean, name, seed=3), render_rain(clean, name, seed=3)
        assert a.shape == clean.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
        np.testing.assert_array_equal(a, b)
        assert np.abs(a - render_rain(clean, name, seed=4)).mean() > 1e-3
    rainy = render_rain(clean, 'light_sparse', 1)  # no haze: screen blend only brightens
    assert (rainy >= clean - 1e-6).all() and (rainy > clean + 0.05).mean() > 0.005


def test_presets_differ_measurably():
    means = {name: np.mean([_layer(name, s).mean() for s in range(4)]) for name in RAIN_PRESETS}
    assert means['heavy_dense'] > 4 * means['light_sparse'] and means['light_sparse'] > 0.002
    angles = {name: np.mean([_streak_angle(_layer(name, s)) for s in range(4)]) for name in RAIN_PRESETS}
    assert 25 < angles['slanted_long'] < 45 and abs(angles['light_sparse']) < 12
    mirrored = resolve_rain_params({'preset': 'slanted_long', 'angle': [-40, -30]})
    assert -45 < _streak_angle(_layer(mirrored, 0)) < -25
    # mist is a veil: most of its layer is low-frequency, unlike streak presets
    def high_freq_share(layer):
        return np.abs(layer - cv2.GaussianBlur(layer, (0, 0), 4)).mean() / np.abs(layer).mean()
    shares = {name: np.mean([high_freq_share(_layer(name, s)) for s in range(4)]) for name in RAIN_PRESETS}
    assert shares['mist'] < 0.5 * min(shares['light_sparse'], shares['slanted_long'])
    assert means['mist'] > 2 * means['light_sparse']


def test_params_controls_and_validation():
    thin = _layer({'density': 0.01, 'length': 10, 'width': 1, 'intensity': 0.5, 'blur': 0}, 0)
    thick = _layer({'density': 0.01, 'length': 10, 'width': 3, 'intensity': 0.5, 'blur': 0}, 0)
    longer = _layer({'density': 0.01, 'length': 30, 'width': 1, 'intensity': 0.5, 'blur': 0}, 0)
    assert thick.mean() > 1.5 * thin.mean() and longer.mean() > 1.5 * thin.mean()
    hazy = _layer({'preset': 'light_sparse', 'haze': 0.5}, 0)
    assert hazy.mean() > _layer('light_sparse', 0).mean() + 0.1
    assert resolve_rain_params(RAIN_PRESETS['mist']) is RAIN_PRESETS['mist']
    with pytest.raises(ValueError, match="src: unknown rain preset 'drizzle'"):
        resolve_rain_params('drizzle', 'src')
    with pytest.raises(ValueError, match='speed'):
        resolve_rain_params({'speed': 3}, 'src')
    with pytest.raises(ValueError, match='shape'):
        render_rain(GRAY[..., 0], 'mist', 0)


def test_streaks_are_screen_blended_and_the_veil_has_the_haze_light():
    # the documented composition: 1 - (1 - hazy) * (1 - streaks), hazy = clean * (1 - V) + V * haze_light
    streaks = {'density': 0.01, 'length': 10, 'width': 1, 'intensity': 0.6, 'blur': 0, 'haze': 0}
    black, grey = np.zeros((32, 32, 3), np.float32), np.full((32, 32, 3), 0.5, np.float32)
    layer = render_rain(black, streaks, seed=1)  # screen blend onto black: the streak layer itself
    assert layer.max() > 0.3
    np.testing.assert_allclose(render_rain(grey, streaks, seed=1), 1 - (1 - 0.5) * (1 - layer), atol=1e-6)
    veil_only = {'density': 0.0, 'intensity': 0.0, 'blur': 0, 'haze': 0.4}
    dim, bright = (render_rain(black, dict(veil_only, haze_light=light), seed=1) for light in (0.25, 0.75))
    assert dim.min() > 0.05  # V * 0.25 with V = 0.4 * (0.75 + 0.25 * smooth noise)
    np.testing.assert_allclose(bright, 3 * dim, rtol=1e-5)


def test_render_is_fast():
    clean = np.random.default_rng(0).random((128, 128, 3)).astype(np.float32)
    for name in RAIN_PRESETS:
        render_rain(clean, name, 0)
        times = []
        for seed in range(15):
            start = time.perf_counter()
            render_rain(clean, name, seed)
            times.append(time.perf_counter() - start)
        assert np.median(times) < 5e-3, f'{name}: {np.median(times) * 1e3:.2f} ms'


def _opt(**kw):
    opt = dict(name='syn', phase='train', num_per_source=4, bg_size=48, gt_size=32, global_size=16, seed=2,
               sources=[dict(name='light', preset='light_sparse'), dict(name='heavy', preset='heavy_dense'),
                        dict(name='custom', params={'preset': 'mist', 'haze': 0.6}, real=True)])
    opt.update(kw)
    return opt


def test_dataset_items_sources_and_reproducibility():
    ds = MixedSyntheticRainDataset(_opt())
    assert len(ds) == 12 and ds.source_names == ['light', 'heavy', 'custom']
    assert ds.source_indices[2] == [8, 9, 10, 11] and ds.source_is_real == [False, False, True]
    item = ds[5]
    assert item['lq'].shape == item['gt'].shape == (3, 32, 32) and item['gt_global'].shape == (3, 16, 16)
    assert item['source'] == 1 and item['lq_path'] == 'heavy/heavy_00001_rain'
    # whole-image items (no crop randomness) are a pure function of (seed, index)
    whole = _opt(gt_size=48, use_hflip=False, use_rot=False)
    a, b = MixedSyntheticRainDataset(whole), MixedSyntheticRainDataset(whole)
    for index in (0, 7):
        torch.testing.assert_close(a[index]['lq'], b[index]['lq'], rtol=0, atol=0)
        assert torch.allclose(a[index]['gt_global'], global_view(a[index]['gt'], 16), atol=1e-6)
    assert not torch.equal(a[0]['gt'], a[1]['gt'])
    assert not torch.equal(a[0]['gt'], MixedSyntheticRainDataset(dict(whole, seed=3))[0]['gt'])
    rain = [np.mean([(a[i]['lq'] - a[i]['gt']).mean().item() for i in ds.source_indices[s]]) for s in range(3)]
    assert rain[1] > 3 * rain[0] and rain[2] > rain[0]
    # backgrounds vary: distinct clean images across items
    cleans = {a[i]['gt'].sum().item() for i in range(len(a))}
    assert len(cleans) == len(a)


def test_val_phase_fixed_and_different_from_train():
    val = MixedSyntheticRainDataset(_opt(phase='val'))
    item = val[3]
    assert set(item) == {'lq', 'gt', 'lq_global', 'source', 'lq_path', 'gt_path'}
    assert item['lq'].shape == (3, 48, 48)
    torch.testing.assert_close(MixedSyntheticRainDataset(_opt(phase='val'))[3]['lq'], item['lq'], rtol=0, atol=0)
    train = MixedSyntheticRainDataset(_opt(gt_size=48, use_hflip=False, use_rot=False))
    assert not torch.equal(train[3]['gt'], item['gt'])


def test_clean_folder_and_errors(tmp_path):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f'{i}.png'), np.full((40, 50, 3), 60 + 100 * i, np.uint8))
    ds = MixedSyntheticRainDataset(_opt(clean_folder=str(tmp_path), bg_size=32, gt_size=32, use_hflip=False))
    values = {round(ds[i]['gt'].mean().item() * 255) for i in range(len(ds))}
    assert values <= {60, 160} and len(values) == 2
    bad = [
        (dict(gt_size=64), 'gt_size'),
        (dict(sources=[dict(name='a', preset='drizzle')]), "sources[0] (name 'a'): unknown rain preset"),
        (dict(sources=[dict(name='a')]), "sources[0] (name 'a')"),
        (dict(sources=[dict(name='a', params={'density': [0.5, 0.1]})]),  # numpy's 'high - low < 0' at the first item
         "sources[0] (name 'a'): params.density: the range [low, high] has low > high: [0.5, 0.1]"),
        (dict(sources=[dict(name='a', params={'angle': 'steep'})]),
         "sources[0] (name 'a'): params.angle: expected a number or a [low, high] range, got 'steep'"),
        (dict(sources=[dict(name='a', preset='mist'), dict(name='a', preset='mist')]), 'duplicate'),
        (dict(backgrounds=['not_an_image']), 'not_an_image'),
        (dict(clean_folder=str(tmp_path / 'missing')), 'missing'),
    ]
    for kw, fragment in bad:
        with pytest.raises((ValueError, FileNotFoundError)) as info:
            MixedSyntheticRainDataset(_opt(**kw))
        assert fragment in str(info.value)


def test_source_params_override_only_their_fields_of_the_preset():
    ds = DATASET_REGISTRY.get('MixedSyntheticRainDataset')(dict(
        name='s', phase='val', num_per_source=1, bg_size=32, backgrounds=['camera'],
        sources=[dict(name='a', preset='heavy_dense', params={'angle': 0.0})]))
    preset = RAIN_PRESETS['heavy_dense']
    assert ds.params[0].angle == 0.0
    assert ds.params[0].density == preset.density and ds.params[0].haze == preset.haze
