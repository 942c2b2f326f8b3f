"""MixedRainDataset: pairing by content across lmdb/disk sources, global views, val items and bad-input errors."""
import os
import random
import re
from os import path as osp

import cv2
import numpy as np
import pytest
import torch

import coic_basicsr  # noqa: F401  (shim + registries before basicsr)
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from basicsr.utils.registry import DATASET_REGISTRY
from coic_basicsr.data.pair_reader import BadPairError
from coic_basicsr.data.transforms import apply_augment_status, build_pair_item, global_view

MixedRainDataset = DATASET_REGISTRY.get('MixedRainDataset')

# per-source known relation lq = f(gt) on uint8 images, checked on float crops
RELATIONS = {
    'lmdb_inv': lambda g: 255 - g,
    'disk_half': lambda g: g // 2,
    'meta_roll': lambda g: np.roll(g, 1, axis=2),
}


def _write(folder, rel, img):
    os.makedirs(osp.dirname(osp.join(folder, rel)), exist_ok=True)
    cv2.imwrite(osp.join(folder, rel), img)


def _gt(rng, h, w):
    # smooth-ish random content so crops are unique in the image
    return cv2.resize(rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.fixture()
def three_sources(tmp_path):
    """lmdb source (40x48), disk folder source with subfolder + filename_tmpl (36x52), disk meta-info source (64x64)."""
    rng = np.random.default_rng(0)
    gts = {}
    png = tmp_path / 'png_a'
    keys = [f'img{i}' for i in range(3)]
    for k in keys:
        gts[('lmdb_inv', k)] = g = _gt(rng, 40, 48)
        _write(str(png / 'gt'), f'{k}.png', g)
        _write(str(png / 'lq'), f'{k}.png', RELATIONS['lmdb_inv'](g))
    for which in ('gt', 'lq'):
        make_lmdb_from_imgs(str(png / which), str(tmp_path / f'a_{which}.lmdb'), [f'{k}.png' for k in keys], keys)
    for k in ('sub/x1', 'sub/x2', 'y3'):
        gts[('disk_half', k)] = g = _gt(rng, 36, 52)
        _write(str(tmp_path / 'b_gt'), f'{k}.png', g)
        _write(str(tmp_path / 'b_lq'), f'{k}x2.png', RELATIONS['disk_half'](g))
    lines = []
    for i in range(2):
        gts[('meta_roll', f'clean/{i}.png')] = g = _gt(rng, 64, 64)
        _write(str(tmp_path / 'c'), f'clean/{i}.png', g)
        _write(str(tmp_path / 'c'), f'rain/{i}_r.png', RELATIONS['meta_roll'](g))
        lines.append(f'rain/{i}_r.png clean/{i}.png')
    (tmp_path / 'c_meta.txt').write_text('\n'.join(lines) + '\n')
    sources = [
        dict(name='lmdb_inv', dataroot_gt=str(tmp_path / 'a_gt.lmdb'), dataroot_lq=str(tmp_path / 'a_lq.lmdb'),
             io_backend=dict(type='lmdb')),
        dict(name='disk_half', dataroot_gt=str(tmp_path / 'b_gt'), dataroot_lq=str(tmp_path / 'b_lq'),
             filename_tmpl='{}x2'),
        dict(name='meta_roll', dataroot_gt=str(tmp_path / 'c'), dataroot_lq=str(tmp_path / 'c'),
             meta_info_file=str(tmp_path / 'c_meta.txt'), real=True),
    ]
    return sources, gts


def _opt(sources, **kw):
    opt = dict(name='mix', phase='train', sources=sources, gt_size=32, global_size=16, use_hflip=True, use_rot=True)
    opt.update(kw)
    return opt


def _gt_key(ds, source, gt_path):
    name = ds.source_names[source]
    if name == 'lmdb_inv':
        return gt_path
    rel = osp.relpath(gt_path, ds.opt['sources'][source]['dataroot_gt'])
    return osp.splitext(rel)[0] if name == 'disk_half' else rel


def _is_window(img, patch):
    windows = np.lib.stride_tricks.sliding_window_view(img, patch.shape)
    return bool((windows == patch).all(axis=(-3, -2, -1)).any())


def _dihedral(img):
    """The 8 (hflip, vflip, rot90) statuses of basicsr's augment applied to an HWC array."""
    for status in [(h, v, r) for h in (0, 1) for v in (0, 1) for r in (0, 1)]:
        out = img[:, ::-1] if status[0] else img
        out = out[::-1] if status[1] else out
        yield status, (out.transpose(1, 0, 2) if status[2] else out)


def test_three_source_mix_pairs_crops_and_global_views(three_sources):
    sources, gts = three_sources
    ds = MixedRainDataset(_opt(sources))
    assert ds.source_names == ['lmdb_inv', 'disk_half', 'meta_roll']
    assert [len(g) for g in ds.source_indices] == [3, 3, 2] and len(ds) == 8
    assert ds.source_is_real == [False, False, True] and ds.opt['name'] == 'mix'
    random.seed(0)
    seen_status = set()
    for index in range(len(ds)):
        for _ in range(3):
            item = ds[index]
            src = ds.source_names[item['source']]
            assert index in ds.source_indices[item['source']]
            lq, gt = item['lq'].numpy(), item['gt'].numpy()
            assert lq.shape == gt.shape == (3, 32, 32) and lq.dtype == np.float32
            # pairing by content: gt crop (RGB CHW) -> uint8 BGR HWC, apply relation, compare with lq crop
            gt_u8 = np.round(gt.transpose(1, 2, 0)[..., ::-1] * 255).astype(np.uint8)
            expected = RELATIONS[src](gt_u8)[..., ::-1].transpose(2, 0, 1) / 255.0
            np.testing.assert_allclose(lq, expected, atol=1e-5)
            # the crop is a window of one dihedral transform of the whole gt; the global views follow that transform
            whole = gts[(src, _gt_key(ds, item['source'], item['gt_path']))]
            matches = [(s, t) for s, t in _dihedral(whole) if _is_window(t, gt_u8)]
            assert matches, f'{src}: gt crop is not a window of the gt image'
            status, t = matches[0]
            seen_status.add(status)
            whole_rgb = torch.from_numpy(np.ascontiguousarray(t[..., ::-1].transpose(2, 0, 1)) / 255.).float()
            ref = global_view(whole_rgb, 16)
            assert torch.allclose(item['gt_global'], ref, atol=1e-5)
            assert item['lq_global'].shape == (3, 16, 16)
            if src == 'meta_roll':  # linear resize commutes with a channel permutation
                assert torch.allclose(item['lq_global'], item['gt_global'][[1, 2, 0]], atol=1e-6)
            if src == 'lmdb_inv':
                assert torch.allclose(item['lq_global'], 1 - item['gt_global'], atol=1e-5)
    assert len(seen_status) > 2, 'augmentation never varied'
    assert ds[0]['lq_path'] == ds[0]['gt_path'] == 'img0'  # lmdb key


def test_val_phase_full_images_and_val_size(three_sources):
    sources, gts = three_sources
    ds = MixedRainDataset(_opt(sources, phase='val'))
    item = ds[ds.source_indices[1][0]]
    assert set(item) == {'lq', 'gt', 'lq_global', 'source', 'lq_path', 'gt_path', 'image_name'}
    assert item['lq'].shape == item['gt'].shape == (3, 36, 52) and item['source'] == 1
    assert torch.allclose(item['lq_global'], global_view(item['lq'], 16))
    cropped = MixedRainDataset(_opt(sources, phase='val', val_size=30))[ds.source_indices[2][1]]
    whole = gts[('meta_roll', 'clean/1.png')][17:47, 17:47, ::-1].transpose(2, 0, 1) / 255.
    np.testing.assert_allclose(cropped['gt'].numpy(), whole, atol=1e-6)


def test_lmdb_meta_info_pairs_and_worker_loading(three_sources, tmp_path):
    sources, _ = three_sources
    (tmp_path / 'a_pairs.txt').write_text('img2 img2\nimg0.png img0.png\n')
    src = dict(sources[0], meta_info_file=str(tmp_path / 'a_pairs.txt'))
    ds = MixedRainDataset(_opt([src, sources[1]]))
    assert ds.lq_paths[:2] == ['img2', 'img0'] and len(ds) == 5
    ds[0]  # opens the lmdb in this process; the worker must open its own
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=1)
    batch = next(iter(loader))
    assert batch['lq'].shape == (5, 3, 32, 32) and batch['source'].tolist() == [0, 0, 1, 1, 1]
    torch.testing.assert_close(batch['lq'][:2], 1 - batch['gt'][:2], atol=1e-5, rtol=0)


