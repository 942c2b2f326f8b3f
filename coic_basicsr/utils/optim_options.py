"""Pre-flight checks of the ``train.optim_*`` and ``train.scheduler*`` sections: each names its key in one line."""
import inspect
from typing import Iterator, List, Tuple

import torch

from coic_basicsr.models.portable import optimizer_class, scheduler_class
from coic_basicsr.utils.option_values import FLAG_RULE, check_value, is_integer, is_number


def schedulers(opt: dict) -> Iterator[Tuple[str, dict]]:
    """(key, section) of ``train.scheduler`` and CoICModel's ``train.scheduler_mod`` where given."""
    for key in ('scheduler', 'scheduler_mod'):
        section = (opt.get('train') or {}).get(key)
        if isinstance(section, dict):
            yield key, section


def _positive_ints(values) -> bool:
    return isinstance(values, (list, tuple)) and all(is_integer(v) and v > 0 for v in values)


def _non_negative_numbers(values) -> bool:
    return isinstance(values, (list, tuple)) and all(is_number(v) and v >= 0 for v in values)


#: scheduler arguments (of BasicSR's schedulers, ours and torch's): (predicate, what is expected); a wrong type was a
#: TypeError at the first milestone or the second cycle, mid-training; a negative factor or floor trained with a
#: negative learning rate (gradient ascent) without a word
SCHEDULER_VALUE_RULES = {
    'milestones': (_positive_ints, 'a list of positive iteration numbers'),
    'periods': (lambda v: _positive_ints(v) and len(v) > 0, 'a non-empty list of positive iteration numbers'),
    'restarts': (lambda v: isinstance(v, (list, tuple)) and all(is_integer(r) and r >= 0 for r in v),
                 'a list of iteration numbers >= 0'),
    'restart_weights': (_non_negative_numbers, 'a list of numbers >= 0'),
    'eta_mins': (_non_negative_numbers, 'a list of numbers >= 0'),
    'gamma': (lambda v: is_number(v) and v >= 0, 'a number >= 0'),
    'eta_min': (lambda v: is_number(v) and v >= 0, 'a number >= 0'),
}
#: lists whose entries pair up (one per period or restart), for the schedulers whose arguments they all are
_PAIRED_LISTS = (('periods', 'restart_weights', 'eta_mins'), ('periods', 'restart_weights'),
                 ('restarts', 'restart_weights'))


def _check_scheduler_values(key: str, scheduler: dict, params: dict) -> None:
    """Required arguments given, values of :data:`SCHEDULER_VALUE_RULES` possible, paired lists of one length."""
    for name, param in params.items():
        if name != 'optimizer' and param.default is inspect.Parameter.empty and name not in scheduler:
            raise ValueError(f"train.{key}.{name}: required by {scheduler['type']}")
    for name, value in scheduler.items():
        if name in SCHEDULER_VALUE_RULES:
            check_value(f'train.{key}.{name}', value, SCHEDULER_VALUE_RULES[name], allow_null=False)
    for names in _PAIRED_LISTS:
        if all(name in params for name in names):
            lengths = [len(scheduler[n]) if n in scheduler else len(params[n].default) for n in names]
            if len(set(lengths)) > 1:
                listed = f"{', '.join(names[:-1])} and {names[-1]}"
                raise ValueError(f"train.{key}: {listed} must have the same length (got "
                                 f"{', '.join(map(str, lengths))})")
            break


def check_scheduler_options(opt: dict) -> None:
    """``train.scheduler`` is required (BasicSR ended in a bare KeyError); its keys must be the scheduler's
    arguments, ``milestones`` a list of iterations (a string silently never decayed), the other numeric arguments of
    the right type and paired lists of one length (both failed mid-training), for ``scheduler_mod`` too."""
    if not isinstance((opt.get('train') or {}).get('scheduler'), dict):
        raise ValueError('train.scheduler: required, e.g. {type: MultiStepLR, milestones: [200000], gamma: 0.5}')
    for key, scheduler in schedulers(opt):
        name = scheduler.get('type')
        if 'last_epoch' in scheduler:  # the schedulers then failed: "param 'initial_lr' is not specified"
            raise ValueError(f'train.{key}.last_epoch: not an option (a resumed run restores the scheduler state '
                             'from its training state); remove it')
        signature = inspect.signature(scheduler_class(name)).parameters
        params = [p for p in signature if p not in ('optimizer', 'last_epoch')]
        unknown = sorted(set(scheduler) - {'type'} - set(params))
        if unknown:
            raise ValueError(f"train.{key}: {name} has no option '{unknown[0]}' (its options: {', '.join(params)})")
        _check_scheduler_values(key, scheduler, signature)


