"""Tests of ``basicsr derain``: mirrored folder tree, outputs equal to the checkpointed nets, tiling, bad inputs."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from helpers.coic import tiny_coic_options
from helpers.run import basicsr
from PIL import Image
from torch import nn

from coic_basicsr.archs.modulation import ContextEmbedding, KernelScaleGenerator
from coic_basicsr.data.transforms import global_view
from coic_basicsr.tools.derain import main
from coic_basicsr.tools.image_io import StoredForm, read_image, read_image_and_form, write_image
from coic_basicsr.tools.inference import load_model

from basicsr.archs import build_network  # noqa: E402  (after coic_basicsr: torchvision shim)
from basicsr.utils import tensor2img  # noqa: E402
from basicsr.utils.registry import ARCH_REGISTRY  # noqa: E402


class CoICToolsPointwiseTestNet(nn.Module):
    """Test-only arch: 1x1 convs plus a z-dependent bias, so tiling cannot change its output; returns two stages."""

    def __init__(self, context_dim: int = 16) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 3, 1)
        self.proj = nn.Linear(context_dim, 8)

    def forward(self, x, z=None):
        h = self.conv1(x)
        if z is not None:
            h = h + self.proj(z)[:, :, None, None]
        return [x, self.conv2(torch.tanh(h)) + x]


if 'CoICToolsPointwiseTestNet' not in ARCH_REGISTRY:
    ARCH_REGISTRY.register(CoICToolsPointwiseTestNet)


def make_experiment(root: Path, network_g: dict = None):
    """experiments/tiny with its .yml and models/net_{g,enc}_latest.pth (params != params_ema, query != key)."""
    opt = tiny_coic_options('tiny')
    del opt['train']
    opt['network_g'] = network_g or opt['network_g']
    models = root / 'experiments' / 'tiny' / 'models'
    models.mkdir(parents=True)
    (models.parent / 'tiny.yml').write_text(yaml.safe_dump(opt))
    torch.manual_seed(0)
    nets = [build_network(dict(opt[k])).eval() for k in ('network_g', 'network_g', 'network_enc', 'network_enc')]
    for net in nets[:2]:  # make the (zero-initialised) modulation active
        for m in net.modules():
            if isinstance(m, (KernelScaleGenerator, ContextEmbedding)):
                nn.init.normal_(m[-1].weight if isinstance(m, KernelScaleGenerator) else m.proj.weight, std=0.3)
    raw, ema, query, key = nets
    torch.save({'params': raw.state_dict(), 'params_ema': ema.state_dict()}, models / 'net_g_latest.pth')
    torch.save({'params': query.state_dict(), 'params_key': key.state_dict()}, models / 'net_enc_latest.pth')
    return models.parent, ema, key, raw


def write_img(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@torch.no_grad()
def expected(net, encoder, path: Path) -> np.ndarray:
    """BGR uint8 restoration computed here, without the tool's loader."""
    x = torch.from_numpy(cv2.imread(str(path))[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    out = net(x, encoder(global_view(x, 32))[0])
    return tensor2img(out[-1] if isinstance(out, list) else out)


def files(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob('*') if p.is_file())


def test_folder_mirrors_tree_and_matches_the_nets(tmp_path, capsys):
    exp, ema, key, raw = make_experiment(tmp_path)
    inp, out = tmp_path / 'in', tmp_path / 'out'
    write_img(inp / 'a.png', 40, 48, 0)
    write_img(inp / 'sub' / 'b.png', 24, 32, 1)
    write_img(inp / 'sub' / 'deeper' / 'c.jpg', 32, 32, 2)
    (inp / 'notes.txt').write_text('not an image')
    assert main(['-opt', str(exp), str(inp), str(out), '--quiet']) == 0
    assert 'notes.txt' in capsys.readouterr().err
    assert files(out) == ['a.png', 'sub/b.png', 'sub/deeper/c.jpg']
    for rel in ('a.png', 'sub/b.png'):
        got, want = cv2.imread(str(out / rel)), expected(ema, key, inp / rel)
        assert got.shape == want.shape and np.abs(got.astype(int) - want).max() <= 1
    assert np.abs(cv2.imread(str(out / 'a.png')).astype(int) - expected(raw, key, inp / 'a.png')).max() > 10  # ema
    jpg = cv2.imread(str(out / 'sub/deeper/c.jpg')).astype(float)  # compare with the expected result as JPEG too
    want = cv2.imdecode(cv2.imencode('.jpg', expected(ema, key, inp / 'sub/deeper/c.jpg'))[1], cv2.IMREAD_COLOR)
    assert jpg.shape == (32, 32, 3) and np.abs(jpg - want).mean() < 1

    os.remove(out / 'sub/b.png')
    stamp = os.stat(out / 'a.png').st_mtime_ns
    assert main(['-opt', str(exp), str(inp), str(out), '--quiet', '--skip-existing', '--ext', 'png']) == 0
    assert files(out) == ['a.png', 'sub/b.png', 'sub/deeper/c.jpg', 'sub/deeper/c.png']
    assert os.stat(out / 'a.png').st_mtime_ns == stamp


def test_a_trained_coic_network_without_its_encoder_is_warned_about(tmp_path, capsys):
    # the official CoIC-BRN comes without its encoder: it ran as the plain backbone, silently
    exp, _, _, _ = make_experiment(tmp_path)
    write_img(tmp_path / 'in' / 'a.png', 24, 24, 0)
    assert main(['-opt', str(exp), str(tmp_path / 'in'), str(tmp_path / 'out'), '--quiet']) == 0
    assert 'warning' not in capsys.readouterr().err  # with its encoder
    opt = yaml.safe_load((exp / 'tiny.yml').read_text())
    del opt['network_enc']
    (exp / 'tiny.yml').write_text(yaml.safe_dump(opt))
    (exp / 'models' / 'net_enc_latest.pth').unlink()
    assert main(['-opt', str(exp), str(tmp_path / 'in'), str(tmp_path / 'plain'), '--quiet']) == 0
    assert 'warning: network_g has trained CoI-M layers but no encoder (network_enc) is given: it runs with z=None' \
        in capsys.readouterr().err


@torch.no_grad()
def test_results_keep_grey_scale_alpha_and_16_bit_depth_of_their_input(tmp_path):
    exp, ema, key, _ = make_experiment(tmp_path)
    rng = np.random.default_rng(7)
    colour16 = rng.integers(0, 65536, (24, 32, 3), dtype=np.uint16)
    gray, alpha = rng.integers(0, 256, (24, 32), dtype=np.uint8), rng.integers(0, 256, (24, 32), dtype=np.uint8)
    inp = tmp_path / 'in'
    inp.mkdir()
    cv2.imwrite(str(inp / 'deep.png'), colour16)
    cv2.imwrite(str(inp / 'gray.png'), gray)
    cv2.imwrite(str(inp / 'rgba.png'), np.dstack([gray, gray[::-1], gray[:, ::-1], alpha]))
    assert main(['-opt', str(exp), str(inp), str(tmp_path / 'out'), '--quiet']) == 0
    assert main(['-opt', str(exp), str(inp), str(tmp_path / 'jpg'), '--ext', 'jpg', '--quiet']) == 0

    deep = cv2.imread(str(tmp_path / 'out/deep.png'), cv2.IMREAD_UNCHANGED)
    x = torch.from_numpy(colour16[..., ::-1] / 65535.).permute(2, 0, 1)[None].float()  # all 16 bits go in
    want = (ema(x, key(global_view(x, 32))[0]).clamp(0, 1)[0].permute(1, 2, 0).numpy()[..., ::-1] * 65535).round()
    assert deep.dtype == np.uint16 and np.abs(deep - want).max() <= 2
    assert np.abs(deep.astype(float) / 257 - expected(ema, key, inp / 'deep.png')).max() > 1  # not the 8-bit input

    grey_out = cv2.imread(str(tmp_path / 'out/gray.png'), cv2.IMREAD_UNCHANGED)
    want = cv2.cvtColor(expected(ema, key, inp / 'gray.png'), cv2.COLOR_BGR2GRAY)
    assert grey_out.shape == (24, 32) and np.abs(grey_out.astype(int) - want).max() <= 1
    rgba = cv2.imread(str(tmp_path / 'out/rgba.png'), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (24, 32, 4) and np.array_equal(rgba[..., 3], alpha)
    for name, shape in (('deep.jpg', (24, 32, 3)), ('gray.jpg', (24, 32)), ('rgba.jpg', (24, 32, 3))):
        written = cv2.imread(str(tmp_path / 'jpg' / name), cv2.IMREAD_UNCHANGED)  # JPEG: 8 bits, no alpha
        assert written.shape == shape and written.dtype == np.uint8


def test_grey_alpha_png_is_derained_as_grey_and_written_as_grey_alpha(tmp_path):
    exp, *_ = make_experiment(tmp_path)
    grey_alpha = np.random.default_rng(3).integers(0, 256, (24, 32, 2), dtype=np.uint8)
    inp = tmp_path / 'in'
    inp.mkdir()
    Image.fromarray(grey_alpha, 'LA').save(inp / 'la.png')
    Image.fromarray(grey_alpha[..., 0], 'L').save(inp / 'l.png')  # the same grey pixels, no alpha
    assert main(['-opt', str(exp), str(inp), str(tmp_path / 'out'), '--quiet']) == 0
    assert main(['-opt', str(exp), str(inp / 'la.png'), str(tmp_path / 'la.tif'), '--quiet']) == 0
    with Image.open(tmp_path / 'out' / 'la.png') as la, Image.open(tmp_path / 'out' / 'l.png') as grey:
        assert la.mode == 'LA' and grey.mode == 'L'
        assert np.array_equal(np.array(la), np.dstack([np.array(grey), grey_alpha[..., 1]]))
    tif = cv2.imread(str(tmp_path / 'la.tif'), cv2.IMREAD_UNCHANGED)  # OpenCV writes no 2-channel TIFF: BGRA
    assert np.array_equal(tif[..., 0], tif[..., 1]) and np.array_equal(tif[..., 0], tif[..., 2])
    assert np.array_equal(tif[..., 3], grey_alpha[..., 1])


def test_16_bit_grey_alpha_png_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    grey, alpha = (rng.integers(0, 65536, (5, 7), dtype=np.uint16) for _ in range(2))
    path = str(tmp_path / 'la16.png')
    form = StoredForm(gray=True, alpha=alpha, dtype=np.uint16)
    write_image(torch.from_numpy(grey / 65535.).float().expand(1, 3, 5, 7), path, form)
    header = (tmp_path / 'la16.png').read_bytes()[:26]
    assert header[12:16] == b'IHDR' and header[24:26] == bytes([16, 4])  # 16-bit grey + alpha
    decoded = cv2.imread(path, cv2.IMREAD_UNCHANGED)  # OpenCV decodes grey + alpha as BGRA
    assert decoded.dtype == np.uint16 and all(np.array_equal(decoded[..., c], grey) for c in range(3))
    assert np.array_equal(decoded[..., 3], alpha)
    img, form = read_image_and_form(path)
    assert form.gray and form.dtype == np.uint16 and np.array_equal(form.alpha, alpha)
    assert np.array_equal((img[0, 1].numpy() * 65535).round(), grey)


def test_tiled_matches_untiled_where_the_model_allows(tmp_path):
    exp, *_ = make_experiment(tmp_path, {'type': 'CoICToolsPointwiseTestNet', 'context_dim': 16})
    write_img(tmp_path / 'in' / 'big.png', 40, 56, 3)
    model = load_model(str(exp))
    x = read_image(str(tmp_path / 'in' / 'big.png'))
    calls = []
    model.net_g.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[-2:]))
    untiled = model.restore(x, tile=0)
    tiled = model.restore(x, tile=16, overlap=4)
    assert len(calls) == 1 + 3 * 5 and max(max(c) for c in calls[1:]) == 16
    assert torch.allclose(tiled, untiled, atol=1e-6)  # z of the whole image is shared by every tile
    assert (model.restore(x, z=torch.zeros(1, 16), tile=0) - untiled).abs().max() > 1e-3
    for tiling, name in ((['--tile', '16', '--overlap', '4'], 'tiled'), (['--tile', '0'], 'plain')):
        assert main(['-opt', str(exp), str(tmp_path / 'in'), str(tmp_path / name), *tiling, '--quiet']) == 0
    assert np.array_equal(cv2.imread(str(tmp_path / 'tiled/big.png')), cv2.imread(str(tmp_path / 'plain/big.png')))


def test_a_small_tile_without_overlap_gets_a_fitting_overlap(tmp_path):
    exp, *_ = make_experiment(tmp_path, {'type': 'CoICToolsPointwiseTestNet', 'context_dim': 16})
    write_img(tmp_path / 'in' / 'big.png', 40, 56, 3)
    args = ['-opt', str(exp), str(tmp_path / 'in'), str(tmp_path / 'out'), '--tile', '16', '--quiet']
    assert main(args) == 0  # the default overlap, 32, does not fit a 16-pixel tile: 4 is used
    assert cv2.imread(str(tmp_path / 'out' / 'big.png')).shape == (40, 56, 3)
    args[3] = str(tmp_path / 'side_by_side')
    assert main(args + ['--overlap', '0']) == 0  # the smallest overlap: tiles side by side
    assert cv2.imread(str(tmp_path / 'side_by_side' / 'big.png')).shape == (40, 56, 3)


def test_overlap_needs_tile_or_val_tile(tmp_path, capsys):
    exp, *_ = make_experiment(tmp_path, {'type': 'CoICToolsPointwiseTestNet', 'context_dim': 16})
    write_img(tmp_path / 'in' / 'big.png', 40, 56, 3)
    args = ['-opt', str(exp), str(tmp_path / 'in'), str(tmp_path / 'out'), '--overlap', '8', '--quiet']
    assert main(args) == 2 and not (tmp_path / 'out').exists()
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        'basicsr derain: error: --overlap: 8 needs tiling: add --tile N (or set val.tile in the option file)')
    opt = yaml.safe_load((exp / 'tiny.yml').read_text())
    opt['val']['tile'] = {'size': 32, 'overlap': 4}
    (exp / 'tiny.yml').write_text(yaml.safe_dump(opt))
    assert main(args) == 0  # the option file tiles: --overlap overrides its overlap
    assert cv2.imread(str(tmp_path / 'out' / 'big.png')).shape == (40, 56, 3)
    capsys.readouterr()
    assert main(args + ['--tile', '0']) == 2  # the overlap was silently dropped
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        'basicsr derain: error: --overlap: 8 needs tiling, which --tile 0 turns off')