def test_basicsr_style_meta_info(three_sources, tmp_path):
    sources, _ = three_sources
    (tmp_path / 'b_meta.txt').write_text('sub/x1.png (36,52,3) 1\ny3.png (36,52,3) 1\n')
    ds = MixedRainDataset(_opt([dict(sources[1], meta_info_file=str(tmp_path / 'b_meta.txt'))]))
    assert [osp.basename(p) for p in ds.lq_paths] == ['x1x2.png', 'y3x2.png']


def _raises(exc, opt, *fragments):
    with pytest.raises(exc) as info:
        ds = MixedRainDataset(opt)
        [ds[i] for i in range(len(ds))]
    msg = str(info.value)
    assert '\n' not in msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_bad_inputs_name_source_and_key(three_sources, tmp_path):
    sources, _ = three_sources
    missing = dict(sources[1], dataroot_gt=str(tmp_path / 'nope'))
    _raises(FileNotFoundError, _opt([sources[0], missing]), "sources[1] (name 'disk_half')", 'nope')
    _raises(ValueError, _opt([sources[0], dict(sources[1], name='lmdb_inv')]), 'lmdb_inv', 'duplicate')
    (tmp_path / 'c_meta_bad.txt').write_text('rain/0_r.png clean/0.png\nrain/9_r.png clean/9.png\n')
    _raises(FileNotFoundError, _opt([dict(sources[2], meta_info_file=str(tmp_path / 'c_meta_bad.txt'))]),
            "name 'meta_roll'", 'rain/9_r.png')
    os.remove(tmp_path / 'b_lq' / 'sub' / 'x2x2.png')
    _raises(FileNotFoundError, _opt([sources[1]]), "name 'disk_half'", 'sub/x2')
    (tmp_path / 'a_pairs.txt').write_text('img1 img7\n')
    _raises(FileNotFoundError, _opt([dict(sources[0], meta_info_file=str(tmp_path / 'a_pairs.txt'))]),
            "name 'lmdb_inv'", 'img7')
    with open(tmp_path / 'c' / 'rain' / '1_r.png', 'wb') as f:
        f.write(b'not a png at all')
    _raises(BadPairError, _opt([sources[2]]), "name 'meta_roll'", 'rain/1_r.png', 'corrupt')
    _write(str(tmp_path / 'c'), 'rain/0_r.png', np.zeros((64, 60, 3), np.uint8))
    _raises(ValueError, _opt([sources[2]], phase='val'), "name 'meta_roll'", 'clean/0.png', 'differs')
    _raises(ValueError, _opt([sources[0]], gt_size=44), "name 'lmdb_inv'", "key 'img0'", 'larger')
    _raises(ValueError, _opt([dict(sources[0], io_backend=dict(type='s3'))]), 'lmdb_inv', 's3')


