"""Which keys a rain dataset section may hold: a misspelt key (``use_flip``, ``is_real``) was silently ignored."""
import difflib
from typing import Iterable, Mapping

from coic_basicsr.data.progressive import KEYS as PROGRESSIVE_KEYS
from coic_basicsr.utils.option_values import FLAG_RULE, POSITIVE_RULE, check_value, is_integer

#: Keys of a dataset section read by the pipeline around the dataset: BasicSR's option parser (``phase``,
#: ``scale``) and ``build_dataloader``, our sampler and Restormer's progressive learning. ``use_shuffle`` is in every
#: BasicSR option template; BasicSR 1.4.2 reads none, and the training samplers shuffle.
PIPELINE_KEYS = frozenset({'type', 'phase', 'scale', 'num_worker_per_gpu', 'batch_size_per_gpu',
                           'dataset_enlarge_ratio', 'use_shuffle', 'pin_memory', 'persistent_workers',
                           'prefetch_mode', 'num_prefetch_queue', 'sampler', *PROGRESSIVE_KEYS})


def _positive_int(v) -> bool:
    return is_integer(v) and v >= 1


#: key: (predicate, what is expected) for the values of a rain dataset section, as option_values.SCALAR_RULES
VALUE_RULES = {
    'gt_size': (_positive_int, 'a positive integer'),
    'global_size': (_positive_int, 'a positive integer'),
    'val_size': (_positive_int, 'a positive integer or null'),
    'bg_size': (_positive_int, 'a positive integer'),
    'num_per_source': (_positive_int, 'a positive integer'),
    'skip_bad': (lambda v: is_integer(v) and v >= 0, 'an integer >= 0'),
    'seed': (lambda v: is_integer(v) and v >= 0, 'an integer >= 0'),
    'dataset_enlarge_ratio': POSITIVE_RULE,
    'use_hflip': FLAG_RULE,
    'use_rot': FLAG_RULE,
    'real': FLAG_RULE,  # a key of each entry of sources
    'backgrounds': (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(b, str) for b in v),
                    'a non-empty list of scikit-image sample names'),
}


def check_dataset_keys(dataset_opt: Mapping, dataset_cls, where: str) -> None:
    """Refuse, in one line, a key of a rain dataset section or of one of its ``sources`` that nothing reads.

    Args:
        dataset_cls: A class with ``OPTION_KEYS`` and ``SOURCE_KEYS`` (the rain datasets).
        where (str): Option path of the section, e.g. ``datasets.val_2``.
    """
    owner = dataset_cls.__name__
    for key in dataset_opt:
        if key in dataset_cls.OPTION_KEYS or key in PIPELINE_KEYS:
            if key in VALUE_RULES:
                check_value(f'{where}.{key}', dataset_opt[key], VALUE_RULES[key])
            continue
        if key in dataset_cls.SOURCE_KEYS:
            raise ValueError(f"{where}.{key}: {owner} reads '{key}' in each entry of sources, not here")
        _refuse(f'{where}.{key}', key, dataset_cls.OPTION_KEYS, owner, also=PIPELINE_KEYS)
    sources = dataset_opt.get('sources')
    for i, src in enumerate(sources if isinstance(sources, (list, tuple)) else ()):
        for key in (src if isinstance(src, Mapping) else ()):
            if key not in dataset_cls.SOURCE_KEYS:
                _refuse(f'{where}.sources[{i}].{key}', key, dataset_cls.SOURCE_KEYS, f'a source of {owner}')
            if key in VALUE_RULES:
                check_value(f'{where}.sources[{i}].{key}', src[key], VALUE_RULES[key])


def _refuse(path: str, key, known: Iterable[str], owner: str, also: Iterable[str] = ()) -> None:
    """``also``: further valid keys, suggested but not listed (the data loader's)."""
    known = sorted(known)
    candidates = known + sorted(also)
    close = [k for k in candidates if k.startswith(str(key))] or difflib.get_close_matches(str(key), candidates, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ''
    rest = ", and the data loader's keys" if also else ''
    raise ValueError(f"{path}: unknown key for {owner} ({hint}known: {', '.join(known)}{rest})")
