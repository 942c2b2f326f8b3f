"""CoICNet around stock BasicSR backbones: plain checkpoints, plain equivalence, gradients, deepcopy, threads."""
import copy
import re
import threading
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrizations

from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY

from coic_basicsr.archs.coic_encoder_arch import CoICEncoder
from coic_basicsr.archs.coic_net_arch import CoICNet
from coic_basicsr.archs.conv_selection import modulate_convs, split_modulation_parameters
from coic_basicsr.archs.modulation import ModulatedConv2d, ModulatedConvTranspose2d, ModulationContext

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
    with pytest.raises(ValueError, match=r"^network_g\.modulate: expected keys among \('include', 'exclude', "
                                         r"'generator_width'\) for CoICNet \(unknown: inclde\), got "):
        CoICNet(backbone=BACKBONES['EDSR'], modulate=dict(inclde=['x']))
    with pytest.raises(ValueError, match=r"^network_g\.modulate: expected null or a mapping with keys among "):
        CoICNet(backbone=BACKBONES['EDSR'], modulate='all')  # a ValueError from dict('all') before
    with pytest.raises(ValueError, match='matches no conv'):
        CoICNet(backbone=BACKBONES['EDSR'], modulate=dict(include=['nothing']))
    for key, patterns, typo in (('include', ['body.*', 'boddy.*'], 'boddy.*'), ('exclude', 'conv_lastt', 'conv_lastt')):
        message = rf"network_g.modulate.{key}: '{re.escape(typo)}' matches no conv with kernel > 1 in EDSR \(e.g. "
        with pytest.raises(ValueError, match=message):  # ignored before whenever another pattern matched
            CoICNet(backbone=BACKBONES['EDSR'], modulate={key: patterns})
    with pytest.raises(ValueError, match=r"^network_g\.backbone: expected a mapping of network options with a 'type' "
                                         r"key for CoICNet, got \{'num_feat': 4\}$"):
        CoICNet(backbone={'num_feat': 4})
    with pytest.raises(ValueError, match='z must have shape'):
        net(torch.rand(2, 3, 8, 8), torch.randn(2, CTX + 1))


class _OwnForwardConv(nn.Conv2d):
    def forward(self, x):
        return 2 * super().forward(x)


def _hooked(conv: nn.Conv2d, when: str) -> nn.Conv2d:
    hook = conv.register_forward_pre_hook if when == 'pre' else conv.register_forward_hook
    hook(lambda *args: None)
    return conv


def _weight_as_buffer(conv: nn.Conv2d) -> nn.Conv2d:
    weight = conv.weight.detach().clone()
    del conv.weight
    conv.register_buffer('weight', weight)
    return conv


def _probe_layer(kind: str) -> nn.Module:
    with warnings.catch_warnings():  # torch.nn.utils.weight_norm is deprecated
        warnings.simplefilter('ignore')
        return {
            'plain': lambda: nn.Conv2d(4, 4, 3, 1, 1),
            'sn_hook': lambda: torch.nn.utils.spectral_norm(nn.Conv2d(4, 4, 3, 1, 1)),
            'wn_hook': lambda: torch.nn.utils.weight_norm(nn.Conv2d(4, 4, 3, 1, 1)),
            'sn_hook_transposed': lambda: torch.nn.utils.spectral_norm(nn.ConvTranspose2d(4, 4, 3, 1, 1)),
            'sn_param': lambda: parametrizations.spectral_norm(nn.Conv2d(4, 4, 3, 1, 1)),
            'wn_param': lambda: parametrizations.weight_norm(nn.Conv2d(4, 4, 3, 1, 1)),
            'subclass': lambda: _OwnForwardConv(4, 4, 3, 1, 1),
            'pre_hook': lambda: _hooked(nn.Conv2d(4, 4, 3, 1, 1), 'pre'),
            'post_hook': lambda: _hooked(nn.Conv2d(4, 4, 3, 1, 1), 'post'),
            'buffer_weight': lambda: _weight_as_buffer(nn.Conv2d(4, 4, 3, 1, 1)),
        }[kind]()