def test_misspelt_keys_are_refused_when_built_outside_our_pipeline(three_sources):
    # BasicSR's own train.py (a project that imports coic_basicsr) builds the dataset without our pre-flight checks
    sources, _ = three_sources
    _raises(ValueError, _opt(sources, use_flip=False), "datasets.train.use_flip", "did you mean 'use_hflip'?")
    _raises(ValueError, _opt(sources, batch_size=4), "did you mean 'batch_size_per_gpu'?")
    _raises(ValueError, _opt([dict(sources[0], is_real=True)]), 'datasets.train.sources[0].is_real',
            "did you mean 'real'?")
    _raises(ValueError, _opt(sources, phase='val', filename_tmpl='{}x2'), 'datasets.val.filename_tmpl',
            'in each entry of sources')
    loader_keys = dict(num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=1, use_shuffle=True,
                       prefetch_mode=None, pin_memory=False, sampler={'type': 'MixedDatasetSampler'}, scale=1)
    assert len(MixedRainDataset(_opt(sources, skip_bad=1, **loader_keys))) == 8


def test_flags_must_be_true_or_false(three_sources):
    # bool('false') is True: use_hflip: 'false' flipped, and a source with real: 'no' was treated as real
    sources, _ = three_sources
    _raises(ValueError, _opt(sources, use_hflip='false'),
            "datasets.train.use_hflip: expected true or false, got 'false'")
    _raises(ValueError, _opt(sources, use_rot=0), 'datasets.train.use_rot: expected true or false, got 0')
    _raises(ValueError, _opt([dict(sources[0], real='no')]),
            "datasets.train.sources[0].real: expected true or false, got 'no'")
    null = MixedRainDataset(_opt(sources, use_hflip=None, use_rot=False))  # null: the default
    assert (null.use_hflip, null.use_rot) == (True, False)


