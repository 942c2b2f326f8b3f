"""Warnings for option keys that nothing reads but that look like a misspelling of one that is read.

BasicSR ignores keys it does not know, so ``ema_decey: 0.999`` in ``train`` trained without EMA, and
``use_rott: true`` in a ``PairedImageDataset`` section trained without rotations, without a word. Projects add keys of their own, so an unknown key is only
warned about (never refused), and only when it is close to a key of the same section that the file does not set.
"""
import difflib
from typing import Dict, Iterator, Tuple

from coic_basicsr.utils.option_layout import basicsr_dataset_name

#: keys read by BasicSR 1.4.2's pipeline and models (Real-ESRGAN's degradation settings included) and by ours
_TOP_LEVEL = (
    'name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'is_train', 'dist', 'rank', 'world_size', 'auto_resume',
    'path', 'datasets', 'train', 'val', 'logger', 'dist_params', 'find_unused_parameters', 'root_path',
    'cpu_malloc_cache', 'channels_last', 'high_order_degradation', 'queue_size', 'gt_usm', 'l1_gt_usm',
    'percep_gt_usm', 'gan_gt_usm', 'resize_prob', 'resize_range', 'gaussian_noise_prob', 'noise_range',
    'poisson_scale_range', 'gray_noise_prob', 'jpeg_range', 'second_blur_prob', 'resize_prob2', 'resize_range2',
    'gaussian_noise_prob2', 'noise_range2', 'poisson_scale_range2', 'gray_noise_prob2', 'jpeg_range2')
_TRAIN = (
    'total_iter', 'warmup_iter', 'ema_decay', 'scheduler', 'scheduler_mod', 'optim_g', 'optim_d', 'optim_mod',
    'pixel_opt', 'perceptual_opt', 'gan_opt', 'ldl_opt', 'feature_matching_opt', 'net_d_iters', 'net_d_init_iters',
    'net_d_reg_every', 'net_g_reg_every', 'r1_reg_weight', 'path_reg_weight', 'path_batch_shrink', 'mixing_prob',
    'dcn_lr_mul', 'flow_lr_mul', 'fix_flow', 'lr_flow', 'tsa_iter', 'coic', 'grad_clip', 'use_grad_clip',
    'max_nonfinite_steps', 'mixing_augs')
_VAL = ('val_freq', 'save_img', 'suffix', 'metrics', 'pbar', 'num_val_samples', 'center_frame_only', 'flip_seq',
        'tile', 'global_size', 'report_input')
_LOGGER = ('print_freq', 'save_checkpoint_freq', 'use_tb_logger', 'wandb')
_DIST_PARAMS = ('backend', 'port', 'timeout')
#: keys BasicSR 1.4.2's datasets and build_dataloader read (Real-ESRGAN's kernel settings included), and ours on any
#: training set (sampler, progressive patches, dataset_enlarge_ratio); use_shuffle is in every BasicSR option file
_STOCK_DATASET = (
    'name', 'type', 'phase', 'dataroot_gt', 'dataroot_lq', 'dataroot_flow', 'meta_info_file', 'meta_info',
    'io_backend', 'filename_tmpl', 'gt_size', 'use_hflip', 'use_rot', 'scale', 'mean', 'std', 'color', 'num_frame',
    'val_partition', 'interval_list', 'random_reverse', 'test_mode', 'cache_data', 'padding', 'flip_sequence',
    'use_duf_downsampling', 'num_worker_per_gpu', 'batch_size_per_gpu', 'dataset_enlarge_ratio', 'prefetch_mode',
    'num_prefetch_queue', 'pin_memory', 'persistent_workers', 'use_shuffle', 'sampler', 'mini_batch_sizes', 'iters',
    'gt_sizes', 'blur_kernel_size', 'kernel_list', 'kernel_prob', 'blur_sigma', 'betag_range', 'betap_range',
    'sinc_prob', 'blur_kernel_size2', 'kernel_list2', 'kernel_prob2', 'blur_sigma2', 'betag_range2', 'betap_range2',
    'sinc_prob2', 'final_sinc_prob')
READ_KEYS: Dict[Tuple[str, ...], Tuple[str, ...]] = {
    (): _TOP_LEVEL, ('train',): _TRAIN, ('val',): _VAL, ('logger',): _LOGGER, ('dist_params',): _DIST_PARAMS}
#: key families read by prefix or suffix (network_*, optim_*, scheduler*, *_opt): never warned about
_FAMILIES = (('network_', 'optim_', 'scheduler'), ('_opt',))


def _section(opt: dict, path: Tuple[str, ...]):
    for key in path:
        opt = opt.get(key) if isinstance(opt, dict) else None
    return opt


def _checked_sections(opt: dict) -> Iterator[Tuple[Tuple[str, ...], dict, Tuple[str, ...]]]:
    """(key path, section, keys read) of the sections above and of every BasicSR dataset section (ours refuse
    unknown keys already)."""
    for path, known in READ_KEYS.items():
        yield path, _section(opt, path), known
    datasets = opt.get('datasets')
    for key, section in (datasets.items() if isinstance(datasets, dict) else ()):
        if isinstance(section, dict) and basicsr_dataset_name(section.get('type')):
            yield ('datasets', key), section, _STOCK_DATASET


def unread_key_warnings(opt: dict) -> Iterator[str]:
    """One message per key of a checked section that nothing reads and that resembles an unset key that is read."""
    for path, section, known in _checked_sections(opt):
        if not isinstance(section, dict):
            continue
        unset = [key for key in known if key not in section]
        for key in section:
            if not isinstance(key, str) or key in known or key.startswith(_FAMILIES[0]) or key.endswith(_FAMILIES[1]):
                continue
            match = difflib.get_close_matches(key, unset, n=1, cutoff=0.75)
            if match:
                where = '.'.join(path + (key,))
                yield (f"{where}: not an option BasicSR or coic-basicsr reads, and ignored (did you mean "
                       f"'{match[0]}'? it is not set, so its default applies)")
