"""MixedDatasetSampler: weights, sharding, determinism, real-source resampling, logging, registry construction."""
import inspect
import logging
from collections import Counter

import numpy as np
import pytest
import torch

import coic_basicsr  # noqa: F401
from basicsr.utils import get_root_logger
from basicsr.utils.registry import DATASET_REGISTRY
from coic_basicsr.registry import SAMPLER_REGISTRY

MixedDatasetSampler = SAMPLER_REGISTRY.get('MixedDatasetSampler')


class FakeSources(torch.utils.data.Dataset):
    """Index-only dataset with contiguous sources of the given sizes."""

    def __init__(self, sizes, real=None):
        starts = np.cumsum([0] + list(sizes))
        self.source_names = [f's{i}' for i in range(len(sizes))]
        self.source_indices = [list(range(starts[i], starts[i + 1])) for i in range(len(sizes))]
        self.source_is_real = list(real or [False] * len(sizes))
        self.opt = {'name': 'fake'}

    def __len__(self):
        return sum(len(g) for g in self.source_indices)

    def __getitem__(self, index):
        return index

    def source_of(self, index):
        return next(s for s, g in enumerate(self.source_indices) if g[0] <= index <= g[-1])


def _frequencies(sampler, dataset, epochs):
    counts = Counter()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        counts.update(dataset.source_of(i) for i in sampler)
    total = sum(counts.values())
    return np.array([counts[s] / total for s in range(len(dataset.source_indices))])


@pytest.mark.parametrize('weighting, expected', [
    ('proportional', [10 / 70, 20 / 70, 40 / 70]),
    ('balanced', [1 / 3, 1 / 3, 1 / 3]),
    ([1, 2, 5], [1 / 8, 2 / 8, 5 / 8]),
    ([0.3, 0, 0.7], [0.3, 0.0, 0.7]),
])
def test_source_frequencies_match_weights(weighting, expected):
    ds = FakeSources([10, 20, 40])
    sampler = MixedDatasetSampler(ds, 1, 0, ratio=1, seed=5, weighting=weighting)
    assert len(sampler) == 70
    np.testing.assert_allclose(_frequencies(sampler, ds, 200), expected, atol=0.01)


def test_fractional_quotas_round_without_bias():
    ds = FakeSources([7, 7, 7])
    sampler = MixedDatasetSampler(ds, 1, 0, ratio=1, seed=1, weighting=[1, 1, 2])  # quotas 5.25/5.25/10.5
    per_epoch = []
    for epoch in range(400):
        counts, _ = sampler.plan(epoch)
        per_epoch.append(list(counts.values()))
    per_epoch = np.array(per_epoch)
    assert set(per_epoch[:, 0]) == {5, 6} and set(per_epoch[:, 2]) == {10, 11}
    assert (per_epoch.sum(1) == 21).all()
    np.testing.assert_allclose(per_epoch.mean(0), [5.25, 5.25, 10.5], atol=0.12)


def test_two_ranks_disjoint_and_cover_epoch():
    ds = FakeSources([13, 8, 6])
    ranks = [MixedDatasetSampler(ds, 2, r, ratio=1, seed=3) for r in range(2)]
    for epoch in (0, 4):
        parts = []
        for s in ranks:
            s.set_epoch(epoch)
            parts.append(list(s))
        assert len(parts[0]) == len(parts[1]) == len(ranks[0]) == 14
        _, full = ranks[0].plan(epoch)
        # positions are interleaved, never shared; together they are exactly the epoch plan
        interleaved = [v for pair in zip(*parts) for v in pair]
        assert interleaved == full.tolist()
        assert len(set(parts[0]) & set(parts[1])) <= 1  # 27 items padded to 28: one repeat may land on both
        assert set(parts[0]) | set(parts[1]) == set(range(27))


def test_order_deterministic_by_seed_and_epoch():
    ds = FakeSources([30, 30])
    a, b = MixedDatasetSampler(ds, 1, 0, seed=7), MixedDatasetSampler(ds, 1, 0, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b) == list(a)
    b.set_epoch(4)
    assert list(b) != list(a)
    c = MixedDatasetSampler(ds, 1, 0, seed=8)
    c.set_epoch(3)
    assert list(c) != list(a)