def check_scheduler_periods(opt: dict) -> None:
    """Cyclic cosine schedules must cover ``train.total_iter``: past their last period they fail mid-training (run
    after check_scheduler_options, which checks that ``periods`` are positive integers)."""
    total = (opt.get('train') or {}).get('total_iter')
    for key, scheduler in schedulers(opt):
        periods = scheduler.get('periods')
        if not isinstance(total, (int, float)) or not isinstance(periods, (list, tuple)) or not periods:
            continue
        if sum(periods) < total - 1:  # the scheduler steps from the second iteration on
            raise ValueError(f'train.{key}.periods: {list(periods)} add up to {sum(periods)}, but train.total_iter '
                             f'({int(total)}) needs at least {int(total) - 1}; the schedule would end before training')


def _check_optimizer_values(key: str, options: dict, optim_cls: type) -> None:
    """Options whose default is a number, a tuple of numbers or a flag get one (``lr: 1e-3`` is a string in YAML;
    torch's "'<=' not supported between instances of 'float' and 'str'" named no key)."""
    params = inspect.signature(optim_cls).parameters
    for name, value in options.items():
        default = params[name].default if name in params else None
        where = f'train.{key}.{name}'
        if isinstance(default, bool):
            check_value(where, value, FLAG_RULE, allow_null=False)
        elif is_number(default) or name == 'lr':
            check_value(where, value, (is_number, 'a number'), allow_null=False)
        elif isinstance(default, tuple) and all(is_number(d) for d in default):
            rule = (lambda v, n=len(default): isinstance(v, (list, tuple)) and len(v) == n and all(map(is_number, v)),
                    f'a list of {len(default)} numbers (e.g. {list(default)})')
            check_value(where, value, rule, allow_null=False)


def check_optimizers(opt: dict) -> None:
    """Every ``train.optim_*`` must be a torch.optim class that accepts its options (tried on a dummy parameter on the
    training device: ``fused``/``capturable`` depend on it)."""
    device = torch.device(opt.get('device') or 'cpu')
    for key, section in (opt.get('train') or {}).items():
        if not (key.startswith('optim_') and isinstance(section, dict)):
            continue
        options = dict(section)
        name = options.pop('type', None)
        optim_cls = optimizer_class(name, f'train.{key}')
        _check_optimizer_values(key, options, optim_cls)
        try:
            optim_cls([torch.zeros(1, device=device, requires_grad=True)], **options)
        except (TypeError, ValueError, RuntimeError) as err:  # RuntimeError: e.g. fused and foreach together
            raise ValueError(f'train.{key}: {name} does not accept these options: {err}') from None


def _scheduled_optimizers(train: dict) -> List[Tuple[str, dict, str]]:
    """(optimizer key, its section, scheduler key) of each optimizer a model builds: ``train.scheduler`` schedules
    every ``optim_*`` but CoICModel's ``optim_mod`` when ``scheduler_mod`` is given; ``optim_mod`` defaults to a copy
    of ``optim_g``."""
    mod_schedule = 'scheduler_mod' if isinstance(train.get('scheduler_mod'), dict) else 'scheduler'
    pairs = [(key, section, mod_schedule if key == 'optim_mod' else 'scheduler') for key, section in train.items()
             if key.startswith('optim_') and isinstance(section, dict)]
    if mod_schedule == 'scheduler_mod' and 'optim_mod' not in train and isinstance(train.get('optim_g'), dict):
        pairs.append(('optim_g', train['optim_g'], 'scheduler_mod'))
    return pairs


def check_eta_min_below_lr(opt: dict) -> None:
    """A cosine schedule's floor (``eta_min``/``eta_mins``) above the learning rate it anneals would raise the rate
    (``lr: 0`` with ``eta_mins: [1.0e-3]`` trained at 1e-3, without a word). Run after :func:`check_optimizers`."""
    train = opt.get('train') or {}
    for optim_key, section, sched_key in _scheduled_optimizers(train):
        scheduler = train.get(sched_key)
        if not isinstance(scheduler, dict):
            continue
        lr = section.get('lr', inspect.signature(optimizer_class(section.get('type'))).parameters['lr'].default)
        floors = [('eta_min', scheduler['eta_min'])] if 'eta_min' in scheduler else []
        floors += [('eta_mins', v) for v in scheduler.get('eta_mins') or ()]
        for name, floor in floors:
            if is_number(lr) and is_number(floor) and floor > lr:
                raise ValueError(f'train.{sched_key}.{name}: {floor:g} is above train.{optim_key}.lr ({lr:g}), so '
                                 'the cosine schedule would raise the learning rate towards it (a floor must be <= '
                                 'lr)')
