"""Option parsing with BasicSR's rules, minus its CUDA assumptions and its ``eval`` of ``--force_yml`` values."""
import argparse
import os
import random
import sys
import time
from collections import OrderedDict
from os import path as osp
from typing import List, Optional, Tuple

import torch
import yaml
from basicsr.utils import set_random_seed
from basicsr.utils.dist_util import get_dist_info, master_only
from basicsr.utils.options import copy_opt_file, ordered_yaml

from coic_basicsr.data.rain_sources import expand_user_paths
from coic_basicsr.utils.dist import init_dist, rank0_value
from coic_basicsr.utils.option_layout import check_sections_are_mappings
from coic_basicsr.utils.option_values import check_manual_seed_range, check_scalar_options
from coic_basicsr.utils.path_options import check_experiment_name, check_path_section


def build_arg_parser(prog: str) -> argparse.ArgumentParser:
    """The flags of BasicSR's ``train.py``/``test.py``, plus ``--local-rank`` (newer torch launchers pass that)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument('-opt', '--opt', dest='opt', type=str, required=True, help='Path to option YAML file.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--auto_resume', action='store_true',  # BasicSR's test.py accepts it too, and ignores it
                        help='resume from the latest complete training state' if prog == 'basicsr train'
                        else argparse.SUPPRESS)
    parser.add_argument('--debug', action='store_true', help="prefix the name with 'debug_' (frequent logs/saves)")
    parser.add_argument('--local_rank', '--local-rank', dest='local_rank', type=int, default=0)
    parser.add_argument('--force_yml', nargs='+', default=None,
                        help='override option values, e.g. train:ema_decay=0.999 or datasets:train:sources:0:name=x '
                        '(values parsed as YAML)')
    return parser


class _PlainDictLoader(ordered_yaml()[0]):
    """BasicSR's option loader, with mappings read as plain (ordered) dicts: an error message then shows a bad value
    as ``{'a': 1}``, not ``OrderedDict([('a', 1)])``."""


def _plain_mapping(loader: yaml.Loader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)  # YAML merge keys (`<<: *base`), which construct_pairs alone refused
    return dict(loader.construct_pairs(node))


_PlainDictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _plain_mapping)


def load_option_file(path: str) -> dict:
    """Read an option YAML file into a dict; clear errors for a missing file or bad YAML."""
    if not osp.isfile(path):
        raise FileNotFoundError(f"-opt: option file '{path}' does not exist")
    with open(path, encoding='utf-8') as f:
        try:
            opt = yaml.load(f, Loader=_PlainDictLoader)
        except yaml.YAMLError as err:
            raise ValueError(f"-opt: '{path}' is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(opt, dict):
        raise ValueError(f"-opt: '{path}' must contain a mapping of options")
    return opt


_MISSING = object()


def _entry(node, key: str):
    """``node[key]`` of a mapping, or of a list when ``key`` is an index in range; ``_MISSING`` otherwise."""
    if isinstance(node, dict):
        return node.get(key, _MISSING)
    if isinstance(node, list) and key.isdigit() and int(key) < len(node):
        return node[int(key)]
    return _MISSING


def _paths_to(node, target, path: Optional[List[str]] = None) -> List[List[str]]:
    """Every key path under ``node`` that leads to the object ``target`` itself."""
    path = path or []
    found = [path] if node is target else []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        found += _paths_to(child, target, path + [str(key)])
    return found


def apply_force_yml(opt: dict, entries: List[str], report_aliases: bool = True) -> None:
    """Apply ``a:b:c=value`` overrides to existing keys; values are parsed with ``yaml.safe_load`` (never ``eval``);
    ``None`` is null, as in BasicSR, but ``none`` stays the string a YAML file reads (``recruitment: none``).
    A number indexes a list, e.g. ``datasets:train:sources:1:dataroot_lq=...``. A section the file shares through a
    YAML alias changes everywhere it is used; ``report_aliases`` prints where else."""
    for entry in entries:
        if '=' not in entry:
            raise ValueError(f"--force_yml: '{entry}' is not of the form key:subkey=value")
        keys, value = (part.strip() for part in entry.split('=', 1))
        *parents, last = keys.split(':')
        node, walked = opt, []  # walked: the keys as _paths_to spells them ('00' -> '0')
        for depth, key in enumerate(parents):
            child = _entry(node, key)
            if not isinstance(child, (dict, list)):
                raise ValueError(f"--force_yml: '{':'.join(parents[:depth + 1])}' is not an option section")
            walked.append(str(int(key)) if isinstance(node, list) else key)
            node = child
        if _entry(node, last) is _MISSING:
            raise ValueError(f"--force_yml: option '{keys}' does not exist (overrides cannot create keys)")
        if isinstance(node, list):
            last = int(last)
        try:
            node[last] = None if value == 'None' else yaml.safe_load(value)  # as BasicSR; 'none' stays a string
        except yaml.YAMLError as err:
            raise ValueError(f"--force_yml: the value of '{keys}' is not valid YAML: {str(err).splitlines()[0]}") from None
        shared = [path for path in _paths_to(opt, node) if path != walked]
        if shared and report_aliases:  # an alias (*name) is the same section: YAML semantics, but easy to miss on a command line
            also = ', '.join(':'.join(path + [str(last)]) for path in shared)
            print(f"--force_yml: '{keys}' also sets {also} (the option file shares that section through a YAML "
                  'alias)', flush=True)


def _resolve_num_gpu(opt: dict) -> None:
    """``num_gpu: auto`` means every visible GPU; without CUDA any ``num_gpu`` means the CPU."""
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    requested = opt.get('num_gpu', 'auto')
    if requested == 'auto':
        opt['num_gpu'] = available
    elif available == 0 and requested:
        print(f'num_gpu: {requested} requested but CUDA is not available; running on the CPU.', flush=True)
        opt['num_gpu'] = 0
    if opt['dist']:  # one device per process
        opt['num_gpu'] = min(opt['num_gpu'], 1)


def _set_paths(opt: dict, root_path: str, is_train: bool) -> None:
    """BasicSR's path layout: ``experiments/<name>/{models,training_states,visualization}`` or ``results/<name>``."""
    opt.setdefault('path', OrderedDict())
    for phase, dataset in opt.get('datasets', {}).items():
        dataset['phase'] = phase.split('_')[0]
        if 'scale' in opt:
            dataset['scale'] = opt['scale']
        expand_user_paths(dataset)  # BasicSR expands dataroot_gt/dataroot_lq; the datasets do it for all their paths
        for source in dataset.get('sources') or ():
            if isinstance(source, dict):
                expand_user_paths(source)
    for key, val in opt['path'].items():
        if val is not None and ('resume_state' in key or 'pretrain_network' in key):
            opt['path'][key] = osp.expanduser(val)
    if is_train:
        root = osp.join(root_path, 'experiments', opt['name'])
        opt['path'].update(experiments_root=root, models=osp.join(root, 'models'), log=root,
                           training_states=osp.join(root, 'training_states'),
                           visualization=osp.join(root, 'visualization'))
        if 'debug' in opt['name']:  # a missing section is reported by the checks that follow, as without --debug
            if isinstance(opt.get('val'), dict):
                opt['val']['val_freq'] = 8
            if isinstance(opt.get('logger'), dict):
                opt['logger'].update(print_freq=1, save_checkpoint_freq=8)
    else:
        root = osp.join(root_path, 'results', opt['name'])
        opt['path'].update(results_root=root, log=root, visualization=osp.join(root, 'visualization'))


