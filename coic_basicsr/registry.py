"""Registries that BasicSR 1.4.2 lacks, built with BasicSR's own :class:`Registry`."""
from basicsr.data.data_sampler import EnlargedSampler
from basicsr.utils.registry import Registry

#: Samplers selectable with ``datasets.train.sampler: {type: ...}``. Every sampler is constructed as
#: ``cls(dataset, num_replicas, rank, ratio, **options)`` (``seed`` is added when the class takes it).
SAMPLER_REGISTRY = Registry('sampler')
SAMPLER_REGISTRY.register(EnlargedSampler)

#: Learning-rate schedulers selectable with ``train.scheduler.type`` beyond BasicSR's two.
SCHEDULER_REGISTRY = Registry('scheduler')
