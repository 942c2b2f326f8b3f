"""CoI-M modulated layers: equivalence with explicit per-sample convs, plain fallback, context, loading."""
import copy
import logging
import pickle
import threading

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from basicsr.utils import get_root_logger

from coic_basicsr.archs import modulation
from coic_basicsr.archs.conv_selection import modulate_convs, split_modulation_parameters
from coic_basicsr.archs.modulation import (ContextEmbedding, KernelScaleGenerator, ModulatedConv2d,
                                           ModulatedConvTranspose2d, ModulationContext)

CTX = 8



def _randomise_generator(layer: nn.Module, std: float = 0.5) -> None:
    nn.init.normal_(layer.generator[-1].weight, std=std)
    nn.init.normal_(layer.generator[-1].bias, std=std)


def _reference_kernels(layer: nn.Module, x: torch.Tensor, z: torch.Tensor, transposed: bool) -> torch.Tensor:
    """Per-sample kernels built loop by loop from the generator output, with torch.softmax."""
    weight = layer.weight
    rows, cols, kh, kw = weight.shape
    a_all = layer.generator(torch.cat([z, x.mean(dim=(2, 3))], dim=1))
    n_out = rows if not transposed else cols
    kernels = []
    for a in a_all:
        a_out, a_in, a_k = a[:n_out], a[n_out:-kh * kw], a[-kh * kw:]
        scale = torch.empty(rows, cols, kh * kw)
        for r in range(rows):
            for c in range(cols):
                o, i = (c, r) if transposed else (r, c)
                scale[r, c] = kh * kw * torch.softmax(torch.sigmoid(a_out[o] + a_in[i]) * a_k, dim=0)
        kernels.append(weight * scale.view(rows, cols, kh, kw))
    return torch.stack(kernels)


CONV_CASES = {
    'plain': dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    'grouped': dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, groups=2),
    'depthwise': dict(in_channels=6, out_channels=6, kernel_size=3, padding=1, groups=6),
    'strided': dict(in_channels=4, out_channels=5, kernel_size=3, stride=2, padding=1),
    'dilated': dict(in_channels=3, out_channels=4, kernel_size=3, padding=2, dilation=2, bias=False),
    'same_dilated': dict(in_channels=3, out_channels=4, kernel_size=3, padding='same', dilation=2),
    'rect_reflect': dict(in_channels=3, out_channels=4, kernel_size=(3, 5), padding=(1, 2), padding_mode='reflect'),
}


@pytest.fixture(params=['per_sample', 'folded'])
def batch_strategy(request, monkeypatch):
    """Run a test with both ways of applying per-sample kernels (the CPU default and the CUDA fold)."""
    monkeypatch.setattr(modulation, '_fold_batch_into_groups', lambda x: request.param == 'folded')
    return request.param


