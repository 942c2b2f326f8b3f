"""Value checks of single options (types and ranges), run before any work: each names its key in one line."""
import math
import re
from numbers import Integral, Real
from typing import Any, Callable

import torch.distributed as dist


def is_number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def is_integer(v) -> bool:
    """An integer (numpy's included) and not a bool: 2.0, 2.5 and '2' are not."""
    return isinstance(v, Integral) and not isinstance(v, bool)


def is_iteration_count(v) -> bool:
    """A number of iterations: a whole number >= 1 (2.0 too; not .inf, which int() cannot take)."""
    return is_number(v) and math.isfinite(v) and v >= 1 and v == int(v)


def yaml_text_hint(value: Any) -> str:
    """Why a string where a number was expected, when it reads as one: PyYAML (YAML 1.1) takes ``1e-6`` (no dot)
    and ``1.0e6`` (no exponent sign) for text, and a quoted number is text too. '' for anything else."""
    text = value.strip() if isinstance(value, str) else ''
    try:
        if not math.isfinite(float(text)):
            return ''
    except ValueError:
        return ''
    match = re.fullmatch(r'([-+]?[\d.]+)[eE]([-+]?)(\d+)', text)
    if match and ('.' not in match[1] or not match[2]):
        mantissa, sign, digits = match.groups()
        why = 'without a dot' if '.' not in mantissa else 'without a sign in the exponent'
        fixed = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{sign or '+'}{digits}"
        return f' (a string: YAML reads {text} {why} as text; write {fixed} or !!float {text})'
    return ' (a string: write the number without quotes)'


def check_number(where: str, value: Any, expected: str, valid: Callable[[float], bool]) -> None:
    """:func:`check_value` for a required real number (not a bool, not a numeric string) for which ``valid`` holds."""
    check_value(where, value, (lambda v: is_number(v) and valid(v), expected), allow_null=False)


def check_flag_value(where: str, value: Any) -> None:
    """:func:`check_value` for a required true or false (``'false'``, a string, is refused: ``bool('false')`` is
    True)."""
    check_value(where, value, FLAG_RULE, allow_null=False)


def check_value(where: str, value, rule, allow_null: bool = True) -> None:
    """Refuse a ``value`` that fails ``rule`` = (predicate, what is expected), naming ``where``; null passes when
    ``allow_null`` (the code's default applies)."""
    valid, expected = rule
    if not (value is None and allow_null) and not valid(value):
        raise ValueError(f'{where}: expected {expected}, got {value!r}{yaml_text_hint(value)}')


#: (predicate, what is expected) of a true/false option, of a number > 0 and of an odd window or kernel size
FLAG_RULE = (lambda v: isinstance(v, bool), 'true or false')
POSITIVE_RULE = (lambda v: is_number(v) and v > 0, 'a number > 0')
ODD_SIZE_RULE = (lambda v: is_integer(v) and v >= 1 and v % 2 == 1, 'a positive odd integer')
#: the most training data loader workers per process: a fixed bound (an option file valid on one machine stays valid
#: on another), far above what feeds a GPU (BasicSR's configs use 6 to 8); 1e9 was a fork storm
MAX_LOADER_WORKERS = 64
_BACKENDS = [name for name in dist.Backend.backend_list if name not in ('undefined', 'fake')]
# key path: (predicate, what is expected); a missing key or null takes the code's default
SCALAR_RULES = {
    ('manual_seed',): (is_integer, 'an integer, or null (a random seed)'),  # its range: check_manual_seed_range
    ('num_gpu',): (lambda v: v == 'auto' or (is_integer(v) and v >= 0), "auto or an integer >= 0 (0: the CPU)"),
    ('channels_last',): FLAG_RULE,
    ('find_unused_parameters',): FLAG_RULE,
    ('train', 'ema_decay'): (lambda v: is_number(v) and 0 <= v < 1, 'a number in [0, 1)'),
    ('train', 'grad_clip'): (lambda v: is_number(v) and v > 0, 'a positive gradient norm, or null'),
    ('train', 'use_grad_clip'): FLAG_RULE,
    ('train', 'max_nonfinite_steps'): (lambda v: is_integer(v) and v >= 1, 'an integer >= 1'),
    ('train', 'total_iter'): (is_iteration_count, 'a positive number of iterations'),
    ('train', 'warmup_iter'): (lambda v: is_integer(v) and v >= -1, 'an integer >= -1 (-1: no warm-up)'),
    ('val', 'val_freq'): (is_iteration_count, 'a positive number of iterations'),
    ('val', 'global_size'): (lambda v: is_integer(v) and v >= 1, 'a positive integer'),
    ('val', 'report_input'): FLAG_RULE,
    ('val', 'save_img'): FLAG_RULE,  # 'no' saved the images
    ('logger', 'use_tb_logger'): FLAG_RULE,  # 'no' wrote tb_logger
    ('datasets', 'train', 'batch_size_per_gpu'): (lambda v: is_integer(v) and v >= 1, 'an integer >= 1'),
    ('datasets', 'train', 'num_worker_per_gpu'): (lambda v: is_integer(v) and 0 <= v <= MAX_LOADER_WORKERS,
                                                  f'an integer from 0 (no worker processes) to {MAX_LOADER_WORKERS} '
                                                  '(each worker is a process holding a copy of the dataset)'),
    ('datasets', 'train', 'dataset_enlarge_ratio'): POSITIVE_RULE,  # any sampler's ratio (BasicSR's takes floats)
    ('datasets', 'train', 'persistent_workers'): FLAG_RULE,  # decides whether an LMDB may be shared (lmdb_sharing)
    ('datasets', 'train', 'prefetch_mode'): (lambda v: v in ('cpu', 'cuda'), "cpu, cuda, or null"),
    ('dist_params', 'backend'): (lambda v: v in _BACKENDS, f"one of {', '.join(_BACKENDS)}"),
    ('dist_params', 'timeout'): (lambda v: is_number(v) and v > 0, 'a positive number of seconds, or null'),
    ('dist_params', 'port'): (lambda v: is_integer(v) and 0 < v < 65536, 'a port number, or null'),
}


