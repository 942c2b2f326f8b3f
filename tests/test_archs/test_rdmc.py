"""RDMCNet: weight-shared recursion, dilation branches, input-dependent recruitment gates, use inside CoICNet."""
import pytest
import torch
from basicsr.archs import build_network
from torch import nn

from coic_basicsr.archs.modulation import ModulatedConv2d
from coic_basicsr.archs.rdmc_arch import RDMCNet, RecruitGate

TINY = {'widths': [4, 4, 8, 8], 'dilations': [1, 2, 3]}



def _net(**kwargs) -> RDMCNet:
    torch.manual_seed(0)
    return RDMCNet(**{**TINY, **kwargs})


def _images(batch: int = 2, size=(32, 32)) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(batch, 3, *size)


def test_recursion_shares_weights_and_every_pass_changes_the_estimate():
    counts = {t: sum(p.numel() for p in _net(iterations=t).parameters()) for t in (1, 3, 5)}
    assert len(set(counts.values())) == 1, counts
    net = _net(iterations=3, return_stages=True).eval()
    x = _images()
    with torch.no_grad():
        stages = net(x)
    assert len(stages) == 3 and all(s.shape == x.shape for s in stages)
    previous = x
    for stage in stages:
        assert (stage - previous).abs().mean() > 1e-4
        previous = stage
    with torch.no_grad():  # the final output is the third application of the same single pass (32 needs no pad)
        estimate = x
        for _ in range(3):
            estimate = net.single_pass(x, estimate)
    assert torch.allclose(estimate, stages[-1], atol=1e-6)
    assert torch.equal(_net(iterations=3).eval()(x), stages[-1])  # return_stages only changes what is returned