@pytest.mark.parametrize('case', sorted(CONV_CASES))
def test_modulated_conv_matches_per_sample_loop(case, batch_strategy):
    torch.manual_seed(0)
    layer = ModulatedConv2d(**CONV_CASES[case], context_dim=CTX)
    _randomise_generator(layer)
    x, z = torch.randn(3, layer.in_channels, 9, 10), torch.randn(3, CTX)
    kernels = _reference_kernels(layer, x, z, transposed=False)
    expected = torch.cat([
        F.conv2d(F.pad(x[b:b + 1], layer._reversed_padding_repeated_twice, mode=layer.padding_mode)
                 if layer.padding_mode != 'zeros' else x[b:b + 1], kernels[b], layer.bias, layer.stride,
                 0 if layer.padding_mode != 'zeros' else layer.padding, layer.dilation, layer.groups)
        for b in range(3)
    ])
    torch.testing.assert_close(layer(x, z), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.kernel_scale(x, z) * layer.weight, kernels, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('groups,stride,output_padding', [(1, 2, 1), (2, 1, 0), (1, 3, 2)])
def test_modulated_conv_transpose_matches_per_sample_loop(groups, stride, output_padding, batch_strategy):
    torch.manual_seed(1)
    layer = ModulatedConvTranspose2d(4, 6, 3, stride=stride, padding=1, output_padding=output_padding,
                                     groups=groups, context_dim=CTX)
    _randomise_generator(layer)
    assert layer.kernel_scale(torch.randn(2, 4, 5, 5), torch.randn(2, CTX)).shape == (2, 4, 6 // groups, 3, 3)
    x, z = torch.randn(2, 4, 5, 6), torch.randn(2, CTX)
    kernels = _reference_kernels(layer, x, z, transposed=True)
    expected = torch.cat([
        F.conv_transpose2d(x[b:b + 1], kernels[b], layer.bias, stride, 1, output_padding, groups) for b in range(2)
    ])
    torch.testing.assert_close(layer(x, z), expected, rtol=1e-5, atol=1e-5)
    # nn.ConvTranspose2d's positional output_size still works on both paths
    size = [(x.shape[2] - 1) * stride + stride, (x.shape[3] - 1) * stride + 1] if stride > 1 else None
    if size is not None:
        assert torch.equal(layer(x, size), nn.ConvTranspose2d.forward(layer, x, size))
        assert layer(x, z, size).shape[-2:] == tuple(size)


@pytest.mark.parametrize('transposed', [False, True])
def test_without_code_is_bit_identical_to_plain_conv(transposed):
    torch.manual_seed(2)
    plain = nn.ConvTranspose2d(4, 5, 3, 2, 1, 1) if transposed else nn.Conv2d(4, 5, 3, 1, 1, groups=1)
    cls = ModulatedConvTranspose2d if transposed else ModulatedConv2d
    context = ModulationContext()
    layer = cls.from_conv(plain, context, context_dim=CTX)
    assert layer.weight is plain.weight and layer.bias is plain.bias
    _randomise_generator(layer)
    x = torch.randn(2, 4, 7, 7)
    assert torch.equal(layer(x), plain(x))
    with context.use(None):
        assert torch.equal(layer(x), plain(x))
    with context.use(torch.randn(2, CTX)):
        assert not torch.allclose(layer(x), plain(x))


def test_batch_strategies_agree_in_values_and_gradients(monkeypatch):
    torch.manual_seed(2)
    layer = ModulatedConv2d(6, 6, 3, padding=1, groups=6, context_dim=CTX)
    _randomise_generator(layer)
    x = torch.randn(3, 6, 7, 7).contiguous(memory_format=torch.channels_last)  # as IDT's token maps arrive
    z = torch.randn(3, CTX)
    results = []
    for fold in (False, True):
        monkeypatch.setattr(modulation, '_fold_batch_into_groups', lambda _: fold)
        layer.zero_grad()
        xi, zi = x.clone().requires_grad_(), z.clone().requires_grad_()
        out = layer(xi, zi)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append([out, xi.grad, zi.grad, layer.weight.grad, layer.generator[0].weight.grad])
    for per_sample, folded in zip(*results):
        torch.testing.assert_close(per_sample, folded, rtol=1e-5, atol=1e-6)


def test_modulated_conv_gradients_pass_gradcheck():
    torch.manual_seed(5)
    layer = ModulatedConv2d(3, 4, 3, padding=1, context_dim=CTX).double()
    _randomise_generator(layer)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    z = torch.randn(2, CTX, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: layer(a, b), (x, z))
    assert torch.autograd.gradcheck(lambda a: layer(a, z.detach()).mean(dim=(2, 3)), (x, ))  # means-only path


def test_kernel_scale_normalisation_and_identity_at_init():
    torch.manual_seed(3)
    layer = ModulatedConv2d(4, 6, 5, padding=2, context_dim=CTX)
    x, z = torch.randn(3, 4, 8, 8), torch.randn(3, CTX)
    assert torch.equal(layer.kernel_scale(x, z), torch.ones(3, 6, 4, 5, 5))  # zero-initialised last Linear
    torch.testing.assert_close(layer(x, z), layer(x), rtol=1e-5, atol=1e-5)
    _randomise_generator(layer, std=2.0)
    scale = layer.kernel_scale(x, z)
    assert scale.shape == (3, 6, 4, 5, 5) and bool((scale > 0).all())
    torch.testing.assert_close(scale.mean(dim=(-2, -1)), torch.ones(3, 6, 4))
    assert scale.std() > 0.1


def test_generator_sizes_follow_coim():
    dense = ModulatedConv2d(48, 32, 3, context_dim=128)
    depthwise = ModulatedConv2d(96, 96, 3, groups=96, context_dim=128)
    transposed = ModulatedConvTranspose2d(16, 8, 4, stride=2, context_dim=128)
    assert [m.out_features for m in dense.generator if isinstance(m, nn.Linear)] == [32, 16, 32 + 48 + 9]
    assert dense.generator[0].in_features == 128 + 48
    assert [m.out_features for m in depthwise.generator if isinstance(m, nn.Linear)] == [6, 16, 96 + 1 + 9]
    assert [m.out_features for m in transposed.generator if isinstance(m, nn.Linear)] == [8, 16, 8 + 16 + 16]


def test_generator_width_bounds_both_hidden_widths_and_survives_copies():
    context = ModulationContext(generator_width=4)
    dense = ModulatedConv2d(48, 32, 3, padding=1, context=context, context_dim=CTX)
    depthwise = ModulatedConv2d(32, 32, 3, padding=1, groups=32, context=context, context_dim=CTX)
    transposed = ModulatedConvTranspose2d(16, 8, 4, stride=2, context=context, context_dim=CTX)
    for layer, outputs in ((dense, 32 + 48 + 9), (depthwise, 32 + 1 + 9), (transposed, 8 + 16 + 16)):
        assert [m.out_features for m in layer.generator if isinstance(m, nn.Linear)] == [4 if layer is not depthwise
                                                                                          else 2, 4, outputs]
    x, z = torch.randn(2, 48, 6, 6), torch.randn(2, CTX)
    torch.testing.assert_close(dense(x, z), dense(x))  # zero-initialised last layer: the plain conv at construction
    _randomise_generator(dense)
    assert not torch.allclose(dense(x, z), dense(x))
    for clone in (copy.deepcopy(dense), pickle.loads(pickle.dumps(dense))):
        assert clone.context.generator_width == 4
        assert torch.equal(clone(x, z), dense(x, z))
    assert ModulationContext().generator_width is None
    for bad in (0, -2, 2.5, True, '8'):
        with pytest.raises(ValueError, match='generator_width: expected a positive integer or null'):
            ModulationContext(bad)


def test_explicit_code_overrides_context_and_single_code_broadcasts():
    torch.manual_seed(4)
    context = ModulationContext()
    layer = ModulatedConv2d(3, 4, 3, padding=1, context=context, context_dim=CTX)
    _randomise_generator(layer)
    x, z1, z2 = torch.randn(2, 3, 6, 6), torch.randn(1, CTX), torch.randn(2, CTX)
    with context.use(z2):
        assert torch.equal(layer(x, z1), layer(x, z1.expand(2, -1)))
        assert torch.equal(layer(x), layer(x, z2))
    with pytest.raises(ValueError, match='shape'):
        layer(x, torch.randn(2, CTX + 1))
    with pytest.raises(ValueError, match='batch 3'):
        layer(x, torch.randn(3, CTX))


def test_context_restores_is_thread_local_and_copies_cleanly():
    context = ModulationContext()
    z1, z2 = torch.ones(1, 2), torch.zeros(1, 2)
    seen = []
    with context.use(z1):
        with context.use(z2):
            assert context.get() is z2
        assert context.get() is z1
        thread = threading.Thread(target=lambda: seen.append(context.get()))
        thread.start()
        thread.join()
    assert context.get() is None and seen == [None]
    with pytest.raises(RuntimeError):
        with context.use(z1):
            raise RuntimeError('boom')
    assert context.get() is None

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
    modulate_convs(net, context, CTX)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert clone[0].context is clone[1].context and clone[0].context is not context
        x, z = torch.randn(1, 3, 8, 8), torch.randn(1, CTX)
        with clone[0].context.use(z):
            with context.use(None):
                assert torch.equal(clone(x), net[1](net[0](x, z), z))


def test_modulate_convs_include_exclude_and_sharing():
    shared = nn.Conv2d(4, 4, 3, padding=1)
    net = nn.Sequential()
    net.add_module('head', nn.Conv2d(3, 4, 3, padding=1))
    net.add_module('proj', nn.Conv2d(4, 4, 1))
    net.add_module('body', nn.Sequential(shared, nn.ReLU(), shared))
    net.add_module('up', nn.ConvTranspose2d(4, 4, 2, 2))
    net.add_module('tail', nn.Conv2d(4, 3, 3, padding=1))
    head_weight = net.head.weight
    names = modulate_convs(copy.deepcopy(net), ModulationContext(), CTX, include=['body.*', 'up'])
    assert names == ['body.0', 'up']
    context = ModulationContext()
    names = modulate_convs(net, context, CTX, exclude='tail')
    assert names == ['head', 'body.0', 'up']
    assert type(net.proj) is nn.Conv2d and type(net.tail) is nn.Conv2d
    assert isinstance(net.up, ModulatedConvTranspose2d) and net.body[0] is net.body[2]
    assert net.head.weight is head_weight and net.head.context is context
    assert modulate_convs(net, context, CTX) == ['tail']  # idempotent: already modulated layers are skipped
    assert modulate_convs(net, context, CTX, option_key='network_g.modulate') == []  # not refused as a subclass
    with pytest.raises(TypeError, match='ModulationContext'):
        modulate_convs(net, object(), CTX)


def test_split_modulation_parameters():
    context = ModulationContext()
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1), ContextEmbedding(4, context=context, context_dim=CTX))
    modulate_convs(net, context, CTX)
    backbone, modulation = split_modulation_parameters(net)
    assert {id(p) for p in backbone} == {id(net[0].weight), id(net[0].bias), id(net[1].weight), id(net[1].bias)}
    expected = list(net[0].generator.parameters()) + list(net[2].parameters())
    assert [id(p) for p in modulation] == [id(p) for p in expected]
    assert isinstance(net[0].generator, KernelScaleGenerator)


