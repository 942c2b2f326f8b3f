"""RDMCContrastivePriorLoss: ratio direction, formula, frozen extractors (VGG19 file / CoIC encoder), errors."""
import math
from pathlib import Path

import pytest
import yaml
import torch
from basicsr.losses import build_loss
from torch.nn import functional as F

from coic_basicsr.archs.coic_encoder_arch import CoICEncoder
from coic_basicsr.losses.rdmc_prior_loss import DRNET_LAYER_WEIGHTS

# torchvision VGG19 conv indices up to conv3_2 (the deepest default layer, relu3_2, is index 13)
_VGG_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256)}



def _write_vgg(path, last_conv: int = 12) -> dict:
    """A random-weight VGG19 ``features`` state dict (torchvision key names) up to ``last_conv``."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for index, (c_in, c_out) in _VGG_CONVS.items():
        if index <= last_conv:
            scale = math.sqrt(2 / (9 * c_in))
            state[f'features.{index}.weight'] = scale * torch.randn(c_out, c_in, 3, 3, generator=gen)
            state[f'features.{index}.bias'] = 0.01 * torch.randn(c_out, generator=gen)
    torch.save(state, path)
    return state


def _write_encoder(path) -> None:
    torch.manual_seed(0)
    encoder = CoICEncoder(context_dim=8, base_channels=4)
    torch.save({'params': encoder.state_dict(), 'params_key': encoder.state_dict()}, path)


def _images():
    """A smooth clean image, its rainy version and outputs near each of them."""
    torch.manual_seed(2)
    gt = F.interpolate(torch.rand(2, 3, 8, 8), size=(32, 32), mode='bilinear', align_corners=False)
    streaks = (torch.rand(2, 1, 1, 32) > 0.7).float() * torch.rand(2, 1, 32, 1)
    lq = (gt + 0.6 * streaks).clamp(0, 1)
    return gt, lq, gt + 0.1 * (lq - gt), gt + 0.9 * (lq - gt)


@pytest.fixture(params=['vgg', 'encoder'])
def prior(request, tmp_path):
    if request.param == 'vgg':
        _write_vgg(tmp_path / 'vgg19.pth')
        return {'type': 'RDMCContrastivePriorLoss', 'vgg_weights': str(tmp_path / 'vgg19.pth')}
    _write_encoder(tmp_path / 'net_enc_10.pth')
    return {'type': 'RDMCContrastivePriorLoss', 'encoder_weights': str(tmp_path / 'net_enc_10.pth')}


def test_ratio_is_below_one_near_clean_and_above_one_near_rainy(prior):
    loss = build_loss(dict(prior, loss_weight=1.0))
    gt, lq, near_clean, near_rainy = _images()
    assert loss.takes_input
    assert loss(near_clean, gt, lq) < 1 < loss(near_rainy, gt, lq)
    half = build_loss(dict(prior, loss_weight=0.5))
    assert torch.allclose(half(near_clean, gt, lq), 0.5 * loss(near_clean, gt, lq))


def test_gradient_reaches_the_output_only_and_the_extractor_stays_frozen(prior):
    loss = build_loss(prior).train()
    assert not loss.extractor.training and not any(p.requires_grad for p in loss.extractor.parameters())
    gt, lq, _, near_rainy = _images()
    pred = near_rainy.clone().requires_grad_(True)
    buffers = {k: v.clone() for k, v in loss.extractor.state_dict().items()}
    loss(pred, gt, lq).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.extractor.parameters())
    assert all(torch.equal(v, loss.extractor.state_dict()[k]) for k, v in buffers.items())  # no BN update


def test_denominator_is_safe(prior):
    loss = build_loss(dict(prior, loss_weight=1.0))
    gt, lq, _, _ = _images()
    assert loss(gt, gt, gt) == 0
    at_input = loss(lq, gt, lq)
    assert torch.isfinite(at_input) and at_input > 1


@pytest.mark.parametrize('use_input_norm', [False, True])
def test_vgg_distance_matches_the_formula_on_recorded_layers(tmp_path, use_input_norm):
    state = _write_vgg(tmp_path / 'vgg19.pth', last_conv=2)
    weights = [0.25, 2.0]
    loss = build_loss({'type': 'RDMCContrastivePriorLoss', 'vgg_weights': str(tmp_path / 'vgg19.pth'),
                       'layers': ['conv1_1', 'relu1_1'], 'layer_weights': weights, 'loss_weight': 1.0, 'eps': 1e-3,
                       'use_input_norm': use_input_norm})
    gt, lq, near_clean, _ = _images()

    def conv(x):
        if use_input_norm:  # torchvision's ImageNet statistics
            x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
                [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return F.conv2d(x, state['features.0.weight'], state['features.0.bias'], padding=1)

    def dist(a, b):
        pre, post = (conv(a) - conv(b)).abs().mean(), (conv(a).relu() - conv(b).relu()).abs().mean()
        return weights[0] * pre + weights[1] * post

    expected = dist(gt, near_clean) / (dist(lq, near_clean) + 1e-3)
    assert torch.allclose(loss(near_clean, gt, lq), expected, rtol=1e-5)


def test_encoder_stages_and_default_weights(tmp_path):
    _write_encoder(tmp_path / 'enc.pth')
    loss = build_loss({'type': 'RDMCContrastivePriorLoss', 'encoder_weights': str(tmp_path / 'enc.pth'),
                       'encoder_param_key': 'params_key'})
    assert loss.extractor.num_stages == 4 and loss.layer_weights == list(DRNET_LAYER_WEIGHTS[1:])
    feats = loss.extractor(torch.rand(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [4, 8, 16, 32]


def test_bad_options_fail_with_clear_messages(tmp_path):
    base = {'type': 'RDMCContrastivePriorLoss'}
    with pytest.raises(FileNotFoundError, match="^vgg_weights: '.*missing.pth' does not exist"):
        build_loss(dict(base, vgg_weights=str(tmp_path / 'missing.pth')))
    with pytest.raises(ValueError, match='exactly one of vgg_weights'):
        build_loss(base)
    _write_vgg(tmp_path / 'short.pth', last_conv=5)
    with pytest.raises(ValueError, match=r"short.pth' lacks 'features.7.weight'"):
        build_loss(dict(base, vgg_weights=str(tmp_path / 'short.pth')))
    with pytest.raises(ValueError, match='encoder_weights'):
        build_loss(dict(base, vgg_weights=str(tmp_path / 'short.pth'), encoder_weights=str(tmp_path / 'short.pth')))
    with pytest.raises(ValueError, match="are not VGG19 layers"):
        build_loss(dict(base, vgg_weights=str(tmp_path / 'short.pth'), layers=['relu9_9']))
    with pytest.raises(ValueError, match=r'^layer_weights: expected 1 weight \(one per stage'):
        build_loss(dict(base, vgg_weights=str(tmp_path / 'short.pth'), layers=['relu1_1'], layer_weights=[1, 1]))
    torch.save({'net': {}}, tmp_path / 'net_enc_1.pth')
    with pytest.raises(ValueError, match="net_enc_1.pth' has no 'params'"):
        build_loss(dict(base, encoder_weights=str(tmp_path / 'net_enc_1.pth')))
    torch.save({'params': {'conv_first.weight': torch.zeros(4, 3, 3, 3)}}, tmp_path / 'net_enc_2.pth')
    with pytest.raises(ValueError, match='not a CoICEncoder state dict'):
        build_loss(dict(base, encoder_weights=str(tmp_path / 'net_enc_2.pth')))
    torch.save({'params': {'conv_first.weight': torch.zeros(4, 3, 3, 3), 'mlp.2.weight': torch.zeros(8, 4)}},
               tmp_path / 'net_enc_3.pth')  # no blocks: was "network_enc.num_blocks must be >= 1", a key not set
    with pytest.raises(ValueError, match=r"^encoder_weights: '.*net_enc_3.pth' \['params'\] is not a CoICEncoder state "
                                         r'dict for RDMCContrastivePriorLoss \(network_enc'):
        build_loss(dict(base, encoder_weights=str(tmp_path / 'net_enc_3.pth')))


def test_an_error_while_training_names_the_loss_section_before_the_loss(tmp_path):
    # a message that starts with the loss's class name goes after the section key, not under it as an option key
    from coic_basicsr.models.loss_sections import build_loss_sections
    _write_vgg(tmp_path / 'vgg19.pth', last_conv=2)
    sections = build_loss_sections({'prior_opt': {'type': 'RDMCContrastivePriorLoss', 'layers': ['relu1_1'],
                                                  'vgg_weights': str(tmp_path / 'vgg19.pth')}}, torch.device('cpu'))
    gray = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError) as err:
        sections['prior']([gray], gray, gray)
    assert str(err.value) == ('train.prior_opt: RDMCContrastivePriorLoss: expected 3-channel images for VGG19 '
                              'features, got 1 channels')


def test_vgg_layer_weights_follow_their_layers_in_any_order(tmp_path):
    _write_vgg(tmp_path / 'vgg19.pth', last_conv=7)
    base = {'type': 'RDMCContrastivePriorLoss', 'vgg_weights': str(tmp_path / 'vgg19.pth'), 'loss_weight': 1.0}
    torch.manual_seed(3)
    pred, gt, lq = torch.rand(3, 1, 3, 16, 16)
    pairs = [('conv1_1', 0.5), ('relu1_1', 2.0), ('pool1', 0.25), ('relu2_2', 1.0)]

    def value(order):
        layers, weights = zip(*[pairs[i] for i in order])
        return build_loss(dict(base, layers=list(layers), layer_weights=list(weights)))(pred, gt, lq)

    in_vgg_order = value([0, 1, 2, 3])
    for order in ([3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]):
        assert torch.allclose(value(order), in_vgg_order, rtol=1e-6), order
    # a zero weight switches off exactly the layer it is listed with
    only_relu1_1 = build_loss(dict(base, layers=['relu1_1'], layer_weights=[1.0]))(pred, gt, lq)
    reversed_pair = build_loss(dict(base, layers=['relu2_2', 'relu1_1'], layer_weights=[0.0, 1.0]))(pred, gt, lq)
    assert torch.allclose(reversed_pair, only_relu1_1, rtol=1e-6)
    extractor = build_loss(dict(base, layers=['relu2_2', 'conv1_1', 'pool1'], layer_weights=[1, 1, 1])).extractor
    assert [tuple(f.shape[1:]) for f in extractor(pred)] == [(128, 8, 8), (64, 16, 16), (64, 8, 8)]


def test_bad_vgg_layers_fail_with_clear_messages(tmp_path):
    _write_vgg(tmp_path / 'vgg19.pth', last_conv=2)
    base = {'type': 'RDMCContrastivePriorLoss', 'vgg_weights': str(tmp_path / 'vgg19.pth')}
    with pytest.raises(ValueError, match=r'^layers: expected at least one VGG19 layer \(default: .*\) for '
                                         r'RDMCContrastivePriorLoss, got \[\]$'):
        build_loss(dict(base, layers=[], layer_weights=[]))
    with pytest.raises(ValueError, match=r"^layers: lists \['relu1_1'\] more than once for RDMCContrastivePriorLoss"):
        build_loss(dict(base, layers=['relu1_1', 'conv1_1', 'relu1_1', 'relu1_1'], layer_weights=[1, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"^layers: expected a list of VGG19 layer names for RDMCContrastivePriorLoss, "
                                         r"got 'relu1_1'$"):
        build_loss(dict(base, layers='relu1_1', layer_weights=[1]))
    with pytest.raises(ValueError, match=r'^layer_weights: expected 2 weights \(one per stage the feature extractor '
                                         r'gives\) for RDMCContrastivePriorLoss, got \[1\]$'):
        build_loss(dict(base, layers=['relu1_1', 'conv1_1'], layer_weights=[1]))
    for message in ('at least one', 'more than once'):  # one line each
        with pytest.raises(ValueError) as err:
            build_loss(dict(base, layers=[] if message == 'at least one' else ['conv1_1'] * 2, layer_weights=[1, 1]))
        assert message in str(err.value) and '\n' not in str(err.value)


@pytest.mark.parametrize('options, message', [
    ({'eps': '1e-6'}, "eps: expected a positive number for RDMCContrastivePriorLoss, got '1e-6' (a string: YAML "
                      'reads 1e-6 without a dot as text; write 1.0e-6 or !!float 1e-6)'),
    ({'eps': 0.0}, 'eps: expected a positive number for RDMCContrastivePriorLoss, got 0.0'),
    ({'loss_weight': '0.1'}, "loss_weight: expected a number >= 0 for RDMCContrastivePriorLoss, got '0.1' (a string: "
                             'write the number without quotes)'),
    ({'loss_weight': None}, 'loss_weight: expected a number >= 0 for RDMCContrastivePriorLoss, got None'),
    ({'layers': ['relu1_1'], 'layer_weights': ['1e-3']}, "layer_weights[0]: expected a number >= 0 for "
                                                          "RDMCContrastivePriorLoss, got '1e-3' (a string: YAML reads "
                                                          '1e-3 without a dot as text; write 1.0e-3 or !!float 1e-3)'),
    ({'layer_weights': 0.5}, 'layer_weights: expected a list of numbers >= 0 (one per feature stage), or null for '
                             'RDMCContrastivePriorLoss, got 0.5'),
    ({'use_input_norm': 'false'}, "use_input_norm: expected true or false for RDMCContrastivePriorLoss, got 'false'"),
    ({'encoder_param_key': 'params_key'}, "encoder_param_key: 'params_key' picks the encoder in an encoder_weights "
                                          'file and vgg_weights has none for RDMCContrastivePriorLoss: remove '
                                          'encoder_param_key'),
    ({'vgg_weights': 5}, 'vgg_weights: expected a string for RDMCContrastivePriorLoss, got 5')])
def test_vgg_options_of_the_wrong_type_are_refused_naming_the_key(tmp_path, options, message):
    _write_vgg(tmp_path / 'vgg19.pth', last_conv=2)
    with pytest.raises(ValueError) as err:
        build_loss({'type': 'RDMCContrastivePriorLoss', 'vgg_weights': str(tmp_path / 'vgg19.pth'), **options})
    assert str(err.value) == message


@pytest.mark.parametrize('options, message', [
    ({'layers': ['relu1_1']}, r"layers: \['relu1_1'\] names VGG19 layers and encoder_weights has none for "
                              'RDMCContrastivePriorLoss .*: remove layers$'),
    ({'layers': 'not_a_layer'}, r"layers: 'not_a_layer' names VGG19 layers"),
    ({'use_input_norm': True}, 'use_input_norm: true normalises VGG19 inputs and encoder_weights has no VGG19 for '
                               'RDMCContrastivePriorLoss .*: remove use_input_norm$'),
    ({'use_input_norm': 'false'}, "use_input_norm: expected true or false for RDMCContrastivePriorLoss, got 'false'$"),
    ({'layer_weights': [1, 1, 1, 1, 1]}, r"layer_weights: expected 4 weights \(one per stage the feature extractor "
                                         r"gives: the encoder's conv_first and 3 blocks\) for "
                                         r'RDMCContrastivePriorLoss, got \[1, 1, 1, 1, 1\]$')])
def test_vgg_only_options_are_refused_with_an_encoder(tmp_path, options, message):
    _write_encoder(tmp_path / 'enc.pth')
    with pytest.raises(ValueError, match=f'^{message}'):
        build_loss({'type': 'RDMCContrastivePriorLoss', 'encoder_weights': str(tmp_path / 'enc.pth'), **options})
    # their defaults, spelt out, are fine
    loss = build_loss({'type': 'RDMCContrastivePriorLoss', 'encoder_weights': str(tmp_path / 'enc.pth'),
                       'layers': ['relu1_1', 'relu1_2', 'pool1', 'relu2_2', 'relu3_2'], 'use_input_norm': False,
                       'layer_weights': [0.1, 0.2, 0.3, 1]})
    assert loss.layer_weights == [0.1, 0.2, 0.3, 1.0]


def test_the_option_files_recipe_for_an_encoder_prior_works(tmp_path):
    """options/rdmc_coic.yml says above prior_opt how to use a trained encoder instead of VGG19: done as written,
    the loss builds (merely swapping the weights file, as its comment once said, does not)."""
    lines = (Path(__file__).resolve().parents[2] / 'options' / 'rdmc_coic.yml').read_text().splitlines()
    at = lines.index('  prior_opt:')
    comment = []
    while lines[at - 1 - len(comment)].lstrip().startswith('#'):
        comment.insert(0, lines[at - 1 - len(comment)])
    comment = ' '.join(comment)
    for step in ('replace vgg_weights by encoder_weights', 'delete layers', 'delete layer_weights',
                 'give it 4 entries', 'use_input_norm must stay false'):
        assert step in comment, step
    prior = yaml.safe_load('\n'.join(lines))['train']['prior_opt']
    _write_encoder(tmp_path / 'net_enc_10.pth')  # 4 stages, as the option file's CoICEncoder
    swapped = {k: v for k, v in prior.items() if k != 'vgg_weights'}
    swapped['encoder_weights'] = str(tmp_path / 'net_enc_10.pth')
    with pytest.raises(ValueError, match=r'^layer_weights: expected 4 weights .*, got \[0.03125, .*, 1.0\]$'):
        build_loss(swapped)
    recipe = {k: v for k, v in swapped.items() if k != 'layers'}
    without_weights = build_loss({k: v for k, v in recipe.items() if k != 'layer_weights'})
    assert without_weights.layer_weights == [0.0625, 0.125, 0.25, 1.0]
    build_loss(dict(recipe, layer_weights=[0.1, 0.2, 0.3, 1.0]))
