"""CoICBRN: z=None is the plain BRN, an independent functional BRN agrees, and the official baseline derains."""
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

import coic_basicsr  # noqa: F401  (shim + registration)
from basicsr.archs import build_network
from basicsr.metrics.psnr_ssim import calculate_psnr
from coic_basicsr.archs.coic_brn_arch import CoICBRN
from coic_basicsr.archs.conv_selection import split_modulation_parameters
from coic_basicsr.archs.modulation import ModulatedConv2d
from coic_basicsr.data.synthetic_rain import render_rain
from coic_basicsr.tools.convert import convert_backbone, load_official

WEIGHTS = Path(__file__).resolve().parents[2].parent / 'shared' / 'weights'
TINY = dict(channels=4, num_res_blocks=2, num_rain_res_blocks=1, iterations=3, context_dim=8)



def _randomise_generators(net: torch.nn.Module) -> None:
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if '.generator.' in name:
                p.normal_(0, 0.3)


def reference_brn(sd: Dict[str, Tensor], x: Tensor, channels: int, n_bg: int, n_rain: int, iterations: int) -> Tensor:
    """BRN from the paper's equations, straight from a plain state dict (F.conv2d on the stored kernels)."""
    def conv(name: str, t: Tensor) -> Tensor:
        return F.conv2d(t, sd[f'{name}.weight'], sd[f'{name}.bias'], padding=1)

    def branch(feat_in: Tensor, h_own: Tensor, h_other: Tensor, c: Tensor, s: str, n_res: int):
        feat = torch.cat([torch.relu(conv(f'conv0{s}.conv', feat_in)), h_own, h_other], 1)
        i, f = torch.sigmoid(conv(f'conv_i{s}.conv', feat)), torch.sigmoid(conv(f'conv_f{s}.conv', feat))
        g, o = torch.tanh(conv(f'conv_g{s}.conv', feat)), torch.sigmoid(conv(f'conv_o{s}.conv', feat))
        c = f * c + i * g
        h = o * torch.tanh(c)
        y = h
        for k in range(1, n_res + 1):
            y = torch.relu(torch.relu(conv(f'res_conv{k}{s}.conv2', torch.relu(conv(f'res_conv{k}{s}.conv1', y)))) + y)
        return conv(f'conv{s}.conv', y), h, c

    b, _, hh, ww = x.shape
    h, c, h_r, c_r = (x.new_zeros(b, channels, hh, ww) for _ in range(4))
    bg, rain = x, x
    for _ in range(iterations):
        rain, h_r, c_r = branch(torch.cat([x, rain], 1), h_r, h, c_r, '_r', n_rain)
        bg, h, c = branch(torch.cat([x, bg, rain], 1), h, h_r, c, '', n_bg)
    return bg


def test_z_none_is_the_plain_brn_and_every_conv_is_modulated():
    plain = CoICBRN(**TINY, modulate=False).double().eval()
    net = CoICBRN(**TINY).double().eval()
    net.load_state_dict(plain.state_dict(), strict=True)  # a plain checkpoint loads strictly into the CoIC arch
    x = torch.rand(2, 3, 12, 10, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(net(x), plain(x))
        ref = reference_brn(plain.state_dict(), x, 4, 2, 1, 3)
        assert torch.allclose(plain(x), ref, atol=1e-10)
        z = torch.randn(2, 8, dtype=torch.float64)
        assert torch.allclose(net(x, z), plain(x), atol=1e-10)  # zero-initialised generators: scale 1
        _randomise_generators(net)
        assert (net(x, z) - plain(x)).abs().max() > 1e-3
        assert torch.equal(net(x), plain(x))
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in plain.modules())
    assert sum(isinstance(m, ModulatedConv2d) for m in net.modules()) == n_convs == 2 * (1 + 4 + 1) + 2 * (2 + 1)
    backbone, modulation = split_modulation_parameters(net)
    assert sum(p.numel() for p in backbone) == sum(p.numel() for p in plain.parameters()) and modulation


def test_builds_from_options_and_rejects_bad_input():
    net = build_network({'type': 'CoICBRN', **TINY})
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r'z must have shape'):
        net(x, torch.zeros(1, 5))
    with pytest.raises(ValueError, match='modulate=False'):
        CoICBRN(**TINY, modulate=False)(x, torch.zeros(1, 8))
    with pytest.raises(ValueError, match='network_g.iterations'):
        CoICBRN(iterations=0)
    out = net(x, torch.zeros(1, 8))  # one code broadcasts over the batch
    assert out.shape == x.shape


def _crop(name: str, size: int) -> np.ndarray:
    from skimage import data
    img = getattr(data, name)().astype(np.float32) / 255.
    top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return img[top:top + size, left:left + size]


def _psnr_y(img: np.ndarray, ref: np.ndarray) -> float:
    # BasicSR's Y conversion expects BGR channel order
    return calculate_psnr(img[..., ::-1] * 255., ref[..., ::-1] * 255., crop_border=0, test_y_channel=True)


@pytest.mark.skipif(not (WEIGHTS / 'brn_baseline_mixed.pth').is_file(),
                    reason=f'official weights not found: {WEIGHTS}/brn_baseline_mixed.pth')
def test_official_baseline_brn_removes_synthetic_rain_streaks():
    params, options, _ = convert_backbone(load_official(str(WEIGHTS / 'brn_baseline_mixed.pth')), 'brn')
    assert options['modulate'] is False
    net = CoICBRN(**{k: v for k, v in options.items() if k != 'type'}, iterations=8).eval()
    net.load_state_dict(params, strict=True)
    streaks = {'preset': 'heavy_dense', 'haze': 0.0}  # BRN removes streaks; it was not trained on haze
    names = ('astronaut', 'coffee', 'chelsea')
    clean = [_crop(name, 128) for name in names]
    rainy = [render_rain(img, streaks, seed=seed) for seed, img in enumerate(clean)]
    with torch.no_grad():  # one batch of three
        out = net(torch.from_numpy(np.stack(rainy)).permute(0, 3, 1, 2)).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    gains = []
    for name, gt, lq, restored in zip(names, clean, rainy, out):
        before, after = _psnr_y(lq, gt), _psnr_y(restored, gt)
        print(f'{name}: PSNR(Y) rainy {before:.2f} dB -> derained {after:.2f} dB ({after - before:+.2f} dB)')
        gains.append(after - before)
    print(f'mean gain {np.mean(gains):.2f} dB (the authors report about 11 dB with their code)')
    assert min(gains) > 4.0 and np.mean(gains) > 7.0
