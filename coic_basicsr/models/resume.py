"""What a resumed run takes from its training state, and what from the option file.

The state gives progress: the iteration, optimizer moments, how far each scheduler got (its base learning rates
included, as in BasicSR). The option file gives the settings: the schedule (periods, milestones, restart weights,
minima) and every optimizer hyper-parameter but the learning rate, so a resumed run can be extended or re-tuned.
Every setting that differs from the state's is logged. The optimizer class cannot change.
"""
from typing import List

import torch
from basicsr.models.lr_scheduler import MultiStepRestartLR
from basicsr.utils import get_root_logger

from coic_basicsr.utils.checkpoint import to_plain

_SCHEDULER_PROGRESS_KEYS = ('last_epoch', '_step_count', 'base_lrs', '_last_lr', '_get_lr_called_within_step',
                            '_is_initial')
_LEARNING_RATE_KEYS = ('lr', 'initial_lr')  # the scheduler's business: they continue from the state
_MULTISTEP_SETTINGS = ('milestones', 'gamma', 'restarts', 'restart_weights')


def scheduler_progress(saved: dict, scheduler, index: int) -> dict:
    """The progress keys of a saved scheduler state; logs the schedule settings that the option file changes."""
    current = to_plain(scheduler.state_dict())
    changed = [f'{key}: {saved[key]} -> {value}' for key, value in current.items()
               if key not in _SCHEDULER_PROGRESS_KEYS and key in saved and saved[key] != value]
    if changed:
        get_root_logger().info(f"Scheduler {index} resumes with the option file's schedule, not the state's: "
                               f"{'; '.join(changed)}")
    return {key: value for key, value in saved.items() if key in _SCHEDULER_PROGRESS_KEYS}


def optimizer_settings(optimizers: List[torch.optim.Optimizer]) -> List[List[dict]]:
    """Every param group's settings (all but its parameters), taken before a state is loaded."""
    return [[{k: v for k, v in group.items() if k != 'params'} for group in opt.param_groups] for opt in optimizers]


def _as_tuple(value):
    return tuple(value) if isinstance(value, list) else value


def restore_optimizer_settings(optimizers: List[torch.optim.Optimizer], settings: List[List[dict]]) -> None:
    """After ``load_state_dict``: put back the option file's hyper-parameters (``settings``) but the learning rate,
    logging each one that the state had otherwise, and the learning rates that differ and stay the state's."""
    logger = get_root_logger()
    for index, (optimizer, groups) in enumerate(zip(optimizers, settings)):
        changed, kept = [], []
        for number, (group, wanted) in enumerate(zip(optimizer.param_groups, groups)):
            where = f'group {number} ' if len(groups) > 1 else ''
            for key, value in wanted.items():
                value = _as_tuple(value)  # older torch keeps betas as given: a YAML list
                if key not in group or _as_tuple(group[key]) == value:
                    continue
                if key in _LEARNING_RATE_KEYS:
                    if key == 'initial_lr':
                        kept.append(f'{where}lr {value} in the option file, {group[key]} in the state')
                    continue
                changed.append(f'{where}{key}: {_as_tuple(group[key])} -> {value}')
                group[key] = value
        if changed:
            logger.info(f"Optimizer {index} ({type(optimizer).__name__}) resumes with the option file's settings, not "
                        f"the state's: {'; '.join(changed)}")
        if kept:
            logger.warning(f'Optimizer {index} ({type(optimizer).__name__}): {"; ".join(kept)}: a resumed run '
                           "continues the state's learning rates (start a new run from the weights, "
                           'path.pretrain_network_g, to change them).')


def continue_multistep(saved: dict, scheduler) -> None:
    """After loading: BasicSR's MultiStepRestartLR derives each rate from the previous one, so a gamma, milestone or
    restart that the option file changes would never apply. Set the rates its schedule gives at this iteration."""
    if not isinstance(scheduler, MultiStepRestartLR):
        return
    current = to_plain(scheduler.state_dict())
    if all(saved.get(key) == current[key] for key in _MULTISTEP_SETTINGS):
        return  # unchanged: keep the state's rates bit for bit
    step = scheduler.last_epoch
    past = [(r, w) for r, w in zip(scheduler.restarts, scheduler.restart_weights) if r <= step]
    start, weight = max(past) if past else (-1, 1)  # as get_lr: a restart resets to initial_lr * its weight
    decays = sum(count for milestone, count in scheduler.milestones.items() if start < milestone <= step)
    for group in scheduler.optimizer.param_groups:
        group['lr'] = group['initial_lr'] * weight * scheduler.gamma**decays
    scheduler._last_lr = [group['lr'] for group in scheduler.optimizer.param_groups]


def check_optimizer_states(saved_states: List[dict], settings: List[List[dict]],
                           optimizers: List[torch.optim.Optimizer]) -> None:
    """Before loading: a state saved by another optimizer class (its settings differ both ways), or AdamW's
    ``amsgrad`` switched on (its state keeps no ``max_exp_avg_sq``), failed at the first step with a bare key."""
    for index, (saved, groups, optimizer) in enumerate(zip(saved_states, settings, optimizers)):
        name = type(optimizer).__name__
        saved_keys, wanted_keys = set(saved['param_groups'][0]) - {'params'}, set(groups[0])
        if saved_keys - wanted_keys and wanted_keys - saved_keys:
            raise ValueError(f"path.resume_state: optimizer {index} of the state is not a {name}'s (it has "
                             f"{', '.join(sorted(saved_keys - wanted_keys))}): a resumed run keeps its optimizer "
                             'type; start a new run from the weights (path.pretrain_network_g) to change it')
        if groups[0].get('amsgrad') and saved['param_groups'][0].get('amsgrad') is False and saved['state']:
            raise ValueError(f'path.resume_state: optimizer {index} ({name}): amsgrad cannot be switched on in a '
                             'resumed run (the state keeps no maximum of the second moments)')
