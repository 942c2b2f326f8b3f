"""Restormer's progressive learning: smaller batches of larger patches as training goes on.

The dataset crops ``gt_size`` (the largest patch); at each iteration the phase of ``iters`` picks a patch size from
``gt_sizes`` and a batch size from ``mini_batch_sizes``; the batch is cut down to a random subset of that size and
every ``lq``/``gt`` crop to one random window of that patch size (the same window for the whole batch, as
Restormer does). Per-sample entries (``lq_global``/``gt_global``, ``source``, paths) follow the subset; the global
views are not cropped. Randomness comes from ``random``, which the training loop seeds per iteration, so a resumed
run cuts the same batches.
"""
import random
from typing import Dict, List, Optional

import torch
from basicsr.utils import get_root_logger

from coic_basicsr.utils.option_values import is_integer

KEYS = ('mini_batch_sizes', 'iters', 'gt_sizes')


def _positive_ints(values, key: str) -> List[int]:
    if not isinstance(values, (list, tuple)) or not values or not all(is_integer(v) and v > 0 for v in values):
        raise ValueError(f'datasets.train.{key}: expected a non-empty list of positive integers, got {values!r}')
    return list(values)


class ProgressivePatches:
    """Cuts each training batch to the current phase's batch and patch size.

    YAML keys (``datasets.train``, Restormer's names; all three or none):
        mini_batch_sizes (list[int]): Batch size per process of each phase, at most ``batch_size_per_gpu``.
        iters (list[int]): Iterations of each phase; the last phase continues to ``train.total_iter``.
        gt_sizes (list[int]): Patch size of each phase, at most ``gt_size`` (the crop the dataset makes).
    """

    def __init__(self, mini_batch_sizes: List[int], iters: List[int], gt_sizes: List[int], scale: int = 1) -> None:
        self.mini_batch_sizes, self.gt_sizes, self.scale = mini_batch_sizes, gt_sizes, int(scale)
        self.ends = [sum(iters[:i + 1]) for i in range(len(iters))]
        self._logged_phase: Optional[int] = None

    @classmethod
    def from_options(cls, dataset_opt: dict, scale: int = 1) -> Optional['ProgressivePatches']:
        """None without the progressive keys; a one-line error naming the key for inconsistent ones."""
        given = [key for key in KEYS if dataset_opt.get(key) is not None]
        if not given:
            return None
        if len(given) < len(KEYS):
            missing = ', '.join(key for key in KEYS if key not in given)
            raise ValueError(f'datasets.train: progressive learning needs mini_batch_sizes, iters and gt_sizes '
                             f'together; missing: {missing}')
        values = {key: _positive_ints(dataset_opt[key], key) for key in KEYS}
        phases = len(values['iters'])
        for key in ('mini_batch_sizes', 'gt_sizes'):
            if len(values[key]) != phases:
                raise ValueError(f'datasets.train.{key}: {len(values[key])} entries, but iters has {phases} phases')
        for key, limit_key in (('mini_batch_sizes', 'batch_size_per_gpu'), ('gt_sizes', 'gt_size')):
            limit = dataset_opt.get(limit_key)
            too_large = [v for v in values[key] if limit is not None and v > limit]
            if too_large:
                raise ValueError(f'datasets.train.{key}: {too_large[0]} is larger than datasets.train.{limit_key} '
                                 f'({limit}); {limit_key} must be the largest')
        if any(size % scale for size in values['gt_sizes']):
            raise ValueError(f'datasets.train.gt_sizes: every size must be a multiple of scale ({scale})')
        return cls(values['mini_batch_sizes'], values['iters'], values['gt_sizes'], scale)

    def phase(self, current_iter: int) -> int:
        """Index of the phase that iteration ``current_iter`` (1-based) belongs to."""
        return next((j for j, end in enumerate(self.ends) if current_iter <= end), len(self.ends) - 1)

    def describe(self) -> str:
        starts = [1] + [end + 1 for end in self.ends[:-1]]
        return '; '.join(f'from iter {start}: patch {size}, batch {batch} per process'
                         for start, size, batch in zip(starts, self.gt_sizes, self.mini_batch_sizes))

    def __call__(self, batch: Dict, current_iter: int) -> Dict:
        j = self.phase(current_iter)
        size, count = self.gt_sizes[j], self.mini_batch_sizes[j]
        if j != self._logged_phase:
            get_root_logger().info(f'Progressive learning: patch {size}, batch {count} per process from iter '
                                   f'{current_iter}.')
            self._logged_phase = j
        num = batch['lq'].shape[0]
        if count < num:
            keep = sorted(random.sample(range(num), k=count))
            index = torch.tensor(keep, device=batch['lq'].device)
            batch = {key: _subset(value, keep, index, num) for key, value in batch.items()}
        gt_h, gt_w = batch['gt'].shape[-2:]
        if size < gt_h or size < gt_w:
            top = int((gt_h - size) // self.scale * random.random())
            left = int((gt_w - size) // self.scale * random.random())
            lq_size = size // self.scale
            batch = dict(batch, lq=batch['lq'][..., top:top + lq_size, left:left + lq_size],
                         gt=batch['gt'][..., top * self.scale:top * self.scale + size,
                                        left * self.scale:left * self.scale + size])
        return batch


def _subset(value, keep: List[int], index: torch.Tensor, num: int):
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == num:
        return value.index_select(0, index.to(value.device))
    if isinstance(value, (list, tuple)) and len(value) == num:
        return [value[i] for i in keep]
    return value