def test_real_sources_redrawn_each_epoch_to_real_fraction():
    ds = FakeSources([10, 20, 300], real=[False, False, True])
    sampler = MixedDatasetSampler(ds, 1, 0, ratio=2, seed=0, weighting='proportional', real_fraction=1.0)
    assert len(sampler) == 120  # 60 synthetic draws (ratio 2) + as many real
    real_sets = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        real = [i for i in indices if i >= 30]
        assert len(real) == 60 and len(set(real)) == 60  # a subset without repeats
        assert Counter(i < 10 for i in indices if i < 30) == {True: 20, False: 40}
        real_sets.append(set(real))
    assert real_sets[0] != real_sets[1] != real_sets[2]
    half = MixedDatasetSampler(ds, 1, 0, ratio=1, seed=0, real_fraction=0.5)
    assert half.plan(0)[0] == {'s0': 10, 's1': 20, 's2': 15}
    assert MixedDatasetSampler(ds, 1, 0, ratio=1).plan(0)[0] == {'s0': 10, 's1': 20, 's2': 300}


def test_small_sources_repeat_evenly():
    ds = FakeSources([3, 30])
    counts, indices = MixedDatasetSampler(ds, 1, 0, seed=2, weighting='balanced').plan(0)
    assert counts == {'s0': 17, 's1': 16} or counts == {'s0': 16, 's1': 17}
    small = Counter(i for i in indices.tolist() if i < 3)
    assert max(small.values()) - min(small.values()) <= 1


def test_bad_options():
    ds = FakeSources([4, 4])
    for weighting, fragment in ([1], 'weighting'), ([1, -1], 'non-negative'), ('uniform', 'balanced'):
        with pytest.raises(ValueError, match=fragment):
            MixedDatasetSampler(ds, 1, 0, weighting=weighting)
    with pytest.raises(ValueError, match='real_fraction'):
        MixedDatasetSampler(ds, 1, 0, real_fraction=-1)
    with pytest.raises(ValueError, match='rank'):
        MixedDatasetSampler(ds, 2, 2)


def test_logs_per_source_counts_on_rank0_only():
    ds = FakeSources([5, 9], real=[False, True])
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = get_root_logger()
    level = logger.level
    logger.setLevel(logging.INFO)  # BasicSR sets INFO only once a log file is configured
    logger.addHandler(handler)
    try:
        list(MixedDatasetSampler(ds, 2, 1, seed=0, real_fraction=1.0))
        assert not records
        sampler = MixedDatasetSampler(ds, 2, 0, seed=0, real_fraction=1.0)
        sampler.set_epoch(6)
        list(sampler)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    message = records[-1].getMessage()
    assert 'epoch 6' in message and 's0: 5' in message and 's1 (real): 5' in message
    assert sampler.last_counts == {'s0': 5, 's1': 5}


def test_registry_construction_with_synthetic_dataset():
    opt = dict(name='syn', phase='train', num_per_source=6, bg_size=32, gt_size=16, global_size=8,
               sources=[dict(name='light', preset='light_sparse'), dict(name='mist', preset='mist', real=True)])
    ds = DATASET_REGISTRY.get('MixedSyntheticRainDataset')(opt)
    cls = SAMPLER_REGISTRY.get('MixedDatasetSampler')
    assert 'seed' in inspect.signature(cls.__init__).parameters
    sampler = cls(ds, 1, 0, 2, seed=11, weighting='balanced', real_fraction=1.0)  # the pipeline's call pattern
    loader = torch.utils.data.DataLoader(ds, batch_size=8, sampler=sampler)
    sources = torch.cat([batch['source'] for batch in loader])
    assert len(sources) == len(sampler) == 24 and sources.bincount().tolist() == [12, 12]


@pytest.mark.parametrize('key, source', [('seed', 'manual_seed'), ('ratio', 'datasets.train.dataset_enlarge_ratio'),
                                         ('rank', 'the process rank')])
def test_a_key_the_pipeline_sets_is_refused_in_the_sampler_section(key, source):
    # sampler: {seed: 5} overrode manual_seed (and seed: ~ gave seed 0) without a word
    from coic_basicsr.data.samplers import build_sampler
    from coic_basicsr.utils.section_keys import check_section_keys
    sampler = {'type': 'MixedDatasetSampler', key: 5}
    expected = f'datasets.train.sampler.{key}: set by the training pipeline from {source}; remove it here'
    with pytest.raises(ValueError) as err:
        check_section_keys({'datasets': {'train': {'type': 'PairedImageDataset', 'sampler': sampler}}})
    assert str(err.value) == expected
    with pytest.raises(ValueError) as err:
        build_sampler(FakeSources([4, 4]), {'sampler': sampler}, 1, 0, seed=3)
    assert str(err.value) == expected
    assert build_sampler(FakeSources([4, 4]), {'sampler': {'type': 'MixedDatasetSampler'}}, 1, 0, seed=3).seed == 3


def test_dataset_enlarge_ratio_reaches_the_sampler():
    from coic_basicsr.data.samplers import build_sampler
    sampler = build_sampler(list(range(10)), {'dataset_enlarge_ratio': 3}, world_size=1, rank=0, seed=0)
    assert len(sampler) == 30
