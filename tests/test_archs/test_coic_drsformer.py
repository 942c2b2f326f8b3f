"""CoICDRSformer: equivalence with an independent DRSformer reference, CoIC context paths, padding, params."""
import copy
from typing import Optional

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

import coic_basicsr  # noqa: F401  (installs the shim and registers the archs)
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from coic_basicsr.archs.coic_drsformer_arch import CoICDRSformer
from coic_basicsr.archs.drsformer_blocks import TopKSparseAttention
from coic_basicsr.archs.conv_selection import split_modulation_parameters
from coic_basicsr.archs.modulation import ContextEmbedding, KernelScaleGenerator, ModulatedConv2d
from helpers.modulated_arch import (RefNorm, activate_context_embeddings, activate_modulation,
                                    assert_pads_like_reference, assert_plain_twins_match_reference, modulation_keys,
                                    perturbed)

# float64 for equivalence: the reference uses other kernels (F.layer_norm, four softmaxes), see test_coic_restormer.
TINY = dict(dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 2, 2, 4], context_dim=16)


# ----------------------------------------------------------------------------------------------------------------
# Independent reference: DRSformer from the published architecture facts, official state-dict key names.
# ----------------------------------------------------------------------------------------------------------------

def ref_sparse_attention(attn: nn.Module, heads: int, x: Tensor, kv: Optional[Tensor] = None) -> Tensor:
    """Four top-k masked softmaxes (k = C/2, 2C/3, 3C/4, 4C/5 by topk + scatter), each times V, mixed by attn1..4."""
    b, c, h, w = x.shape
    q = attn.qkv_dwconv(attn.qkv(x))[:, :c]
    k, v = attn.qkv_dwconv(attn.qkv(x if kv is None else kv))[:, c:].split(c, dim=1)
    q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in (q, k, v))
    q, k = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12), k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    scores = torch.einsum('bhcn,bhdn->bhcd', q, k) * attn.temperature
    ch = c // heads
    out = 0
    for keep, weight in zip((int(ch / 2), int(ch * 2 / 3), int(ch * 3 / 4), int(ch * 4 / 5)),
                            (attn.attn1, attn.attn2, attn.attn3, attn.attn4)):
        mask = torch.zeros_like(scores).scatter_(-1, scores.topk(keep, dim=-1).indices, 1.0)
        probs = torch.where(mask > 0, scores, torch.full_like(scores, float('-inf'))).softmax(dim=-1)
        out = out + torch.einsum('bhcd,bhdn->bhcn', probs, v) * weight
    return attn.project_out(out.reshape(b, c, h, w))


