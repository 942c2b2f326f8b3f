"""The layout of an option file: the sections that must be mappings are (checked first, before anything reads
them); the keys a run cannot do without are there and the dataset keys name a phase (checked with the other options).
Each refusal names the full key in one line (a string ``logger`` or ``network_g`` was an AttributeError traceback; a
missing ``total_iter`` a bare ``error: total_iter``)."""
from typing import Iterator, Tuple

_NULL_OK = True  # a null section is read as an absent one (the code reads ``.get(key) or {}``)
#: top-level sections: (null accepted in training, null accepted in testing, what the mapping holds)
_TOP_SECTIONS = {
    'datasets': (False, False, 'dataset sections (train, val, ...)'),
    'train': (False, _NULL_OK, 'training options'),
    'val': (_NULL_OK, _NULL_OK, 'validation options'),
    'path': (False, False, 'paths'),
    'logger': (False, _NULL_OK, 'logger options'),
    'dist_params': (_NULL_OK, _NULL_OK, 'distributed options (backend, port, timeout)'),
}
#: sections of ``train`` by key: (null accepted, what the mapping holds); ``*_opt`` are loss sections
_TRAIN_SECTIONS = {'coic': (_NULL_OK, 'CoIC options'), 'mixing_augs': (_NULL_OK, 'augmentation options'),
                   'scheduler': (_NULL_OK, 'scheduler options with a type'),
                   'scheduler_mod': (_NULL_OK, 'scheduler options with a type')}
#: keys BasicSR's training datasets read as ``opt[key]`` from each training item (a bare ``error: use_hflip`` at
#: iteration 1, after the experiment folder was made): key: (null accepted, what it is); a null flip reads as false
_ITEM_KEYS = {'gt_size': (False, 'the size of the gt training crops'),
              'use_hflip': (_NULL_OK, 'true or false: random horizontal flips'),
              'use_rot': (_NULL_OK, 'true or false: random vertical flips and 90-degree rotations')}
_FLIPS = ('use_hflip', 'use_rot')
#: BasicSR 1.4.2's datasets by type: the keys of :data:`_ITEM_KEYS` they read in the training phase
_TRAIN_ITEM_KEYS = {'PairedImageDataset': ('gt_size', *_FLIPS), 'RealESRGANPairedDataset': ('gt_size', *_FLIPS),
                    'RealESRGANDataset': _FLIPS, 'FFHQDataset': ('use_hflip',),
                    'REDSDataset': ('gt_size', *_FLIPS), 'REDSRecurrentDataset': ('gt_size', *_FLIPS),
                    'Vimeo90KDataset': ('gt_size', *_FLIPS), 'Vimeo90KRecurrentDataset': ('gt_size', *_FLIPS)}


def _refuse_non_mapping(where: str, value, holds: str, null_ok: bool) -> None:
    if not (isinstance(value, dict) or (value is None and null_ok)):
        raise ValueError(f'{where}: expected a mapping of {holds}, got {value!r}')


def _sections(opt: dict, is_train: bool) -> Iterator[Tuple[str, object, str, bool]]:
    """(key path, value, what it holds, null accepted) of every section present that must be a mapping; a section
    is yielded only once its parent is known to be a mapping."""
    for key, (train_null, test_null, holds) in _TOP_SECTIONS.items():
        if key in opt:
            yield key, opt[key], holds, train_null if is_train else test_null
    for key, value in opt.items():
        if isinstance(key, str) and key.startswith('network_'):
            yield key, value, 'network options with a type (e.g. {type: CoICRestormer})', False
    for phase, dataset in (opt.get('datasets') or {}).items():
        yield f'datasets.{phase}', dataset, 'dataset options', False
        if isinstance(dataset, dict):
            for key, holds, null_ok in (
                    ('sampler', 'sampler options with a type (e.g. {type: MixedDatasetSampler})', _NULL_OK),
                    ('io_backend', 'io_backend options (e.g. {type: disk})', False)):  # BasicSR's: opt['io_backend']
                if key in dataset:
                    yield f'datasets.{phase}.{key}', dataset[key], holds, null_ok
            sources = dataset.get('sources')
            for i, source in enumerate(sources if isinstance(sources, list) else ()):
                for key, holds in (('params', 'rain parameters (e.g. {preset: mist, haze: 0.6})'),
                                   ('io_backend', 'io_backend options (e.g. {type: lmdb})')):
                    if isinstance(source, dict) and key in source:  # a source that is no mapping: checked_sources
                        yield f'datasets.{phase}.sources[{i}].{key}', source[key], holds, _NULL_OK
    val = opt.get('val')
    if isinstance(val, dict) and 'metrics' in val:
        yield 'val.metrics', val['metrics'], 'metric sections (e.g. {psnr: {type: calculate_psnr, crop_border: 0}})', \
            _NULL_OK
        for name, metric in (val['metrics'] or {}).items():
            yield f'val.metrics.{name}', metric, 'metric options with a type (e.g. {type: calculate_psnr})', False
    logger = opt.get('logger')
    if isinstance(logger, dict) and 'wandb' in logger:
        yield 'logger.wandb', logger['wandb'], 'wandb options (project, resume_id)', _NULL_OK
    train = opt.get('train')
    for key, value in (train.items() if isinstance(train, dict) else ()):
        key = str(key)
        if key in _TRAIN_SECTIONS:
            yield f'train.{key}', value, _TRAIN_SECTIONS[key][1], _TRAIN_SECTIONS[key][0]
        elif key.endswith('_opt'):
            yield f'train.{key}', value, 'loss options with a type (e.g. {type: L1Loss, loss_weight: 1.0})', _NULL_OK
        elif key.startswith('optim_'):  # a null optim_g: check_required_keys; a null optim_mod: optim_g's copy
            yield f'train.{key}', value, 'optimizer options with a type (e.g. {type: Adam, lr: 2.0e-4})', _NULL_OK


