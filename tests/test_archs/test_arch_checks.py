"""The shared constructor checks of arch_util: non-integers, bools and numeric strings are refused in one line."""
import numpy as np
import pytest
import yaml
from basicsr.archs import build_network

from coic_basicsr.archs.arch_util import (check_at_least, check_choice, check_flag, check_int_list, option_key,
                                          option_prefix)
from coic_basicsr.utils.option_values import check_number, yaml_text_hint

# (arch, an integer key it passes to check_at_least, the minimum)
AT_LEAST_KEYS = [('CoICDGUNet', 'n_feat', 1), ('CoICDGUNet', 'depth', 0), ('CoICBRN', 'iterations', 1),
                 ('CoICRestormer', 'inp_channels', 1), ('CoICRestormer', 'dim', 2), ('CoICDRSformer', 'dim', 2),
                 ('CoICIDT', 'win_size', 1), ('CoICRCDNet', 'num_stage', 1), ('RDMCNet', 'iterations', 1),
                 ('RDMCNet', 'out_channels', 1), ('CoICRestormer', 'context_dim', 1),
                 ('CoICDRSformer', 'context_dim', 1), ('CoICIDT', 'context_dim', 1),
                 ('CoICRestormer', 'num_refinement_blocks', 0), ('CoICDGUNet', 'num_cab', 1)]


@pytest.mark.parametrize('arch, key, minimum', AT_LEAST_KEYS)
@pytest.mark.parametrize('value', [2.5, 4.0, True, '3'])
def test_every_arch_refuses_a_non_integer_naming_the_key(arch, key, minimum, value):
    with pytest.raises(ValueError) as err:
        build_network({'type': arch, key: value})
    message = str(err.value)
    assert message.startswith(f'network_g.{key}: expected an integer >= {minimum} for {arch}, got {value!r}')
    assert '\n' not in message


def test_check_at_least_keeps_its_range_message_and_takes_numpy_integers():
    with pytest.raises(ValueError, match=r'^network_g\.n: expected an integer >= 1 for Net, got 0$'):
        check_at_least('Net', 1, [('n', 0)])
    check_at_least('Net', 1, [('n', 3), ('m', np.int64(2))])


def test_yaml_text_hint_gives_a_spelling_yaml_reads_as_a_number():
    for text in ('1e-6', '1e6', '1.0e6', '-2E+3'):
        hint = yaml_text_hint(text)
        fixed = hint.split('; write ')[1].split(' or ')[0]
        assert isinstance(yaml.safe_load(f'a: {fixed}')['a'], float), (text, hint)
        assert isinstance(yaml.safe_load(f'a: !!float {text}')['a'], float)
    assert yaml_text_hint('1e-6') == (' (a string: YAML reads 1e-6 without a dot as text; write 1.0e-6 or '
                                      '!!float 1e-6)')
    assert yaml_text_hint('0.5') == ' (a string: write the number without quotes)'
    assert [yaml_text_hint(v) for v in ('abc', 'nan', '', 5, None)] == [''] * 5


def test_check_number_check_int_list_and_check_flag():
    check_number('loss: eps', 1e-6, 'a positive number', lambda v: v > 0)
    for value in ('1e-6', True, 0, float('nan'), None):
        with pytest.raises(ValueError, match=r'^loss: eps: expected a positive number, got '):
            check_number('loss: eps', value, 'a positive number', lambda v: v > 0)
    assert check_int_list('Net', 'widths', (4, np.int64(8)), min_length=2) == [4, 8]
    for value in (8, '48', [4], [4, 8.0], [4, True], [4, 0], None):
        with pytest.raises(ValueError, match=r'^network_g\.widths: expected a list of 2 or more positive integers '
                                             r'for Net, got '):
            check_int_list('Net', 'widths', value, min_length=2)
    with pytest.raises(ValueError, match=r'^network_g\.dilations: expected a non-empty list of positive integers'):
        check_int_list('Net', 'dilations', [])
    check_flag('Net', 'return_stages', False)
    for value in ('false', 0, None):
        with pytest.raises(ValueError, match=r'^network_g\.return_stages: expected true or false for Net, got '):
            check_flag('Net', 'return_stages', value)


