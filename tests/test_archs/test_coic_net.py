"""CoICNet around stock BasicSR backbones: plain checkpoints, plain equivalence, gradients, deepcopy, threads."""
import copy
import re
import threading

import pytest
import torch
from torch import nn

from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY

from coic_basicsr.archs.coic_encoder_arch import CoICEncoder
from coic_basicsr.archs.coic_net_arch import CoICNet
from coic_basicsr.archs.modulation import ModulatedConv2d, ModulatedConvTranspose2d, split_modulation_parameters

CTX = 8
BACKBONES = {
    'EDSR': dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=2),
    'RRDBNet': dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, scale=2, num_feat=8, num_block=1, num_grow_ch=4),
    'SwinIR': dict(type='SwinIR', upscale=2, in_chans=3, img_size=8, window_size=4, embed_dim=12, depths=[1],
                   num_heads=[2], mlp_ratio=1, upsampler='pixelshuffledirect', drop_path_rate=0.0),
    'MSRResNet': dict(type='MSRResNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=2),
}



def _randomise_generators(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, (ModulatedConv2d, ModulatedConvTranspose2d)):
            nn.init.normal_(m.generator[-1].weight, std=0.3)
            nn.init.normal_(m.generator[-1].bias, std=0.3)


def _modulated(net: nn.Module) -> list:
    return [m for m in net.modules() if isinstance(m, (ModulatedConv2d, ModulatedConvTranspose2d))]


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_plain_checkpoint_loads_strictly_and_matches_plain_arch(name, tmp_path):
    torch.manual_seed(0)
    plain = build_network(BACKBONES[name]).eval()
    path = tmp_path / 'net_g.pth'
    torch.save({'params': plain.state_dict()}, path)
    net = CoICNet(backbone=BACKBONES[name], context_dim=CTX).eval()
    assert net.modulated_layers and len(_modulated(net)) == len(net.modulated_layers)
    _randomise_generators(net)
    generators = {k: v.clone() for k, v in net.state_dict().items() if '.generator.' in k}
    net.load_state_dict(torch.load(path)['params'], strict=True)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in generators.items())
    x, z = torch.rand(2, 3, 8, 8), torch.randn(2, CTX)
    with torch.no_grad():
        expected = plain(x)
        assert torch.equal(net(x), expected)
        modulated = net(x, z)
    assert modulated.shape == expected.shape and not torch.allclose(modulated, expected)
    # full CoICNet checkpoints (prefixed, with generators) round-trip as well
    twin = CoICNet(backbone=BACKBONES[name], context_dim=CTX).eval()
    twin.load_state_dict(net.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(twin(x, z), modulated)


def test_plain_checkpoint_loads_into_nested_coicnet():
    torch.manual_seed(1)
    plain = build_network(BACKBONES['EDSR'])
    wrapper = nn.ModuleDict({'net_g': CoICNet(backbone=BACKBONES['EDSR'], context_dim=CTX)})
    wrapper.load_state_dict({f'net_g.{k}': v for k, v in plain.state_dict().items()}, strict=True)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(wrapper['net_g'](x), plain(x))


def test_gradients_reach_generator_encoder_and_backbone():
    torch.manual_seed(2)
    net = CoICNet(backbone=BACKBONES['EDSR'], context_dim=CTX)
    encoder = CoICEncoder(context_dim=CTX, base_channels=4, num_blocks=2)
    backbone_params, modulation_params = split_modulation_parameters(net)
    optimizer = torch.optim.SGD(list(net.parameters()) + list(encoder.parameters()), lr=0.5)
    x, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    for step in range(2):
        optimizer.zero_grad()
        (net(x, encoder(x)[0]) - gt).abs().mean().backward()
        if step == 0:  # zero-initialised last Linear: only it learns first, nothing flows to z yet
            assert all(m.generator[-1].weight.grad.abs().sum() > 0 for m in _modulated(net))
            optimizer.step()
    grads = {
        'backbone': [p.grad for p in backbone_params],
        'generator': [p.grad for p in modulation_params],
        'encoder': [p.grad for p in encoder.parameters()],
    }
    for part, part_grads in grads.items():
        assert part_grads and all(g is not None and g.abs().sum() > 0 for g in part_grads), part


def test_deepcopy_keeps_working_and_is_independent():
    torch.manual_seed(3)
    net = CoICNet(backbone=BACKBONES['MSRResNet'], context_dim=CTX).eval()
    _randomise_generators(net)
    ema = copy.deepcopy(net)
    assert ema.context is not net.context
    assert all(m.context is ema.context for m in _modulated(ema))
    assert all(p is not q for p, q in zip(ema.parameters(), net.parameters()))
    x, z = torch.rand(2, 3, 8, 8), torch.randn(2, CTX)
    with torch.no_grad():
        plain_out = net(x)
        assert torch.equal(ema(x, z), net(x, z)) and not torch.equal(ema(x, z), plain_out)
        with net.context.use(z):  # a code set on the original must not leak into the copy
            assert torch.equal(ema(x), plain_out)


def test_concurrent_threads_see_their_own_code():
    torch.manual_seed(4)
    net = CoICNet(backbone=BACKBONES['EDSR'], context_dim=CTX).eval()
    _randomise_generators(net)
    xs, zs = torch.rand(4, 1, 3, 8, 8), torch.randn(4, 1, CTX)
    with torch.no_grad():
        expected = [net(x, z) for x, z in zip(xs, zs)]
        results = [None] * 4

        def work(i: int) -> None:
            for _ in range(3):
                results[i] = net(xs[i], zs[i])

        threads = [threading.Thread(target=work, args=(i, )) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(torch.equal(r, e) for r, e in zip(results, expected))


def test_options_include_exclude_and_errors():
    net = ARCH_REGISTRY.get('CoICNet')(
        backbone=BACKBONES['EDSR'], context_dim=CTX, modulate=dict(include=['body.*'], exclude=['*.conv2']))
    assert net.modulated_layers == ['body.0.conv1', 'body.1.conv1']
    assert type(net.backbone.conv_first) is nn.Conv2d
    with pytest.raises(ValueError, match='unknown key'):
        CoICNet(backbone=BACKBONES['EDSR'], modulate=dict(inclde=['x']))
    with pytest.raises(ValueError, match='matches no conv'):
        CoICNet(backbone=BACKBONES['EDSR'], modulate=dict(include=['nothing']))
    for key, patterns, typo in (('include', ['body.*', 'boddy.*'], 'boddy.*'), ('exclude', 'conv_lastt', 'conv_lastt')):
        message = rf"network_g.modulate.{key}: '{re.escape(typo)}' matches no conv with kernel > 1 in EDSR \(e.g. "
        with pytest.raises(ValueError, match=message):  # ignored before whenever another pattern matched
            CoICNet(backbone=BACKBONES['EDSR'], modulate={key: patterns})
    with pytest.raises(ValueError, match="'type'"):
        CoICNet(backbone={'num_feat': 4})
    with pytest.raises(ValueError, match='z must have shape'):
        net(torch.rand(2, 3, 8, 8), torch.randn(2, CTX + 1))
