"""CoICRestormer: equivalence with an independent Restormer reference, CoIC context paths, padding, params."""
import copy
import sys
from typing import Dict, Optional

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

import coic_basicsr  # noqa: F401  (installs the shim and registers the archs)
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from coic_basicsr.archs.coic_drsformer_arch import CoICDRSformer
from coic_basicsr.archs.coic_restormer_arch import CoICRestormer
from coic_basicsr.archs.restormer_blocks import MDTAttention
from coic_basicsr.archs.conv_selection import split_modulation_parameters
from coic_basicsr.archs.modulation import ContextEmbedding, KernelScaleGenerator, ModulatedConv2d
from helpers.modulated_arch import (RefNorm, activate_context_embeddings, activate_modulation,
                                    assert_pads_like_reference, modulation_keys, perturbed)

# Equivalence checks run in float64: the reference uses other kernels (F.layer_norm, einsum), whose float32
# reduction order differs by a few 1e-6 after a whole network; in float64 any real mismatch stands far above 1e-6.
TINY = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 8], context_dim=16)


# ----------------------------------------------------------------------------------------------------------------
# Independent reference: Restormer from the published architecture facts, official state-dict key names.
# ----------------------------------------------------------------------------------------------------------------

def ref_attention(attn: nn.Module, heads: int, x: Tensor, kv: Optional[Tensor] = None) -> Tensor:
    """MDTA; with ``kv`` the full qkv convs run on both inputs and Q is taken from x, K/V from kv."""
    b, c, h, w = x.shape
    q = attn.qkv_dwconv(attn.qkv(x))[:, :c]
    k, v = attn.qkv_dwconv(attn.qkv(x if kv is None else kv))[:, c:].split(c, dim=1)
    q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in (q, k, v))
    q, k = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12), k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    a = torch.softmax(torch.einsum('bhcn,bhdn->bhcd', q, k) * attn.temperature, dim=-1)
    return attn.project_out(torch.einsum('bhcd,bhdn->bhcn', a, v).reshape(b, c, h, w))


class RefBlock(nn.Module):
    def __init__(self, c: int, heads: int, factor: float, bias: bool, bias_free: bool) -> None:
        super().__init__()
        hid = int(c * factor)
        self.heads = heads
        self.norm1, self.norm2 = RefNorm(c, bias_free), RefNorm(c, bias_free)
        self.attn = nn.Module()
        self.attn.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.attn.qkv = nn.Conv2d(c, 3 * c, 1, bias=bias)
        self.attn.qkv_dwconv = nn.Conv2d(3 * c, 3 * c, 3, padding=1, groups=3 * c, bias=bias)
        self.attn.project_out = nn.Conv2d(c, c, 1, bias=bias)
        self.ffn = nn.Module()
        self.ffn.project_in = nn.Conv2d(c, 2 * hid, 1, bias=bias)
        self.ffn.dwconv = nn.Conv2d(2 * hid, 2 * hid, 3, padding=1, groups=2 * hid, bias=bias)
        self.ffn.project_out = nn.Conv2d(hid, c, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + ref_attention(self.attn, self.heads, self.norm1(x))
        a, g = self.ffn.dwconv(self.ffn.project_in(self.norm2(x))).chunk(2, 1)
        return x + self.ffn.project_out(F.gelu(a) * g)


def _resample(n: int, down: bool) -> nn.Module:
    m = nn.Module()
    m.body = nn.Sequential(nn.Conv2d(n, n // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2)) if down else \
        nn.Sequential(nn.Conv2d(n, 2 * n, 3, padding=1, bias=False), nn.PixelShuffle(2))
    return m


class RefRestormer(nn.Module):
    def __init__(self, dim: int = 48, num_blocks=(4, 6, 6, 8), num_refinement_blocks: int = 4, heads=(1, 2, 4, 8),
                 ffn_expansion_factor: float = 2.66, bias: bool = False, LayerNorm_type: str = 'WithBias',
                 **_: object) -> None:
        super().__init__()
        bf = LayerNorm_type == 'BiasFree'

        def seq(c: int, hd: int, n: int) -> nn.Sequential:
            return nn.Sequential(*[RefBlock(c, hd, ffn_expansion_factor, bias, bf) for _ in range(n)])

        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, 3, padding=1, bias=False)
        self.encoder_level1 = seq(dim, heads[0], num_blocks[0])
        self.down1_2, self.down2_3, self.down3_4 = (_resample(dim * 2**i, True) for i in range(3))
        self.encoder_level2 = seq(2 * dim, heads[1], num_blocks[1])
        self.encoder_level3 = seq(4 * dim, heads[2], num_blocks[2])
        self.latent = seq(8 * dim, heads[3], num_blocks[3])
        self.up4_3, self.up3_2, self.up2_1 = (_resample(dim * 2**i, False) for i in (3, 2, 1))
        self.reduce_chan_level3 = nn.Conv2d(8 * dim, 4 * dim, 1, bias=bias)
        self.decoder_level3 = seq(4 * dim, heads[2], num_blocks[2])
        self.reduce_chan_level2 = nn.Conv2d(4 * dim, 2 * dim, 1, bias=bias)
        self.decoder_level2 = seq(2 * dim, heads[1], num_blocks[1])
        self.decoder_level1 = seq(2 * dim, heads[0], num_blocks[0])
        self.refinement = seq(2 * dim, heads[0], num_refinement_blocks)
        self.output = nn.Conv2d(2 * dim, 3, 3, padding=1, bias=bias)

    def forward(self, img: Tensor) -> Tensor:
        e1 = self.encoder_level1(self.patch_embed.proj(img))
        e2 = self.encoder_level2(self.down1_2.body(e1))
        e3 = self.encoder_level3(self.down2_3.body(e2))
        d3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3.body(self.latent(
            self.down3_4.body(e3))), e3], 1)))
        d2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2.body(d3), e2], 1)))
        d1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1.body(d2), e1], 1)))
        return self.output(d1) + img


# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize('ln_type,bias', [('WithBias', False), ('BiasFree', True)])
def test_plain_path_equals_independent_reference(ln_type: str, bias: bool) -> None:
    cfg = dict(TINY, LayerNorm_type=ln_type, bias=bias)
    ref = perturbed(RefRestormer(**cfg), 0.1).double().eval()
    net = CoICRestormer(**cfg).double().eval()
    activate_modulation(net)
    gen_before = {k: v.clone() for k, v in net.state_dict().items() if k in modulation_keys(net)}
    assert set(net.state_dict()) - set(gen_before) == set(ref.state_dict())
    net.load_state_dict(ref.state_dict(), strict=True)
    for k, v in gen_before.items():  # modulation parameters survive a plain checkpoint
        assert torch.equal(net.state_dict()[k], v), k
    plain = CoICRestormer(**cfg, modulate=False).double().eval()
    plain.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = ref(x)
        assert torch.allclose(net(x), expected, atol=1e-6, rtol=0)
        assert torch.allclose(plain(x), expected, atol=1e-6, rtol=0)


def test_split_qkv_attention_matches_two_input_reference() -> None:
    attn = MDTAttention(16, 4, bias=True)
    with torch.no_grad():
        attn.temperature.uniform_(0.5, 2.0)
    x, kv = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    expected = ref_attention(attn, 4, x, kv)
    assert torch.allclose(attn(x, kv), expected, atol=1e-6, rtol=0)
    assert not torch.allclose(attn(x), expected, atol=1e-3)


def test_context_changes_output_and_reaches_generators_and_embeddings() -> None:
    net = CoICRestormer(**TINY)
    activate_modulation(net)
    x, z = torch.rand(2, 3, 32, 32), F.normalize(torch.randn(2, TINY['context_dim']), dim=1)
    out = net(x, z)
    assert not torch.allclose(out, net(x), atol=1e-4)
    out.square().mean().backward()
    mods: Dict[str, nn.Module] = {n: m for n, m in net.named_modules()
                                  if isinstance(m, (KernelScaleGenerator, ContextEmbedding))}
    assert len(mods) == 15 + 8  # generators: patch embed, 8 FFN dwconvs, 6 resamplers; 8 context embeddings
    for name, m in mods.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters()), name
    assert net.patch_embed.proj.weight.grad.abs().sum() > 0
    assert net.encoder_level1[0].attn.qkv.weight.grad.abs().sum() > 0


