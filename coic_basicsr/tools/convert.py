"""Convert the CoIC authors' checkpoints (BRN, RCDNet, DGUNet; plain or CoIC; MoCo encoders) into BasicSR files.

``basicsr convert-official --arch brn --model brn_model.pth [--encoder brn_enc.pth] --out-dir DIR`` writes
``DIR/<name>_net_g.pth`` (``{'params': ...}`` for ``network_g``) and ``DIR/<name>_net_enc.pth`` (``{'params': query
encoder, 'params_key': key encoder}`` for ``network_enc``). Every key is renamed onto our arch, the result is loaded
with ``strict=True`` into the arch built with the hyper-parameters read off the checkpoint (``--opt key=value``
overrides them, except ``modulate`` and ``gate_layout``, which follow the checkpoint), and any key that maps to
nothing (or any of ours left unfilled) is an error listing them all.

Generators (CoI-M): the official ``g2pa_wgen`` MLPs become ``generator``, unchanged. The official conv builds a
(C_in, C_out) gate and re-reads it with ``view`` as (C_out, C_in) — for non-square convs a different function from
the paper's per-channel gate — so converted CoIC models are built with ``gate_layout: official``, under which our
modulated convs compute exactly the authors' kernel scales. The file records it (``'gate_layout': 'official'`` next
to ``'params'``), and loading it into a network with the paper layout is refused.
"""
import argparse
import inspect
import re
from collections import OrderedDict
from os import path as osp
from typing import Dict, List, Optional, Tuple

import yaml
from torch import Tensor, nn

from coic_basicsr.archs.arch_util import option_prefix
from coic_basicsr.archs.coic_brn_arch import CoICBRN
from coic_basicsr.archs.coic_dgunet_arch import CoICDGUNet
from coic_basicsr.archs.coic_encoder_arch import CoICEncoder
from coic_basicsr.archs.coic_rcdnet_arch import CoICRCDNet
from coic_basicsr.utils.checkpoint import GATE_LAYOUT_KEY, atomic_save, load_checkpoint

ARCHS = {'brn': CoICBRN, 'rcdnet': CoICRCDNet, 'dgunet': CoICDGUNet}
_WRAPPER_KEYS = ('state_dict', 'model', 'params', 'params_ema', 'net')
_RENAMES = [(re.compile(r'\.base_conv\.conv\.'), '.'), (re.compile(r'\.g2pa_wgen\.'), '.generator.')]
# the original BRN code: units are nn.Sequential(conv, act[, conv, act])
_BRN_RENAMES = [(re.compile(r'^(res_conv\d+(?:_r)?)\.0\.'), r'\1.conv1.'),
                (re.compile(r'^(res_conv\d+(?:_r)?)\.2\.'), r'\1.conv2.'),
                (re.compile(r'^(conv\w*)\.0\.'), r'\1.conv.')]
_ENCODER_RENAMES = [(re.compile(r'^conv1\.'), 'conv_first.'),
                    (re.compile(r'^resblock\.(\d+)\.block\.'), r'blocks.\1.body.'),
                    (re.compile(r'^resblock\.(\d+)\.short_cut\.'), r'blocks.\1.shortcut.')]
_UNUSED = {'dgunet': re.compile(r'^basic\.concat12\.')}  # built but never called by the official DGUNet forward
_FIRST_CONV = {'brn': 'conv0.conv', 'rcdnet': 'proxNet_B_0.layer.0.conv1', 'dgunet': 'shallow_feat1.0'}
# options set from the checkpoint itself, never by --opt
_INFERRED = {'modulate': 'true exactly when it has generators; --plain drops them',
             'gate_layout': "official for a CoIC model: only then do its generators give the authors' kernel scales"}


def load_official(path: str) -> Dict[str, Tensor]:
    """Flat state dict of an official file (unwraps ``state_dict``/``params``-style containers, drops ``module.``)."""
    state = load_checkpoint(path)
    while isinstance(state, dict) and not any(isinstance(v, Tensor) for v in state.values()):
        inner = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            raise ValueError(f"checkpoint '{path}' holds no tensors (top-level keys: {sorted(state)[:8]})")
        state = inner
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint '{path}' is not a state dict (got {type(state).__name__})")
    return OrderedDict((k[7:] if k.startswith('module.') else k, v) for k, v in state.items() if isinstance(v, Tensor))


def _rename(key: str, rules: List[Tuple[re.Pattern, str]]) -> str:
    for pattern, repl in rules:
        key = pattern.sub(repl, key)
    return key


def infer_options(arch: str, state: Dict[str, Tensor]) -> dict:
    """Hyper-parameters of ``arch`` read off a renamed state dict (shapes and counts)."""
    options = _infer_shapes(arch, state)
    first = _FIRST_CONV[arch]
    if f'{first}.generator.0.weight' in state:  # generator input: [z | GAP(x)]
        options['context_dim'] = state[f'{first}.generator.0.weight'].shape[1] - state[f'{first}.weight'].shape[1]
    return options


