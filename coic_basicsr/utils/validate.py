"""Checks run before any work starts, so a bad option file fails in one line naming the key."""
import importlib.util
import inspect
import math
from os import path as osp

from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY

from coic_basicsr.data.lmdb_sharing import check_shared_lmdbs
from coic_basicsr.data.progressive import ProgressivePatches
from coic_basicsr.models.loss_sections import check_loss_sections
from coic_basicsr.models.portable import scheduler_class
from coic_basicsr.models.global_views import check_coic_model_type, check_global_views_given
from coic_basicsr.models.tiling import tile_settings
from coic_basicsr.utils.cpu_memory import check_cpu_malloc_option
from coic_basicsr.utils.option_layout import check_required_keys
from coic_basicsr.utils.optim_options import (check_eta_min_below_lr, check_optimizers, check_scheduler_options,
                                              check_scheduler_periods, schedulers)
from coic_basicsr.utils.option_values import check_coic_section, is_integer, is_iteration_count, yaml_text_hint
from coic_basicsr.utils.section_keys import check_section_keys, typed_sections


def check_registered_types(opt: dict) -> None:
    """``model_type`` is given (BasicSR failed with a bare KeyError once the datasets were built) and every ``type``
    is a string naming a registered class (BasicSR would fail late with a bare KeyError; a list or a mapping was an
    "unhashable type" traceback)."""
    if opt.get('model_type') is None:
        raise ValueError('model_type: required (e.g. CoICModel or SRModel)')
    for key, section, registry in typed_sections(opt):
        name = section.get('type')
        where = key if key == 'model_type' else f'{key}.type'
        if name is None:
            raise ValueError(f'{key}: missing required key "type"')
        if not isinstance(name, str):
            raise ValueError(f'{where}: expected a string (a class name of the {registry._name} registry), got '
                             f'{name!r}')
        if name not in registry:
            known = ', '.join(sorted(registry.keys()))
            raise ValueError(f"{key}: type '{name}' is not registered in the {registry._name} registry "
                             f'(known: {known})')
    for key, scheduler in schedulers(opt):
        name = scheduler.get('type')
        if name is not None and not isinstance(name, str):
            raise ValueError(f'train.{key}.type: expected a string (a scheduler class name), got {name!r}')
        scheduler_class(name, f'train.{key}')


def _argument(section: dict, name: str):
    """Argument ``name`` of a network section's class: the value given, else its default (None when it has none)."""
    if name in section:
        return section[name]
    param = inspect.signature(ARCH_REGISTRY.get(section['type'])).parameters.get(name)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def check_context_dims(opt: dict) -> None:
    """The encoder's code length must be the one network_g is modulated with (it failed when stage 2 began)."""
    enc, net = opt.get('network_enc'), opt.get('network_g')
    if not (isinstance(enc, dict) and isinstance(net, dict)):
        return
    enc_dim, net_dim = _argument(enc, 'context_dim'), _argument(net, 'context_dim')
    for key, value in (('network_enc', enc_dim), ('network_g', net_dim)):
        if value is not None and not (is_integer(value) and value >= 1):  # '16' != 16: "(16) must equal (16)"
            raise ValueError(f'{key}.context_dim: expected an integer >= 1, got {value!r}{yaml_text_hint(value)}')
    if enc_dim is not None and net_dim is not None and enc_dim != net_dim:
        raise ValueError(f'network_enc.context_dim ({enc_dim}) must equal network_g.context_dim ({net_dim}): the '
                         "encoder's code z modulates network_g")


def check_dataset_names(opt: dict) -> None:
    """Val/test sets need distinct names: their tables, images and best metrics are kept by name (a set without one
    is named by check_required_keys)."""
    seen = {}
    for key, section in opt['datasets'].items():
        name = section.get('name') if isinstance(section, dict) else None
        if name is not None and not isinstance(name, str):  # a mapping was an "unhashable type" traceback
            raise ValueError(f'datasets.{key}.name: expected a string, got {name!r}')
        if name is None or key == 'train':
            continue
        if name in seen:
            raise ValueError(f"datasets.{key}.name: '{name}' is also the name of datasets.{seen[name]} (their result "
                             'tables, images and best metrics would overwrite each other)')
        seen[name] = key