def _refuse_non_text_keys(node, where: str = '') -> None:
    """Every key of every mapping is text (``train: {1: 2}`` or a top-level ``5: x`` were AttributeError tracebacks,
    and BasicSR's dict2str a TypeError)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(node, dict) and not isinstance(key, str):
            raise ValueError(f'{where}{"." if where else ""}{key}: expected an option name, got the '
                             f'{type(key).__name__} key {key!r} (quote it if it is meant as a name)')
        _refuse_non_text_keys(value, f'{where}[{key}]' if isinstance(node, list) else
                              f'{where}{"." if where else ""}{key}')


def check_sections_are_mappings(opt: dict, is_train: bool) -> None:
    """Every option key is text, every section present that the code reads as a mapping is one, and ``name`` is a
    non-empty string."""
    name = opt.get('name')
    if not isinstance(name, str) or not name:
        raise ValueError(f'name: expected a non-empty string (the experiment name), got {name!r}')
    _refuse_non_text_keys(opt)
    for where, value, holds, null_ok in _sections(opt, is_train):
        _refuse_non_mapping(where, value, holds, null_ok)


def _missing(section: dict, key: str) -> bool:
    return section.get(key) is None


def basicsr_dataset_name(dataset_type) -> str:
    """The class name of a BasicSR dataset type ('' for others): ``RealESRGANDataset`` resolves to BasicSR's
    ``RealESRGANDataset_basicsr`` unless Real-ESRGAN registered its own."""
    from basicsr.utils.registry import DATASET_REGISTRY
    for name in (dataset_type, f'{dataset_type}_basicsr') if isinstance(dataset_type, str) else ():
        if name in DATASET_REGISTRY:
            cls = DATASET_REGISTRY.get(name)
            return cls.__name__ if cls.__module__.startswith('basicsr.') else ''
    return ''


def check_required_keys(opt: dict, is_train: bool) -> None:
    """The keys a run reads without a default (BasicSR's ``opt[key]``) are there: ``network_g`` and each test set's
    ``name`` always; for training also ``train``, ``train.optim_g`` (BasicSR's SRModel family),
    ``train.total_iter``, ``datasets.train``'s batch size and worker count, and the crop size and flips that
    BasicSR's training datasets read from each item. A null counts as missing (but a null flip: no flips)."""
    if _missing(opt, 'network_g'):
        raise ValueError('network_g: required (the network to train or test, e.g. {type: CoICRestormer})')
    datasets = opt.get('datasets') or {}
    if is_train:
        check_dataset_keys_name_phases(datasets)
    for phase, dataset in datasets.items():
        if str(phase).split('_')[0] != 'train' and _missing(dataset, 'name'):  # a training set is not scored
            raise ValueError(f'datasets.{phase}.name: required (the name its results, images and best metrics are '
                             'kept under)')
    if not is_train:
        return
    if _missing(opt, 'train'):
        raise ValueError('train: required (the training options: optimizers, scheduler, losses, total_iter)')
    train = opt['train']
    if _missing(train, 'optim_g') and _reads_optim_g(opt.get('model_type', 'SRModel')):
        raise ValueError('train.optim_g: required (the optimizer of network_g, e.g. {type: Adam, lr: 2.0e-4})')
    if 'total_iter' not in train:  # a null one: check_scalar_options names it
        raise ValueError('train.total_iter: required (the number of training iterations)')
    if 'train' not in datasets:
        raise ValueError('datasets.train: a training dataset is required')
    for key, what in (('batch_size_per_gpu', 'the batch size of each process'),
                      ('num_worker_per_gpu', 'data loader worker processes of each process; 0: none')):
        if _missing(datasets['train'], key):
            raise ValueError(f'datasets.train.{key}: required ({what})')
    train_set = datasets['train']
    for key in _TRAIN_ITEM_KEYS.get(basicsr_dataset_name(train_set.get('type')), ()):
        null_ok, what = _ITEM_KEYS[key]
        if key not in train_set or (train_set[key] is None and not null_ok):
            raise ValueError(f"datasets.train.{key}: required by {train_set['type']} in training ({what})")


def check_dataset_keys_name_phases(datasets: dict) -> None:
    """Training takes ``datasets.train`` and validates on every ``val*``/``test*`` key: the part of a key before its
    first '_' names its phase (``val_2`` is a val set)."""
    for phase in datasets:
        if phase != 'train' and str(phase).split('_')[0] not in ('val', 'test'):
            raise ValueError(f"datasets.{phase}: a dataset key must be train, or have val or test before its first "
                             "'_' (e.g. val, val_2, test_rain100h): training takes datasets.train and validates on "
                             'the others')


def _reads_optim_g(model_type) -> bool:
    """Whether the model class reads ``train['optim_g']`` without a default (BasicSR's SRModel and its subclasses)."""
    from basicsr.models.sr_model import SRModel
    from basicsr.utils.registry import MODEL_REGISTRY
    if not (isinstance(model_type, str) and model_type in MODEL_REGISTRY):
        return False  # check_registered_types names an unknown type
    model_cls = MODEL_REGISTRY.get(model_type)
    return isinstance(model_cls, type) and issubclass(model_cls, SRModel)