def test_fresh_modulation_is_identity_and_zero_generators_leave_convs_plain() -> None:
    net = CoICRestormer(**TINY).eval()
    x, z = torch.rand(2, 3, 32, 32), F.normalize(torch.randn(2, TINY['context_dim']), dim=1)
    with torch.no_grad():
        out_plain = net(x)
        # freshly built: zero-initialised generators (scale 1) and embeddings, so z changes nothing yet
        assert torch.allclose(net(x, z), out_plain, atol=1e-6, rtol=0)
        activate_context_embeddings(net)
    records = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: records.append((mod, inp[0], out)))
             for m in net.modules() if isinstance(m, ModulatedConv2d)]
    with torch.no_grad():
        out_z = net(x, z)
    for h in hooks:
        h.remove()
    assert len(records) == 15
    for mod, inp, out in records:  # generators still in their zero-initialised state: convs act plain
        plain = F.conv2d(inp, mod.weight, mod.bias, mod.stride, mod.padding, mod.dilation, mod.groups)
        assert torch.allclose(out, plain, atol=1e-6, rtol=0)
    assert not torch.allclose(out_z, out_plain, atol=1e-4)  # the K/V context acts


@pytest.mark.parametrize('size', [(30, 37), (13, 21), (3, 5)])
def test_sizes_not_multiple_of_8(size: tuple) -> None:
    ref = perturbed(RefRestormer(**TINY), 0.1).double().eval()
    net = CoICRestormer(**TINY).double().eval()
    net.load_state_dict(ref.state_dict())
    assert_pads_like_reference(net, ref, size, TINY['context_dim'])


def test_split_modulation_parameters_separates_generators_and_embeddings() -> None:
    net = CoICRestormer(**TINY)
    backbone, modulation = split_modulation_parameters(net)
    ids_b, ids_m = {id(p) for p in backbone}, {id(p) for p in modulation}
    assert not ids_b & ids_m and ids_b | ids_m == {id(p) for p in net.parameters()}
    expected_mod = {id(p) for m in net.modules() if isinstance(m, (KernelScaleGenerator, ContextEmbedding))
                    for p in m.parameters()}
    assert ids_m == expected_mod
    assert sum(p.numel() for p in backbone) == sum(p.numel() for p in RefRestormer(**TINY).parameters())


def test_deepcopy_registry_and_bad_input() -> None:
    net = build_network(dict(type='CoICRestormer', **TINY)).eval()
    assert ARCH_REGISTRY.get('CoICRestormer') is CoICRestormer
    activate_modulation(net)
    twin = copy.deepcopy(net)
    x, z = torch.rand(1, 3, 16, 16), torch.randn(1, TINY['context_dim'])
    with torch.no_grad():
        assert torch.equal(twin(x, z), net(x, z))
    with torch.no_grad():  # a single code is broadcast over the batch
        x2 = torch.rand(2, 3, 16, 16)
        assert torch.allclose(net(x2, z), net(x2, z.expand(2, -1)), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match='z must have shape'):
        net(x2, torch.randn(3, TINY['context_dim']))
    with pytest.raises(ValueError, match='z must have shape'):
        net(x, torch.randn(1, TINY['context_dim'] + 1))
    with pytest.raises(ValueError, match='modulate=False'):
        CoICRestormer(**TINY, modulate=False)(x, z)
    with pytest.raises(ValueError, match='LayerNorm_type'):
        CoICRestormer(**dict(TINY, LayerNorm_type='Batch'))
    with pytest.raises(ValueError, match=r'heads\[1\]'):
        CoICRestormer(**dict(TINY, heads=[1, 3, 4, 8]))


def test_paper_scale_config_builds_and_reports_parameter_counts() -> None:
    coic, plain, ref = CoICRestormer(), CoICRestormer(modulate=False), RefRestormer()
    n_plain = sum(p.numel() for p in plain.parameters())
    backbone, modulation = split_modulation_parameters(coic)
    n_backbone, n_mod = sum(p.numel() for p in backbone), sum(p.numel() for p in modulation)
    print(f'\nRestormer plain: {n_plain:,} params; CoIC-Restormer: {n_backbone + n_mod:,} '
          f'(backbone {n_backbone:,} + modulation {n_mod:,}, +{100 * n_mod / n_plain:.2f}%)')
    assert n_plain == n_backbone == sum(p.numel() for p in ref.parameters())
    assert set(plain.state_dict()) == set(ref.state_dict())
    n_blocks = 2 * (4 + 6 + 6) + 8 + 4
    assert sum(isinstance(m, ModulatedConv2d) for m in coic.modules()) == 1 + n_blocks + 6
    assert sum(isinstance(m, ContextEmbedding) for m in coic.modules()) == n_blocks


