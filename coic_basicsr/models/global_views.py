"""CoIC training (``train.coic``) needs a model class that reads it (checked before any work) and the global views
``lq_global``/``gt_global`` of every training batch: which datasets give them is checked before any work where the
dataset class is known, else at the first batch."""
from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY

from coic_basicsr.data.mixed_rain_dataset import MixedRainDataset
from coic_basicsr.data.synthetic_rain_dataset import MixedSyntheticRainDataset


def _no_global_views(dataset_type) -> str:
    return (f'train.coic: needs lq_global/gt_global in the training batches, which datasets.train.type {dataset_type} '
            'does not give (use MixedRainDataset or MixedSyntheticRainDataset, scale 1)')


def _ours(cls) -> bool:
    """Whether ``cls`` is a class of BasicSR or of this package (a project's own class may do more than ours)."""
    return getattr(cls, '__module__', '').split('.')[0] in ('basicsr', 'coic_basicsr')


def _coic_model_class(opt: dict):
    """``(model class, whether it is CoICModel or a subclass)`` of an option file with ``train.coic``, else None."""
    from coic_basicsr.models.coic_model import CoICModel  # which imports this module
    if (opt.get('train') or {}).get('coic') is None:
        return None
    model_cls = MODEL_REGISTRY.get(opt.get('model_type', 'SRModel'))
    return model_cls, isinstance(model_cls, type) and issubclass(model_cls, CoICModel)


def check_coic_model_type(opt: dict) -> None:
    """Before any work: ``train.coic`` with a model class of BasicSR (or of this package) that is not CoICModel
    trained network_g alone without a word (nothing read train.coic). A class registered by a project may read it
    and is left alone."""
    found = _coic_model_class(opt)
    if found and _ours(found[0]) and not found[1]:
        raise ValueError(f"train.coic: only CoICModel (or a subclass) trains with CoIC; model_type "
                         f"{opt.get('model_type', 'SRModel')} would train network_g alone (set model_type: CoICModel "
                         'or remove train.coic)')


def check_global_views_given(opt: dict) -> None:
    """Before any work: CoIC training on a dataset class of BasicSR (or of this package) that is not a
    MixedRainDataset/MixedSyntheticRainDataset gives no global views. A class registered by a project may give them
    and is left to :func:`require_global_views` at the first iteration."""
    train_set = (opt.get('datasets') or {}).get('train')
    found = _coic_model_class(opt)
    if not (found and found[1]) or not isinstance(train_set, dict):
        return
    dataset_cls = DATASET_REGISTRY.get(train_set['type'])
    if _ours(dataset_cls) and not issubclass(dataset_cls, (MixedRainDataset, MixedSyntheticRainDataset)):
        raise ValueError(_no_global_views(train_set['type']))


def require_global_views(opt: dict, present: bool) -> None:
    """CoIC training (``train.coic``) reads ``lq_global``/``gt_global`` from every training batch: refuse a batch
    without them at once, naming the dataset type (stage 2, which first reads them, may be 40k iterations away)."""
    if not present:
        raise ValueError(_no_global_views(((opt.get('datasets') or {}).get('train') or {}).get('type')))
