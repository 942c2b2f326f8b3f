"""Per-source weighted, epoch-seeded, distributed sampler for multi-source rain datasets."""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from basicsr.utils import get_root_logger
from torch.utils.data import Dataset, Sampler

from coic_basicsr.registry import SAMPLER_REGISTRY
from coic_basicsr.utils.option_values import is_number


@SAMPLER_REGISTRY.register()
class MixedDatasetSampler(Sampler):
    """Draws each epoch a per-source quota of indices, shuffles them and shards them across ranks.

    Every rank derives the same epoch plan from ``(seed, epoch)`` and keeps positions ``rank::num_replicas`` of it,
    so ranks never share a position and together cover the epoch, without communication. A source whose quota is
    below its size gets a fresh random subset each epoch; above its size, it is repeated via whole permutations
    (every item appears ``floor`` or ``ceil`` of quota/size times). Fractional quotas are rounded per epoch by
    systematic sampling, so long-run frequencies match the weights exactly in expectation.

    Quotas: without ``real_fraction`` (or when the dataset lacks synthetic or real sources) all sources share
    ``ratio * len(dataset)`` draws by ``weighting``. With it, synthetic sources share ``ratio * (number of
    synthetic pairs)`` draws by ``weighting`` and real sources share ``real_fraction`` times that many.

    The dataset should expose ``source_names``, ``source_indices`` and ``source_is_real`` (MixedRainDataset,
    MixedSyntheticRainDataset); any other dataset is treated as one synthetic source.

    YAML keys (``datasets.train.sampler``):
        type (str): 'MixedDatasetSampler'.
        weighting (str | list[float]): 'proportional' (source share ~ its size), 'balanced' (equal shares) or one
            non-negative weight per source, in ``sources`` order. Default: 'proportional'.
        real_fraction (float | None): Real draws per epoch as a fraction of the synthetic draws (CoIC: 1.0, as many
            real pairs as synthetic). None: real sources are weighted like the others. Default: None.
    Constructor-only (set by the training pipeline, refused in the sampler section): ``num_replicas``, ``rank``,
    ``ratio`` (= ``dataset_enlarge_ratio``), ``seed`` (= ``manual_seed``).
    """

    def __init__(self,
                 dataset: Dataset,
                 num_replicas: int = 1,
                 rank: int = 0,
                 ratio: float = 1,
                 seed: Optional[int] = 0,
                 weighting: Union[str, Sequence[float]] = 'proportional',
                 real_fraction: Optional[float] = None) -> None:
        if int(num_replicas) < 1 or not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f'MixedDatasetSampler: need 0 <= rank < num_replicas, got rank={rank}, '
                             f'num_replicas={num_replicas}')
        if not is_number(ratio) or ratio <= 0:
            raise ValueError(f'datasets.train.dataset_enlarge_ratio: expected a number > 0, got {ratio!r}')
        if real_fraction is not None and (not is_number(real_fraction) or real_fraction < 0):
            raise ValueError(f'datasets.train.sampler.real_fraction: expected a number >= 0 or null, got '
                             f'{real_fraction!r}')
        self.dataset = dataset
        self.num_replicas, self.rank, self.ratio = int(num_replicas), int(rank), ratio
        self.seed = int(seed or 0) % 2**63
        self.epoch = 0
        self.names, self.groups, self.is_real = self._source_info(dataset)
        sizes = np.array([len(g) for g in self.groups], dtype=np.float64)
        weights = self._weights(weighting, sizes)
        syn, real = ~np.array(self.is_real), np.array(self.is_real)
        quota = np.zeros(len(sizes))
        if real_fraction is not None and syn.any() and real.any():
            syn_total = sizes[syn].sum() * ratio
            for mask, budget, group in ((syn, syn_total, 'synthetic'), (real, syn_total * real_fraction, 'real')):
                if weights[mask].sum() <= 0 and budget > 0:
                    raise ValueError(f'datasets.train.sampler.weighting: all {group} sources have weight 0')
                quota[mask] = budget * weights[mask] / max(weights[mask].sum(), 1e-12)
        else:
            quota = sizes.sum() * ratio * weights / weights.sum()
        self.num_samples = max(1, math.ceil(quota.sum() / self.num_replicas))
        self.total_size = self.num_samples * self.num_replicas
        self.quota = quota * self.total_size / quota.sum()  # absorb the padding to a multiple of num_replicas
        self.last_counts: Dict[str, int] = {}

    @staticmethod
    def _source_info(dataset: Dataset) -> Tuple[List[str], List[np.ndarray], List[bool]]:
        groups = getattr(dataset, 'source_indices', None)
        if not groups:
            return ['all'], [np.arange(len(dataset))], [False]
        names = list(getattr(dataset, 'source_names', [f'source{i}' for i in range(len(groups))]))
        is_real = list(getattr(dataset, 'source_is_real', [False] * len(groups)))
        for name, group in zip(names, groups):
            if len(group) == 0:
                raise ValueError(f"MixedDatasetSampler: source '{name}' has no items")
        return names, [np.asarray(g, dtype=np.int64) for g in groups], [bool(r) for r in is_real]

    def _weights(self, weighting: Union[str, Sequence[float]], sizes: np.ndarray) -> np.ndarray:
        if weighting == 'proportional':
            return sizes.copy()
        if weighting == 'balanced':
            return np.ones_like(sizes)
        if isinstance(weighting, str) or not isinstance(weighting, Sequence):
            raise ValueError("datasets.train.sampler.weighting: expected 'proportional', 'balanced' or a list of "
                             f'{len(sizes)} weights, got {weighting!r}')
        weights = np.asarray(weighting, dtype=np.float64)
        if weights.shape != sizes.shape or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f'datasets.train.sampler.weighting: expected {len(sizes)} non-negative weights (one per '
                             f'source: {self.names}) with a positive sum, got {list(weighting)}')
        return weights

    def plan(self, epoch: int) -> Tuple[Dict[str, int], np.ndarray]:
        """Per-source counts and the full (all ranks) index order of ``epoch``; pure function of (seed, epoch)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        counts = np.floor(self.quota + 1e-9).astype(np.int64)
        remainder = self.total_size - int(counts.sum())
        if remainder > 0:
            order = rng.permutation(len(counts))
            frac = np.clip(self.quota[order] - counts[order], 0.0, None)
            frac *= remainder / frac.sum()
            points = rng.random() + np.arange(remainder)
            picked = np.minimum(np.searchsorted(np.cumsum(frac), points, side='right'), len(counts) - 1)
            np.add.at(counts, order[picked], 1)
        draws = []
        for group, count in zip(self.groups, counts):
            reps = -(-int(count) // len(group))
            draws.append(np.concatenate([rng.permutation(group) for _ in range(reps)])[:count] if count else group[:0])
        indices = rng.permutation(np.concatenate(draws))
        return dict(zip(self.names, counts.tolist())), indices

    def __iter__(self):
        counts, indices = self.plan(self.epoch)
        self.last_counts = counts
        if self.rank == 0:
            summary = ', '.join(f'{n}{" (real)" if r else ""}: {c}' for (n, c), r in zip(counts.items(), self.is_real))
            get_root_logger().info(f'MixedDatasetSampler epoch {self.epoch}: {self.total_size} draws ({summary})')
        return iter(indices[self.rank:self.total_size:self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose plan the next iteration follows."""
        self.epoch = epoch