def check_dataset_paths(opt: dict) -> None:
    """Dataset roots and meta-info files named in the options must exist (disk and lmdb back-ends)."""
    for phase, dataset in (opt.get('datasets') or {}).items():
        for key in ('dataroot_gt', 'dataroot_lq', 'meta_info_file'):
            value = dataset.get(key)
            if isinstance(value, str) and not osp.exists(value):
                raise FileNotFoundError(f"datasets.{phase}.{key}: '{value}' does not exist")


# BasicSR's datasets that read the top-level ``scale`` (without it: a bare KeyError at the first item)
_READ_SCALE = ('PairedImageDataset', 'RealESRGANPairedDataset', 'REDSDataset', 'REDSRecurrentDataset',
               'Vimeo90KDataset', 'Vimeo90KRecurrentDataset', 'VideoTestDataset', 'VideoTestVimeo90KDataset',
               'VideoTestDUFDataset', 'VideoRecurrentTestDataset')


def check_model_reads(opt: dict) -> None:
    """Options that a dataset or the model needs are there, and options it would ignore are refused."""
    for phase, dataset in (opt.get('datasets') or {}).items():
        if 'scale' not in opt and dataset.get('type') in _READ_SCALE:
            raise ValueError(f"scale: datasets.{phase} ({dataset['type']}) needs the top-level scale option (1 for "
                             'deraining, the up-scaling factor for super-resolution)')
    model_type = opt.get('model_type', 'SRModel')
    if tile_settings(opt.get('val')) and not getattr(MODEL_REGISTRY.get(model_type), 'reads_val_tile', False):
        raise ValueError(f'val.tile: {model_type} would ignore it; CoICModel tiles (it runs any network_g, with or '
                         'without CoIC)')


def check_logger(opt: dict) -> None:
    """Print/save frequencies are positive; the tensorboard logger needs tensorboard, wandb syncing needs that logger
    and wandb (BasicSR would fail after setting up)."""
    logger_opt = opt.get('logger') or {}
    for key in ('print_freq', 'save_checkpoint_freq'):
        value = logger_opt.get(key)
        if not (is_iteration_count(value) or value == math.inf):  # .inf: never (the loop tests iter % freq == 0)
            raise ValueError(f'logger.{key}: expected a positive number of iterations, got {value!r}')
    if 'debug' in str(opt.get('name', '')):
        return
    if logger_opt.get('use_tb_logger') and importlib.util.find_spec('tensorboard') is None:
        raise ValueError('logger.use_tb_logger: true, but the tensorboard package is not installed '
                         '(pip install tensorboard, or set logger.use_tb_logger: false)')
    if not (logger_opt.get('wandb') or {}).get('project'):
        return
    if not logger_opt.get('use_tb_logger'):
        raise ValueError('logger.use_tb_logger: expected true when logger.wandb.project is set, got '
                         f"{logger_opt.get('use_tb_logger')!r}")
    if importlib.util.find_spec('wandb') is None:
        raise ValueError('logger.wandb.project: set, but the wandb package is not installed '
                         '(pip install wandb, or set logger.wandb.project: ~)')


def check_training_recipe(opt: dict) -> None:
    """Restormer's progressive-learning keys must agree; its switches we do not implement are refused, not ignored."""
    train_set = (opt.get('datasets') or {}).get('train')
    if isinstance(train_set, dict):
        ProgressivePatches.from_options(train_set, opt.get('scale', 1))
    mixing = (opt.get('train') or {}).get('mixing_augs') or {}
    if mixing.get('mixup'):
        raise ValueError("train.mixing_augs.mixup: Restormer's mixup augmentation is not supported (it would blend "
                         'rain of different sources in one image); set it to false')


def check_options(opt: dict) -> None:
    """All pre-flight checks of an option dict."""
    if 'datasets' not in opt or not opt['datasets']:
        raise ValueError('datasets: the option file defines no dataset')
    check_registered_types(opt)
    check_section_keys(opt)
    check_context_dims(opt)
    check_cpu_malloc_option(opt)
    check_dataset_names(opt)
    check_dataset_paths(opt)
    check_required_keys(opt, opt.get('is_train', True))
    check_shared_lmdbs(opt)
    check_model_reads(opt)
    if opt.get('is_train', True):
        check_coic_section(opt)
        check_coic_model_type(opt)
        check_global_views_given(opt)
        check_loss_sections(opt.get('train') or {})
        check_scheduler_options(opt)
        check_scheduler_periods(opt)
        check_logger(opt)
        check_optimizers(opt)
        check_eta_min_below_lr(opt)
        check_training_recipe(opt)