def test_restormer_tiles_odd_sizes_and_single_files(tmp_path):
    exp, ema, key, raw = make_experiment(tmp_path)
    write_img(tmp_path / 'odd.png', 45, 37, 4)
    assert main(['-opt', str(exp), str(tmp_path / 'odd.png'), str(tmp_path / 'r.png'), '--tile', '24', '--overlap',
                 '8', '--quiet']) == 0
    tiled, plain = cv2.imread(str(tmp_path / 'r.png')), expected(ema, key, tmp_path / 'odd.png')
    assert tiled.shape == (45, 37, 3) and np.abs(tiled.astype(int) - plain).mean() < 40
    opt = yaml.safe_load((exp / 'tiny.yml').read_text())
    opt['path']['param_key_g'] = 'params'  # BasicSR's choice of weights is honoured
    (tmp_path / 'plain_key.yml').write_text(yaml.safe_dump(opt))
    assert main(['-opt', str(tmp_path / 'plain_key.yml'), '--checkpoint', str(exp / 'models/net_g_latest.pth'),
                 str(tmp_path / 'odd.png'), str(tmp_path / 'folder'), '--quiet']) == 0
    want = expected(raw, key, tmp_path / 'odd.png')
    assert np.abs(cv2.imread(str(tmp_path / 'folder/odd.png')).astype(int) - want).max() <= 1