@pytest.mark.parametrize('dataset_type', ['MixedRainDataset', 'MixedSyntheticRainDataset'])
def test_declared_keys_are_the_documented_keys(dataset_type):
    cls = DATASET_REGISTRY.get(dataset_type)
    doc = cls.__doc__.split('YAML keys:')[1]
    top = set(re.findall(r'^ {8}(\w+) \(', doc, re.M))
    source = set(re.findall(r'^ {12}(\w+) \(', doc, re.M))
    assert top == cls.OPTION_KEYS - {'phase'}  # 'phase' is set by BasicSR, documented on the base class
    assert source == cls.SOURCE_KEYS


def test_skip_bad_replaces_and_counts(three_sources, tmp_path):
    sources, _ = three_sources
    with open(tmp_path / 'b_gt' / 'sub' / 'x1.png', 'wb') as f:
        f.write(b'\x89PNG broken')
    ds = MixedRainDataset(_opt([sources[1]], skip_bad=1))
    item = ds[0]
    assert item['gt_path'].endswith(osp.join('sub', 'x2.png')) and ds.num_skipped == 1
    with pytest.raises(BadPairError, match='exhausted'):
        ds[0]


def test_build_pair_item_rejects_mismatch_and_keeps_inputs():
    lq, gt = np.random.rand(20, 24, 3).astype(np.float32), np.random.rand(20, 24, 3).astype(np.float32)
    before = gt.copy()
    for _ in range(8):
        build_pair_item(lq, gt, train=True, gt_size=8, global_size=8, where='w')
    np.testing.assert_array_equal(gt, before)
    with pytest.raises(ValueError, match='w: lq size'):
        build_pair_item(lq[:10], gt, train=True, gt_size=8, global_size=8, where='w')


def test_global_view_contract():
    img = torch.rand(2, 3, 40, 30)
    out = global_view(img, 12)
    ref = torch.nn.functional.interpolate(img, size=(12, 12), mode='bilinear', align_corners=False, antialias=True)
    assert out.shape == (2, 3, 12, 12) and torch.allclose(out, ref.clamp(0, 1))
    assert torch.allclose(global_view(img[1], 12), out[1], atol=1e-6)
    assert global_view(img * 3, 12).max() <= 1.0
    for status in [(1, 0, 0), (0, 1, 1), (1, 1, 1)]:  # flips/transposes commute with the resize
        flipped = apply_augment_status(img, status)
        assert torch.allclose(global_view(flipped, 12), apply_augment_status(out, status), atol=1e-5)


