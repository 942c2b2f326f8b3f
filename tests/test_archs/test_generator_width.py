"""``generator_width``: the compact CoI-M generators of every CoIC arch, from YAML options to the parameter budget."""
import pytest
import torch
from torch import nn

from basicsr.archs import build_network

from coic_basicsr.archs.conv_selection import split_modulation_parameters
from coic_basicsr.archs.modulation import KernelScaleGenerator, ModulatedConv2d, ModulatedConvTranspose2d
from coic_basicsr.utils.checkpoint import describe_shape_mismatches

TINY = {
    'CoICRestormer': dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 8], context_dim=8),
    'CoICDRSformer': dict(dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 2, 2, 4], context_dim=8),
    'CoICIDT': dict(img_size=32, embed_dim=4, depths=[2, 1, 1, 1, 1, 1, 1, 1, 2],
                    num_heads=[1, 2, 4, 8, 16, 16, 8, 4, 2], win_size=4, spatial_win_size=4, context_dim=8),
    'CoICBRN': dict(channels=4, num_res_blocks=2, num_rain_res_blocks=1, iterations=2, context_dim=8),
    'CoICRCDNet': dict(num_map=4, num_channel=3, num_block=1, num_stage=2, context_dim=8),
    'CoICDGUNet': dict(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, depth=2, context_dim=8),
}


def _hidden_widths(net: nn.Module) -> list:
    return [linear.out_features for gen in net.modules() if isinstance(gen, KernelScaleGenerator)
            for linear in list(gen)[:-1] if isinstance(linear, nn.Linear)]


def _outputs(out) -> list:
    return list(out) if isinstance(out, (list, tuple)) else [out]  # multi-stage nets: every stage's output


@pytest.mark.parametrize('name', sorted(TINY))
def test_yaml_generator_width_bounds_every_generator_and_trains(name: str) -> None:
    torch.manual_seed(0)
    authors = build_network(dict(TINY[name], type=name))
    compact = build_network(dict(TINY[name], type=name, generator_width=2))
    assert max(_hidden_widths(authors)) > 2 and max(_hidden_widths(compact)) == 2
    assert len(_hidden_widths(compact)) == len(_hidden_widths(authors)) > 0
    n_compact = sum(p.numel() for p in split_modulation_parameters(compact)[1])
    assert n_compact < sum(p.numel() for p in split_modulation_parameters(authors)[1])

    for layer in compact.modules():  # move every generator off its identity start
        if isinstance(layer, (ModulatedConv2d, ModulatedConvTranspose2d)):
            nn.init.normal_(layer.generator[-1].weight, std=0.3)
    compact.eval()
    x, z = torch.rand(2, 3, 16, 16), torch.randn(2, 8)
    with torch.no_grad():
        plain = _outputs(compact(x))
    outs = _outputs(compact(x, z))
    assert outs[-1].shape == plain[-1].shape and not torch.allclose(outs[-1], plain[-1])
    sum(out.square().mean() for out in outs).backward()
    # the last bias: with 2 hidden units a generator's ReLUs may all be off for these inputs
    grads = [layer.generator[-1].bias.grad for layer in compact.modules() if hasattr(layer, 'generator')]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_coic_net_takes_generator_width_in_its_modulate_dict() -> None:
    backbone = dict(type='MSRResNet', num_in_ch=3, num_out_ch=3, num_feat=32, num_block=1, upscale=2)
    net = build_network(dict(type='CoICNet', backbone=backbone, context_dim=8, modulate={'generator_width': 3}))
    assert set(_hidden_widths(net)) == {3}
    with pytest.raises(ValueError, match=r'^network_g\.modulate\.generator_width: expected a positive integer or null'):
        build_network(dict(type='CoICNet', backbone=backbone, context_dim=8, modulate={'generator_width': 0}))


@pytest.mark.parametrize('bad', [0, -1, 1.5, 'wide'])
def test_bad_generator_width_is_a_one_line_error(bad) -> None:
    with pytest.raises(ValueError, match=r"^network_g\.generator_width: expected a positive integer or null, got"):
        build_network(dict(TINY['CoICRestormer'], type='CoICRestormer', generator_width=bad))


@pytest.mark.parametrize('name', ['CoICRestormer', 'CoICDRSformer', 'CoICIDT'])
def test_paper_scale_overhead_is_under_ten_percent_with_width_4(name: str) -> None:
    """The numbers docs/benchmarks.md publishes: the authors' widths cost 15-42 % of the backbone, width 4 < 10 %."""
    n_plain = sum(p.numel() for p in build_network(dict(type=name, modulate=False)).parameters())
    ratios = {}
    for width in (None, 4):
        backbone, modulation = split_modulation_parameters(build_network(dict(type=name, generator_width=width)))
        assert sum(p.numel() for p in backbone) == n_plain
        ratios[width] = sum(p.numel() for p in modulation) / n_plain
    assert ratios[None] > 0.15 and ratios[4] < 0.10


def test_shape_mismatch_hint_names_generator_width_only_when_only_generators_differ() -> None:
    net = build_network(dict(TINY['CoICRestormer'], type='CoICRestormer'))
    compact = build_network(dict(TINY['CoICRestormer'], type='CoICRestormer', generator_width=2))
    wider = build_network(dict(TINY['CoICRestormer'], type='CoICRestormer', dim=16))
    assert describe_shape_mismatches(net, net.state_dict()) == ''
    assert 'network_g.generator_width' in describe_shape_mismatches(net, compact.state_dict())
    backbone_differs = describe_shape_mismatches(net, wider.state_dict())
    assert 'tensors differ in shape' in backbone_differs
    assert 'generator_width' not in backbone_differs
