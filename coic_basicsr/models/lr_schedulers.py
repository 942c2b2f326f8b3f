"""Schedulers BasicSR 1.4.2 lacks but the CoIC backbones train with."""
import math
from typing import Sequence

from basicsr.models.lr_scheduler import get_position_from_periods
from torch.optim.lr_scheduler import _LRScheduler

from coic_basicsr.registry import SCHEDULER_REGISTRY


@SCHEDULER_REGISTRY.register()
class CosineAnnealingRestartCyclicLR(_LRScheduler):
    """Cosine annealing in cycles, each with its own minimum (Restormer / DRSformer schedule).

    Within cycle ``i`` of length ``periods[i]`` the lr follows a half cosine from
    ``eta_mins[i] + restart_weights[i] * (base_lr - eta_mins[i])`` down to ``eta_mins[i]``. ``restart_weights`` and
    ``eta_mins`` need one entry per period: their defaults fit a single period only.

    YAML keys (``train.scheduler``):
        type (str): ``CosineAnnealingRestartCyclicLR``.
        periods (list[int]): Iterations per cycle, e.g. ``[92000, 208000]``.
        restart_weights (list[float]): Weight ``w`` of each cycle's start, ``eta_min + w * (base_lr - eta_min)``;
            one per period, e.g. ``[1, 1]``. Default: [1].
        eta_mins (list[float]): Minimum lr of each cycle, one per period, e.g. ``[0.0003, 0.000001]``. Default: [0].

    ``last_epoch`` is not an option (the pipeline's; a resumed run restores the scheduler's state).
    """

    def __init__(self, optimizer, periods: Sequence[int], restart_weights: Sequence[float] = (1, ),
                 eta_mins: Sequence[float] = (0, ), last_epoch: int = -1):
        if not len(periods) == len(restart_weights) == len(eta_mins):
            raise ValueError(f'{type(self).__name__}: periods, restart_weights and eta_mins must have the same length '
                             f'(got {len(periods)}, {len(restart_weights)}, {len(eta_mins)})')
        self.periods = list(periods)
        self.restart_weights = list(restart_weights)
        self.eta_mins = list(eta_mins)
        self.cumulative_period = [sum(self.periods[:i + 1]) for i in range(len(self.periods))]
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        idx = get_position_from_periods(self.last_epoch, self.cumulative_period)
        weight = self.restart_weights[idx]
        start = 0 if idx == 0 else self.cumulative_period[idx - 1]
        progress = (self.last_epoch - start) / self.periods[idx]
        eta_min = self.eta_mins[idx]
        return [eta_min + weight * 0.5 * (base_lr - eta_min) * (1 + math.cos(math.pi * progress))
                for base_lr in self.base_lrs]
