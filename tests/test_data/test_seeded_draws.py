"""Per-draw seeding of the training data (ResumableSampler + SeededDraws): crops and flips are a function of
(manual_seed, rank, epoch, position in the epoch), not of the loader worker that made the item."""
import pickle
import random

import numpy as np
import torch
from torch.utils.data import DataLoader

import coic_basicsr  # noqa: F401
from basicsr.data.data_sampler import EnlargedSampler
from coic_basicsr.data.samplers import DrawIndex, ResumableSampler, SeededDraws
from coic_basicsr.data.synthetic_rain_dataset import MixedSyntheticRainDataset


def _train_set() -> MixedSyntheticRainDataset:
    return MixedSyntheticRainDataset({'name': 'train', 'phase': 'train', 'sources': [{'name': 'a', 'preset': 'mist'}],
                                      'num_per_source': 6, 'bg_size': 32, 'gt_size': 16, 'global_size': 16})


def _draws(seed: int = 5, rank: int = 0, epoch: int = 0, skip: int = 0):
    sampler = ResumableSampler(EnlargedSampler(list(range(6)), 1, 0, 1), seed=seed, rank=rank)
    sampler.set_epoch(epoch)
    sampler.skip_next_epoch(skip)
    return list(sampler)


def test_draw_seeds_depend_on_seed_rank_epoch_and_position_only():
    draws = _draws()
    assert all(isinstance(d, DrawIndex) for d in draws) and len({d.seed for d in draws}) == 6
    assert [(int(d), d.seed) for d in _draws()] == [(int(d), d.seed) for d in draws]
    assert [(int(d), d.seed) for d in _draws(skip=4)] == [(int(d), d.seed) for d in draws[4:]]
    for other in (_draws(seed=6), _draws(rank=1), _draws(epoch=1)):
        assert not {d.seed for d in other} & {d.seed for d in draws}
    copy = pickle.loads(pickle.dumps(draws[0]))
    assert (type(copy), int(copy), copy.seed) == (DrawIndex, int(draws[0]), draws[0].seed)


def test_an_item_is_the_same_whatever_random_state_or_worker_made_it():
    dataset = SeededDraws(_train_set())
    draw = DrawIndex(3, 12345)
    random.seed(1), np.random.seed(1)
    first = dataset[draw]
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    second = dataset[draw]
    assert torch.equal(first['lq'], second['lq']) and torch.equal(first['gt_global'], second['gt_global'])
    assert not torch.equal(dataset[DrawIndex(3, 54321)]['lq'], first['lq'])  # another draw, another crop
    assert dataset.source_names == ['a'] and len(dataset) == 6  # attributes of the wrapped dataset

    batches = {}
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=2, sampler=_draws(skip=2 * workers), num_workers=workers)
        batches[workers] = [batch['lq'] for batch in loader]
    assert len(batches[2]) == 1 and torch.equal(batches[2][0], batches[0][2])  # resumed mid-epoch, in workers


def test_seeded_draws_seed_numpy_too():
    # BasicSR's degradations and user datasets draw from np.random
    class NumpyDataset(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return np.random.rand()

    ds = SeededDraws(NumpyDataset())
    np.random.seed(1)
    first = ds[DrawIndex(2, 777)]
    np.random.seed(2)
    assert ds[DrawIndex(2, 777)] == first