def test_every_dilation_branch_receives_gradient():
    net = _net(iterations=2)
    x = _images()
    net(x).square().mean().backward()
    dilations = []
    for branch in net.branches:
        grads = [p.grad for p in branch.parameters()]
        assert all(g is not None for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0
        dilated = [m for m in branch.modules() if isinstance(m, nn.Conv2d) and m.dilation[0] > 1]
        dilations.append(dilated[0].dilation[0] if dilated else 1)
    assert dilations == [1, 2, 3]


def test_dynamic_gates_depend_on_the_input_and_static_ones_do_not():
    x = torch.cat([_images(1), 0.2 * _images(1).flip(-1)])
    for mode, differ in (('dynamic', True), ('static', False)):
        net = _net(recruitment=mode).eval()
        gates = []
        hooks = [m.register_forward_hook(lambda mod, inp, out: gates.append(out.expand(2, -1, -1, -1)))
                 for m in net.modules() if isinstance(m, RecruitGate)]
        with torch.no_grad():
            net(x)
        for hook in hooks:
            hook.remove()
        # 3 levels x (up + down) minus the bottleneck's 'up', per pass
        assert len(gates) == net.iterations * 5
        assert any(not torch.allclose(g[0], g[1]) for g in gates) == differ, mode
        assert all(((g > 0) & (g < 1)).all() for g in gates)
    assert _net(recruitment='none').recruit is None


def test_odd_sizes_and_z_none_and_errors():
    net = _net(iterations=2).eval()
    x = _images(1, (19, 27))
    with torch.no_grad():
        assert net(x).shape == x.shape
        assert torch.equal(net(x, None), net(x))
    with pytest.raises(ValueError, match='CoICNet'):
        net(x, torch.zeros(1, 8))
    for key, value in (('iterations', 0), ('recruitment', 'always'), ('widths', [4]), ('dilations', []),
                       ('in_channels', 0), ('gate_reduction', 0)):
        with pytest.raises(ValueError, match=f'network_g.{key}'):
            RDMCNet(**{**TINY, key: value})


@pytest.mark.parametrize('key, value, expected', [
    ('widths', 8, 'a list of 2 or more positive integers'), ('widths', '48', 'a list of 2 or more positive integers'),
    ('widths', [4, 8.0], 'a list of 2 or more positive integers'),
    ('dilations', 3, 'a non-empty list of positive integers'),
    ('dilations', '123', 'a non-empty list of positive integers'),
    ('dilations', [1.9, 2.2], 'a non-empty list of positive integers'),
    ('dilations', [1, True], 'a non-empty list of positive integers')])
def test_list_options_refuse_scalars_strings_and_non_integers(key, value, expected):
    with pytest.raises(ValueError) as err:
        build_network({'type': 'RDMCNet', **TINY, key: value})
    assert str(err.value) == f'network_g.{key}: expected {expected} for RDMCNet, got {value!r}'


@pytest.mark.parametrize('key, value', [('iterations', 2.5), ('iterations', 2.0), ('gate_reduction', '4'),
                                        ('in_channels', True), ('out_channels', 3.0)])
def test_integer_options_refuse_non_integers(key, value):
    with pytest.raises(ValueError, match=rf'^network_g\.{key}: expected an integer >= 1 for RDMCNet, got '):
        build_network({'type': 'RDMCNet', **TINY, key: value})


@pytest.mark.parametrize('value', ['false', 'true', 0, None])
def test_return_stages_must_be_a_boolean_not_a_string(value):
    with pytest.raises(ValueError, match=r'^network_g\.return_stages: expected true or false for RDMCNet, got '):
        build_network({'type': 'RDMCNet', **TINY, 'return_stages': value})


def test_the_deepest_decoder_level_recruits_no_up_path():
    net = _net(widths=[4, 4, 8, 8, 8])  # five levels, as the defaults: four decoder levels
    assert sorted(net.recruit) == ['down0', 'down1', 'down2', 'down3', 'up0', 'up1', 'up2']


def test_inside_coicnet_dilated_convs_are_modulated_and_z_none_is_the_plain_net():
    options = {'type': 'RDMCNet', 'iterations': 2, **TINY}
    torch.manual_seed(0)
    plain = build_network(options).eval()
    wrapped = build_network({'type': 'CoICNet', 'backbone': options, 'context_dim': 8}).eval()
    wrapped.load_state_dict(plain.state_dict())  # plain checkpoint into the wrapper
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
    modulated = [m for m in wrapped.modules() if isinstance(m, ModulatedConv2d)]
    assert len(modulated) == len(convs) == len(wrapped.modulated_layers)
    assert any(m.dilation[0] == 3 for m in modulated) and any(m.stride[0] == 2 for m in modulated)
    assert not any(type(m) is nn.Conv2d and m.kernel_size[0] > 1 for m in wrapped.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in wrapped.modules()) == \
        sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    x, z = _images(), torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(wrapped(x), plain(x))
        assert torch.allclose(wrapped(x, z), plain(x), atol=1e-5)  # zero-initialised generators: identity
        for m in modulated:
            nn.init.normal_(m.generator[-1].weight, std=0.5)
        out_z = wrapped(x, z)
    assert not torch.allclose(out_z, plain(x), atol=1e-3)
    wrapped.train()
    wrapped(x, z).mean().backward()
    assert all(m.generator[-1].weight.grad is not None for m in modulated)


def test_the_dynamic_recruit_gate_depends_on_the_recruited_map():
    torch.manual_seed(0)
    gate = RecruitGate(8, 'dynamic')
    target = torch.rand(2, 8, 6, 6)
    g1, g2 = gate(target, torch.rand(2, 8, 6, 6)), gate(target, torch.rand(2, 8, 6, 6) * 5)
    assert g1.shape == (2, 8, 1, 1) and not torch.allclose(g1, g2)


def test_both_recruit_gates_of_a_level_see_the_decoder_map_before_either_contribution():
    torch.manual_seed(0)
    net = RDMCNet(widths=(4, 8, 8), dilations=(1,), iterations=1).eval()
    seen = {}
    net.decoder[0].register_forward_hook(lambda m, a, out: seen.__setitem__('decoder', out))
    for kind in ('up', 'down'):
        net.recruit[f'{kind}0'].register_forward_pre_hook(lambda m, args, kind=kind: seen.__setitem__(kind, args[0]))
    with torch.no_grad():
        net(torch.rand(1, 3, 16, 16))
    assert torch.equal(seen['up'], seen['decoder']) and torch.equal(seen['down'], seen['decoder'])