def test_unusual_but_legitimate_layouts_are_read(tmp_path):
    rng = np.random.default_rng(1)
    names = ['rain 1.png', 'c (1).png', 'plain.png']  # BasicSR's meta_info.txt keeps the spaces of such names
    for name in names:
        gt = _gt(rng, 32, 32)
        _write(str(tmp_path / 'png' / 'gt'), name, gt)
        _write(str(tmp_path / 'png' / 'lq'), name, 255 - gt)
    for which in ('gt', 'lq'):
        make_lmdb_from_imgs(str(tmp_path / 'png' / which), str(tmp_path / f'{which}.lmdb'), names,
                            [n[:-4] for n in names])
    lmdb_source = dict(name='spaced', dataroot_gt=str(tmp_path / 'gt.lmdb'), dataroot_lq=str(tmp_path / 'lq.lmdb'),
                       io_backend=dict(type='lmdb'))
    train = MixedRainDataset(_opt([lmdb_source], gt_size=16))
    val = MixedRainDataset(_opt([lmdb_source], phase='val'))  # the same LMDBs open twice in one process
    assert len(train) == len(val) == 3 and sorted(train.gt_paths) == sorted(n[:-4] for n in names)
    for ds in (train, val):
        for i in range(3):
            item = ds[i]
            assert torch.allclose(item['lq'], 1 - item['gt'], atol=1e-6)
    basicsr_meta = dict(lmdb_source, meta_info_file=str(tmp_path / 'gt.lmdb' / 'meta_info.txt'))  # BasicSR's own
    assert sorted(MixedRainDataset(_opt([basicsr_meta], phase='val')).gt_paths) == sorted(n[:-4] for n in names)

    (tmp_path / 'png' / 'gt' / '.DS_Store').write_bytes(b'x')  # hidden files and folders are not images
    (tmp_path / 'png' / 'lq' / '.ipynb_checkpoints').mkdir()
    os.symlink(tmp_path / 'png' / 'gt', tmp_path / 'png' / 'gt' / 'loop')  # a link back to a parent: not followed
    os.symlink(tmp_path / 'png' / 'lq', tmp_path / 'png' / 'lq' / 'loop')
    disk = dict(name='disk', dataroot_gt=str(tmp_path / 'png' / 'gt'), dataroot_lq=str(tmp_path / 'png' / 'lq'))
    assert len(MixedRainDataset(_opt([disk], gt_size=16))) == 3
    meta = tmp_path / 'meta.txt'
    meta.write_text('plain.png plain.png\r\n', encoding='utf-8-sig')  # saved by a Windows editor
    assert len(MixedRainDataset(_opt([dict(disk, meta_info_file=str(meta))], gt_size=16))) == 1

    one = tmp_path / 'one'  # rainy 'ax2.png' next to clean 'a.png' in one folder
    for i in range(2):
        gt = _gt(rng, 32, 32)
        _write(str(one), f'a{i}.png', gt)
        _write(str(one), f'a{i}x2.png', 255 - gt)
    same = dict(name='same', dataroot_gt=str(one), dataroot_lq=str(one))
    ds = MixedRainDataset(_opt([dict(same, filename_tmpl='{}x2')], gt_size=16))
    assert [osp.basename(p) for p in ds.gt_paths] == ['a0.png', 'a1.png']
    _raises(ValueError, _opt([same]), "name 'same'", 'dataroot_lq and dataroot_gt are the same folder')