@pytest.mark.parametrize('case, message', [
    ('garbage_checkpoint', "bad.pth' cannot be loaded: not a PyTorch checkpoint (neither a zip archive nor a pickle)"),
    ('wrong_keys', "none of the keys ['params_ema', 'params']"),
    ('other_architecture', 'does not fit network_g (CoICRestormer)'),
    ('no_encoder', '--encoder-checkpoint'),
    ('empty_folder', 'no images'),
    ('only_text', 'no images'),
    ('missing_input', 'does not exist'),
    ('bad_device', "--device: 'foo' is not a device"),
    ('negative_tile', '--tile: expected 0 (no tiling) or an integer >= 16 (smaller tiles leave the network too '
                      'little context), got -5'),
    ('tiny_tile', '--tile: expected 0 (no tiling) or an integer >= 16 (smaller tiles leave the network too '
                  'little context), got 4'),  # ran for minutes and gave garbage
    ('tile_15', '--tile: expected 0 (no tiling) or an integer >= 16 (smaller tiles leave the network too '
                'little context), got 15'),  # the bound itself
    ('negative_overlap', '--overlap: expected an integer >= 0, got -1'),  # hinted at --tile 0
    ('ext_contradicts_output', "--ext: 'jpg' contradicts OUTPUT"),
    ('output_is_a_file', "is an existing file, not a folder for the results"),
])
def test_bad_input_is_one_clear_error(tmp_path, capsys, case, message):
    exp, *_ = make_experiment(tmp_path)
    inp = tmp_path / 'in'
    inp.mkdir()
    args = ['-opt', str(exp), str(inp), str(tmp_path / 'out'), '--quiet']
    ckpt = tmp_path / 'bad.pth'
    if case == 'garbage_checkpoint':
        ckpt.write_bytes(b'not a checkpoint')
    elif case == 'wrong_keys':
        torch.save({'weights': {}}, ckpt)
    elif case == 'other_architecture':
        opt = dict(tiny_coic_options()['network_g'], dim=16)
        torch.save({'params': build_network(opt).state_dict()}, ckpt)
    elif case == 'no_encoder':
        os.remove(exp / 'models' / 'net_enc_latest.pth')
    elif case == 'only_text':
        (inp / 'notes.txt').write_text('x')
    elif case == 'missing_input':
        args[2] = str(tmp_path / 'nowhere')
    if case in ('garbage_checkpoint', 'wrong_keys', 'other_architecture'):
        args += ['--checkpoint', str(ckpt)]
    elif case == 'bad_device':
        args += ['--device', 'foo']
    elif case == 'negative_tile':
        args += ['--tile', '-5']
    elif case == 'tiny_tile':
        args += ['--tile', '4']
    elif case == 'tile_15':
        args += ['--tile', '15']
    elif case == 'negative_overlap':
        args += ['--tile', '64', '--overlap', '-1']
    elif case == 'ext_contradicts_output':
        args[2:4] = [str(inp / 'a.png'), str(tmp_path / 'out' / 'x.png')]
        args += ['--ext', 'jpg']
    elif case == 'output_is_a_file':
        (tmp_path / 'out').write_text('keep')
    if case not in ('empty_folder', 'only_text', 'missing_input'):
        write_img(inp / 'a.png', 16, 16, 0)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('basicsr derain: error: ') and message in err[-1]
    if case == 'output_is_a_file':
        assert (tmp_path / 'out').read_text() == 'keep'
    else:
        assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('output, ext', [('in', None), ('in/a.png', None), ('in', 'png')])
