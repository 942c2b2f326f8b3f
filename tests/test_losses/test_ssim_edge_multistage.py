"""CoICSSIMLoss, CoICEdgeLoss and CoICMultiStageLoss against independent references and their contracts."""
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity
from torch import nn
from torch.nn import functional as F

import coic_basicsr  # noqa: F401  (shim + registration)
from basicsr.losses import build_loss
from basicsr.metrics.psnr_ssim import calculate_ssim_pt
from basicsr.utils.registry import LOSS_REGISTRY



def _pair(seed: int = 0, shape=(2, 3, 24, 20)):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=g, dtype=torch.float64)
    pred = (target + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return pred, target


# ---------------------------------------------------------------------------------------------------------- SSIM
def test_ssim_matches_scikit_image_per_channel_and_basicsr_on_y():
    pred, target = _pair()
    loss = build_loss({'type': 'CoICSSIMLoss', 'padding': 'valid'})
    ref = np.mean([
        structural_similarity(p.permute(1, 2, 0).numpy(), t.permute(1, 2, 0).numpy(), channel_axis=2, data_range=1.0,
                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for p, t in zip(pred, target)
    ])
    assert abs((1 - loss(pred, target).item()) - ref) < 1e-5
    y_loss = build_loss({'type': 'CoICSSIMLoss', 'padding': 'valid', 'test_y_channel': True, 'loss_weight': 2.0})
    y_ref = calculate_ssim_pt(pred, target, crop_border=0, test_y_channel=True).mean().item()
    assert abs(y_loss(pred, target).item() - 2.0 * (1 - y_ref)) < 1e-5


def test_ssim_negative_and_one_minus_differ_by_a_constant():
    pred, target = _pair(1)
    pred.requires_grad_(True)
    neg = build_loss({'type': 'CoICSSIMLoss', 'negative': True})
    pos = build_loss({'type': 'CoICSSIMLoss'})
    a, b = neg(pred, target), pos(pred, target)
    assert abs((b - a).item() - 1.0) < 1e-6 and -1 < a.item() < 0
    grad_a, = torch.autograd.grad(a, pred)
    grad_b, = torch.autograd.grad(b, pred)
    assert torch.allclose(grad_a, grad_b) and grad_a.abs().sum() > 0
    assert abs(neg(target, target).item() + 1) < 1e-6 and abs(pos(target, target).item()) < 1e-6


def test_ssim_same_padding_is_zero_padded_gaussian_filtering():
    pred, target = _pair(2, (1, 1, 16, 16))
    x, y = pred[0, 0].numpy(), target[0, 0].numpy()
    taps = np.exp(-(np.arange(11) - 5)**2 / (2 * 1.5**2))
    win = np.outer(taps, taps) / np.outer(taps, taps).sum()
    blur = lambda a: ndimage.correlate(a, win, mode='constant', cval=0.0)  # noqa: E731
    mx, my = blur(x), blur(y)
    sx, sy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ref = (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sx + sy + c2))).mean()
    assert abs(1 - build_loss({'type': 'CoICSSIMLoss'})(pred, target).item() - ref) < 1e-6


