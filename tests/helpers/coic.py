"""Tiny CoIC experiment options (CoICRestormer + CoICEncoder on MixedSyntheticRainDataset) for CPU tests."""
import copy

SOURCES = [{'name': 'light', 'preset': 'light_sparse'}, {'name': 'heavy', 'preset': 'heavy_dense'},
           {'name': 'mist', 'preset': 'mist'}]


def tiny_coic_options(name: str = 'tiny_coic', total_iter: int = 4, stage1_iter: int = 2, coic: bool = True) -> dict:
    opt = {
        'name': name, 'model_type': 'CoICModel', 'num_gpu': 0, 'manual_seed': 3,
        'datasets': {
            'train': {'name': 'train', 'type': 'MixedSyntheticRainDataset', 'sources': copy.deepcopy(SOURCES),
                      'num_per_source': 4, 'bg_size': 32, 'gt_size': 24, 'global_size': 32, 'seed': 0,
                      'sampler': {'type': 'MixedDatasetSampler', 'weighting': 'balanced'},
                      'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1},
            'val': {'name': 'val', 'type': 'MixedSyntheticRainDataset', 'sources': copy.deepcopy(SOURCES),
                    'num_per_source': 1, 'bg_size': 32, 'global_size': 32, 'seed': 1},
        },
        'network_g': {'type': 'CoICRestormer', 'dim': 8, 'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1,
                      'heads': [1, 1, 2, 2], 'ffn_expansion_factor': 2, 'context_dim': 16},
        'network_enc': {'type': 'CoICEncoder', 'context_dim': 16, 'base_channels': 4},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'total_iter': total_iter, 'warmup_iter': -1, 'ema_decay': 0.9, 'grad_clip': 1.0,
                  'optim_g': {'type': 'AdamW', 'lr': 1e-3}, 'optim_mod': {'type': 'Adam', 'lr': 1e-3},
                  'scheduler': {'type': 'CosineAnnealingRestartCyclicLR', 'periods': [2, total_iter - 2],
                                'restart_weights': [1, 1], 'eta_mins': [5e-4, 1e-5]},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                  'coic': {'stage1_iter': stage1_iter, 'num_detail_negatives': 2, 'archive_size': 8, 'momentum': 0.9}},
        'val': {'val_freq': total_iter, 'save_img': False, 'global_size': 32,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': True}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False},
    }
    if not coic:
        del opt['train']['coic'], opt['network_enc'], opt['train']['optim_mod']
    return opt


def in_memory(opt: dict, tmp_path) -> dict:
    """The keys the option parser adds, for building a model directly in a test process."""
    opt = copy.deepcopy(opt)
    opt.update(dist=False, rank=0, world_size=1, is_train=True, device='cpu')
    for phase, dataset in opt['datasets'].items():
        dataset['phase'] = phase.split('_')[0]
    root = str(tmp_path / 'experiments' / opt['name'])
    opt['path'].update(experiments_root=root, models=f'{root}/models', training_states=f'{root}/training_states',
                       log=root, visualization=f'{root}/visualization')
    return opt


def untrained_test_options(opt: dict, folder) -> dict:
    """``opt`` as a test option file of its untrained networks: weights saved in ``folder`` and named in ``path``,
    no ``train`` section."""
    import torch
    from basicsr.archs import build_network
    opt.pop('train', None)
    opt['path'] = {}
    for net, key in (('g', 'network_g'), ('enc', 'network_enc')):
        torch.save({'params': build_network(dict(opt[key])).state_dict()}, folder / f'net_{net}.pth')
        opt['path'][f'pretrain_{key}'] = str(folder / f'net_{net}.pth')
    return opt