def test_inputs_are_never_overwritten(tmp_path, capsys, output, ext):
    exp, *_ = make_experiment(tmp_path)
    write_img(tmp_path / 'in' / 'a.png', 16, 16, 0)
    write_img(tmp_path / 'in' / 'b.jpg', 16, 16, 1)  # with --ext png b.jpg -> b.png is new, a.png -> a.png is not
    before = {p.name: p.read_bytes() for p in (tmp_path / 'in').iterdir()}
    source = str(tmp_path / 'in' / 'a.png') if output.endswith('.png') else str(tmp_path / 'in')
    args = ['-opt', str(exp), source, str(tmp_path / output), '--quiet'] + (['--ext', ext] if ext else [])
    assert main(args) == 2
    assert 'is one of the input images; derain does not overwrite its inputs' in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / 'in').iterdir()} == before


def test_unreadable_images_are_reported_and_the_others_written(tmp_path, capsys):
    exp, ema, key, _ = make_experiment(tmp_path)
    inp = tmp_path / 'in'
    write_img(inp / 'a.png', 16, 24, 0)
    (inp / 'z_broken.png').write_bytes(b'garbage')
    (inp / 'empty.jpg').write_bytes(b'')
    (inp / 'moved.png').symlink_to(tmp_path / 'nowhere.png')  # a dangling link aborted the whole folder
    write_img(inp / 'zz.png', 16, 16, 1)
    assert main(['-opt', str(exp), str(inp), str(tmp_path / 'out'), '--quiet']) == 1
    err = capsys.readouterr().err
    assert files(tmp_path / 'out') == ['a.png', 'zz.png']
    assert 'z_broken.png' in err and 'empty.jpg' in err and 'Traceback' not in err
    assert f"skipping '{inp / 'moved.png'}': cannot be read: No such file or directory" in err
    assert np.abs(cv2.imread(str(tmp_path / 'out/zz.png')).astype(int) - expected(ema, key, inp / 'zz.png')).max() <= 1