def test_ssim_rejects_bad_options_and_inputs():
    with pytest.raises(ValueError, match='window_size'):
        build_loss({'type': 'CoICSSIMLoss', 'window_size': 10})
    with pytest.raises(ValueError, match='padding'):
        build_loss({'type': 'CoICSSIMLoss', 'padding': 'reflect'})
    with pytest.raises(ValueError, match='RGB'):
        build_loss({'type': 'CoICSSIMLoss', 'test_y_channel': True})(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"^padding: 'valid' needs images of at least the 11x11 window for "
                                         r'CoICSSIMLoss, got images of \(8, 8\) \(use padding: same\)$'):
        build_loss({'type': 'CoICSSIMLoss', 'padding': 'valid'})(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize('key, value, expected', [
    ('negative', 'false', "negative: expected true or false for CoICSSIMLoss, got 'false'"),  # -SSIM was used
    ('test_y_channel', 'no', "test_y_channel: expected true or false for CoICSSIMLoss, got 'no'"),
    ('window_size', '11', "window_size: expected a positive odd integer for CoICSSIMLoss, got '11' (a string: "
                          'write the number without quotes)'),  # a TypeError when the model was built
    ('window_size', 11.5, 'window_size: expected a positive odd integer for CoICSSIMLoss, got 11.5'),  # used as 11
    ('sigma', '1.5', "sigma: expected a positive number for CoICSSIMLoss, got '1.5' (a string: write the number "
                     'without quotes)'),
    ('loss_weight', '1', "loss_weight: expected a number >= 0 for CoICSSIMLoss, got '1' (a string: write the number "
                         'without quotes)'),
    ('padding', 'foo', "padding: expected one of ('same', 'valid') for CoICSSIMLoss, got 'foo'"),
    ('padding', 5, "padding: expected one of ('same', 'valid') for CoICSSIMLoss, got 5"),
])
def test_ssim_option_values_are_checked_naming_the_key(key, value, expected):
    with pytest.raises(ValueError) as err:
        build_loss({'type': 'CoICSSIMLoss', key: value})
    assert str(err.value) == expected


# ---------------------------------------------------------------------------------------------------------- edge
def _laplacian_reference(img: np.ndarray) -> np.ndarray:
    taps = np.array([.05, .25, .4, .25, .05])
    kernel = np.outer(taps, taps)
    blurred = ndimage.correlate(img, kernel, mode='nearest')
    up = np.zeros_like(blurred)
    up[::2, ::2] = 4 * blurred[::2, ::2]
    return img - ndimage.correlate(up, kernel, mode='nearest')


def test_edge_loss_matches_a_scipy_laplacian_reference():
    pred, target = _pair(3, (2, 3, 18, 14))
    eps = 1e-3
    diff = np.stack([_laplacian_reference(p) - _laplacian_reference(t)
                     for p, t in zip(pred.reshape(-1, 18, 14).numpy(), target.reshape(-1, 18, 14).numpy())])
    ref = np.sqrt(diff**2 + eps**2).mean()
    loss = build_loss({'type': 'CoICEdgeLoss', 'loss_weight': 0.05})
    assert abs(loss(pred, target).item() - 0.05 * ref) < 1e-9


def test_edge_loss_laplacian_is_zero_on_flat_interiors_and_large_on_texture():
    loss = build_loss({'type': 'CoICEdgeLoss', 'eps': 1e-3})
    for size in (16, 17):
        flat = torch.full((1, 3, size, size), 0.3)
        # away from the replicate-padded border a constant image has no edges
        assert loss.laplacian(flat)[..., 2:-2, 2:-2].abs().max() < 1e-6
        checker = ((torch.arange(size)[:, None] + torch.arange(size)[None]) % 2).float()
        assert loss(flat + 0.2 * checker, flat).item() > 3 * loss(flat + 0.2, flat).item()


@pytest.mark.parametrize('options, message', [
    ({'eps': '1e-6'}, "eps: expected a positive number for CoICEdgeLoss, got '1e-6' (a string: YAML reads 1e-6 "
                      'without a dot as text; write 1.0e-6 or !!float 1e-6)'),
    ({'eps': 0}, 'eps: expected a positive number for CoICEdgeLoss, got 0'),
    ({'eps': True}, 'eps: expected a positive number for CoICEdgeLoss, got True'),
    ({'loss_weight': '0.05'}, "loss_weight: expected a number >= 0 for CoICEdgeLoss, got '0.05' (a string: write "
                              'the number without quotes)'),
    ({'loss_weight': -1}, 'loss_weight: expected a number >= 0 for CoICEdgeLoss, got -1')])
def test_edge_loss_refuses_numbers_given_as_text_in_one_line(options, message):
    with pytest.raises(ValueError) as err:
        build_loss({'type': 'CoICEdgeLoss', **options})
    assert str(err.value) == message


# ---------------------------------------------------------------------------------------------------------- stages
def test_multi_stage_weights_and_single_tensor():
    stages = [torch.rand(1, 3, 8, 8) for _ in range(4)]
    gt = torch.rand(1, 3, 8, 8)
    mse = [F.mse_loss(s, gt).item() for s in stages]
    loss = build_loss({'type': 'CoICMultiStageLoss', 'base_opt': {'type': 'MSELoss'}, 'intermediate_weight': 0.1,
                       'loss_weight': 2.0})
    assert type(loss).takes_all_stages is True and loss.takes_input is False
    assert abs(loss(stages, gt).item() - 2.0 * (0.1 * sum(mse[:3]) + mse[3])) < 1e-6
    explicit = build_loss({'type': 'CoICMultiStageLoss', 'base_opt': {'type': 'L1Loss', 'loss_weight': 3.0},
                           'stage_weights': [0, 1, 0, 2]})
    l1 = [F.l1_loss(s, gt).item() for s in stages]
    assert abs(explicit(stages, gt).item() - 3.0 * (l1[1] + 2 * l1[3])) < 1e-6
    assert abs(explicit(stages[:4], gt).item() - explicit(tuple(stages), gt).item()) < 1e-7
    assert abs(loss(stages[-1], gt).item() - 2.0 * mse[3]) < 1e-6  # a plain tensor is the final stage
    with pytest.raises(ValueError, match=r'^stage_weights: expected 3 weights \(one per stage output the network '
                                         r'returned\) for CoICMultiStageLoss, got \[0.0, 1.0, 0.0, 2.0\]$'):
        explicit(stages[:3], gt)


def test_multi_stage_wraps_edge_loss_and_input_aware_losses():
    stages = [torch.rand(1, 3, 12, 12, requires_grad=True) for _ in range(3)]
    gt = torch.rand(1, 3, 12, 12)
    edge = build_loss({'type': 'CoICEdgeLoss'})
    wrapped = build_loss({'type': 'CoICMultiStageLoss', 'loss_weight': 0.05, 'base_opt': {'type': 'CoICEdgeLoss'}})
    assert abs(wrapped(stages, gt).item() - 0.05 * sum(edge(s, gt).item() for s in stages)) < 1e-6
    wrapped(stages, gt).backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in stages)

    name = 'TestLqAwareL1Loss'
    if name not in LOSS_REGISTRY:
        class TestLqAwareL1Loss(nn.Module):  # distance to gt plus distance to the rainy input
            takes_input = True

            def forward(self, pred, target, lq):
                return F.l1_loss(pred, target) + F.l1_loss(pred, lq)
        LOSS_REGISTRY.register(TestLqAwareL1Loss)
    lq = torch.rand(1, 3, 12, 12)
    aware = build_loss({'type': 'CoICMultiStageLoss', 'base_opt': {'type': name}})
    assert aware.takes_input is True
    expected = sum(F.l1_loss(s, gt) + F.l1_loss(s, lq) for s in stages).item()
    assert abs(aware(stages, gt, lq).item() - expected) < 1e-6


def test_multi_stage_rejects_bad_options():
    with pytest.raises(ValueError, match=r"^base_opt: expected a loss dict with a 'type' for CoICMultiStageLoss, "
                                         r"got 'MSELoss'$"):
        build_loss({'type': 'CoICMultiStageLoss', 'base_opt': 'MSELoss'})
    with pytest.raises(ValueError, match='^base_opt.type: CoICMultiStageLoss cannot wrap another CoICMultiStageLoss$'):
        build_loss({'type': 'CoICMultiStageLoss', 'base_opt': {'type': 'CoICMultiStageLoss'}})
    with pytest.raises(ValueError, match='^base_opt.eps: expected a positive number for CoICEdgeLoss, got 0$'):
        build_loss({'type': 'CoICMultiStageLoss', 'base_opt': {'type': 'CoICEdgeLoss', 'eps': 0}})
    with pytest.raises(ValueError, match=r"^stage_weights\[1\]: expected a number >= 0 for CoICMultiStageLoss, "
                                         r"got 'a'"):
        build_loss({'type': 'CoICMultiStageLoss', 'base_opt': {'type': 'L1Loss'}, 'stage_weights': [1, 'a']})
