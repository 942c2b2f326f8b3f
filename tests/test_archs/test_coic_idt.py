"""CoICIDT: equivalence with an independent IDT reference, CoIC context paths, padding, params."""
import copy
from typing import Optional

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

import coic_basicsr  # noqa: F401  (installs the shim and registers the archs)
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from coic_basicsr.archs.coic_idt_arch import CoICIDT
from coic_basicsr.archs.idt_blocks import LeFF, RelativeWindowAttention, relative_position_index
from coic_basicsr.archs.conv_selection import split_modulation_parameters
from coic_basicsr.archs.modulation import (ContextEmbedding, KernelScaleGenerator, ModulatedConv2d,
                                           ModulatedConvTranspose2d)
from helpers.modulated_arch import (activate_context_embeddings, activate_modulation,
                                    assert_plain_twins_match_reference, modulation_keys, perturbed)

# float64 for equivalence (other kernels, other reduction orders than the arch).
TINY = dict(img_size=32, embed_dim=4, depths=[2, 1, 1, 1, 1, 1, 1, 1, 2], num_heads=[1, 2, 4, 8, 16, 16, 8, 4, 2],
            win_size=4, spatial_win_size=4, context_dim=16)


# ----------------------------------------------------------------------------------------------------------------
# Independent reference: IDT from the published architecture facts, official state-dict key names. The spatial
# window is a parameter here (the official model fixes it to 8).
# ----------------------------------------------------------------------------------------------------------------
class RefAttention(nn.Module):
    def __init__(self, dim: int, win: int, heads: int, k_bound: int) -> None:
        super().__init__()
        self.heads, self.k_bound = heads, k_bound
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * k_bound - 1)**2, heads))
        d = min(win - 1, 2)
        self.Position_Extract = nn.Sequential(nn.Conv2d(dim, dim, 2 * d + 1 if d > 0 else 1, padding=max(d, 0),
                                                        groups=dim), nn.Conv2d(dim, dim, 1, groups=heads))
        self.qkv = nn.Module()
        self.qkv.to_q, self.qkv.to_kv = nn.Linear(dim, dim), nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def bias(self, gh: int, gw: int) -> Tensor:
        n, k = gh * gw, self.k_bound
        index = torch.empty(n, n, dtype=torch.long)
        for a in range(n):
            for b in range(n):
                dy = max(-k + 1, min(k - 1, a // gw - b // gw)) + k - 1
                dx = max(-k + 1, min(k - 1, a % gw - b % gw)) + k - 1
                index[a, b] = dy * (2 * k - 1) + dx
        return self.relative_position_bias_table[index].permute(2, 0, 1)

    def forward(self, x: Tensor, gh: int, gw: int, kv: Optional[Tensor] = None) -> Tensor:
        bn, n, c = x.shape
        d = c // self.heads
        k, v, _ = self.qkv.to_kv(x if kv is None else kv).split(c, dim=-1)
        pos = self.qkv.to_kv(x)[..., 2 * c:]
        q = self.qkv.to_q(x).view(bn, n, self.heads, d).permute(0, 2, 1, 3) * d**-0.5
        k, v = (t.view(bn, n, self.heads, d).permute(0, 2, 1, 3) for t in (k, v))
        attn = torch.softmax(torch.einsum('bhnd,bhmd->bhnm', q, k) + self.bias(gh, gw), dim=-1)
        out = torch.einsum('bhnm,bhmd->bnhd', attn, v).reshape(bn, n, c)
        position = self.Position_Extract(pos.permute(0, 2, 1).reshape(bn, c, gh, gw)).reshape(bn, c, n)
        return self.proj(out + position.permute(0, 2, 1))


class RefLeFF(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Sequential(nn.Linear(dim, hidden))
        self.dwconv = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden))
        self.linear2 = nn.Sequential(nn.Linear(hidden, dim))

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        y = F.gelu(self.linear1(x)).permute(0, 2, 1).reshape(x.shape[0], -1, h, w)
        y = F.gelu(self.dwconv(y)) + y
        return self.linear2(y.flatten(2).permute(0, 2, 1))


class RefIDTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, win: int) -> None:
        super().__init__()
        self.win = win
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = RefAttention(dim, win, heads, 8)
        self.mlp = RefLeFF(dim, 4 * dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, _, c = x.shape
        s = self.win
        t = self.norm1(x).view(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, c)
        t = self.attn(t, s, s).view(b, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h * w, c)
        x = x + t
        return x + self.mlp(self.norm2(x), h, w)


class RefSpatial(nn.Module):
    def __init__(self, channels: int, heads: int, s: int, grid: int, k_bound: int) -> None:
        super().__init__()
        self.s = s
        self.attn = RefAttention(s * s, grid, heads, k_bound)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = RefLeFF(channels, 4 * s * s)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, length, c = x.shape
        s = self.s
        nw = (h // s) * (w // s)
        patches = F.unfold(x.transpose(1, 2).reshape(b, c, h, w), s, stride=s)  # (B, C*s*s, nw)
        patches = patches.reshape(b * c, s * s, nw).transpose(1, 2)
        out = self.attn(patches, h // s, w // s)  # (B*C, nw, s*s)
        x = x + out.reshape(b, c, nw, s * s).permute(0, 2, 3, 1).reshape(b, length, c)  # window-major (official)
        return x + self.mlp(self.norm2(x), h, w)


class RefIDT(nn.Module):
    def __init__(self, img_size: int = 128, embed_dim: int = 32, depths=(3, 3, 2, 2, 1, 1, 2, 2, 3),
                 num_heads=(1, 2, 4, 8, 16, 16, 8, 4, 2), win_size: int = 8, spatial_win_size: int = 8,
                 **_: object) -> None:
        super().__init__()
        e, s = embed_dim, spatial_win_size
        dims = [e, 2 * e, 4 * e, 8 * e, 16 * e, 16 * e, 8 * e, 4 * e, 2 * e]
        res = [img_size >> lv for lv in (0, 1, 2, 3, 4, 3, 2, 1, 0)]
        k_bounds = [16, 8, 4, 2, 1, 2, 4, 8, 16]
        layers = []
        for i in range(9):
            layer = nn.Module()
            blocks = [RefIDTBlock(dims[i], num_heads[i], min(win_size, res[i])) for _ in range(depths[i])]
            if i != 4:
                blocks.append(RefSpatial(dims[i], num_heads[i], s, res[i] // s, k_bounds[i]))
            layer.blocks = nn.ModuleList(blocks)
            layers.append(layer)
        self.input_proj, self.output_proj = nn.Module(), nn.Module()
        self.input_proj.proj = nn.Sequential(nn.Conv2d(3, e, 3, padding=1))
        self.output_proj.proj = nn.Sequential(nn.Conv2d(2 * e, 3, 3, padding=1))
        for i in range(4):
            setattr(self, f'encoderlayer_{i}', layers[i])
            setattr(self, f'decoderlayer_{i}', layers[5 + i])
            down, up = nn.Module(), nn.Module()
            down.conv = nn.Sequential(nn.Conv2d(dims[i], 2 * dims[i], 4, 2, 1))
            up.deconv = nn.Sequential(nn.ConvTranspose2d(dims[4 + i], dims[5 + i] // 2, 2, 2))
            setattr(self, f'dowsample_{i}', down)
            setattr(self, f'upsample_{i}', up)
        self.bottle = layers[4]

    @staticmethod
    def _run(layer: nn.Module, x: Tensor, h: int, w: int) -> Tensor:
        for block in layer.blocks:
            x = block(x, h, w)
        return x

    @staticmethod
    def _conv(seq: nn.Sequential, x: Tensor, h: int, w: int) -> Tensor:
        return seq(x.transpose(1, 2).reshape(x.shape[0], -1, h, w)).flatten(2).transpose(1, 2)

    def forward(self, img: Tensor) -> Tensor:
        h, w = img.shape[-2:]
        y = F.leaky_relu(self.input_proj.proj(img)).flatten(2).transpose(1, 2)
        skips = []
        for i in range(4):
            y = self._run(getattr(self, f'encoderlayer_{i}'), y, h, w)
            skips.append(y)
            y = self._conv(getattr(self, f'dowsample_{i}').conv, y, h, w)
            h, w = h // 2, w // 2
        y = self._run(self.bottle, y, h, w)
        for j in range(4):
            y = self._conv(getattr(self, f'upsample_{j}').deconv, y, h, w)
            h, w = 2 * h, 2 * w
            y = self._run(getattr(self, f'decoderlayer_{j}'), torch.cat([y, skips[3 - j]], -1), h, w)
        return img + self.output_proj.proj(y.transpose(1, 2).reshape(y.shape[0], -1, h, w))


# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize('cfg', [TINY, dict(TINY, img_size=64, win_size=8, spatial_win_size=8, depths=[1] * 9)],
                         ids=['tiny-windows', 'official-windows'])
def test_plain_path_equals_independent_reference(cfg: dict) -> None:
    ref = perturbed(RefIDT(**cfg), 0.05).double().eval()
    net = CoICIDT(**cfg).double().eval()
    activate_modulation(net)
    mod_keys = set(modulation_keys(net))
    mod_before = {k: v.clone() for k, v in net.state_dict().items() if k in mod_keys}
    assert set(net.state_dict()) - mod_keys == set(ref.state_dict())
    net.load_state_dict(ref.state_dict(), strict=True)
    for k, v in mod_before.items():  # modulation parameters survive a plain checkpoint
        assert torch.equal(net.state_dict()[k], v), k
    plain = CoICIDT(**cfg, modulate=False).double().eval()
    plain.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(2, 3, cfg['img_size'], cfg['img_size'], dtype=torch.float64, requires_grad=True)
    assert_plain_twins_match_reference(net, plain, ref, x)


def test_attention_with_context_input_matches_reference() -> None:
    attn = RelativeWindowAttention(8, (3, 4), 2, True, None, k_bound=2).double()
    ref = RefAttention(8, 3, 2, 2).double()
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
    ref.load_state_dict(attn.state_dict())
    x, kv = torch.randn(5, 12, 8, dtype=torch.float64), torch.randn(5, 12, 8, dtype=torch.float64)
    expected = ref(x, 3, 4, kv)
    assert torch.allclose(attn(x, (3, 4), kv), expected, atol=1e-10, rtol=0)
    assert not torch.allclose(attn(x, (3, 4)), expected, atol=1e-3)
    for grid in ((3, 4), (5, 2)):  # buffer for the construction grid, computed on the fly for others
        n = grid[0] * grid[1]
        assert torch.allclose(attn._bias(grid), ref.bias(*grid)), grid
        assert relative_position_index(grid, 2).shape == (n, n)


def test_context_changes_output_and_reaches_every_generator_and_embedding() -> None:
    net = CoICIDT(**TINY)
    activate_modulation(net)
    x, z = torch.rand(2, 3, 32, 32), F.normalize(torch.randn(2, TINY['context_dim']), dim=1)
    out = net(x, z)
    assert not torch.allclose(out, net(x), atol=1e-4)
    out.square().mean().backward()
    gens = {n: m for n, m in net.named_modules() if isinstance(m, KernelScaleGenerator)}
    embeds = {n: m for n, m in net.named_modules() if isinstance(m, ContextEmbedding)}
    n_blocks = sum(TINY['depths']) + 8  # window blocks + spatial layers, one LeFF and one embedding each
    assert len(gens) == len(net.modulated_layers) == 2 + 4 + 4 + n_blocks
    assert len(embeds) == n_blocks
    for name, m in {**gens, **embeds}.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters()), name
    assert isinstance(net.upsample_0.deconv[0], ModulatedConvTranspose2d)
    assert isinstance(net.dowsample_0.conv[0], ModulatedConv2d)
    assert type(net.encoderlayer_0.blocks[0].attn.Position_Extract[0]) is nn.Conv2d


def test_fresh_modulation_is_identity_until_the_context_embedding_moves() -> None:
    net = CoICIDT(**TINY).eval()
    x, z = torch.rand(2, 3, 32, 32), F.normalize(torch.randn(2, TINY['context_dim']), dim=1)
    with torch.no_grad():
        out_plain = net(x)
        assert torch.allclose(net(x, z), out_plain, atol=1e-6, rtol=0)
        activate_context_embeddings(net)
        assert not torch.allclose(net(x, z), out_plain, atol=1e-4)


@pytest.mark.parametrize('size', [(40, 24), (13, 7)])
def test_other_sizes_are_padded_to_the_size_multiple(size: tuple) -> None:
    ref = perturbed(RefIDT(**TINY), 0.05).double().eval()
    net = CoICIDT(**TINY).double().eval()
    net.load_state_dict(ref.state_dict())
    assert net.size_multiple == 32
    x = torch.rand(1, 3, *size, dtype=torch.float64)
    (h, w), m = size, net.size_multiple
    mode = 'reflect' if -h % m < h and -w % m < w else 'replicate'
    with torch.no_grad():
        expected = ref(F.pad(x, (0, -w % m, 0, -h % m), mode=mode))[..., :h, :w]
        assert torch.allclose(net(x), expected, atol=1e-6, rtol=0)
        assert net(x, torch.randn(1, TINY['context_dim'], dtype=torch.float64)).shape == x.shape


def test_drop_path_trains_stochastically_and_evaluates_deterministically() -> None:
    net = CoICIDT(**dict(TINY, drop_path_rate=0.5))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))
        net.eval()
        assert torch.equal(net(x), net(x))


def test_deepcopy_registry_and_bad_input() -> None:
    net = build_network(dict(type='CoICIDT', **TINY)).eval()
    assert ARCH_REGISTRY.get('CoICIDT') is CoICIDT
    activate_modulation(net)
    twin = copy.deepcopy(net)
    x, z = torch.rand(2, 3, 32, 32), torch.randn(1, TINY['context_dim'])
    with torch.no_grad():
        assert torch.equal(twin(x, z), net(x, z))
        assert torch.allclose(net(x, z), net(x, z.expand(2, -1)), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match='z must have shape'):
        net(x, torch.randn(2, TINY['context_dim'] + 1))
    with pytest.raises(ValueError, match='modulate=False'):
        CoICIDT(**TINY, modulate=False)(x, z)
    with pytest.raises(ValueError, match='img_size'):
        CoICIDT(**dict(TINY, img_size=48))
    with pytest.raises(ValueError, match=r'num_heads\[1\]'):
        CoICIDT(**dict(TINY, num_heads=[1, 3, 4, 8, 16, 16, 8, 4, 2]))
    with pytest.raises(ValueError, match='9 entries'):
        CoICIDT(**dict(TINY, depths=[1] * 8))


def test_paper_scale_parameter_counts() -> None:
    coic, plain = CoICIDT(), CoICIDT(modulate=False)
    n_ref = sum(p.numel() for p in RefIDT().parameters())
    n_plain = sum(p.numel() for p in plain.parameters())
    backbone, modulation = split_modulation_parameters(coic)
    n_backbone, n_mod = sum(p.numel() for p in backbone), sum(p.numel() for p in modulation)
    print(f'\nIDT plain: {n_plain:,} params; CoIC-IDT: +{n_mod:,} modulation ({100 * n_mod / n_plain:.1f}%)')
    assert n_plain == n_backbone == n_ref
    assert set(plain.state_dict()) == set(RefIDT().state_dict())
    assert coic.size_multiple == 128


def test_options_whose_forward_cannot_run_are_refused_naming_the_key() -> None:
    for bad, message in (
            (dict(win_size=0), r'network_g\.win_size: expected an integer >= 1 for CoICIDT, got 0'),
            (dict(spatial_win_size=0), r'network_g\.spatial_win_size: expected an integer >= 1 for CoICIDT, got 0'),
            (dict(img_size=0), r'network_g\.img_size: expected an integer >= 1 for CoICIDT, got 0'),
            (dict(num_heads=[0, 2, 4, 8, 16, 16, 8, 4, 2]), r'network_g\.num_heads\[0\]: expected an integer >= 1 for '
             r'CoICIDT'),
            (dict(mlp_ratio=0.2), r'network_g\.mlp_ratio: expected a ratio leaving int\(C \* mlp_ratio\) >= 1 hidden '
             r'LeFF channels for CoICIDT \(C down to min\(network_g\.embed_dim, network_g\.spatial_win_size\*\*2\) = '
             r'4\), got 0\.2'),
            (dict(img_size=48), r'network_g\.img_size: expected a multiple of 16 whose every level \(img_size / '
             r'2\*\*level, here 6 at level 3\) is a multiple of network_g\.win_size \(4\) and, for levels 0-3, of '
             r'network_g\.spatial_win_size \(4\) for CoICIDT, got 48'),
            (dict(num_heads=[1, 3, 4, 8, 16, 16, 8, 4, 2]), r'network_g\.num_heads\[1\]: expected a number of heads '
             r'that divides the 8 channels of layer 1 and network_g\.spatial_win_size\*\*2 \(16\) for CoICIDT, got 3'),
            (dict(in_chans=0), r'network_g\.in_chans: expected an integer >= 1 for CoICIDT, got 0')):
        with pytest.raises(ValueError, match=message) as err:
            CoICIDT(**dict(TINY, **bad))
        assert '\n' not in str(err.value)


def test_mlp_ratio_is_accepted_exactly_when_the_leff_layers_have_a_channel() -> None:
    small = dict(TINY, depths=[1] * 9, num_heads=[1] * 9)
    # (embed_dim, spatial_win_size, mlp_ratio, accepted): the narrowest LeFF input is embed_dim = 4 in the first
    # two, the spatial layers' spatial_win_size**2 = 4 pixels in the last two
    cases = [(4, 4, 0.25, True), (4, 4, 0.24, False), (8, 2, 0.25, True), (8, 2, 0.2, False)]
    x = torch.rand(1, 3, 32, 32)
    for embed_dim, spatial, ratio, accepted in cases:
        options = dict(small, embed_dim=embed_dim, spatial_win_size=spatial, mlp_ratio=ratio)
        if accepted:
            with torch.no_grad():
                assert CoICIDT(**options).eval()(x, torch.randn(1, TINY['context_dim'])).shape == x.shape
        else:
            with pytest.raises(ValueError, match=r'network_g\.mlp_ratio'):
                CoICIDT(**options)
            narrowest = min(embed_dim, spatial**2)  # without the check, its LeFF would be built with 0 channels
            with pytest.raises(ValueError, match='groups must be a positive integer'):
                LeFF(narrowest, int(narrowest * ratio))