def test_symlinked_folders_are_followed_wherever_they_appear(tmp_path):
    # many-to-one on disk: both rain types link one clean folder (each real folder used to be followed only once)
    rng = np.random.default_rng(2)
    for i in range(2):
        gt = _gt(rng, 32, 32)
        _write(str(tmp_path / 'clean'), f'{i}.png', gt)
        for rain in ('heavy', 'light'):
            _write(str(tmp_path / 'lq' / rain), f'{i}.png', 255 - gt)
    (tmp_path / 'gt').mkdir()
    for rain in ('heavy', 'light'):
        os.symlink(osp.join('..', 'clean'), tmp_path / 'gt' / rain)
    os.symlink(tmp_path / 'gt', tmp_path / 'clean' / 'up')  # gt/heavy/up is gt itself: a cycle, not followed
    source = dict(name='m2o', dataroot_gt=str(tmp_path / 'gt'), dataroot_lq=str(tmp_path / 'lq'))
    ds = MixedRainDataset(_opt([source], phase='val'))
    assert [osp.relpath(p, tmp_path / 'gt') for p in ds.gt_paths] == \
        [osp.join(rain, f'{i}.png') for rain in ('heavy', 'light') for i in range(2)]
    for i in range(len(ds)):
        assert torch.allclose(ds[i]['lq'], 1 - ds[i]['gt'], atol=1e-6)


def test_lmdb_gt_key_without_lq_key_is_refused(tmp_path):
    # a gt lmdb key with no lq counterpart must be named, not silently dropped from the pairs
    from coic_basicsr.data.rain_sources import list_source_pairs
    rng = np.random.default_rng(0)
    for which, keys in (('lq', ['a', 'b']), ('gt', ['a', 'b', 'c'])):
        for k in keys:
            _write(str(tmp_path / which), f'{k}.png', _gt(rng, 24, 24))
        make_lmdb_from_imgs(str(tmp_path / which), str(tmp_path / f'{which}.lmdb'), [f'{k}.png' for k in keys], keys)
    src = dict(dataroot_lq=str(tmp_path / 'lq.lmdb'), dataroot_gt=str(tmp_path / 'gt.lmdb'),
               io_backend={'type': 'lmdb'})
    with pytest.raises(FileNotFoundError, match="key 'c' has no match in the lq lmdb"):
        list_source_pairs(src, 'where')


def test_lq_and_gt_roots_naming_one_folder_differently_are_refused(tmp_path):
    from coic_basicsr.data.rain_sources import list_source_pairs
    _write(str(tmp_path / 'd'), 'x.png', _gt(np.random.default_rng(0), 24, 24))
    src = dict(dataroot_lq=str(tmp_path / 'd') + '/', dataroot_gt=str(tmp_path / 'd'))
    with pytest.raises(ValueError, match='paired with itself'):
        list_source_pairs(src, 'where')


def test_upper_case_extension_of_a_meta_info_key_is_stripped():
    # 'a.PNG' in meta_info names the same lmdb key as 'a.png' and 'a'
    from coic_basicsr.data.rain_sources import _strip_ext
    assert _strip_ext('sub/a.PNG') == 'sub/a' == _strip_ext('sub/a.png')


def test_images_in_hidden_folders_are_not_listed(tmp_path):
    # e.g. Jupyter's .ipynb_checkpoints copies
    from coic_basicsr.data.image_files import list_images
    rng = np.random.default_rng(0)
    _write(str(tmp_path), 'a.png', _gt(rng, 24, 24))
    _write(str(tmp_path), '.ipynb_checkpoints/a.png', _gt(rng, 24, 24))
    assert list_images(str(tmp_path)) == (['a.png'], [])


def test_upper_case_extensions_are_images(tmp_path):
    from coic_basicsr.data.image_files import list_images
    rng = np.random.default_rng(0)
    _write(str(tmp_path), 'a.PNG', _gt(rng, 24, 24))
    _write(str(tmp_path), 'b.JPG', _gt(rng, 24, 24))
    assert list_images(str(tmp_path)) == (['a.PNG', 'b.JPG'], [])