def _conv(c_in: int, c_out: int, k: int, groups: int = 1, bias: bool = False, dil: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, padding=dil * (k // 2), dilation=dil, groups=groups, bias=bias)


class RefBlock(nn.Module):
    def __init__(self, c: int, heads: int, factor: float, bias: bool, bias_free: bool) -> None:
        super().__init__()
        hid = int(c * factor)
        self.heads = heads
        self.norm1, self.norm2 = RefNorm(c, bias_free), RefNorm(c, bias_free)
        self.attn = nn.Module()
        self.attn.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.attn.qkv = _conv(c, 3 * c, 1, bias=bias)
        self.attn.qkv_dwconv = _conv(3 * c, 3 * c, 3, groups=3 * c, bias=bias)
        self.attn.project_out = _conv(c, c, 1, bias=bias)
        for i in range(1, 5):
            setattr(self.attn, f'attn{i}', nn.Parameter(torch.tensor([0.2])))
        self.ffn = nn.Module()
        self.ffn.project_in = _conv(c, 2 * hid, 1, bias=bias)
        self.ffn.dwconv3x3 = _conv(2 * hid, 2 * hid, 3, 2 * hid, bias)
        self.ffn.dwconv5x5 = _conv(2 * hid, 2 * hid, 5, 2 * hid, bias)
        self.ffn.dwconv3x3_1 = _conv(2 * hid, hid, 3, hid, bias)
        self.ffn.dwconv5x5_1 = _conv(2 * hid, hid, 5, hid, bias)
        self.ffn.project_out = _conv(2 * hid, c, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + ref_sparse_attention(self.attn, self.heads, self.norm1(x))
        f = self.ffn
        y = f.project_in(self.norm2(x))
        y3, y5 = F.relu(f.dwconv3x3(y)), F.relu(f.dwconv5x5(y))
        hid = y3.shape[1] // 2
        first = F.relu(f.dwconv3x3_1(torch.cat([y3[:, :hid], y5[:, :hid]], 1)))
        second = F.relu(f.dwconv5x5_1(torch.cat([y3[:, hid:], y5[:, hid:]], 1)))
        return x + f.project_out(torch.cat([first, second], 1))


def _op(*layers: nn.Module) -> nn.Module:
    m = nn.Module()
    m.op = nn.Sequential(*layers)
    return m


class RefMEFC(nn.Module):
    """OALayer (layers.0) + GroupOLs (layers.1) with 4 steps of 8 experts."""
    SPECS = [('sep', 1, 1), ('sep', 3, 1), ('sep', 5, 1), ('sep', 7, 1), ('dil', 3, 2), ('dil', 5, 2), ('dil', 7, 2)]

    def __init__(self, c: int) -> None:
        super().__init__()
        oa = nn.Module()
        oa.ca_fc = nn.Sequential(nn.Linear(c, 64), nn.ReLU(), nn.Linear(64, 32))
        group = nn.Module()
        group.preprocess = _op(_conv(c, c, 1), nn.ReLU())
        group._ops = nn.ModuleList()
        for _ in range(4):
            layer = nn.Module()
            layer._ops = nn.ModuleList()
            for kind, k, dil in self.SPECS:
                if kind == 'sep':
                    layer._ops.append(_op(_conv(c, c, k, c), _conv(c, c, 1), nn.ReLU(), _conv(c, c, k, c),
                                          _conv(c, c, 1)))
                else:
                    layer._ops.append(_op(_conv(c, c, k, c, dil=dil), _conv(c, c, 1)))
            layer._out = nn.Sequential(_conv(8 * c, c, 1), nn.ReLU())
            group._ops.append(layer)
        self.layers = nn.ModuleList([oa, group])

    def forward(self, x: Tensor) -> Tensor:
        oa, group = self.layers
        weights = oa.ca_fc(F.adaptive_avg_pool2d(x, 1).flatten(1)).view(-1, 4, 8).softmax(-1)
        x = group.preprocess.op(x)
        for step, layer in enumerate(group._ops):
            w = weights[:, step]
            outs = [op.op(x) for op in layer._ops] + [F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)]
            x = F.relu(layer._out(torch.cat([o * w[:, i].view(-1, 1, 1, 1) for i, o in enumerate(outs)], 1)) + x)
        return x


class RefDRSformer(nn.Module):
    def __init__(self, dim: int = 48, num_blocks=(4, 6, 6, 8), heads=(1, 2, 4, 8), ffn_expansion_factor: float = 2.66,
                 bias: bool = False, LayerNorm_type: str = 'WithBias', mefc: bool = True, **_: object) -> None:
        super().__init__()
        bf, self.mefc = LayerNorm_type == 'BiasFree', mefc

        def seq(c: int, hd: int, n: int) -> nn.Sequential:
            return nn.Sequential(*[RefBlock(c, hd, ffn_expansion_factor, bias, bf) for _ in range(n)])

        def resample(n: int, down: bool) -> nn.Module:
            m = nn.Module()
            m.body = nn.Sequential(_conv(n, n // 2, 3), nn.PixelUnshuffle(2)) if down else \
                nn.Sequential(_conv(n, 2 * n, 3), nn.PixelShuffle(2))
            return m

        self.patch_embed = nn.Module()
        self.patch_embed.proj = _conv(3, dim, 3)
        if mefc:
            self.encoder_level0, self.refinement = RefMEFC(dim), RefMEFC(2 * dim)
        self.encoder_level1 = seq(dim, heads[0], num_blocks[0])
        self.down1_2, self.down2_3, self.down3_4 = (resample(dim * 2**i, True) for i in range(3))
        self.encoder_level2 = seq(2 * dim, heads[1], num_blocks[1])
        self.encoder_level3 = seq(4 * dim, heads[2], num_blocks[2])
        self.latent = seq(8 * dim, heads[3], num_blocks[3])
        self.up4_3, self.up3_2, self.up2_1 = (resample(dim * 2**i, False) for i in (3, 2, 1))
        self.reduce_chan_level3 = _conv(8 * dim, 4 * dim, 1, bias=bias)
        self.decoder_level3 = seq(4 * dim, heads[2], num_blocks[2])
        self.reduce_chan_level2 = _conv(4 * dim, 2 * dim, 1, bias=bias)
        self.decoder_level2 = seq(2 * dim, heads[1], num_blocks[1])
        self.decoder_level1 = seq(2 * dim, heads[0], num_blocks[0])
        self.output = _conv(2 * dim, 3, 3, bias=bias)

    def forward(self, img: Tensor) -> Tensor:
        e0 = self.patch_embed.proj(img)
        e1 = self.encoder_level1(self.encoder_level0(e0) if self.mefc else e0)
        e2 = self.encoder_level2(self.down1_2.body(e1))
        e3 = self.encoder_level3(self.down2_3.body(e2))
        d3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3.body(self.latent(
            self.down3_4.body(e3))), e3], 1)))
        d2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2.body(d3), e2], 1)))
        d1 = self.decoder_level1(torch.cat([self.up2_1.body(d2), e1], 1))
        return self.output(self.refinement(d1) if self.mefc else d1) + img


# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize('ln_type,bias,mefc', [('WithBias', False, True), ('BiasFree', True, False)])
def test_plain_path_equals_independent_reference(ln_type: str, bias: bool, mefc: bool) -> None:
    cfg = dict(TINY, LayerNorm_type=ln_type, bias=bias, mefc=mefc)
    ref = perturbed(RefDRSformer(**cfg), 0.1).double().eval()
    net = CoICDRSformer(**cfg).double().eval()
    activate_modulation(net)
    mod_keys = set(modulation_keys(net))
    mod_before = {k: v.clone() for k, v in net.state_dict().items() if k in mod_keys}
    assert set(net.state_dict()) - set(mod_before) == set(ref.state_dict())
    net.load_state_dict(ref.state_dict(), strict=True)
    for k, v in mod_before.items():  # modulation parameters survive a plain checkpoint
        assert torch.equal(net.state_dict()[k], v), k
    plain = CoICDRSformer(**cfg, modulate=False).double().eval()
    plain.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 24, dtype=torch.float64, requires_grad=True)
    assert_plain_twins_match_reference(net, plain, ref, x)


def test_sparse_attention_with_context_input_matches_four_branch_reference() -> None:
    attn = TopKSparseAttention(20, 2, bias=True).double()  # 10 channels per head: k = 5, 6, 7, 8
    with torch.no_grad():
        attn.temperature.uniform_(0.5, 2.0)
        for w in (attn.attn1, attn.attn2, attn.attn3, attn.attn4):
            w.uniform_(-1.0, 1.0)
    x, kv = torch.randn(2, 20, 6, 5, dtype=torch.float64), torch.randn(2, 20, 6, 5, dtype=torch.float64)
    expected = ref_sparse_attention(attn, 2, x, kv)
    out = attn(x, kv)
    assert torch.allclose(out, expected, atol=1e-10, rtol=0)
    assert not torch.allclose(attn(x), expected, atol=1e-3)
    params = list(attn.parameters())
    grads_ref = torch.autograd.grad(expected.sum(), params)
    grads = torch.autograd.grad(out.sum(), params)
    for p, g, g_ref in zip(params, grads, grads_ref):
        assert torch.allclose(g, g_ref, atol=1e-9, rtol=0), p.shape


def _expected_modulated(cfg: dict, mefc: bool) -> int:
    blocks = 2 * sum(cfg['num_blocks'][:3]) + cfg['num_blocks'][3]
    per_mefc = 4 * (3 * 2 + 3)  # 4 steps; separable experts 3x3/5x5/7x7 have 2 depthwise convs, dilated ones 1
    return 1 + 4 * blocks + 6 + (2 * per_mefc if mefc else 0)


def test_context_changes_output_and_reaches_every_generator_and_embedding() -> None:
    net = CoICDRSformer(**TINY)
    activate_modulation(net)
    x, z = torch.rand(2, 3, 16, 16), F.normalize(torch.randn(2, TINY['context_dim']), dim=1)
    out = net(x, z)
    assert not torch.allclose(out, net(x), atol=1e-4)
    out.square().mean().backward()
    gens = {n: m for n, m in net.named_modules() if isinstance(m, KernelScaleGenerator)}
    embeds = {n: m for n, m in net.named_modules() if isinstance(m, ContextEmbedding)}
    assert len(gens) == len(net.modulated_layers) == _expected_modulated(TINY, True)
    assert len(embeds) == 2 * sum(TINY['num_blocks'][:3]) + TINY['num_blocks'][3]
    for name, m in {**gens, **embeds}.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters()), name
    assert all(isinstance(net.get_submodule(n), ModulatedConv2d) for n in net.modulated_layers)
    assert type(net.output) is nn.Conv2d and type(net.encoder_level1[0].attn.qkv_dwconv) is nn.Conv2d


def test_fresh_modulation_is_identity_until_the_context_embedding_moves() -> None:
    net = CoICDRSformer(**TINY).eval()
    x, z = torch.rand(2, 3, 16, 16), F.normalize(torch.randn(2, TINY['context_dim']), dim=1)
    with torch.no_grad():
        out_plain = net(x)
        assert torch.allclose(net(x, z), out_plain, atol=1e-6, rtol=0)
        activate_context_embeddings(net)
        assert not torch.allclose(net(x, z), out_plain, atol=1e-4)  # the K/V context acts