def test_command_line_reports_a_bad_checkpoint_in_one_line(tmp_path):
    exp, *_ = make_experiment(tmp_path)
    write_img(tmp_path / 'a.png', 16, 16, 0)
    (exp / 'models' / 'net_g_latest.pth').write_bytes(b'\x00truncated')
    args = ['derain', '-opt', str(exp), str(tmp_path / 'a.png'), str(tmp_path / 'out.png')]
    result = basicsr(args, cwd=str(tmp_path))
    assert result.returncode == 2 and not (tmp_path / 'out.png').exists()
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('basicsr derain: error: checkpoint ') and 'net_g_latest.pth' in last
    assert 'Traceback' not in result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_gpu_output_matches_cpu(tmp_path):
    exp, *_ = make_experiment(tmp_path)
    write_img(tmp_path / 'in' / 'a.png', 40, 48, 0)
    for device in ('cpu', 'cuda'):
        assert main(['-opt', str(exp), str(tmp_path / 'in'), str(tmp_path / device), '--device', device,
                     '--tile', '32', '--overlap', '8', '--quiet']) == 0
    cpu, gpu = (cv2.imread(str(tmp_path / d / 'a.png')).astype(int) for d in ('cpu', 'cuda'))
    assert np.abs(cpu - gpu).max() <= 2


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message shown without CUDA')
def test_cuda_request_without_cuda_is_a_clear_error(tmp_path, capsys):
    exp, *_ = make_experiment(tmp_path)
    write_img(tmp_path / 'a.png', 16, 16, 0)
    assert main(['-opt', str(exp), str(tmp_path / 'a.png'), str(tmp_path / 'o.png'), '--device', 'cuda']) == 2
    assert "--device: 'cuda' requested but CUDA is not available" in capsys.readouterr().err