# (arch, a key documented as bool); every check runs before any layer is built, so the defaults suffice
FLAG_KEYS = [('CoICRCDNet', 'modulate'), ('CoICBRN', 'modulate'), ('CoICDGUNet', 'modulate'), ('CoICDGUNet', 'bias'),
             ('CoICRestormer', 'modulate'), ('CoICRestormer', 'bias'), ('CoICRestormer', 'dual_pixel_task'),
             ('CoICDRSformer', 'modulate'), ('CoICDRSformer', 'bias'), ('CoICDRSformer', 'mefc'),
             ('CoICIDT', 'modulate'), ('CoICIDT', 'qkv_bias'), ('RDMCNet', 'return_stages')]


@pytest.mark.parametrize('arch, key', FLAG_KEYS)
@pytest.mark.parametrize('value', ['false', 0, None])
def test_every_bool_key_refuses_a_non_bool(arch, key, value):
    # bool('false') is True: modulate: 'false' built the CoIC additions, bias: 'false' the biases
    with pytest.raises(ValueError) as err:
        build_network({'type': arch, key: value})
    assert str(err.value) == f'network_g.{key}: expected true or false for {arch}, got {value!r}'


# (arch, key, value below its minimum, the minimum); context_dim 0 built a Linear(0, ...), -4 failed in torch
BELOW_MINIMUM = [('CoICRestormer', 'context_dim', 0, 1), ('CoICDRSformer', 'context_dim', -4, 1),
                 ('CoICIDT', 'context_dim', 0, 1), ('CoICRestormer', 'num_refinement_blocks', -1, 0),
                 ('CoICDGUNet', 'num_cab', -5, 1), ('CoICEncoder', 'context_dim', 0, 1)]


@pytest.mark.parametrize('arch, key, value, minimum', BELOW_MINIMUM)
def test_integer_keys_below_their_minimum_are_refused(arch, key, value, minimum):
    section = 'network_enc' if arch == 'CoICEncoder' else 'network_g'
    with pytest.raises(ValueError) as err:
        build_network({'type': arch, key: value})
    assert str(err.value) == f'{section}.{key}: expected an integer >= {minimum} for {arch}, got {value}'


@pytest.mark.parametrize('value', [2.5, '16', True, 0])
def test_coicnet_context_dim_is_checked_naming_the_key(value):
    # 2.5 built with context_dim 2, '16' and True were accepted
    with pytest.raises(ValueError, match=r'^network_g\.context_dim: expected an integer >= 1 for CoICNet, got '):
        build_network({'type': 'CoICNet', 'backbone': {'type': 'MSRResNet', 'num_feat': 4, 'num_block': 1,
                                                       'upscale': 1}, 'context_dim': value})


@pytest.mark.parametrize('arch', ['CoICBRN', 'CoICDGUNet', 'CoICRCDNet'])
def test_gate_layout_is_checked_naming_the_key_even_without_modulation(arch):
    # it was "gate_layout must be 'paper' or 'official'" (no key), and unchecked with modulate: false
    with pytest.raises(ValueError) as err:
        build_network({'type': arch, 'gate_layout': 'offical', 'modulate': False})
    assert str(err.value) == f"network_g.gate_layout: expected one of ('paper', 'official') for {arch}, got 'offical'"


@pytest.mark.parametrize('arch, key, value, message', [
    ('CoICRestormer', 'context_dim', '16', 'network_g.context_dim: expected an integer >= 1 for CoICRestormer, '
                                           "got '16' (a string: write the number without quotes)"),
    ('CoICEncoder', 'context_dim', '16', "network_enc.context_dim: expected an integer >= 1 for CoICEncoder, got '16' "
                                         '(a string: write the number without quotes)'),
    ('CoICRestormer', 'num_blocks', [1.5, 1, 1, 1], 'network_g.num_blocks[0]: expected an integer >= 0 for '
                                                    'CoICRestormer, got 1.5'),
    ('CoICDRSformer', 'num_blocks', 4, 'network_g.num_blocks: expected a list of 4 entries (levels 1..4) for '
                                       'CoICDRSformer, got 4'),
    ('CoICRestormer', 'heads', '1248', 'network_g.heads: expected a list of 4 entries (levels 1..4) for '
                                       "CoICRestormer, got '1248'"),
    ('CoICRestormer', 'ffn_expansion_factor', '2.66', 'network_g.ffn_expansion_factor: expected a positive number '
                                                      "for CoICRestormer, got '2.66' (a string: write the number "
                                                      'without quotes)'),
    ('CoICIDT', 'depths', [1.5] + [1] * 8, 'network_g.depths[0]: expected an integer >= 1 for CoICIDT, got 1.5'),
    ('CoICIDT', 'num_heads', 2, 'network_g.num_heads: expected a list of 9 entries (4 encoder layers, the '
                                'bottleneck, 4 decoder layers) for CoICIDT, got 2'),
    ('CoICIDT', 'mlp_ratio', '4', "network_g.mlp_ratio: expected a positive number for CoICIDT, got '4' (a string: "
                                  'write the number without quotes)'),
    ('CoICIDT', 'drop_path_rate', 1.0, 'network_g.drop_path_rate: expected a number in [0, 1) for CoICIDT, '
                                       'got 1.0'),
    ('CoICRCDNet', 'img_range', '255', "network_g.img_range: expected a positive number for CoICRCDNet, got '255' "
                                       '(a string: write the number without quotes)'),
    ('CoICRCDNet', 'img_range', 0, 'network_g.img_range: expected a positive number for CoICRCDNet, got 0'),
    ('CoICIDT', 'qk_scale', '0.5', "network_g.qk_scale: expected a positive number or null for CoICIDT, got '0.5' "
                                   '(a string: write the number without quotes)'),
])
def test_lists_and_numbers_are_checked_naming_the_key(arch, key, value, message):
    # each was a TypeError traceback (1.5 blocks, a string factor) or, for an int list, a confusing len() error
    with pytest.raises(ValueError) as err:
        build_network({'type': arch, key: value})
    assert str(err.value) == message