def _infer_shapes(arch: str, state: Dict[str, Tensor]) -> dict:
    count = lambda pattern: len({m.group(1) for k in state for m in [re.match(pattern, k)] if m})  # noqa: E731
    if arch == 'brn':
        return {'in_channels': state['conv.conv.weight'].shape[0], 'channels': state['conv0.conv.weight'].shape[0],
                'num_res_blocks': count(r'^res_conv(\d+)\.'), 'num_rain_res_blocks': count(r'^res_conv(\d+)_r\.')}
    if arch == 'rcdnet':
        return {'in_channels': state['c'].shape[0], 'num_map': state['c'].shape[1], 'num_channel': state['cz'].shape[0],
                'num_stage': state['b_step'].shape[0], 'num_block': count(r'^proxNet_B_0\.layer\.(\d+)\.')}
    n_feat = state['shallow_feat1.0.weight'].shape[0]
    return {'in_channels': state['tail.weight'].shape[0], 'n_feat': n_feat,
            'scale_unetfeats': state['stage1_encoder.body.0.conv_1.weight'].shape[0] - n_feat,
            'scale_orsnetfeats': state['concat67.weight'].shape[0] - n_feat, 'bias': 'tail.bias' in state}


def _error(what: str, keys: List[str]) -> ValueError:
    shown = ', '.join(keys[:12]) + (f' ... (+{len(keys) - 12} more)' if len(keys) > 12 else '')
    return ValueError(f'{what} ({len(keys)}): {shown}')


def _check_overrides(arch: str, overrides: dict) -> None:
    for key, reason in _INFERRED.items():
        if key in overrides:
            raise ValueError(f'--opt {key}: inferred from the checkpoint ({reason}), cannot be set')
    accepted = [k for k in inspect.signature(ARCHS[arch]).parameters if k not in _INFERRED]
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(f"--opt {unknown[0]}: {ARCHS[arch].__name__} has no such option (its options: "
                         f"{', '.join(accepted)})")


def convert_backbone(state: Dict[str, Tensor], arch: str, plain: bool = False,
                     overrides: Optional[dict] = None) -> Tuple[Dict[str, Tensor], dict, List[str]]:
    """Official backbone state dict -> (our params, network_g options, notes); raises ValueError on unmapped keys."""
    if arch not in ARCHS:
        raise ValueError(f'--arch: expected one of {sorted(ARCHS)}, got {arch!r}')
    _check_overrides(arch, overrides or {})
    rules = _RENAMES + (_BRN_RENAMES if arch == 'brn' else [])
    source = {_rename(key, rules): key for key in state}  # our name -> official name
    if len(source) != len(state):
        raise ValueError(f'official {arch} keys collide after renaming ({len(state)} keys -> {len(source)} names)')
    renamed, notes, dropped, untrained = OrderedDict(), [], [], []
    for new, key in source.items():
        if plain and '.generator.' in new:
            untrained.append(key)
        elif arch in _UNUSED and _UNUSED[arch].match(new):
            dropped.append(key)
        else:
            renamed[new] = state[key]
    has_generators = any('.generator.' in k for k in renamed)
    try:
        options = {**infer_options(arch, renamed), **(overrides or {})}
    except KeyError as err:
        raise ValueError(f'the checkpoint does not look like an official {arch} model: no key {err}') from None
    options['modulate'] = has_generators
    if has_generators:
        options['gate_layout'] = 'official'
    with option_prefix('--opt '):  # a bad value came from --opt (those read off the checkpoint fit it)
        net = ARCHS[arch](**options)
    modules = dict(net.named_modules())
    ours = net.state_dict()
    for key in [k for k in renamed if '.generator.' in k and k not in ours]:
        conv = modules.get(key.split('.generator.')[0])
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1):  # official 1x1 TConvs never modulate
            dropped.append(source[key])
            del renamed[key]
    unmapped = [source[k] for k in renamed if k not in ours]
    if unmapped:
        raise _error(f'official {arch} keys with no counterpart in {type(net).__name__}', unmapped)
    missing = [k for k in ours if k not in renamed]
    if missing:
        raise _error(f'{type(net).__name__} parameters not in the checkpoint', missing)
    bad = [f'{k} {tuple(v.shape)} vs {tuple(ours[k].shape)}' for k, v in renamed.items() if v.shape != ours[k].shape]
    if bad:
        raise _error('shape mismatches (checkpoint vs ours)', bad)
    net.load_state_dict(renamed, strict=True)
    if untrained:
        notes.append(f'--plain: dropped {len(untrained)} generator keys')
    if dropped:
        notes.append(f'dropped {len(dropped)} keys unused by the official forward: {", ".join(dropped[:6])}'
                     + (' ...' if len(dropped) > 6 else ''))
    return net.state_dict(), {'type': type(net).__name__, **options}, notes