SWINIR = {'type': 'CoICNet', 'context_dim': 16, 'backbone': {  # windows of 4: other sizes fail inside BasicSR
    'type': 'SwinIR', 'upscale': 1, 'img_size': 32, 'window_size': 4, 'embed_dim': 12, 'depths': [1],
    'num_heads': [2], 'mlp_ratio': 2, 'upsampler': '', 'in_chans': 3, 'img_range': 1.0}}
DGUNET = {'type': 'CoICDGUNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'reduction': 4,
          'depth': 1, 'context_dim': 16}  # refuses inputs of 8 pixels or fewer on a side


@pytest.mark.parametrize('network_g, bad_size, reason', [
    (DGUNET, (6, 40), 'CoICDGUNet needs inputs larger than 8x8 pixels'),
    (SWINIR, (37, 41), "shape '["),  # a RuntimeError of BasicSR's SwinIR
])
def test_an_image_the_network_cannot_take_is_skipped_and_the_others_written(tmp_path, capsys, network_g, bad_size,
                                                                              reason):
    exp, *_ = make_experiment(tmp_path, network_g=network_g)
    inp = tmp_path / 'in'
    for name, (h, w) in {'a.png': (16, 16), 'b_bad.png': bad_size, 'c.png': (16, 24)}.items():
        write_img(inp / name, h, w, 0)
    assert main(['-opt', str(exp), str(inp), str(tmp_path / 'out'), '--quiet']) == 1  # the whole folder aborted
    err = capsys.readouterr().err
    assert files(tmp_path / 'out') == ['a.png', 'c.png']
    assert f"skipping '{inp / 'b_bad.png'}' ({bad_size[0]}x{bad_size[1]}): {reason}" in err and 'Traceback' not in err


CPU_OOM = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                       'you tried to allocate 4503599627370496 bytes. Error code 12 (Cannot allocate memory)')


@pytest.mark.parametrize('error, tiling, message', ids=['cpu', 'cpu_tiled', 'gpu', 'other_without_message'],
                         argvalues=[
    (CPU_OOM, [], 'out of memory, use --tile (e.g. --tile 512)'),  # was the allocator's message, without a hint
    (CPU_OOM, ['--tile', '16'], 'out of memory with tiles of 16: use a smaller --tile'),
    (torch.cuda.OutOfMemoryError('CUDA out of memory'), [], 'out of GPU memory, use --tile (e.g. --tile 512)'),
    (AssertionError(), [], 'AssertionError'),  # no message and no hint: the error's type is named, never ''
])
def test_running_out_of_memory_is_reported_with_a_tile_hint(tmp_path, capsys, monkeypatch, error, tiling, message):
    from coic_basicsr.tools.inference import InferenceModel
    exp, *_ = make_experiment(tmp_path, {'type': 'CoICToolsPointwiseTestNet', 'context_dim': 16})
    for name, side in (('a.png', 16), ('big.png', 24)):
        write_img(tmp_path / 'in' / name, side, side, 0)
    restore = InferenceModel.restore

    def short_of_memory(self, lq, *args, **kwargs):
        if lq.shape[-1] == 24:
            raise error
        return restore(self, lq, *args, **kwargs)

    monkeypatch.setattr(InferenceModel, 'restore', short_of_memory)
    assert main(['-opt', str(exp), str(tmp_path / 'in'), str(tmp_path / 'out'), '--quiet', *tiling]) == 1
    assert f"skipping '{tmp_path / 'in' / 'big.png'}' (24x24): {message}\n" in capsys.readouterr().err
    assert files(tmp_path / 'out') == ['a.png']


def test_a_result_that_cannot_be_written_is_reported_and_the_others_written(tmp_path, capsys):
    exp, *_ = make_experiment(tmp_path)
    for name in ('a.png', 'b.png', 'c.png'):
        write_img(tmp_path / 'in' / name, 16, 16, 0)
    (tmp_path / 'out' / 'b.png').mkdir(parents=True)  # was a traceback that aborted the rest, and left b.png.tmp
    assert main(['-opt', str(exp), str(tmp_path / 'in'), str(tmp_path / 'out'), '--quiet']) == 1
    err = capsys.readouterr().err
    assert f"skipping '{tmp_path / 'in' / 'b.png'}': cannot write '{tmp_path / 'out' / 'b.png'}': Is a directory" in err
    assert sorted(os.listdir(tmp_path / 'out')) == ['a.png', 'b.png', 'c.png'] and 'Traceback' not in err
    assert files(tmp_path / 'out') == ['a.png', 'c.png']
    # an image OUTPUT name that is an existing folder receives the result
    assert main(['-opt', str(exp), str(tmp_path / 'in' / 'a.png'), str(tmp_path / 'out' / 'b.png'), '--quiet']) == 0
    assert files(tmp_path / 'out') == ['a.png', 'b.png/a.png', 'c.png']


