"""``basicsr convert-official``: key mapping, generator row order vs the official CoI-M formula, errors, weights."""
import re
from pathlib import Path
from typing import Dict

import pytest
import torch
import yaml
from torch import Tensor
from torch.nn import functional as F

import coic_basicsr  # noqa: F401  (shim + registration)
from basicsr.archs import build_network
from coic_basicsr.archs.coic_brn_arch import CoICBRN
from coic_basicsr.archs.coic_dgunet_arch import CoICDGUNet
from coic_basicsr.archs.coic_encoder_arch import CoICEncoder
from coic_basicsr.archs.coic_rcdnet_arch import CoICRCDNet
from coic_basicsr.archs.modulation import ModulatedConv2d, ModulatedConvTranspose2d
from coic_basicsr.models.portable import build_model
from coic_basicsr.tools.convert import convert_backbone, convert_encoder, load_official, main
from coic_basicsr.tools.inference import load_weights
from helpers.coic import in_memory, tiny_coic_options

WEIGHTS = Path(__file__).resolve().parents[2].parent / 'shared' / 'weights'
TINY_BRN = dict(channels=4, num_res_blocks=2, num_rain_res_blocks=1, iterations=2)



def official_layout(net: torch.nn.Module, seed: int = 0) -> Dict[str, Tensor]:
    """An official CoIC-style state dict for ``net``'s structure: every modulated conv becomes a TConv
    (``<conv>.base_conv.conv.*`` plus ``<conv>.g2pa_wgen.{0,2,4}.*``), with random generator weights."""
    g = torch.Generator().manual_seed(seed)
    modulated = {n for n, m in net.named_modules() if isinstance(m, (ModulatedConv2d, ModulatedConvTranspose2d))}
    out = {}
    for key, value in net.state_dict().items():
        conv, _, leaf = key.rpartition('.')
        if '.generator.' in key:
            conv, _, rest = key.partition('.generator.')
            out[f'{conv}.g2pa_wgen.{rest}'] = torch.randn(value.shape, generator=g) * 0.5
        elif conv in modulated:
            out[f'{conv}.base_conv.conv.{leaf}'] = value.clone()
        else:
            out[key] = value.clone()
    return out


def official_kernel_scale(a: Tensor, c_in: int, c_out: int, k: int, transposed: bool) -> Tensor:
    """The official CoIM.py computation: gate = sigmoid(w1[None, :] + w2[:, None]) of shape (len(w2), len(w1)),
    times a_k, softmax over the window, times k*k, then ``view``-ed into the weight layout."""
    first, second = (c_in, c_out) if transposed else (c_out, c_in)
    w1, w2, w3 = a[:, :first], a[:, first:first + second], a[:, first + second:]
    gate = torch.sigmoid(w1[:, None, :] + w2[:, :, None])
    scale = torch.softmax(gate[..., None] * w3[:, None, None, :], dim=-1) * k * k
    shape = (c_in, c_out) if transposed else (c_out, c_in)
    return scale.reshape(a.shape[0], *shape, k, k)


def test_converted_generators_reproduce_the_official_kernel_scales_square_or_not():
    torch.manual_seed(0)
    # constant U-Net widths make the up-sampling (transposed) convs square too
    ref = CoICDGUNet(n_feat=8, scale_unetfeats=0, scale_orsnetfeats=4, depth=1, context_dim=6)
    official = official_layout(ref)
    for name in ('sam12.conv1', 'stage1_encoder.body.0.identity'):  # 1x1 TConvs: generators the forward never uses
        c_out, c_in = official[f'{name}.weight'].shape[:2]
        official[f'{name}.base_conv.conv.weight'] = official.pop(f'{name}.weight')
        if f'{name}.bias' in official:
            official[f'{name}.base_conv.conv.bias'] = official.pop(f'{name}.bias')
        for j, (n_out, n_in) in enumerate(((c_out, 6 + c_in), (16, c_out), (c_in + c_out + 1, 16))):
            official[f'{name}.g2pa_wgen.{2 * j}.weight'] = torch.randn(n_out, n_in)
            official[f'{name}.g2pa_wgen.{2 * j}.bias'] = torch.randn(n_out)
    params, options, notes = convert_backbone(official, 'dgunet')
    assert options['context_dim'] == 6 and options['modulate'] is True
    net = CoICDGUNet(**{k: v for k, v in options.items() if k != 'type'})
    net.load_state_dict(params, strict=True)
    assert options['gate_layout'] == 'official'
    exact_conv = exact_up = non_square = 0
    for name, m in net.named_modules():
        if not isinstance(m, (ModulatedConv2d, ModulatedConvTranspose2d)):
            continue
        transposed = isinstance(m, ModulatedConvTranspose2d)
        x, z = torch.randn(2, m.in_channels, 6, 6), torch.randn(2, 6)
        h = torch.cat([z, x.mean(dim=(2, 3))], 1)
        for j in (0, 2):
            layer = f'{name}.g2pa_wgen.{j}'
            h = torch.relu(F.linear(h, official[f'{layer}.weight'], official[f'{layer}.bias']))
        a = F.linear(h, official[f'{name}.g2pa_wgen.4.weight'], official[f'{name}.g2pa_wgen.4.bias'])
        theirs = official_kernel_scale(a, m.in_channels, m.out_channels, m.kernel_size[0], transposed)
        assert torch.allclose(m.kernel_scale(x, z), theirs, atol=1e-5), name
        exact_conv += not transposed
        exact_up += transposed
        non_square += m.in_channels != m.out_channels
        if m.in_channels != m.out_channels:  # the paper's per-channel gate is a different function there
            m.gate_layout = 'paper'
            assert not torch.allclose(m.kernel_scale(x, z), theirs, atol=1e-5), name
            m.gate_layout = 'official'
    assert exact_conv > 10 and exact_up >= 1 and non_square > 0
    assert 'dropped 12 keys unused by the official forward: sam12.conv1.g2pa_wgen.0.weight' in notes[0]


