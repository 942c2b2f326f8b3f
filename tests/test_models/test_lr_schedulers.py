"""CosineAnnealingRestartCyclicLR against its closed form (Restormer's cyclic cosine schedule)."""
import math

import pytest
import torch

from coic_basicsr.models.lr_schedulers import CosineAnnealingRestartCyclicLR


def test_each_cycle_is_a_half_cosine_from_its_weighted_start_to_its_own_minimum():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = CosineAnnealingRestartCyclicLR(optimizer, periods=[4, 6], restart_weights=[1, 0.5],
                                               eta_mins=[0.3, 0.01])
    rates = [optimizer.param_groups[0]['lr']]
    for _ in range(10):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]['lr'])

    def cosine(eta_min, weight, progress):
        return eta_min + weight * 0.5 * (1.0 - eta_min) * (1 + math.cos(math.pi * progress))

    # iteration 4 ends cycle 0 (BasicSR's get_position_from_periods); cycle 1 runs over its own 6 iterations
    expected = [cosine(0.3, 1, i / 4) for i in range(5)] + [cosine(0.01, 0.5, (i - 4) / 6) for i in range(5, 11)]
    assert rates == pytest.approx(expected)