@pytest.mark.parametrize('case', ['under_a_file', 'image_under_a_file', 'under_a_dangling_link', 'read_only'])
def test_a_bad_output_is_refused_before_the_model_is_loaded(tmp_path, capsys, monkeypatch, case):
    exp, *_ = make_experiment(tmp_path)
    write_img(tmp_path / 'in' / 'a.png', 16, 16, 0)
    (tmp_path / 'afile').write_text('keep')
    (tmp_path / 'link').symlink_to(tmp_path / 'nowhere')
    (tmp_path / 'ro').mkdir()
    real_access = os.access
    monkeypatch.setattr(os, 'access', lambda p, mode: os.path.abspath(p) != str(tmp_path / 'ro')
                        and real_access(p, mode))  # chmod does not stop root
    monkeypatch.setattr('coic_basicsr.tools.derain.model_from_args', lambda args: pytest.fail('model loaded'))
    source, output, message = {
        'under_a_file': ('in', 'afile/out', "OUTPUT: '{}' is a file, not a folder for the results"),
        'image_under_a_file': ('in/a.png', 'afile/r.png', "OUTPUT: '{}' is a file, not a folder for the results"),
        'under_a_dangling_link': ('in', 'link/out', "OUTPUT: '{}' is a link to nothing, not a folder for the results"),
        'read_only': ('in', 'ro/out', "OUTPUT: cannot write in '{}' (no permission, or a read-only file system)"),
    }[case]
    assert main(['-opt', str(exp), str(tmp_path / source), str(tmp_path / output), '--quiet']) == 2
    blocked = tmp_path / output.split('/')[0]
    assert capsys.readouterr().err.strip().splitlines()[-1] == f'basicsr derain: error: {message.format(blocked)}'
    assert (tmp_path / 'afile').read_text() == 'keep' and not os.listdir(tmp_path / 'ro')


def test_tilde_is_expanded_in_paths_and_in_the_option_file(tmp_path, monkeypatch):
    # basicsr test expands ~ in path.pretrain_network_g: derain looked for '~/...' literally
    exp, ema, key, _ = make_experiment(tmp_path)
    monkeypatch.setenv('HOME', str(tmp_path))
    opt = yaml.safe_load((exp / 'tiny.yml').read_text())
    opt['path'] = {'pretrain_network_g': '~/experiments/tiny/models/net_g_latest.pth'}
    (tmp_path / 'elsewhere.yml').write_text(yaml.safe_dump(opt))
    write_img(tmp_path / 'in' / 'a.png', 16, 24, 0)
    assert main(['-opt', '~/elsewhere.yml', '~/in', '~/out', '--quiet']) == 0
    got, want = cv2.imread(str(tmp_path / 'out' / 'a.png')), expected(ema, key, tmp_path / 'in' / 'a.png')
    assert np.abs(got.astype(int) - want).max() <= 1
    assert main(['-opt', '~/experiments/tiny', '--checkpoint', '~/experiments/tiny/models/net_g_latest.pth',
                 '--encoder-checkpoint', '~/experiments/tiny/models/net_enc_latest.pth', '~/in/a.png', '~/b.png',
                 '--quiet']) == 0
    assert np.array_equal(cv2.imread(str(tmp_path / 'b.png')), got)


def test_a_pillow_rgba_tiff_is_derained_like_the_same_png(tmp_path):
    # OpenCV premultiplied the colours of 8-bit TIFFs with unassociated alpha: darker results, the alpha on top
    exp, *_ = make_experiment(tmp_path)
    rng = np.random.default_rng(0)
    rgba = np.dstack([rng.integers(60, 200, (16, 24, 3), dtype=np.uint8), np.full((16, 24), 128, np.uint8)])
    (tmp_path / 'in').mkdir()
    Image.fromarray(rgba).save(tmp_path / 'in' / 'photo.png')
    Image.fromarray(rgba).save(tmp_path / 'in' / 'photo.tif')
    assert main(['-opt', str(exp), str(tmp_path / 'in'), str(tmp_path / 'out'), '--quiet']) == 0
    with Image.open(tmp_path / 'out' / 'photo.png') as png, Image.open(tmp_path / 'out' / 'photo.tif') as tif:
        png, tif = np.asarray(png), np.asarray(tif)
    assert np.array_equal(tif, png) and np.array_equal(tif[..., 3], rgba[..., 3])
    assert np.array_equal(cv2.imread(str(tmp_path / 'out' / 'photo.tif'), cv2.IMREAD_UNCHANGED)[..., [2, 1, 0, 3]], png)


