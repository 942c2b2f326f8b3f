"""Tests of ``basicsr analyze``: every output's contents, recomputed here from the nets and the data."""
import csv
import json
from copy import deepcopy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from helpers.coic import tiny_coic_options
from torch import nn

from coic_basicsr.archs.modulation import KernelScaleGenerator, ModulatedConv2d
from coic_basicsr.data.transforms import global_view
from coic_basicsr.tools.analyze import main

from basicsr.archs import build_network  # noqa: E402  (after coic_basicsr: torchvision shim)
from basicsr.data import build_dataset  # noqa: E402

OUTPUTS = ['embedding.csv', 'embedding.png', 'impact.csv', 'impact.png', 'impact_swap.csv', 'kernel_scales.csv',
           'kernel_scales.png', 'relationships.csv', 'relationships.json', 'relationships.png', 'representations.csv',
           'summary.json']


def make_experiment(root: Path, modulated: bool = True):
    """experiments/tiny (val: 3 sources x 2 images of 32x32) with net_g/net_enc files; returns (folder, opt, nets)."""
    opt = tiny_coic_options('tiny')
    del opt['train']
    opt['datasets']['val']['num_per_source'] = 2
    models = root / 'experiments' / 'tiny' / 'models'
    models.mkdir(parents=True)
    (models.parent / 'tiny.yml').write_text(yaml.safe_dump(opt))
    torch.manual_seed(1)
    net, encoder = build_network(dict(opt['network_g'])).eval(), build_network(dict(opt['network_enc'])).eval()
    if modulated:  # generators are zero-initialised (scale 1): make them generate something
        for m in net.modules():
            if isinstance(m, KernelScaleGenerator):
                nn.init.normal_(m[-1].weight, std=0.3)
    torch.save({'params': net.state_dict()}, models / 'net_g_latest.pth')
    torch.save({'params': encoder.state_dict(), 'params_key': encoder.state_dict()}, models / 'net_enc_latest.pth')
    return models.parent, opt, net, encoder


def read_csv(path: Path):
    with open(path) as f:
        return list(csv.DictReader(f))