def test_brn_original_layout_and_cli_outputs(tmp_path, capsys):
    plain = CoICBRN(**TINY_BRN, modulate=False)
    original = {}
    for key, value in plain.state_dict().items():  # the original BRN code: nn.Sequential(conv, act[, conv, act])
        key = re.sub(r'^(res_conv\d+(?:_r)?)\.conv1\.', r'\1.0.', key)
        key = re.sub(r'^(res_conv\d+(?:_r)?)\.conv2\.', r'\1.2.', key)
        original[re.sub(r'^(conv\w*)\.conv\.', r'\1.0.', key)] = value
    assert 'conv0.0.weight' in original and 'res_conv2.2.bias' in original and 'res_conv1_r.0.weight' in original
    src = tmp_path / 'brn_model.pth'
    torch.save({'state_dict': {f'module.{k}': v for k, v in original.items()}}, src)  # DataParallel-style wrapper
    out_dir = str(tmp_path / 'out')
    assert main(['--arch', 'brn', '--model', str(src), '--out-dir', out_dir, '--opt', 'iterations=2']) == 0
    snippet = yaml.safe_load(capsys.readouterr().out.split('option file sections:\n')[1])
    assert snippet['network_g']['iterations'] == 2 and snippet['network_g']['modulate'] is False
    net = build_network(snippet['network_g'])
    net.load_state_dict(torch.load(snippet['path']['pretrain_network_g'], weights_only=True)['params'], strict=True)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(x), plain(x))