class _ListHandler(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_plain_checkpoint_loads_strictly_and_keeps_modulation():
    torch.manual_seed(5)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(4, 4, 3), nn.Conv2d(4, 3, 1))
    checkpoint = copy.deepcopy(plain).state_dict()
    context = ModulationContext()
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(4, 4, 3), nn.Conv2d(4, 3, 1),
                        ContextEmbedding(3, context=context, context_dim=CTX))
    modulate_convs(net, context, CTX)
    for layer in (net[0], net[1]):
        _randomise_generator(layer)
    nn.init.normal_(net[3].proj.weight)
    expected_keys = set(checkpoint) | {f'{i}.generator.{k}' for i in (0, 1) for k in net[0].generator.state_dict()}
    assert set(net.state_dict()) == expected_keys | {'3.proj.weight', '3.proj.bias'}
    modulation_before = {k: v.clone() for k, v in net.state_dict().items() if k not in checkpoint}

    handler = _ListHandler()
    logger = get_root_logger()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        net.load_state_dict(checkpoint, strict=True)
        net.load_state_dict(net.state_dict(), strict=True)  # full checkpoint: nothing to fill, no log line
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert len(handler.messages) == 1 and 'modulation' in handler.messages[0]
    for key, value in net.state_dict().items():
        assert torch.equal(value, checkpoint[key] if key in checkpoint else modulation_before[key]), key
    partial = net.state_dict()
    del partial['0.generator.0.weight']
    with pytest.raises(RuntimeError, match='generator.0.weight'):
        net.load_state_dict(partial, strict=True)