def test_a_recorded_gate_layout_is_no_obstacle_for_a_network_without_modulated_layers():
    # e.g. loading with strict_load_g: false into a plain backbone
    import torch
    from coic_basicsr.utils.checkpoint import check_gate_layout
    check_gate_layout(torch.nn.Conv2d(3, 3, 3), {'params': {}, 'gate_layout': 'official'}, 'x.pth')


RDMC_BACKBONE = {'type': 'RDMCNet', 'widths': [4, 4], 'dilations': [1], 'iterations': 1}


@pytest.mark.parametrize('key, value, message', [
    ('widths', 3, 'network_g.backbone.widths: expected a list of 2 or more positive integers for RDMCNet, got 3'),
    ('out_channels', 1, 'network_g.backbone.out_channels: expected network_g.backbone.in_channels (3) for RDMCNet (it '
                        'predicts a residual on the input), got 1'),
    ('recruitment', 'x', "network_g.backbone.recruitment: expected one of ('dynamic', 'static', 'none') for RDMCNet, "
                         "got 'x'"),
    ('return_stages', 'no', "network_g.backbone.return_stages: expected true or false for RDMCNet, got 'no'"),
])
def test_a_coicnet_backbone_option_is_named_under_network_g_backbone(key, value, message):
    # it said network_g.<key>, a key the user's network_g (type: CoICNet) does not have
    with pytest.raises(ValueError) as err:
        build_network({'type': 'CoICNet', 'context_dim': 4, 'backbone': dict(RDMC_BACKBONE, **{key: value})})
    assert str(err.value) == message
    with pytest.raises(ValueError, match=r'^network_g\.backbone\.backbone\.iterations: expected an integer >= 1 '):
        build_network({'type': 'CoICNet', 'context_dim': 4, 'backbone': {
            'type': 'CoICNet', 'context_dim': 4, 'backbone': dict(RDMC_BACKBONE, iterations=0)}})
    with pytest.raises(ValueError, match=r'^network_g\.iterations: expected an integer >= 1 for RDMCNet, got 0$'):
        build_network(dict(RDMC_BACKBONE, iterations=0))  # the prefix is restored after a failed build


def test_option_prefix_names_keys_for_one_build_and_an_explicit_section_wins():
    with option_prefix('--opt '):
        assert option_key('widths') == '--opt widths'
        with pytest.raises(ValueError, match=r"^--opt gate_layout: expected one of \('paper', 'official'\) for Net"):
            check_choice('Net', 'gate_layout', 'x', ('paper', 'official'))
        with pytest.raises(ValueError, match=r'^network_enc\.num_blocks: expected an integer >= 1 for CoICEncoder'):
            build_network({'type': 'CoICEncoder', 'num_blocks': 0})
    assert option_key('widths') == 'network_g.widths'
    with pytest.raises(ValueError, match=r"^network_g\.modulate: expected keys among \('include', 'exclude', "
                                         r"'generator_width'\) for CoICNet \(unknown: includ\), got \{'includ'"):
        build_network({'type': 'CoICNet', 'context_dim': 4, 'backbone': RDMC_BACKBONE, 'modulate': {'includ': ['*']}})