def test_unmapped_missing_and_bad_arguments_are_one_line_errors(tmp_path, capsys):
    plain = CoICRCDNet(num_map=2, num_channel=2, num_block=1, num_stage=2, modulate=False)
    sd = plain.state_dict()
    params, options, _ = convert_backbone(dict(sd), 'rcdnet')
    assert options['num_stage'] == 2 and options['num_block'] == 1 and options['num_map'] == 2
    bad = tmp_path / 'bad.pth'
    torch.save({**sd, 'proxNet_B_0.extra.weight': torch.zeros(1), 'head.bias': torch.zeros(1)}, bad)
    assert main(['--arch', 'rcdnet', '--model', str(bad), '--out-dir', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'no counterpart in CoICRCDNet (2)' in err and 'head.bias' in err
    torch.save({k: v for k, v in sd.items() if k != 'tau'}, bad)
    assert main(['--arch', 'rcdnet', '--model', str(bad), '--out-dir', str(tmp_path)]) == 2
    assert 'parameters not in the checkpoint (1): tau' in capsys.readouterr().err
    assert main(['--arch', 'brn', '--model', str(tmp_path / 'none.pth'), '--out-dir', str(tmp_path)]) == 2
    assert 'does not exist' in capsys.readouterr().err
    assert main(['--arch', 'brn', '--out-dir', str(tmp_path)]) == 2
    assert '--model and/or --encoder' in capsys.readouterr().err
    with pytest.raises(ValueError, match='does not look like an official dgunet'):
        convert_backbone(dict(sd), 'dgunet')
    torch.save(sd, bad)
    assert main(['--arch', 'rcdnet', '--model', str(bad), '--out-dir', str(tmp_path), '--opt', 'nokey=8']) == 2
    assert 'error: --opt nokey: CoICRCDNet has no such option (its options: ' in capsys.readouterr().err


def test_dgunet_plain_drops_the_unused_concat12_and_plain_flag_drops_generators():
    ref = CoICDGUNet(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, depth=1)
    official = official_layout(ref)
    official.update({'basic.concat12.weight': torch.zeros(8, 16, 3, 3)})
    params, options, notes = convert_backbone(official, 'dgunet', plain=True)
    assert options['modulate'] is False and not any('generator' in k for k in params)
    assert notes[0].startswith('--plain: dropped') and 'basic.concat12.weight' in notes[1]
    CoICDGUNet(**{k: v for k, v in options.items() if k != 'type'}).load_state_dict(params, strict=True)


def _moco_layout(q: CoICEncoder, k: CoICEncoder) -> Dict[str, Tensor]:
    """Official contrastive.py names: conv1, resblock.N.block.{0,1,3,4}, resblock.N.short_cut.{0,1}, mlp.{0,2}."""
    def official(key: str) -> str:
        key = key.replace('conv_first.', 'conv1.')
        key = re.sub(r'^blocks\.(\d+)\.body\.', r'resblock.\1.block.', key)
        return re.sub(r'^blocks\.(\d+)\.shortcut\.', r'resblock.\1.short_cut.', key)
    return {f'{prefix}.{official(key)}': v for prefix, net in (('encoder_q', q), ('encoder_k', k))
            for key, v in net.state_dict().items()}


def test_encoder_query_and_key_are_both_converted(tmp_path, capsys):
    torch.manual_seed(0)
    q, k = CoICEncoder(context_dim=8, base_channels=4), CoICEncoder(context_dim=8, base_channels=4)
    moco = _moco_layout(q, k)
    assert 'encoder_k.resblock.2.short_cut.1.running_var' in moco and 'encoder_q.conv1.weight' in moco
    out, options = convert_encoder(moco)
    assert options == {'type': 'CoICEncoder', 'in_channels': 3, 'context_dim': 8, 'base_channels': 4, 'num_blocks': 3}
    assert all(torch.equal(out['params'][n], v) for n, v in q.state_dict().items())
    assert all(torch.equal(out['params_key'][n], v) for n, v in k.state_dict().items())
    src = tmp_path / 'enc.pth'
    torch.save({**moco, 'encoder_q.head.weight': torch.zeros(1)}, src)
    assert main(['--arch', 'brn', '--encoder', str(src), '--out-dir', str(tmp_path)]) == 2
    assert 'encoder_q.head.weight' in capsys.readouterr().err
    torch.save(moco, src)
    assert main(['--arch', 'brn', '--encoder', str(src), '--out-dir', str(tmp_path), '--name', 'x']) == 0
    saved = torch.load(tmp_path / 'x_net_enc.pth', weights_only=True)
    assert set(saved) == {'params', 'params_key'}
    CoICEncoder(context_dim=8, base_channels=4).load_state_dict(saved['params_key'], strict=True)


@pytest.mark.skipif(not (WEIGHTS / 'brn_coic_model.pth').is_file(),
                    reason=f'official weights not found: {WEIGHTS}/brn_coic_model.pth')
def test_official_coic_brn_converts_with_every_generator(tmp_path):
    official = load_official(str(WEIGHTS / 'brn_coic_model.pth'))
    assert main(['--arch', 'brn', '--model', str(WEIGHTS / 'brn_coic_model.pth'), '--out-dir', str(tmp_path)]) == 0
    params = torch.load(tmp_path / 'brn_coic_net_g.pth', weights_only=True)['params']
    assert sum('.generator.' in k for k in params) == sum('.g2pa_wgen.' in k for k in official) == 28 * 6
    for name in ('res_conv1.conv1', 'conv0.conv'):  # generators copied as they are; the layout does the rest
        assert torch.equal(params[f'{name}.generator.4.weight'], official[f'{name}.g2pa_wgen.4.weight'])
    net = CoICBRN(iterations=4, gate_layout='official').eval()
    net.load_state_dict(params, strict=True)
    x = torch.rand(1, 3, 24, 24)
    z1, z2 = F.normalize(torch.randn(2, 128), dim=1).split(1)
    with torch.no_grad():
        y0, y1, y2 = net(x), net(x, z1), net(x, z2)
    assert all(torch.isfinite(y).all() for y in (y0, y1, y2))
    assert (y1 - y2).abs().mean() > 1e-3 and (y1 - y0).abs().mean() > 1e-3
    print(f'mean |out(z1) - out(z2)| = {(y1 - y2).abs().mean():.4f}, mean |out(z1) - out(None)| = '
          f'{(y1 - y0).abs().mean():.4f}')


@pytest.mark.skipif(not (WEIGHTS / 'brn_baseline_mixed.pth').is_file(),
                    reason=f'official weights not found: {WEIGHTS}/brn_baseline_mixed.pth')
def test_official_baseline_brn_loads_strictly_into_plain_and_coic_archs():
    official = load_official(str(WEIGHTS / 'brn_baseline_mixed.pth'))
    params, options, notes = convert_backbone(official, 'brn')
    assert options['modulate'] is False and not notes and len(params) == len(official) == 56
    assert sum(v.numel() for v in params.values()) == sum(v.numel() for v in official.values())
    CoICBRN(modulate=False).load_state_dict(params, strict=True)
    CoICBRN().load_state_dict(params, strict=True)  # generators keep their zero init


def test_converted_coic_checkpoint_records_its_gate_layout_and_refuses_the_other(tmp_path, capsys):
    src, out_dir = tmp_path / 'coic_brn.pth', tmp_path / 'out'
    torch.save(official_layout(CoICBRN(**TINY_BRN, context_dim=16)), src)
    assert main(['--arch', 'brn', '--model', str(src), '--out-dir', str(out_dir), '--opt', 'iterations=2']) == 0
    snippet = yaml.safe_load(capsys.readouterr().out.split('option file sections:\n')[1])
    converted = snippet['path']['pretrain_network_g']
    assert torch.load(converted, weights_only=True)['gate_layout'] == 'official'
    official = build_network(snippet['network_g'])
    assert load_weights(official, converted, ['params'], 'network_g') == 'params'
    paper = build_network(dict(snippet['network_g'], gate_layout='paper'))
    with pytest.raises(ValueError, match=r'gate_layout: official, the network uses paper: set network_g\.gate_layout'):
        load_weights(paper, converted, ['params'], 'network_g')

    # training from it keeps the record in every checkpoint it saves, and loading checks it as well
    opt = in_memory(tiny_coic_options(), tmp_path)
    opt['network_g'] = snippet['network_g']
    model = build_model(opt)
    model.load_network(model.net_g, converted)
    model.save_network(model.net_g, 'net_g', 1)
    saved = tmp_path / 'experiments' / 'tiny_coic' / 'models' / 'net_g_1.pth'
    assert torch.load(saved, weights_only=True)['gate_layout'] == 'official'
    with pytest.raises(ValueError, match='set network_g.gate_layout: official'):
        model.load_network(paper, str(saved))


@pytest.mark.parametrize('override', ['gate_layout=paper', 'gate_layout=official', 'modulate=false', 'modulate=true'])
def test_modulate_and_gate_layout_follow_the_checkpoint_and_are_refused_in_opt(tmp_path, capsys, override):
    src, out_dir = tmp_path / 'coic_brn.pth', tmp_path / 'out'
    torch.save(official_layout(CoICBRN(**TINY_BRN, context_dim=16)), src)
    args = ['--arch', 'brn', '--model', str(src), '--out-dir', str(out_dir), '--opt', 'iterations=2']
    assert main(args + ['--opt', override]) == 2 and not out_dir.exists()
    err = capsys.readouterr().err
    key = override.split('=')[0]
    assert err.count('\n') == 1
    assert err.startswith(f'basicsr convert-official: error: --opt {key}: inferred from the checkpoint (')
    assert main(args + ['--opt', 'nokey=1']) == 2
    listed = capsys.readouterr().err.split('its options: ')[1]
    assert 'iterations' in listed and 'modulate' not in listed and 'gate_layout' not in listed
    assert main(args) == 0  # a CoIC model without --encoder: the user learns it would run as the plain backbone
    assert 'note: no --encoder: without network_enc the network runs with z=None' in capsys.readouterr().out


@pytest.mark.parametrize('override, message', [
    ('iterations=0', '--opt iterations: expected an integer >= 1 for CoICBRN, got 0'),
    ('generator_width=0', '--opt generator_width: expected a positive integer or null, got 0')])
def test_a_bad_opt_value_is_named_as_the_user_wrote_it(tmp_path, capsys, override, message):
    # it said network_g.iterations, a key of no file the user wrote
    src = tmp_path / 'brn.pth'
    torch.save(CoICBRN(**TINY_BRN, modulate=False).state_dict(), src)
    assert main(['--arch', 'brn', '--model', str(src), '--out-dir', str(tmp_path / 'out'), '--opt', override]) == 2
    assert capsys.readouterr().err == f'basicsr convert-official: error: {message}\n'
    with pytest.raises(ValueError, match=r'^network_g\.iterations: expected an integer >= 1 for CoICBRN, got 0$'):
        build_network(dict(type='CoICBRN', iterations=0))  # the prefix ends with the conversion


def test_an_override_contradicting_the_checkpoint_is_refused_and_a_free_one_taken():
    state = CoICBRN(channels=4, num_res_blocks=2, num_rain_res_blocks=1, iterations=2, modulate=False).state_dict()
    _, options, _ = convert_backbone(dict(state), 'brn', overrides={'iterations': 3})
    assert options['iterations'] == 3
    with pytest.raises(ValueError):
        convert_backbone(dict(state), 'brn', overrides={'num_res_blocks': 3})
