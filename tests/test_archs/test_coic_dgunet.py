"""CoICDGUNet: z=None is the plain DGUNet, stage outputs, padding, which layers are modulated, official key names."""
import pytest
import torch
from torch import nn

import coic_basicsr  # noqa: F401  (shim + registration)
from basicsr.archs import build_network
from coic_basicsr.archs import coic_dgunet_arch
from coic_basicsr.archs.coic_dgunet_arch import CoICDGUNet
from coic_basicsr.archs.modulation import ModulatedConv2d, ModulatedConvTranspose2d

TINY = dict(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, depth=2, context_dim=8)



def _pair(**extra):
    torch.manual_seed(0)
    plain = CoICDGUNet(**TINY, modulate=False, **extra).double().eval()
    net = CoICDGUNet(**TINY, **extra).double().eval()
    net.load_state_dict(plain.state_dict(), strict=True)
    return plain, net


def test_z_none_is_the_plain_dgunet_and_z_changes_every_stage():
    plain, net = _pair()
    x = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    with torch.no_grad():
        outs = plain(x)
        assert len(outs) == TINY['depth'] + 2 and all(o.shape == x.shape for o in outs)
        assert all(torch.equal(a, b) for a, b in zip(net(x), outs))
        z = torch.randn(2, 8, dtype=torch.float64)
        assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(net(x, z), outs))  # zero-init generators
        torch.manual_seed(1)
        for name, p in net.named_parameters():
            if '.generator.' in name:
                p.normal_(0, 0.3)
        assert all((a - b).abs().max() > 1e-4 for a, b in zip(net(x, z), outs))
        assert all(torch.equal(a, b) for a, b in zip(net(x), outs))


def test_every_spatial_conv_is_modulated_and_1x1_convs_are_not():
    _, net = _pair()
    kinds = {}
    for name, m in net.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            kinds[name] = (type(m), m.kernel_size)
    assert all((t in (ModulatedConv2d, ModulatedConvTranspose2d)) == (k != (1, 1)) for t, k in kinds.values())
    assert kinds['stage1_decoder.body.0.up'][0] is ModulatedConvTranspose2d
    assert kinds['stage1_encoder.body.0.downsample'] == (ModulatedConv2d, (4, 4))
    assert kinds['sam12.conv2'][0] is nn.Conv2d and kinds['stage1_encoder.body.0.identity'][0] is nn.Conv2d


def test_padding_to_multiples_of_8_is_cropped_back():
    plain, _ = _pair()
    x = torch.rand(1, 3, 13, 21, dtype=torch.float64)
    padded = torch.nn.functional.pad(x, (0, 3, 0, 3), mode='reflect')
    with torch.no_grad():
        outs, ref = plain(x), plain(padded)
    assert all(o.shape == x.shape and torch.equal(o, r[..., :13, :21]) for o, r in zip(outs, ref))
    with pytest.raises(ValueError, match='larger than 8x8'):
        plain(torch.rand(1, 3, 8, 30, dtype=torch.float64))


def test_official_layout_shared_stage_and_paper_size():
    plain, _ = _pair()
    keys = set(plain.state_dict())
    for key in ('basic.merge12.subnet.weight', 'basic.stage2_encoder.body.0.csff_enc.weight', 'basic.r1',
                'stage1_encoder.body.0.norm.weight', 'stage1_decoder.skip_conv.0.weight', 'phit_6.body.2.bias',
                'shallow_feat7.1.CA.conv_du.2.weight', 'concat67.weight', 'tail.weight', 'r0', 'sam12.conv1.weight'):
        assert key in keys, key
    assert not any(k.startswith('stage1_encoder.body.0.csff') for k in keys)  # stage 1 has no cross-stage fusion
    deeper = CoICDGUNet(**{**TINY, 'depth': 4}, modulate=False)
    assert sum(p.numel() for p in deeper.parameters()) == sum(p.numel() for p in plain.parameters())
    full = build_network({'type': 'CoICDGUNet', 'modulate': False})
    assert round(sum(p.numel() for p in full.parameters()) / 1e6, 2) == 3.63  # DGUNet paper: 3.63M parameters


def test_training_step_and_bad_input():
    net = CoICDGUNet(**TINY)
    outs = net(torch.rand(2, 3, 16, 16), torch.randn(2, 8))
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if '.generator.' in n and '.4.' in n)
    with pytest.raises(ValueError, match='z must have shape'):
        net(torch.rand(1, 3, 8, 8), torch.zeros(1, 3))
    with pytest.raises(ValueError, match='reduction'):
        CoICDGUNet(n_feat=4, reduction=8)


def test_options_whose_forward_cannot_run_are_refused_naming_the_key():
    for bad, message in (
            (dict(n_feat=20, scale_unetfeats=5), r'network_g\.scale_unetfeats: expected an even integer for CoICDGUNet '
             r'\(each U-Net level, n_feat \+ i \* scale_unetfeats channels, is halved for the half instance norm\), '
             r'got 5'),
            (dict(n_feat=7), r'network_g\.n_feat: expected an even integer for CoICDGUNet \(each U-Net level'),
            (dict(kernel_size=4), r'network_g\.kernel_size: expected an odd integer for CoICDGUNet \(its convs pad '
             r'kernel_size // 2 to keep the size\), got 4'),
            (dict(n_feat=4, reduction=8), r'network_g\.reduction: expected at most network_g\.n_feat \(4\) for '
             r'CoICDGUNet \(channel attention squeezes n_feat to n_feat // reduction channels\), got 8'),
            (dict(kernel_size=0), r'network_g\.kernel_size: expected an integer >= 1 for CoICDGUNet, got 0')):
        with pytest.raises(ValueError, match=message) as err:
            CoICDGUNet(**{**TINY, **bad})
        assert '\n' not in str(err.value)


_SWEEP = dict(depth=1, scale_orsnetfeats=0, reduction=1, context_dim=4)
_CASES = ([dict(n_feat=n, scale_unetfeats=s) for n in range(1, 7) for s in range(4)]
          + [dict(n_feat=2, scale_unetfeats=0, kernel_size=k) for k in range(1, 7)])


def _forward_runs(net: nn.Module) -> bool:
    x = torch.rand(1, 3, 16, 16)
    try:
        with torch.no_grad():
            outs = net.eval()(x) + net(x, torch.randn(1, 4))
    except (RuntimeError, ValueError):  # the half instance norm raises ValueError on a channel mismatch
        return False
    return all(out.shape == x.shape for out in outs)


def test_small_widths_and_kernels_are_accepted_exactly_when_the_forward_runs(monkeypatch):
    refused = []
    for case in _CASES:
        try:
            net = CoICDGUNet(**_SWEEP, **case)
        except ValueError as err:
            assert str(err).startswith('network_g.') and '\n' not in str(err), err
            refused.append(case)
            continue
        assert _forward_runs(net), case
    assert [c for c in _CASES if c not in refused] == [
        dict(n_feat=n, scale_unetfeats=s) for n in (2, 4, 6) for s in (0, 2)] + [
        dict(n_feat=2, scale_unetfeats=0, kernel_size=k) for k in (1, 3, 5)]
    monkeypatch.setattr(coic_dgunet_arch, 'check_parity', lambda *args, **kwargs: None)
    for case in refused:  # without the checks every refused case fails in the forward
        assert not _forward_runs(CoICDGUNet(**_SWEEP, **case)), case
