"""A tiny stock-BasicSR experiment (PairedImageDataset + MSRResNet) generated on the fly."""
import os
from os import path as osp

import cv2
import numpy as np
import yaml


def make_paired_folders(root: str, count: int = 6, size: int = 32, scale: int = 2, seed: int = 0) -> dict:
    """gt/lq PNG folders with identical names; lq = gt downscaled by ``scale``."""
    rng = np.random.default_rng(seed)
    folders = {'gt': osp.join(root, 'gt'), 'lq': osp.join(root, 'lq')}
    for folder in folders.values():
        os.makedirs(folder, exist_ok=True)
    for i in range(count):
        base = rng.integers(0, 255, (size // 8, size // 8, 3)).astype(np.uint8)
        gt = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
        lq = cv2.resize(gt, (size // scale, size // scale), interpolation=cv2.INTER_AREA)
        cv2.imwrite(osp.join(folders['gt'], f'{i:04d}.png'), gt)
        cv2.imwrite(osp.join(folders['lq'], f'{i:04d}.png'), lq)
    return folders


def stock_sr_options(data_root: str, name: str = 'stock_msrresnet', total_iter: int = 4, scale: int = 2) -> dict:
    """A BasicSR 1.4.2 option dict of the kind its own ``options/train`` files contain."""
    paired = {'type': 'PairedImageDataset', 'dataroot_gt': osp.join(data_root, 'gt'),
              'dataroot_lq': osp.join(data_root, 'lq'), 'io_backend': {'type': 'disk'}}
    return {
        'name': name, 'model_type': 'SRModel', 'scale': scale, 'num_gpu': 1, 'manual_seed': 0,
        'datasets': {
            'train': dict(paired, name='train', filename_tmpl='{}', gt_size=16, use_hflip=True, use_rot=True,
                          num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=1, prefetch_mode=None),
            'val': dict(paired, name='val'),
        },
        'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                      'upscale': scale},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0.999, 'optim_g': {'type': 'Adam', 'lr': 2e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [2], 'gamma': 0.5},
                  'total_iter': total_iter, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': 2, 'save_img': True, 'suffix': None,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': scale, 'test_y_channel': False},
                            'ssim': {'type': 'calculate_ssim', 'crop_border': scale, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': True, 'wandb': {'project': None}},
        'dist_params': {'backend': 'gloo', 'port': 29500},
    }


def write_options(opt: dict, path: str) -> str:
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path