class CoICNetTestProbe(nn.Module):
    """head -> layer -> tail; in eval mode ``eval_path`` 'skip_layer' skips ``layer``, 'weights' convolves with the
    three convs' weights without calling them (as ECBSR's eval path does)."""

    def __init__(self, layer: str = 'plain', eval_path: str = 'convs') -> None:
        super().__init__()
        self.head, self.layer, self.tail = nn.Conv2d(3, 4, 3, 1, 1), _probe_layer(layer), nn.Conv2d(4, 3, 3, 1, 1)
        self.eval_path = eval_path

    def forward(self, x):
        if self.training or self.eval_path == 'convs':
            return self.tail(torch.relu(self.layer(self.head(x))))
        if self.eval_path == 'skip_layer':
            return self.tail(torch.relu(self.head(x)))
        for conv in (self.head, self.layer, self.tail):
            x = F.conv2d(x, conv.weight, conv.bias, padding=1)
        return x


if 'CoICNetTestProbe' not in ARCH_REGISTRY:
    ARCH_REGISTRY.register(CoICNetTestProbe)


@pytest.mark.parametrize('layer, why', [
    ('sn_hook', 'spectral-norm hook on its weight'), ('wn_hook', 'weight-norm hook on its weight'),
    ('sn_hook_transposed', 'spectral-norm hook on its weight'), ('sn_param', 'parametrized weight'),
    ('wn_param', 'parametrized weight'), ('subclass', 'subclass _OwnForwardConv of nn.Conv2d with its own forward'),
    ('pre_hook', 'forward hooks, which its modulated twin would not run'),
    ('post_hook', 'forward hooks, which its modulated twin would not run'),
    ('buffer_weight', 'its weight is not an nn.Parameter')])
def test_a_conv_that_cannot_be_modulated_is_refused_unless_excluded(layer, why):
    # a hooked conv crashed ("cannot assign 'torch.FloatTensor' as parameter 'weight'"); parametrized convs and
    # subclasses were silently left plain, and naming one in include said it "matches no conv with kernel > 1"
    backbone = {'type': 'CoICNetTestProbe', 'layer': layer}
    message = (f"network_g.modulate: conv 'layer' of CoICNetTestProbe cannot be modulated ({why}): add it to "
               'network_g.modulate.exclude')
    for modulate in (None, {'include': ['layer']}, {'include': ['*'], 'exclude': ['head']}):
        with pytest.raises(ValueError, match=f'^{re.escape(message)}$'):
            CoICNet(backbone=backbone, context_dim=CTX, modulate=modulate)
    torch.manual_seed(5)
    net = CoICNet(backbone=backbone, context_dim=CTX, modulate={'exclude': ['layer']})
    assert net.modulated_layers == ['head', 'tail'] and not isinstance(net.backbone.layer, ModulatedConv2d)
    x, z = torch.rand(2, 3, 8, 8), torch.randn(2, CTX)
    _randomise_generators(net)
    assert net(x, z).shape == x.shape and not torch.equal(net(x, z), net(x))
    with pytest.raises(ValueError, match=r"network_g.modulate.include: 'nothing' matches no conv"):
        CoICNet(backbone=backbone, context_dim=CTX, modulate={'include': ['nothing'], 'exclude': ['layer']})


def test_spectral_norm_backbones_of_basicsr_name_every_conv_to_exclude():
    backbone = {'type': 'UNetDiscriminatorSN_basicsr', 'num_in_ch': 3, 'num_feat': 4}
    message = ("network_g.modulate: conv 'conv1' of UNetDiscriminatorSN_basicsr cannot be modulated (spectral-norm "
               "hook on its weight): add it to network_g.modulate.exclude (and 7 more that cannot: 'conv2', 'conv3', "
               "'conv4', 'conv5', ...)")
    with pytest.raises(ValueError, match=f'^{re.escape(message)}$'):
        CoICNet(backbone=backbone, context_dim=CTX)
    net = CoICNet(backbone=backbone, context_dim=CTX, modulate={'exclude': ['conv[1-8]']})
    assert net.modulated_layers == ['conv0', 'conv9']


def test_modulate_convs_without_option_key_skips_subclasses_and_refuses_hooked_convs():
    # the CoIC archs' own call: their convs are plain; a subclass stays plain as before, a hooked conv is named
    net = CoICNetTestProbe('subclass')
    assert modulate_convs(net, ModulationContext(), CTX) == ['head', 'tail']
    with pytest.raises(ValueError, match=re.escape("modulate_convs: conv 'layer' of CoICNetTestProbe cannot be "
                                                   'modulated (spectral-norm hook on its weight): exclude it')):
        modulate_convs(CoICNetTestProbe('sn_hook'), ModulationContext(), CTX)


