"""Build the training sampler named by ``datasets.train.sampler`` (BasicSR's ``EnlargedSampler`` by default), and
make every draw's random augmentation a function of where the draw sits in the run."""
import inspect
import random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from coic_basicsr.registry import SAMPLER_REGISTRY


#: Sampler arguments the training pipeline passes itself, not YAML keys of the sampler section: where each comes from.
PIPELINE_ARGUMENTS = {'dataset': 'the dataset section', 'num_replicas': 'the number of processes',
                      'rank': 'the process rank', 'ratio': 'datasets.train.dataset_enlarge_ratio',
                      'seed': 'manual_seed'}


def check_pipeline_arguments(options: dict, where: str) -> None:
    """Refuse, in one line, a sampler section key that the pipeline sets (a ``seed`` there overrode manual_seed)."""
    for name, source in PIPELINE_ARGUMENTS.items():
        if name in options:
            raise ValueError(f'{where}.{name}: set by the training pipeline from {source}; remove it here')


def build_sampler(dataset: Dataset, dataset_opt: dict, world_size: int, rank: int, seed: int) -> Sampler:
    """Construct ``cls(dataset, num_replicas, rank, ratio, [seed,] **options)`` from ``dataset_opt['sampler']``.

    YAML keys (``datasets.train``):
        sampler (dict): ``type`` (a SAMPLER_REGISTRY name) plus the sampler's own keys (not those of
            :data:`PIPELINE_ARGUMENTS`: ``seed`` is ``manual_seed``). Default: {type: EnlargedSampler}.
        dataset_enlarge_ratio (float): Passed to the sampler as ``ratio``: a number > 0 (BasicSR's EnlargedSampler
            and the iterations per epoch take fractions too). Default: 1.
    """
    options = dict(dataset_opt.get('sampler') or {'type': 'EnlargedSampler'})
    sampler_cls = SAMPLER_REGISTRY.get(options.pop('type'))
    check_pipeline_arguments(options, 'datasets.train.sampler')
    if 'seed' in inspect.signature(sampler_cls.__init__).parameters:
        options['seed'] = seed
    ratio = dataset_opt.get('dataset_enlarge_ratio', 1)
    return sampler_cls(dataset, world_size, rank, ratio, **options)


class DrawIndex(int):
    """A dataset index that carries the seed of its draw (see :class:`SeededDraws`)."""

    def __new__(cls, index: int, seed: int) -> 'DrawIndex':
        draw = super().__new__(cls, index)
        draw.seed = seed
        return draw

    def __reduce__(self):
        return DrawIndex, (int(self), self.seed)


class SeededDraws(Dataset):
    """Wraps the training dataset: each :class:`DrawIndex` seeds ``random``, numpy and torch before the item is made.

    BasicSR seeds every data-loader worker once, with the same seed each epoch, so a crop or flip depended on which
    worker made the item and what it made before: a resumed run (which skips the batches already consumed) drew
    other augmentations than the uninterrupted run, and ``num_worker_per_gpu`` changed the data. Seeded per draw,
    the augmentation is a function of (``manual_seed``, rank, epoch, position in the epoch) only.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __getitem__(self, index: int):
        if isinstance(index, DrawIndex):
            random.seed(index.seed)
            np.random.seed(index.seed % 2**32)
            torch.default_generator.manual_seed(index.seed)  # the CPU generator only: torch.manual_seed is 100x slower
        return self.dataset[int(index)]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name == 'dataset' or name.startswith('__'):  # not yet set (unpickling); no batched __getitems__ bypass
            raise AttributeError(name)
        return getattr(self.dataset, name)


class ResumableSampler(Sampler):
    """Wraps a training sampler so a resumed run starts mid-epoch where the interrupted one stopped.

    ``skip_next_epoch(n)`` drops the first ``n`` indices of the next iteration only; everything else (``set_epoch``,
    attributes such as per-source counts) is delegated to the wrapped sampler. Indices come out as
    :class:`DrawIndex` seeded from (``seed``, ``rank``, epoch, position), for :class:`SeededDraws`.
    """

    def __init__(self, sampler: Sampler, seed: int = 0, rank: int = 0):
        self.sampler = sampler
        self.seed, self.rank = int(seed), int(rank)
        self._skip = self._epoch = 0

    def skip_next_epoch(self, num_samples: int) -> None:
        self._skip = num_samples

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        skip, self._skip = self._skip, 0
        for position, index in enumerate(iter(self.sampler)):
            if position >= skip:
                draw = np.random.SeedSequence([self.seed % 2**63, self.rank, self._epoch, position])
                # int() first: numpy 1 has no uint64 >> int
                yield DrawIndex(index, int(draw.generate_state(2, np.uint64)[0]) >> 1)

    def __len__(self) -> int:
        return len(self.sampler)

    def __getattr__(self, name: str):
        if name == 'sampler':  # not yet set (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.sampler, name)