#: rules of the keys of every ``datasets.<phase>`` section (BasicSR's build_dataloader reads them for each phase)
EVERY_DATASET_RULES = {'pin_memory': FLAG_RULE}


def check_scalar_options(opt: dict) -> None:
    """Every option of :data:`SCALAR_RULES` and :data:`EVERY_DATASET_RULES` that is set has a possible value (a
    string ``ema_decay`` was a TypeError mid-run; a misspelt ``dist_params.backend`` an AssertionError); a null one
    is removed, so that the code's default applies (``train.total_iter`` has none)."""
    datasets = opt.get('datasets') if isinstance(opt.get('datasets'), dict) else {}
    rules = dict(SCALAR_RULES)
    rules.update({('datasets', phase, key): rule for phase in datasets for key, rule in EVERY_DATASET_RULES.items()})
    for path, rule in rules.items():
        parent = opt
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        present = isinstance(parent, dict) and path[-1] in parent
        value = parent[path[-1]] if present else None
        check_value('.'.join(path), value, rule, allow_null=not (present and path == ('train', 'total_iter')))
        if present and value is None:
            del parent[path[-1]]  # the code reads .get(key, default): a null key would bypass the default


def check_manual_seed_range(seed: int, world_size: int, loader_workers: int = 0) -> None:
    """Each process seeds numpy with ``manual_seed + rank`` and BasicSR seeds training data loader worker ``w`` of
    rank ``r`` with ``manual_seed + loader_workers * r + w``; numpy takes seeds in [0, 2**32 - 1] only (-1, or a seed
    a worker pushed past the top, was numpy's "Seed must be between 0 and 2**32 - 1", naming no key)."""
    count = world_size * max(1, loader_workers)  # the seeds manual_seed .. manual_seed + count - 1 are used
    highest = 2**32 - count
    if not 0 <= seed <= highest:
        if count == 1:
            why = "numpy's seed range"
        else:
            who = f'{world_size} processes' if loader_workers <= 1 else f'{count} data loader workers' + (
                f', {loader_workers} per process,' if world_size > 1 else '')
            why = f'numpy seeds up to 2**32 - 1, and {who} seed manual_seed + 0 to {count - 1}'
        raise ValueError(f'manual_seed: expected an integer from 0 to {highest} ({why}), got {seed!r}')


COIC_RULES = {  # key: (predicate, what is expected), as SCALAR_RULES
    'stage1_iter': (lambda v: is_integer(v) and v >= 0, 'an integer >= 0'),
    'contrastive_weight': (lambda v: is_number(v) and v >= 0, 'a number >= 0'),
    'temperature': POSITIVE_RULE,
    'num_detail_negatives': (lambda v: is_integer(v) and v >= 0, 'an integer >= 0'),
    'archive_size': (lambda v: is_integer(v) and v >= 0, 'an integer >= 0 (0: the current batch only)'),
    'momentum': (lambda v: is_number(v) and 0 <= v <= 1, 'a number in [0, 1]'),
    'blur_kernel_size': ODD_SIZE_RULE,
    'blur_sigma': (lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(is_number(s) for s in v)
                   and 0 < v[0] <= v[1], 'a list [low, high] of numbers with 0 < low <= high'),
}
#: the values CoICModel uses for the keys of train.coic not given
COIC_DEFAULTS = {'stage1_iter': 40000, 'contrastive_weight': 0.2, 'temperature': 1.0, 'num_detail_negatives': 4,
                 'archive_size': 64, 'momentum': 0.999, 'blur_kernel_size': 11, 'blur_sigma': [0.3, 1.5]}


def check_coic_section(opt: dict) -> None:
    """``train.coic``: known keys, right types, possible values, and an encoder to train; of a training option file
    without it, the CoIC sections that nothing would read (an untrained network_enc was saved as net_enc_*.pth)."""
    train = opt.get('train') or {}
    coic = train.get('coic')
    if coic is None:
        for where, section, key in (('', opt, 'network_enc'), ('train.', train, 'optim_mod'),
                                    ('train.', train, 'scheduler_mod')):
            if section.get(key) is not None and 'train' in opt:
                raise ValueError(f'{where}{key}: only used by CoIC training, which needs train.coic (e.g. '
                                 '{stage1_iter: 40000}); add train.coic or remove it')
        return
    if not isinstance(coic, dict):
        raise ValueError('train.coic: expected a mapping of CoIC options')
    for key, value in coic.items():
        if key not in COIC_RULES:
            raise ValueError(f'train.coic.{key}: unknown key (known: {", ".join(COIC_RULES)})')
        check_value(f'train.coic.{key}', value, COIC_RULES[key], allow_null=False)  # null would replace the default
    total = train.get('total_iter')
    if isinstance(total, (int, float)) and coic.get('stage1_iter', 40000) >= total:  # stage 2: after stage1_iter
        raise ValueError(f"train.coic.stage1_iter ({coic.get('stage1_iter', 40000)}) must be smaller than "
                         f'train.total_iter ({int(total)}): stage 2 would never start')
    if 'network_enc' not in opt:
        raise ValueError('train.coic: requires a network_enc section (e.g. {type: CoICEncoder})')