def relationship_reference(codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The documented definition, written out plainly."""
    sq = np.array([[np.sum((a - b)**2) for b in codes] for a in codes])
    h = np.median([sq[i, j] for i in range(len(codes)) for j in range(i + 1, len(codes)) if sq[i, j] > 1e-12])
    k = np.exp(-sq / h)
    sources = sorted(set(labels))
    mean_k = np.array([[k[np.ix_(labels == s, labels == t)].mean() for t in sources] for s in sources])
    return mean_k / np.sqrt(np.outer(np.diag(mean_k), np.diag(mean_k)))


@torch.no_grad()
def test_dataset_sources_outputs_and_their_contents(tmp_path):
    exp, opt, net, encoder = make_experiment(tmp_path)
    out = tmp_path / 'analysis'
    assert main(['-opt', str(exp), '--output', str(out), '--quiet']) == 0
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS
    for png in out.glob('*.png'):
        img = cv2.imread(str(png))
        assert img is not None and min(img.shape[:2]) > 200 and img.std() > 5

    val = build_dataset(dict(deepcopy(opt['datasets']['val']), phase='val'))
    items = [val[i] for i in range(len(val))]
    z = encoder(global_view(torch.stack([it['lq'] for it in items]), 32))[0].double().numpy()
    z_clean = encoder(global_view(torch.stack([it['gt'] for it in items]), 32))[0].double().numpy()
    labels = np.array([it['source'] for it in items])
    rows = read_csv(out / 'representations.csv')
    assert [r['source'] for r in rows] == ['light', 'light', 'heavy', 'heavy', 'mist', 'mist']
    assert [r['image'] for r in rows] == [it['lq_path'] for it in items]
    codes = np.array([[float(r[f'z{k}']) for k in range(16)] for r in rows])
    assert np.allclose(codes, z, atol=1e-6)

    relations = json.loads((out / 'relationships.json').read_text())
    matrix = np.array(relations['matrix'])
    assert relations['sources'] == ['light', 'heavy', 'mist']
    assert np.array_equal(matrix, matrix.T) and np.array_equal(np.diag(matrix), np.ones(3))
    assert np.all(matrix > 0) and np.all(matrix <= 1) and np.linalg.eigvalsh(matrix).min() > -1e-9
    assert np.allclose(matrix, relationship_reference(codes, labels), atol=1e-6)
    assert np.allclose([[float(v) for v in list(r.values())[1:]] for r in read_csv(out / 'relationships.csv')], matrix)

    emb = read_csv(out / 'embedding.csv')
    coords = np.array([[float(r['pc1']), float(r['pc2'])] for r in emb])
    _, sing, vt = np.linalg.svd(codes - codes.mean(0), full_matrices=False)
    reference = (codes - codes.mean(0)) @ vt[:2].T
    assert np.allclose(np.abs(coords), np.abs(reference), atol=1e-6)  # PCA axes up to sign
    clean = np.array([[float(r['clean_pc1']), float(r['clean_pc2'])] for r in emb])
    assert np.allclose(np.abs(clean), np.abs((z_clean - codes.mean(0)) @ vt[:2].T), atol=1e-5)
    summary = json.loads((out / 'summary.json').read_text())
    assert np.allclose(summary['pca_explained_variance_ratio'], sing[:2]**2 / (sing**2).sum())

    impact = read_csv(out / 'impact.csv')
    moved = 1 - (z * z_clean).sum(1) / np.linalg.norm(z, axis=1) / np.linalg.norm(z_clean, axis=1)
    for s, row in enumerate(impact):
        assert row['count'] == '2' and row['clean_reference'] == 'gt'
        assert float(row['rain_removed']) == pytest.approx(moved[labels == s].mean(), abs=1e-6)
        assert 0 < float(row['details_blurred']) <= 2 and 0 < float(row['rain_swapped']) <= 2
        assert 0 <= float(row['donor_attraction']) <= 1
    swaps = read_csv(out / 'impact_swap.csv')
    assert sorted((r['image_source'], r['rain_source']) for r in swaps) == sorted(
        (a, b) for a in ('light', 'heavy', 'mist') for b in ('light', 'heavy', 'mist') if a != b)
    for row in impact:  # per-source rain_swapped = mean over the donors
        donors = [float(r['move']) for r in swaps if r['image_source'] == row['source']]
        assert float(row['rain_swapped']) == pytest.approx(np.mean(donors), rel=1e-6)

    kernels = read_csv(out / 'kernel_scales.csv')
    layers = [name for name, m in net.named_modules() if isinstance(m, ModulatedConv2d)]
    assert [(r['layer'], r['source']) for r in kernels] == [(l, s) for l in layers for s in ('light', 'heavy', 'mist')]
    for row in kernels:
        assert row['count'] == '2' and 0 < float(row['mean_abs_dev']) <= float(row['max_abs_dev'])
        assert float(row['rel_kernel_change']) > 0
    assert summary['skipped'] == [] and summary['param_key'] == 'params'


def test_folders_unmodulated_model_and_a_skipped_file(tmp_path, capsys):
    exp, _, net, encoder = make_experiment(tmp_path, modulated=False)
    rng = np.random.default_rng(0)
    for folder, brightness in (('drizzle', 60), ('storm', 200)):
        for k in range(2):
            img = np.clip(rng.normal(brightness, 30, (24, 32, 3)), 0, 255).astype(np.uint8)
            (tmp_path / folder / 'sub').mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(tmp_path / folder / 'sub' / f'{k}.png'), img)
    (tmp_path / 'storm' / 'broken.png').write_bytes(b'garbage')
    (tmp_path / 'storm' / 'moved.png').symlink_to(tmp_path / 'nowhere.png')  # a dangling link aborted the analysis
    (tmp_path / 'storm' / 'readme.txt').write_text('x')
    out = tmp_path / 'analysis'
    code = main(['-opt', str(exp / 'tiny.yml'), '--checkpoint', str(exp / 'models/net_g_latest.pth'), '--output',
                 str(out), '--folders', f"drizzle={tmp_path / 'drizzle'}", f"storm={tmp_path / 'storm'}", '--quiet'])
    err = capsys.readouterr().err
    assert code == 1 and 'broken.png' in err and 'moved.png' in err and 'Traceback' not in err
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['skipped'] == ['storm: broken.png', 'storm: moved.png']
    assert [(s['name'], s['count'], s['clean_reference']) for s in summary['sources']] == [
        ('drizzle', 2, 'restored'), ('storm', 2, 'restored')]
    kernels = read_csv(out / 'kernel_scales.csv')
    assert len(kernels) == 2 * sum(isinstance(m, ModulatedConv2d) for m in net.modules())
    assert all(float(r[k]) == 0.0 for r in kernels for k in ('mean_abs_dev', 'max_abs_dev', 'rel_kernel_change'))
    with torch.no_grad():  # "rain removed" of a folder image: the model's restoration is the clean reference
        x = torch.from_numpy(cv2.imread(str(tmp_path / 'drizzle/sub/0.png'))[..., ::-1].copy()).permute(2, 0, 1)
        x = x[None].float() / 255
        z = encoder(global_view(x, 32))[0]
        z_clean = encoder(global_view(net(x, z).clamp(0, 1), 32))[0]
    rows = {r['image']: r for r in read_csv(out / 'representations.csv') if r['source'] == 'drizzle'}
    assert np.allclose([float(rows['sub/0.png'][f'z{k}']) for k in range(16)], z[0].numpy(), atol=1e-6)
    matrix = np.array(json.loads((out / 'relationships.json').read_text())['matrix'])
    assert matrix.shape == (2, 2) and matrix[0, 1] == matrix[1, 0] < 1
    emb = {r['image']: r for r in read_csv(out / 'embedding.csv') if r['source'] == 'drizzle'}
    assert set(emb) == {'sub/0.png', 'sub/1.png'} and torch.isfinite(z_clean).all()


@pytest.mark.parametrize('case, message', [
    ('empty_folder', "no images in"),
    ('bad_spec', 'is not NAME=PATH'),
    ('unknown_dataset', "--datasets: 'test'"),
    ('no_encoder', 'analyze needs a CoIC model'),
    ('one_image', 'at least 2 are needed'),
    ('bad_blur_sigma', '--blur-sigma: expected a positive Gaussian sigma, got -1.0'),
    ('folder_is_a_file', "(source 'one') is not a folder"),
    ('missing_folder', "(source 'one') does not exist"),
])
def test_errors_are_one_clear_line(tmp_path, capsys, case, message):
    exp, opt, *_ = make_experiment(tmp_path)
    out = tmp_path / 'analysis'
    (tmp_path / 'empty').mkdir()
    args = ['-opt', str(exp), '--output', str(out), '--quiet']
    if case == 'empty_folder':
        args += ['--folders', f"none={tmp_path / 'empty'}"]
    elif case == 'bad_spec':
        args += ['--folders', str(tmp_path / 'empty')]
    elif case == 'unknown_dataset':
        args += ['--datasets', 'test']
    elif case == 'no_encoder':
        del opt['network_enc']
        (tmp_path / 'plain.yml').write_text(yaml.safe_dump(opt))
        args = ['-opt', str(tmp_path / 'plain.yml'), '--checkpoint', str(exp / 'models/net_g_latest.pth'), '--quiet']
    elif case == 'one_image':
        assert cv2.imwrite(str(tmp_path / 'empty' / 'a.png'), np.zeros((16, 16, 3), np.uint8))
        args += ['--folders', f"one={tmp_path / 'empty'}"]
    elif case == 'bad_blur_sigma':
        args += ['--blur-sigma', '-1']
    elif case in ('folder_is_a_file', 'missing_folder'):
        image = tmp_path / 'empty' / 'a.png'
        if case == 'folder_is_a_file':
            assert cv2.imwrite(str(image), np.zeros((16, 16, 3), np.uint8))
        args += ['--folders', f'one={image}']
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('basicsr analyze: error: ') and message in err[-1]


def test_defaults_of_images_per_source_and_blur_sigma_are_the_ones_the_help_shows():
    from coic_basicsr.tools.analyze import build_parser
    parser = build_parser()
    args = parser.parse_args(['-opt', 'experiments/x'])
    assert (args.max_per_source, args.blur_sigma) == (32, 1.5)
    shown = ' '.join(parser.format_help().split())  # argparse wraps to the terminal's width
    assert 'evenly spread (default: 32)' in shown and 'edit (default: 1.5)' in shown


def test_a_training_set_with_skip_bad_is_analysed(tmp_path):
    from coic_basicsr.tools.analyze import collect_sources
    for side in ('gt', 'lq'):
        (tmp_path / side).mkdir()
        for i in range(2):
            assert cv2.imwrite(str(tmp_path / side / f'{i}.png'), np.full((16, 16, 3), 40 * i, np.uint8))
    source = {'name': 'src', 'dataroot_gt': str(tmp_path / 'gt'), 'dataroot_lq': str(tmp_path / 'lq')}
    opt = {'datasets': {'train': {'name': 't', 'type': 'MixedRainDataset', 'gt_size': 16, 'skip_bad': 2,
                                  'sources': [source]}}}  # skip_bad belongs to training; analyze reads test-style
    sources = collect_sources(opt, None, [], 4)
    assert [name for name, _ in sources] == ['src'] and len(sources[0][1]) == 2


def test_home_in_folders_and_output_is_expanded(tmp_path, monkeypatch, capsys):
    exp, *_ = make_experiment(tmp_path, modulated=False)
    (tmp_path / 'drizzle').mkdir()
    for k in range(2):
        assert cv2.imwrite(str(tmp_path / 'drizzle' / f'{k}.png'), np.full((24, 32, 3), 40 * k, np.uint8))
    monkeypatch.setenv('HOME', str(tmp_path))
    code = main(['-opt', str(exp / 'tiny.yml'), '--checkpoint', str(exp / 'models/net_g_latest.pth'), '--output',
                 '~/home_analysis', '--folders', 'drizzle=~/drizzle', '--quiet'])  # "'~/drizzle' does not exist"
    assert code == 0, capsys.readouterr().err[-500:]
    assert (tmp_path / 'home_analysis' / 'summary.json').is_file()


def test_pca_axes_have_a_fixed_sign_whatever_the_svd_returns():
    # the largest-magnitude loading of each axis is positive, so plots of negated or reordered codes agree
    from coic_basicsr.tools.analysis_stats import pca_2d
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(20, 5)) * np.array([5, 3, 1, 0.5, 0.1])
    for c in (codes, -codes, codes[::-1]):
        _, _, comps, _ = pca_2d(c)
        for axis in range(2):
            assert comps[axis][np.argmax(np.abs(comps[axis]))] > 0


class _ViewCodeModel:
    """A stand-in model whose code is the normalised global view and whose restoration is the identity."""
    device = torch.device('cpu')
    global_size = 8

    def __init__(self):
        self.net_g = nn.Identity()

    def encode(self, views):
        return nn.functional.normalize(views.flatten(1), dim=1)

    def restore(self, lq, z=None):
        return lq


def _striped_rain_analysis():
    # two sources whose rain differs clearly: horizontal stripes, vertical stripes
    from coic_basicsr.tools.analysis_stats import Analysis
    torch.manual_seed(0)
    clean = [torch.rand(1, 3, 8, 8) * 0.2 + 0.3 for _ in range(6)]
    rain = {0: torch.zeros(1, 3, 8, 8), 1: torch.zeros(1, 3, 8, 8)}
    rain[0][..., ::2, :] = 0.4
    rain[1][..., :, ::2] = 0.4
    sources = []
    for s in range(2):
        loaders = [lambda i=i, s=s: (f'{s}_{i}', (clean[3 * s + i] + rain[s]).clamp(0, 1), clean[3 * s + i])
                   for i in range(3)]
        sources.append((f'src{s}', loaders))
    analysis = Analysis(_ViewCodeModel(), sources, blur_sigma=1.0)
    analysis.run(quiet=True)
    return analysis


def test_the_rain_layer_is_the_view_minus_the_clean_view():
    analysis = _striped_rain_analysis()
    for clean, rain, z in zip(analysis.clean_views, analysis.rain_views, analysis.codes['z']):
        assert torch.allclose(_ViewCodeModel().encode((clean + rain)[None])[0], z, atol=1e-5)


def test_swapping_in_another_sources_rain_moves_the_code_to_that_sources_codes():
    move, attraction = _striped_rain_analysis().swap_impact()
    assert move[0, 1] > 0.05 and move[1, 0] > 0.05
    assert attraction[0, 1] == 1.0 and attraction[1, 0] == 1.0


def test_kernel_scale_statistics_of_a_known_scale():
    # s = (1, 1, 1, 3): mean |s - 1| = 0.5, rms(s - 1) = 1, max |s - 1| = 2
    from coic_basicsr.tools.analysis_stats import KernelScaleRecorder

    class FakeModulated(nn.Module):
        context = None

        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(1, 1, 2, 2))

        def kernel_scale(self, x, z):
            return torch.tensor([[1.0, 1.0, 1.0, 3.0]]).expand(x.shape[0], -1).reshape(-1, 1, 1, 2, 2)

        def forward(self, x, z):
            return x

    layer = FakeModulated()
    recorder = KernelScaleRecorder(nn.Identity())
    recorder.layers = [('fake', layer)]
    with recorder.record('g'):
        layer(torch.zeros(2, 1, 4, 4), torch.zeros(2, 3))
    row = recorder.table(['g'])[0]
    assert row['count'] == 2
    assert row['mean_abs_dev'] == pytest.approx(0.5) and row['rms_dev'] == pytest.approx(1.0)
    assert row['max_abs_dev'] == pytest.approx(2.0) and row['rel_kernel_change'] == pytest.approx(1.0)