@pytest.mark.parametrize('size', [(30, 37), (5, 3)])
def test_sizes_not_multiple_of_8(size: tuple) -> None:
    cfg = dict(TINY, mefc=False)
    ref = perturbed(RefDRSformer(**cfg), 0.1).double().eval()
    net = CoICDRSformer(**cfg).double().eval()
    net.load_state_dict(ref.state_dict())
    assert_pads_like_reference(net, ref, size, TINY['context_dim'])


def test_deepcopy_registry_and_bad_input() -> None:
    net = build_network(dict(type='CoICDRSformer', **TINY)).eval()
    assert ARCH_REGISTRY.get('CoICDRSformer') is CoICDRSformer
    activate_modulation(net)
    twin = copy.deepcopy(net)
    x, z = torch.rand(2, 3, 16, 16), torch.randn(1, TINY['context_dim'])
    with torch.no_grad():
        assert torch.equal(twin(x, z), net(x, z))
        assert torch.allclose(net(x, z), net(x, z.expand(2, -1)), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match='z must have shape'):
        net(x, torch.randn(3, TINY['context_dim']))
    with pytest.raises(ValueError, match='modulate=False'):
        CoICDRSformer(**TINY, modulate=False)(x, z)
    with pytest.raises(ValueError, match='LayerNorm_type'):
        CoICDRSformer(**dict(TINY, LayerNorm_type='Batch'))
    with pytest.raises(ValueError, match=r'heads\[0\]'):
        CoICDRSformer(**dict(TINY, heads=[8, 2, 2, 4]))  # one channel per head: top-k would keep 0
    with pytest.raises(ValueError, match='4 entries'):
        CoICDRSformer(**dict(TINY, num_blocks=[1, 1, 1]))


def test_paper_scale_parameter_counts() -> None:
    coic, plain = CoICDRSformer(), CoICDRSformer(modulate=False)
    n_ref = sum(p.numel() for p in RefDRSformer().parameters())
    n_plain = sum(p.numel() for p in plain.parameters())
    backbone, modulation = split_modulation_parameters(coic)
    n_backbone, n_mod = sum(p.numel() for p in backbone), sum(p.numel() for p in modulation)
    print(f'\nDRSformer plain: {n_plain:,} params; CoIC-DRSformer: +{n_mod:,} modulation '
          f'({100 * n_mod / n_plain:.1f}%)')
    assert n_plain == n_backbone == n_ref
    assert len(coic.modulated_layers) == _expected_modulated({'num_blocks': [4, 6, 6, 8]}, True)
    no_mefc = split_modulation_parameters(CoICDRSformer(mefc=False))
    assert sum(p.numel() for p in no_mefc[0]) < n_plain and 0 < sum(p.numel() for p in no_mefc[1]) < n_mod


def test_options_whose_forward_cannot_run_are_refused_naming_the_key() -> None:
    # the sweep over small values (accepted <=> the forward runs) is in test_coic_restormer.py: same U-Net, same checks
    for bad, message in (
            (dict(dim=5), r'network_g\.dim: expected an even integer for CoICDRSformer \(the first down-sampling'),
            (dict(dim=1, heads=[1, 1, 1, 1]), r'network_g\.dim: expected an integer >= 2 for CoICDRSformer, got 1'),
            (dict(heads=[8, 2, 2, 4]), r'network_g\.heads\[0\]: expected a number of heads that divides the 8 channels '
             r'of level 1 into heads of at least 2 channels \(top-k attention keeps int\(C/2\) of C\) for '
             r'CoICDRSformer, got 8'),
            (dict(heads=[0, 2, 2, 4]), r'network_g\.heads\[0\]: expected an integer >= 1 for CoICDRSformer, got 0'),
            (dict(ffn_expansion_factor=0.1), r'network_g\.ffn_expansion_factor: expected a factor leaving int\(dim \* '
             r'ffn_expansion_factor\) >= 1 hidden FFN channels for CoICDRSformer \(network_g\.dim is 8\), got 0\.1'),
            (dict(inp_channels=3, out_channels=2), r'network_g\.out_channels: expected network_g\.inp_channels \(3\) '
             r'for CoICDRSformer \(the output adds the input image, unless inp_channels is 1\), got 2'),
            (dict(LayerNorm_type='Batch'), r"network_g\.LayerNorm_type: expected one of \('WithBias', 'BiasFree'\) "
             r"for CoICDRSformer, got 'Batch'")):
        with pytest.raises(ValueError, match=message) as err:
            CoICDRSformer(**dict(TINY, **bad))
        assert '\n' not in str(err.value)