# ----------------------------------------------------------------------------------------------------------------
# Constructor checks: options whose forward cannot run are refused naming the key, and nothing that runs is refused.
# CoICDRSformer shares the U-Net and its checks (restormer_blocks.check_unet_options), so it is swept here too.
# ----------------------------------------------------------------------------------------------------------------
def test_options_whose_forward_cannot_run_are_refused_naming_the_key() -> None:
    for bad, message in (
            (dict(dim=5), r'network_g\.dim: expected an even integer for CoICRestormer \(the first down-sampling '
             r'convolves to dim // 2 channels, which PixelUnshuffle\(2\) must turn into the 2 \* dim channels of '
             r'level 2\), got 5'),
            (dict(dim=0, heads=[1, 1, 1, 1]), r'network_g\.dim: expected an integer >= 2 for CoICRestormer, got 0'),
            (dict(heads=[0, 2, 4, 8]), r'network_g\.heads\[0\]: expected an integer >= 1 for CoICRestormer, got 0'),
            (dict(heads=[1, 3, 4, 8]), r'network_g\.heads\[1\]: expected a number of heads that divides the 16 '
             r'channels of level 2 for CoICRestormer, got 3'),
            (dict(ffn_expansion_factor=0.1), r'network_g\.ffn_expansion_factor: expected a factor leaving int\(dim \* '
             r'ffn_expansion_factor\) >= 1 hidden FFN channels for CoICRestormer \(network_g\.dim is 8\), got 0\.1'),
            (dict(inp_channels=0), r'network_g\.inp_channels: expected an integer >= 1 for CoICRestormer, got 0'),
            (dict(out_channels=2), r'network_g\.out_channels: expected network_g\.inp_channels \(3\) for '
             r'CoICRestormer'),
            (dict(LayerNorm_type='Batch'), r"network_g\.LayerNorm_type: expected one of \('WithBias', 'BiasFree'\) "
             r"for CoICRestormer, got 'Batch'")):
        with pytest.raises(ValueError, match=message) as err:
            CoICRestormer(**dict(TINY, **bad))
        assert '\n' not in str(err.value)
    CoICRestormer(**dict(TINY, inp_channels=6, out_channels=3, dual_pixel_task=True))  # no global residual there


_UNET_SWEEP = {CoICRestormer: dict(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 1, 1],
                                   context_dim=4),
               # the feature compensators (mefc) take any channel count; without them the sweep is 3x faster
               CoICDRSformer: dict(num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1], context_dim=4, mefc=False)}
_UNET_CASES = ([dict(dim=dim) for dim in range(1, 13)]
               + [dict(dim=4, ffn_expansion_factor=f) for f in (0.24, 0.25)]  # int(4 * 0.25) = 1 hidden channel
               + [dict(dim=2, inp_channels=i, out_channels=o) for i in (1, 2, 3) for o in (1, 2, 3)])


def _forward_runs(net: nn.Module, case: dict) -> bool:
    """Whether the forward, plain and with a context, gives an image of ``out_channels`` channels at 16x16."""
    x = torch.rand(1, case.get('inp_channels', 3), 16, 16)
    try:
        with torch.no_grad():
            outs = [net.eval()(x), net(x, torch.randn(1, 4))]
    except RuntimeError:
        return False
    return all(out.shape == (1, case.get('out_channels', 3), 16, 16) for out in outs)


@pytest.mark.parametrize('cls', [CoICRestormer, CoICDRSformer], ids=lambda cls: cls.__name__)
def test_small_options_are_accepted_exactly_when_the_forward_runs(cls: type, monkeypatch) -> None:
    refused = []
    for case in _UNET_CASES:
        try:
            net = cls(**_UNET_SWEEP[cls], **case)
        except ValueError as err:
            assert str(err).startswith('network_g.') and '\n' not in str(err), err
            refused.append(case)
            continue
        assert _forward_runs(net, case), case
    assert refused == ([dict(dim=dim) for dim in (1, 3, 5, 7, 9, 11)] + [dict(dim=4, ffn_expansion_factor=0.24)]
                       + [dict(dim=2, inp_channels=i, out_channels=o) for i, o in ((2, 1), (2, 3), (3, 1), (3, 2))])
    # without the checks every refused case fails: at construction naming no key, in the forward, or with an image
    # of other than out_channels channels (3 -> 1 broadcasts the 1-channel output over the 3-channel input)
    monkeypatch.setattr(sys.modules[cls.__module__], 'check_unet_options', lambda *args, **kwargs: None)
    for case in refused:
        try:
            net = cls(**_UNET_SWEEP[cls], **case)
        except ValueError as err:
            assert 'network_g' not in str(err)
            continue
        assert not _forward_runs(net, case), case
