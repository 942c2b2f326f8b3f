"""Build the training sampler named by ``datasets.train.sampler`` (BasicSR's ``EnlargedSampler`` by default)."""
import inspect

from torch.utils.data import Dataset, Sampler

from coic_basicsr.registry import SAMPLER_REGISTRY


def build_sampler(dataset: Dataset, dataset_opt: dict, world_size: int, rank: int, seed: int) -> Sampler:
    """Construct ``cls(dataset, num_replicas, rank, ratio, [seed,] **options)`` from ``dataset_opt['sampler']``.

    YAML keys (``datasets.train``):
        sampler (dict): ``type`` (a SAMPLER_REGISTRY name) plus the sampler's own keys. Default: {type: EnlargedSampler}.
        dataset_enlarge_ratio (int): Passed to the sampler as ``ratio``. Default: 1.
    """
    options = dict(dataset_opt.get('sampler') or {'type': 'EnlargedSampler'})
    sampler_cls = SAMPLER_REGISTRY.get(options.pop('type'))
    parameters = inspect.signature(sampler_cls.__init__).parameters
    if 'seed' in parameters and 'seed' not in options:
        options['seed'] = seed
    ratio = dataset_opt.get('dataset_enlarge_ratio', 1)
    return sampler_cls(dataset, world_size, rank, ratio, **options)


class ResumableSampler(Sampler):
    """Wraps a training sampler so a resumed run starts mid-epoch where the interrupted one stopped.

    ``skip_next_epoch(n)`` drops the first ``n`` indices of the next iteration only; everything else (``set_epoch``,
    attributes such as per-source counts) is delegated to the wrapped sampler.
    """

    def __init__(self, sampler: Sampler):
        self.sampler = sampler
        self._skip = 0

    def skip_next_epoch(self, num_samples: int) -> None:
        self._skip = num_samples

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        skip, self._skip = self._skip, 0
        for position, index in enumerate(iter(self.sampler)):
            if position >= skip:
                yield index

    def __len__(self) -> int:
        return len(self.sampler)

    def __getattr__(self, name: str):
        if name == 'sampler':  # not yet set (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.sampler, name)