ECBSR = dict(type='ECBSR', num_in_ch=3, num_out_ch=3, num_block=1, num_channel=8, with_idt=False, act_type='prelu',
             scale=2)


class CoICNetTestTrunk(nn.Module):
    """A backbone whose own trunk is named ``backbone`` (as ECBSR's is)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.PReLU(4), nn.Conv2d(4, 3, 3, 1, 1))

    def forward(self, x):
        return x + self.backbone(x)


if 'CoICNetTestTrunk' not in ARCH_REGISTRY:
    ARCH_REGISTRY.register(CoICNetTestTrunk)


def test_a_plain_checkpoint_loads_although_the_backbones_trunk_is_named_backbone():
    # ECBSR's own keys start with 'backbone.': the prefix was not added (65 missing / 65 unexpected keys when strict,
    # nothing loaded otherwise)
    torch.manual_seed(6)
    TRUNK = {'type': 'CoICNetTestTrunk'}
    plain = build_network(dict(TRUNK)).train()
    net = CoICNet(backbone=dict(TRUNK), context_dim=CTX).train()
    generator_keys = {k for k in net.state_dict() if '.generator.' in k}
    assert set(net.adapt_state_dict(plain.state_dict())) == set(net.state_dict()) - generator_keys
    assert set(net.adapt_state_dict(net.state_dict())) == set(net.state_dict())  # a CoICNet checkpoint: as it is
    for strict in (True, False):
        fresh = CoICNet(backbone=dict(TRUNK), context_dim=CTX).train()
        result = fresh.load_state_dict(plain.state_dict(), strict=strict)
        assert not result.unexpected_keys and set(result.missing_keys) <= generator_keys
        x = torch.rand(2, 3, 8, 8)
        assert torch.equal(fresh(x), plain(x))
    twin = CoICNet(backbone=dict(TRUNK), context_dim=CTX)
    twin.load_state_dict(fresh.state_dict(), strict=True)
    assert all(torch.equal(twin.state_dict()[k], v) for k, v in fresh.state_dict().items())


def test_a_backbone_that_calls_no_modulated_conv_in_eval_mode_is_refused():
    # ECBSR in eval mode convolves with its re-parameterised weights: z was silently ignored in validation; then it
    # trained until its first validation and failed there
    message = ("network_g.backbone: ECBSR computes its eval-mode output without calling its 3 modulated convs (it "
               "convolves with their weights directly, as ECBSR does), so validation and testing could not use z")
    with pytest.raises(ValueError, match=f'^{re.escape(message)}$'):
        CoICNet(backbone=dict(ECBSR), context_dim=CTX)
    with pytest.raises(ValueError, match='network_g.backbone: CoICNetTestProbe computes its eval-mode output'):
        CoICNet(backbone={'type': 'CoICNetTestProbe', 'eval_path': 'weights'}, context_dim=CTX)
    net = CoICNet(backbone={'type': 'CoICNetTestProbe'}, context_dim=CTX)
    assert net.training  # the check at construction keeps the mode
    net.backbone.eval_path = 'weights'  # a forward that calls none, e.g. a backbone's branch the check missed
    x, z = torch.rand(2, 3, 8, 8), torch.randn(2, CTX)
    with torch.no_grad():
        with pytest.raises(ValueError, match=r'^CoICNet: backbone CoICNetTestProbe computed its output \(eval mode\) '
                           'without calling any of its 3 modulated convs'):
            net.eval()(x, z)
        assert net(x).shape == x.shape  # without a code it is the plain network
    probe = CoICNet(backbone={'type': 'CoICNetTestProbe', 'eval_path': 'skip_layer'}, context_dim=CTX).eval()
    assert probe(x, z).shape == x.shape  # some modulated convs ran: a branch may skip the others


def test_one_code_applies_to_every_image_of_the_batch():
    torch.manual_seed(9)
    net = CoICNet(backbone={'type': 'CoICNetTestProbe'}, context_dim=CTX)
    _randomise_generators(net)
    x, z = torch.rand(3, 3, 8, 8), torch.randn(1, CTX)
    with torch.no_grad():
        torch.testing.assert_close(net(x, z), net(x, z.expand(3, -1)), rtol=0, atol=0)
        assert (net(x, z) - net(x)).abs().max() > 1e-3


def test_a_backbone_without_a_conv_to_modulate_is_named():
    with pytest.raises(ValueError, match=r'^network_g.backbone: DUF has no nn.Conv2d / nn.ConvTranspose2d with a '
                       'kernel larger than 1x1 for CoICNet to modulate$'):
        CoICNet(backbone={'type': 'DUF', 'scale': 4, 'num_layer': 16, 'adapt_official_weights': False},
                context_dim=CTX)


EDVR = dict(type='EDVR', num_in_ch=3, num_out_ch=3, num_feat=8, num_frame=3, deformable_groups=1, num_extract_block=1,
            num_reconstruct_block=1, center_frame_idx=None, hr_in=False, with_predeblur=False, with_tsa=True)


def test_a_video_backbone_gets_one_code_per_clip_over_its_folded_frames():
    # EDVR folds (B, T) into the batch of its feature extraction: "z has batch 2 but the input has 6"
    torch.manual_seed(8)
    net = CoICNet(backbone=dict(EDVR), context_dim=CTX).eval()
    _randomise_generators(net)
    x, z = torch.rand(2, 3, 3, 16, 16), torch.randn(2, CTX)
    with torch.no_grad():
        out = net(x, z)
        separately = torch.cat([net(x[i:i + 1], z[i:i + 1]) for i in range(2)])
        assert out.shape == (2, 3, 64, 64)
        torch.testing.assert_close(out, separately, rtol=0, atol=1e-5)
        assert (out - net(x)).abs().max() > 1e-3
        assert (out[1] - net(x[1:], z[:1])[0]).abs().max() > 1e-4  # each clip has its own code


def test_each_clips_code_reaches_its_own_folded_frames():
    # x.view(B * T, ...) folds clip-major: clip 0's frames first. A fresh generator ignores z (its last layer is
    # zero-initialised), so the weights are random here
    torch.manual_seed(10)
    context = ModulationContext()
    conv = ModulatedConv2d(3, 4, 3, padding=1, context=context, context_dim=CTX)
    _randomise_generators(conv)
    clips, z = torch.rand(2, 3, 3, 8, 8), torch.randn(2, CTX)  # 2 clips of 3 frames, a code each
    with torch.no_grad():
        with context.use(z, frames=3):
            folded = conv(clips.view(6, 3, 8, 8))
        for i in range(2):
            with context.use(z[i:i + 1], frames=3):
                alone = conv(clips[i])
            torch.testing.assert_close(folded[3 * i:3 * i + 3], alone, rtol=0, atol=1e-6)
        assert (folded[3:] - conv(clips[1], z[:1])).abs().max() > 1e-3  # the codes differ in effect


def test_a_code_batch_that_is_neither_the_clips_nor_their_frames_is_refused():
    context = ModulationContext()
    conv = ModulatedConv2d(3, 4, 3, padding=1, context=context, context_dim=CTX)
    z = torch.randn(2, CTX)
    with context.use(z, frames=3), torch.no_grad():
        assert conv(torch.rand(2, 3, 4, 4)).shape == (2, 4, 4, 4)
        x = torch.rand(6, 3, 4, 4)
        expected = torch.cat([conv(x[i:i + 1], z[i // 3:i // 3 + 1]) for i in range(6)])
        torch.testing.assert_close(conv(x), expected, rtol=0, atol=1e-6)  # clip i // 3's code for frame i
        pairs = torch.rand(4, 3, 4, 4)  # e.g. BasicVSR's SpyNet: T - 1 frame pairs of each clip
        expected = torch.cat([conv(pairs[i:i + 1], z[i // 2:i // 2 + 1]) for i in range(4)])
        torch.testing.assert_close(conv(pairs), expected, rtol=0, atol=1e-6)
        with pytest.raises(ValueError, match=r'z has batch 2 but the input has 5 \(not a whole number of items per '):
            conv(torch.rand(5, 3, 4, 4))
    with context.use(z), pytest.raises(ValueError, match=r'z has batch 2 but the input has 6$'):
        conv(torch.rand(6, 3, 4, 4))