@master_only
def save_options_as_run(args: argparse.Namespace, experiments_root: str) -> None:
    """BasicSR's copy of the option file into the experiment folder, with the ``--force_yml`` overrides applied: the
    tools that read an experiment folder (``basicsr derain/analyze -opt experiments/<name>``) then build the network
    that was trained. Without overrides the file is copied as it is (comments kept)."""
    if not args.force_yml:
        copy_opt_file(args.opt, experiments_root)
        return
    opt = load_option_file(args.opt)
    apply_force_yml(opt, args.force_yml, report_aliases=False)  # parse_options reported them
    with open(osp.join(experiments_root, osp.basename(args.opt)), 'w', encoding='utf-8') as f:
        f.write(f"# GENERATE TIME: {time.asctime()}\n# CMD:\n# {' '.join(sys.argv)}\n"  # copy_opt_file's header
                f'# {args.opt} as run: its --force_yml overrides are applied below.\n\n')
        yaml.dump(opt, f, Dumper=ordered_yaml()[1], sort_keys=False, allow_unicode=True)


def parse_options(argv: Optional[List[str]], root_path: str, is_train: bool,
                  prog: str = 'basicsr train') -> Tuple[dict, argparse.Namespace]:
    """Parse the command line and option file, initialise distribution and seeds (BasicSR's ``parse_options``)."""
    args = build_arg_parser(prog).parse_args(argv)
    opt = load_option_file(args.opt)
    if 'name' not in opt:
        raise ValueError(f"-opt: '{args.opt}' has no 'name' option")
    if args.force_yml:
        apply_force_yml(opt, args.force_yml)
    check_sections_are_mappings(opt, is_train)  # before anything reads a section
    check_scalar_options(opt)  # dist_params are used right below
    check_experiment_name(opt)  # BasicSR makes folders of name and of the path values
    check_path_section(opt)
    if isinstance(opt.get('val'), dict):
        opt['val'].setdefault('suffix', None)  # BasicSR's SRModel reads it when it saves test images
    opt['dist'] = args.launcher != 'none'
    world_size = os.environ.get('WORLD_SIZE', '1')
    if not opt['dist'] and world_size.isdigit() and int(world_size) > 1:
        raise ValueError(f'--launcher: none, but this is one of {world_size} processes (WORLD_SIZE, set by torchrun): '
                         'each would run the whole job alone, in the same folders; add --launcher pytorch')
    device = torch.device('cpu')
    if opt['dist']:
        dist_params = dict(opt.get('dist_params') or {})
        device = init_dist(args.launcher, backend=dist_params.get('backend'), timeout_s=dist_params.get('timeout'),
                           port=dist_params.get('port'))
    else:
        print('Disable distributed.', flush=True)
    opt['rank'], opt['world_size'] = get_dist_info()
    _resolve_num_gpu(opt)
    if not opt['dist'] and opt['num_gpu'] > 0:
        device = torch.device('cuda')
    opt['device'] = str(device)
    if opt.get('manual_seed') is None:  # rank 0's draw: every rank must derive the same sampler plans
        opt['manual_seed'], opt['manual_seed_drawn'] = rank0_value(random.randint(1, 10000)), True
    train_set = (opt.get('datasets') or {}).get('train')  # BasicSR's loader: num_worker_per_gpu * max(1, num_gpu)
    workers = (train_set.get('num_worker_per_gpu') or 0) * max(1, opt['num_gpu']) \
        if is_train and isinstance(train_set, dict) else 0
    check_manual_seed_range(opt['manual_seed'], opt['world_size'], workers)
    set_random_seed(opt['manual_seed'] + opt['rank'])
    opt['auto_resume'] = args.auto_resume
    opt['is_train'] = is_train
    if args.debug and not opt['name'].startswith('debug'):
        opt['name'] = 'debug_' + opt['name']
    _set_paths(opt, root_path, is_train)
    return opt, args