def convert_encoder(state: Dict[str, Tensor]) -> Tuple[Dict[str, Dict[str, Tensor]], dict]:
    """MoCo ``encoder_q.*``/``encoder_k.*`` (or a bare encoder) -> ({'params', 'params_key'}, network_enc options)."""
    prefixes = [p for p in ('encoder_q', 'encoder_k') if any(k.startswith(p + '.') for k in state)]
    parts = {p: {k[len(p) + 1:]: v for k, v in state.items() if k.startswith(p + '.')} for p in prefixes}
    leftover = [k for k in state if not any(k.startswith(p + '.') for p in prefixes)] if prefixes else []
    if leftover:
        raise _error('encoder keys outside encoder_q/encoder_k', leftover)
    parts = parts or {'encoder_q': dict(state)}
    out, options = {}, None
    for prefix, part in parts.items():
        renamed = OrderedDict((_rename(k, _ENCODER_RENAMES), v) for k, v in part.items())
        try:
            options = {'type': 'CoICEncoder', 'in_channels': renamed['conv_first.weight'].shape[1],
                       'context_dim': renamed['mlp.2.weight'].shape[0],
                       'base_channels': renamed['conv_first.weight'].shape[0],
                       'num_blocks': len({k.split('.')[1] for k in renamed if k.startswith('blocks.')})}
        except KeyError as err:
            raise ValueError(f'the encoder checkpoint does not look like the CoIC MoCo encoder: no key {err}') from None
        encoder = CoICEncoder(**{k: v for k, v in options.items() if k != 'type'})
        ours = encoder.state_dict()
        unmapped = [f'{prefix}.{k}' for k, new in zip(part, renamed) if new not in ours]
        if unmapped:
            raise _error('encoder keys with no counterpart in CoICEncoder', unmapped)
        missing = [k for k in ours if k not in renamed]
        if missing:
            raise _error(f'CoICEncoder parameters not in {prefix}', missing)
        encoder.load_state_dict(renamed, strict=True)
        out['params' if prefix == 'encoder_q' else 'params_key'] = encoder.state_dict()
    out.setdefault('params', out.get('params_key'))
    out.setdefault('params_key', out['params'])
    return out, options


def _parse_overrides(items: List[str]) -> dict:
    overrides = {}
    for item in items:
        if '=' not in item:
            raise ValueError(f'--opt: expected key=value, got {item!r}')
        key, value = item.split('=', 1)
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='basicsr convert-official', description=__doc__.split('\n')[0])
    parser.add_argument('--arch', required=True, choices=sorted(ARCHS), help='backbone of --model')
    parser.add_argument('--model', help="official backbone checkpoint (e.g. checkpoints/CoIC/brn_model.pth)")
    parser.add_argument('--encoder', help='official MoCo encoder checkpoint (encoder_q.* / encoder_k.*)')
    parser.add_argument('--out-dir', required=True, help='folder for the converted files')
    parser.add_argument('--name', help='file name prefix; default: <arch>_coic or <arch>_plain')
    parser.add_argument('--plain', action='store_true',
                        help='drop generator keys (a baseline trained with the CoIC code, generators untrained)')
    parser.add_argument('--opt', action='append', default=[], metavar='KEY=VALUE',
                        help='network_g option overriding the inferred one (repeatable), e.g. iterations=8; '
                        'modulate and gate_layout always follow the checkpoint')
    return parser


def _run(argv: Optional[List[str]]) -> None:
    args = build_parser().parse_args(argv)
    if not args.model and not args.encoder:
        raise ValueError('give --model and/or --encoder')
    overrides = _parse_overrides(args.opt)
    snippet, name = {}, args.name
    if args.model:
        params, options, notes = convert_backbone(load_official(args.model), args.arch, args.plain, overrides)
        name = name or f"{args.arch}_{'coic' if options['modulate'] else 'plain'}"
        out = osp.join(args.out_dir, f'{name}_net_g.pth')
        record = {GATE_LAYOUT_KEY: options['gate_layout']} if 'gate_layout' in options else {}
        atomic_save({'params': params, **record}, out)
        snippet.update(network_g=options, path={'pretrain_network_g': out, 'strict_load_g': True})
        if options['modulate'] and not args.encoder:
            notes.append('no --encoder: without network_enc the network runs with z=None, as its plain backbone (the '
                         "CoIC authors' encoder is needed to run it as trained)")
        for note in notes:
            print(f'note: {note}')
        print(f'wrote {out} ({len(params)} tensors)')
    if args.encoder:
        enc, enc_options = convert_encoder(load_official(args.encoder))
        out = osp.join(args.out_dir, f"{name or args.arch + '_coic'}_net_enc.pth")
        atomic_save(enc, out)
        snippet['network_enc'] = enc_options
        snippet.setdefault('path', {})['pretrain_network_enc'] = out
        print(f'wrote {out}')
    print('option file sections:\n' + yaml.safe_dump(snippet, sort_keys=False))


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``basicsr convert-official``; returns the exit status."""
    from coic_basicsr.cli import run_reporting_errors
    return run_reporting_errors('basicsr convert-official', _run, argv)


if __name__ == '__main__':
    import sys
    sys.exit(main())