def test_context_embedding():
    torch.manual_seed(6)
    context = ModulationContext()
    embed = ContextEmbedding(5, context=context, context_dim=CTX)
    x = torch.randn(2, 5, 3, 4)
    assert embed(x) is x
    z = torch.randn(2, CTX)
    with context.use(z):
        assert torch.equal(embed(x), x)  # zero-initialised projection
        nn.init.normal_(embed.proj.weight)
        nn.init.normal_(embed.proj.bias)
        shift = F.silu(z) @ embed.proj.weight.t() + embed.proj.bias
        torch.testing.assert_close(embed(x), x + shift[:, :, None, None])
        with pytest.raises(ValueError, match='B, C, H, W'):
            embed(torch.randn(2, 5, 3))


def _composed_kernel_scale(a_rows, a_cols, a_k):
    """The paper's scale written with plain autograd ops: k*k * softmax(sigmoid(a_row + a_col) * a_k)."""
    gate = torch.sigmoid(a_rows[:, :, None] + a_cols[:, None, :])
    return a_k.shape[-1] * torch.softmax(gate[..., None] * a_k[:, None, None, :], dim=-1).unflatten(-1, (3, 3))


@pytest.mark.parametrize('rows, cols, batch', [(6, 4, 2), (3, 1, 2), (2, 5, 2), (6, 4, 1), (2, 3, 3)])
def test_scaled_kernels_equal_the_composed_ops_and_pass_gradcheck(rows: int, cols: int, batch: int):
    from coic_basicsr.archs.modulation_core import ScaledKernels, kernel_scale_from_logits
    torch.manual_seed(rows * 10 + cols + batch)
    leaves = [torch.randn(rows, cols, 3, 3, dtype=torch.float64), torch.randn(batch, rows, dtype=torch.float64),
              torch.randn(batch, cols, dtype=torch.float64), 2 * torch.randn(batch, 9, dtype=torch.float64)]
    grads = []
    for fn in (lambda w, r, c, k: w.unsqueeze(0) * _composed_kernel_scale(r, c, k),
               lambda w, r, c, k: ScaledKernels.apply(w, r, c, k, (3, 3)),
               lambda w, r, c, k: w.unsqueeze(0) * kernel_scale_from_logits(r, c, k, (3, 3))):
        inputs = [t.clone().requires_grad_() for t in leaves]
        out = fn(*inputs)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([out.detach()] + [t.grad for t in inputs])
    for ours in grads[1:]:
        for value, composed in zip(ours, grads[0]):
            torch.testing.assert_close(value, composed, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *t: ScaledKernels.apply(*t, (3, 3)),
                                    [t.clone().requires_grad_() for t in leaves])
    assert torch.autograd.gradcheck(lambda *t: kernel_scale_from_logits(*t, (3, 3)),
                                    [t.clone().requires_grad_() for t in leaves[1:]])
    float_out = ScaledKernels.apply(*[t.float() for t in leaves], (3, 3))
    assert float_out.dtype == torch.float32


def test_scaled_kernels_stay_finite_for_extreme_tap_logits():
    from coic_basicsr.archs.modulation_core import kernel_scale_from_logits
    a_k = torch.tensor([[-300.0, 0.0, 400.0, 1.0, 2.0, 3.0, -4.0, 5.0, 6.0]], requires_grad=True)
    a_rows, a_cols = torch.tensor([[50.0, -50.0]], requires_grad=True), torch.zeros(1, 3, requires_grad=True)
    scale = kernel_scale_from_logits(a_rows, a_cols, a_k, (3, 3))
    scale.sum().backward()
    assert torch.isfinite(scale).all() and all(torch.isfinite(t.grad).all() for t in (a_k, a_rows, a_cols))
    torch.testing.assert_close(scale.sum(dim=(-2, -1)), torch.full((1, 2, 3), 9.0))
