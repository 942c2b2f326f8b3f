"""What a resumed run takes from its training state, and what from the option file.

The state gives progress: the iteration, optimizer moments, how far each scheduler got (its base learning rates
included, as in BasicSR). The option file gives the settings: the schedule (periods, milestones, restart weights,
minima) and every optimizer hyper-parameter but the learning rate, so a resumed run can be extended or re-tuned.
Every setting that differs from the state's is logged.
"""
from typing import List

import torch
from basicsr.utils import get_root_logger

from coic_basicsr.utils.checkpoint import to_plain

_SCHEDULER_PROGRESS_KEYS = ('last_epoch', '_step_count', 'base_lrs', '_last_lr', '_get_lr_called_within_step',
                            '_is_initial')
_LEARNING_RATE_KEYS = ('lr', 'initial_lr')  # the scheduler's business: they continue from the state


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


def restore_optimizer_settings(optimizers: List[torch.optim.Optimizer], settings: List[List[dict]]) -> None:
    """After ``load_state_dict``: put back the option file's hyper-parameters (``settings``) but the learning rate,
    logging each one that the state had otherwise, and the learning rates that differ and stay the state's."""
    logger = get_root_logger()
    for index, (optimizer, groups) in enumerate(zip(optimizers, settings)):
        changed, kept = [], []
        for number, (group, wanted) in enumerate(zip(optimizer.param_groups, groups)):
            where = f'group {number} ' if len(groups) > 1 else ''
            for key, value in wanted.items():
                if key not in group or group[key] == value:
                    continue
                if key in _LEARNING_RATE_KEYS:
                    if key == 'initial_lr':
                        kept.append(f'{where}lr {value} in the option file, {group[key]} in the state')
                    continue
                changed.append(f'{where}{key}: {group[key]} -> {value}')
                group[key] = value
        if changed:
            logger.info(f"Optimizer {index} ({type(optimizer).__name__}) resumes with the option file's settings, not "
                        f"the state's: {'; '.join(changed)}")
        if kept:
            logger.warning(f'Optimizer {index} ({type(optimizer).__name__}): {"; ".join(kept)}: a resumed run '
                           "continues the state's learning rates (start a new run from the weights, "
                           'path.pretrain_network_g, to change them).')