@pytest.mark.parametrize('ext', ['.png', '.webp'])
def test_an_rgba_image_with_exif_orientation_is_derained_upright(tmp_path, ext):
    # the alpha path ignored EXIF: derained unrotated, and written without EXIF it displayed rotated
    exp, *_ = make_experiment(tmp_path)
    rng = np.random.default_rng(1)
    rgba = np.dstack([rng.integers(0, 256, (16, 24, 3), dtype=np.uint8), rng.integers(0, 256, (16, 24), np.uint8)])
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned 90 degrees clockwise
    (tmp_path / 'in').mkdir()
    lossless = {'lossless': True} if ext == '.webp' else {}
    Image.fromarray(rgba).save(tmp_path / 'in' / f'tagged{ext}', exif=exif.tobytes(), **lossless)
    Image.fromarray(np.ascontiguousarray(np.rot90(rgba, -1))).save(tmp_path / 'in' / f'upright{ext}', **lossless)
    assert main(['-opt', str(exp), str(tmp_path / 'in'), str(tmp_path / 'out'), '--quiet']) == 0
    with Image.open(tmp_path / 'out' / f'tagged{ext}') as tagged, Image.open(tmp_path / 'out' / f'upright{ext}') as up:
        assert tagged.size == (16, 24) and not tagged.getexif().get(0x0112)
        assert np.array_equal(np.asarray(tagged), np.asarray(up))


def test_the_latest_numbered_checkpoint_is_the_highest_iteration_not_the_last_in_name_order(tmp_path):
    from coic_basicsr.tools.inference import _latest
    for it in (100, 2000, 300):
        (tmp_path / f'net_g_{it}.pth').write_bytes(b'')
    assert _latest(str(tmp_path), 'net_g') == str(tmp_path / 'net_g_2000.pth')


def test_the_encoder_saved_with_the_chosen_generator_wins_over_the_latest(tmp_path):
    from coic_basicsr.tools.inference import find_checkpoints
    for name in ('net_g_1000.pth', 'net_enc_1000.pth', 'net_g_latest.pth', 'net_enc_latest.pth'):
        (tmp_path / name).write_bytes(b'')
    opt = {'name': 'x', 'network_g': {}, 'network_enc': {}}
    _, enc = find_checkpoints(opt, str(tmp_path), checkpoint=str(tmp_path / 'net_g_1000.pth'))
    assert enc == str(tmp_path / 'net_enc_1000.pth')


def test_an_experiment_folder_uses_its_newest_option_file(tmp_path):
    from coic_basicsr.tools.inference import resolve_options
    (tmp_path / 'b_old.yml').write_text('name: old\nnetwork_g: {type: X}\n')
    (tmp_path / 'a_new.yml').write_text('name: new\nnetwork_g: {type: X}\n')
    os.utime(tmp_path / 'b_old.yml', (1_000_000, 1_000_000))
    os.utime(tmp_path / 'a_new.yml', (2_000_000, 2_000_000))
    opt, models = resolve_options(str(tmp_path))
    assert opt['name'] == 'new' and models == str(tmp_path / 'models')


def test_earlier_results_in_an_output_folder_inside_the_input_are_not_inputs(tmp_path):
    from coic_basicsr.tools.derain import plan
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / 'a.png'), rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    os.makedirs(tmp_path / 'out')
    cv2.imwrite(str(tmp_path / 'out' / 'a.png'), rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    jobs, _ = plan(str(tmp_path), str(tmp_path / 'out'), None)
    assert jobs == [(str(tmp_path / 'a.png'), str(tmp_path / 'out' / 'a.png'))]


def test_images_left_out_because_they_are_inside_an_output_folder_in_the_input_are_counted(tmp_path, capsys):
    exp, *_ = make_experiment(tmp_path, {'type': 'CoICToolsPointwiseTestNet', 'context_dim': 16})
    inp, out = tmp_path / 'mix', tmp_path / 'mix' / 'sub'
    write_img(inp / 'a.png', 16, 16, 0)
    args = ['-opt', str(exp), str(inp), str(out), '--quiet']
    assert main(args) == 0
    assert 'not deraining' not in capsys.readouterr().err  # nothing was inside OUTPUT yet
    write_img(out / 'deeper' / 'old.png', 16, 16, 1)
    assert main(args) == 0  # they were left out silently
    assert f"basicsr derain: not deraining 2 image(s) inside OUTPUT '{out}'" in capsys.readouterr().err.splitlines()
    assert files(out) == ['a.png', 'deeper/old.png']
