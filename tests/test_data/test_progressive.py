"""Restormer's progressive learning (datasets.train mini_batch_sizes / iters / gt_sizes) in basicsr train."""
import random

import pytest
import torch
from helpers.coic import tiny_coic_options
from helpers.run import basicsr
from helpers.stock import write_options

from coic_basicsr.data.progressive import ProgressivePatches

RECIPE = {'mini_batch_sizes': [4, 2, 1], 'iters': [2, 2, 3], 'gt_sizes': [8, 12, 16], 'gt_size': 16,
          'batch_size_per_gpu': 4}


def _batch(num=4, size=16, scale=1):
    gt = torch.arange(num * 3 * size * size, dtype=torch.float32).view(num, 3, size, size)
    return {'lq': gt[..., ::scale, ::scale].clone(), 'gt': gt, 'lq_global': gt[..., :4, :4] + 0.5,
            'source': torch.arange(num), 'lq_path': [f'img{i}' for i in range(num)], 'note': 'kept'}


def test_phases_follow_the_cumulative_iters_and_the_last_continues():
    schedule = ProgressivePatches.from_options(RECIPE)
    assert [schedule.phase(i) for i in range(1, 10)] == [0, 0, 1, 1, 2, 2, 2, 2, 2]
    assert schedule.describe().startswith('from iter 1: patch 8, batch 4 per process; from iter 3: patch 12')


@pytest.mark.parametrize('scale', [1, 2])
def test_a_batch_is_cut_to_one_aligned_window_of_a_random_subset(scale):
    schedule = ProgressivePatches.from_options(dict(RECIPE, gt_sizes=[8, 12, 16]), scale=scale)
    random.seed(0)
    batch = _batch(scale=scale)
    cut = schedule(batch, current_iter=3)  # phase 1: 2 of 4 samples, 12x12 gt windows
    assert cut['gt'].shape == (2, 3, 12, 12) and cut['lq'].shape == (2, 3, 12 // scale, 12 // scale)
    keep = cut['source'].tolist()
    assert len(set(keep)) == 2 and cut['lq_path'] == [f'img{i}' for i in keep] and cut['note'] == 'kept'
    assert torch.equal(cut['lq_global'], batch['lq_global'][keep])  # global views follow the subset, uncropped
    assert torch.equal(cut['lq'], cut['gt'][..., ::scale, ::scale])  # lq and gt windows coincide
    windows = {tuple(schedule(_batch(scale=scale), 3)['gt'][0, 0, 0, :1].tolist()) for _ in range(20)}
    assert len(windows) > 1  # the window moves
    full = schedule(_batch(scale=scale), current_iter=7)  # last phase: patch == gt_size, batch 1
    assert full['gt'].shape == (1, 3, 16, 16)


@pytest.mark.parametrize('change, message', [
    ({'gt_sizes': None}, 'needs mini_batch_sizes, iters and gt_sizes together; missing: gt_sizes'),
    ({'iters': [2, 2]}, 'datasets.train.mini_batch_sizes: 3 entries, but iters has 2 phases'),
    ({'gt_sizes': [8, 12, 24]}, 'datasets.train.gt_sizes: 24 is larger than datasets.train.gt_size (16)'),
    ({'mini_batch_sizes': [8, 2, 1]}, 'datasets.train.mini_batch_sizes: 8 is larger than datasets.train.batch_size'),
    ({'iters': [2, 0, 3]}, 'datasets.train.iters: expected a non-empty list of positive integers'),
])
def test_inconsistent_keys_are_refused_naming_the_key(change, message):
    with pytest.raises(ValueError) as err:
        ProgressivePatches.from_options({**RECIPE, **change})
    assert message in str(err.value)
    assert ProgressivePatches.from_options({'gt_size': 16}) is None


def test_basicsr_train_runs_the_restormer_recipe(tmp_path):
    opt = tiny_coic_options(name='progressive', total_iter=6, stage1_iter=2)
    opt['datasets']['train'].update(batch_size_per_gpu=3, gt_size=24, mini_batch_sizes=[3, 2], iters=[3, 2],
                                    gt_sizes=[16, 24])
    opt['train']['use_grad_clip'] = True
    result = basicsr(['train', '-opt', write_options(opt, str(tmp_path / 'opt.yml'))], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Progressive learning: from iter 1: patch 16, batch 3 per process; from iter 4: patch 24, batch 2' \
        in result.stderr
    assert 'Progressive learning: patch 24, batch 2 per process from iter 4.' in result.stderr


@pytest.mark.parametrize('scale', [1, 2])
def test_progressive_window_moves_both_ways_and_keeps_lq_gt_aligned(scale):
    sched = ProgressivePatches.from_options({'mini_batch_sizes': [4, 4], 'iters': [2, 2], 'gt_sizes': [8, 16],
                                             'gt_size': 16, 'batch_size_per_gpu': 4}, scale=scale)
    gt = torch.arange(4 * 3 * 16 * 16, dtype=torch.float32).view(4, 3, 16, 16)
    random.seed(0)
    tops, lefts = set(), set()
    for _ in range(40):
        cut = sched({'lq': gt[..., ::scale, ::scale].clone(), 'gt': gt, 'source': torch.arange(4)}, current_iter=1)
        first = int(cut['gt'][0, 0, 0, 0])
        tops.add(first // 16)
        lefts.add(first % 16)
        assert torch.equal(cut['lq'], cut['gt'][..., ::scale, ::scale])
    assert len(tops) > 1 and len(lefts) > 1
