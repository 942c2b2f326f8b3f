"""Every bad input gets one clear line naming the option key or the file (table in docs/reliability.md)."""
import importlib.util
import os
import re
import signal
from os import path as osp

import cv2
import numpy as np
import pytest
import torch

from coic_basicsr.train import main as train_main
from helpers.coic import tiny_coic_options, untrained_test_options
from helpers.stock import write_options

DOC = osp.join(osp.dirname(__file__), '..', '..', 'docs', 'reliability.md')


def _pairs(root, names=('a', 'b'), size=24, lq_size=None):
    rng = np.random.default_rng(0)
    for folder in ('gt', 'lq'):
        os.makedirs(osp.join(root, folder), exist_ok=True)
    for name in names:
        gt = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        cv2.imwrite(osp.join(root, 'gt', f'{name}.png'), gt)
        cv2.imwrite(osp.join(root, 'lq', f'{name}.png'), cv2.resize(gt, (lq_size or size,) * 2))
    return {'name': 'src', 'dataroot_gt': osp.join(root, 'gt'), 'dataroot_lq': osp.join(root, 'lq')}


def _mixed(opt, tmp, **source_changes):
    source = _pairs(str(tmp / 'data'), lq_size=source_changes.pop('lq_size', None))
    source.update(source_changes)
    opt['datasets']['train'] = {'name': 'train', 'type': 'MixedRainDataset', 'gt_size': 16, 'global_size': 16,
                                'sources': [source], 'batch_size_per_gpu': 1, 'num_worker_per_gpu': 0}
    return opt


def _set(path, value):
    def mutate(opt, tmp):
        node = opt
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value(tmp) if callable(value) else value
        return opt
    return mutate


def _corrupt(opt, tmp):
    opt = _mixed(opt, tmp)
    (tmp / 'data' / 'lq' / 'a.png').write_bytes(b'garbage')
    (tmp / 'data' / 'lq' / 'b.png').write_bytes(b'garbage')
    return opt


def _missing_pair(opt, tmp):
    opt = _mixed(opt, tmp)
    meta = tmp / 'meta.txt'
    meta.write_text('a.png a.png\nzz.png zz.png\n')
    opt['datasets']['train']['sources'][0]['meta_info_file'] = str(meta)
    return opt


def _duplicate_source(opt, tmp):
    opt = _mixed(opt, tmp)
    opt['datasets']['train']['sources'].append(dict(opt['datasets']['train']['sources'][0]))
    return opt


def _bad_state(opt, tmp):
    (tmp / 'bad.state').write_bytes(b'truncated')
    opt['path']['resume_state'] = str(tmp / 'bad.state')
    return opt


def _mismatched_checkpoint(opt, tmp):
    torch.save({'params': {'weird.weight': torch.zeros(1)}}, tmp / 'net.pth')
    opt['path']['pretrain_network_g'] = str(tmp / 'net.pth')
    return opt


def _other_generator_width(opt, tmp):
    from basicsr.archs import build_network
    torch.save({'params': build_network(dict(opt['network_g'], generator_width=2)).state_dict()}, tmp / 'net.pth')
    opt['path']['pretrain_network_g'] = str(tmp / 'net.pth')
    return opt


# id -> (mutation of the tiny CoIC options, text the one-line error must contain)
def _stock_folders_of_different_lengths(opt, tmp):
    source = _pairs(str(tmp / 'data'))
    _pairs(str(tmp / 'extra'), names=('c',))
    os.replace(tmp / 'extra' / 'gt' / 'c.png', tmp / 'data' / 'gt' / 'c.png')
    opt['scale'] = 1
    opt['datasets']['train'] = dict(source, type='PairedImageDataset', io_backend={'type': 'disk'}, gt_size=16,
                                    use_hflip=False, use_rot=False, batch_size_per_gpu=1, num_worker_per_gpu=0)
    return _without_coic(opt)


def _stock_set(opt, tmp, drop=(), **changes):
    """datasets.train as BasicSR's PairedImageDataset (scale 1, train network_g alone), with ``changes`` and
    without the keys in ``drop``."""
    train = dict(_pairs(str(tmp / 'data')), type='PairedImageDataset', io_backend={'type': 'disk'}, gt_size=16,
                 use_hflip=False, use_rot=False, batch_size_per_gpu=1, num_worker_per_gpu=0)
    train.update(changes)
    opt['scale'] = 1
    opt['datasets']['train'] = {key: value for key, value in train.items() if key not in drop}
    return _without_coic(opt)


def _without_coic(opt):
    """A stock dataset gives no global views (train.coic refuses it up front): train network_g alone."""
    for section, key in ((opt['train'], 'coic'), (opt['train'], 'optim_mod'), (opt['train'], 'scheduler_mod'),
                         (opt, 'network_enc')):
        section.pop(key, None)
    return opt


CASES = {
    'unknown-network-type': (_set(['network_g', 'type'], 'NoSuchArch'), "network_g: type 'NoSuchArch'"),
    'unknown-model-type': (_set(['model_type'], 'NoSuchModel'), "model_type: type 'NoSuchModel'"),
    'unknown-dataset-type': (_set(['datasets', 'train', 'type'], 'NoSuchSet'), "datasets.train: type 'NoSuchSet'"),
    'unknown-loss-type': (_set(['train', 'pixel_opt', 'type'], 'NoSuchLoss'), "train.pixel_opt: type 'NoSuchLoss'"),
    'unknown-sampler-type': (_set(['datasets', 'train', 'sampler', 'type'], 'NoSampler'),
                             "datasets.train.sampler: type 'NoSampler'"),
    'unknown-scheduler-type': (_set(['train', 'scheduler', 'type'], 'NoSched'), "train.scheduler.type: 'NoSched'"),
    'unknown-optimizer': (_set(['train', 'optim_g', 'type'], 'NoOptim'), "'NoOptim' is not a torch.optim optimizer"),
    'missing-dataroot': (_set(['datasets', 'train'], {'name': 'stock', 'type': 'PairedImageDataset',
                                                       'dataroot_gt': '/no/such/root', 'dataroot_lq': '/no/such/root',
                                                       'io_backend': {'type': 'disk'}}),
                         "datasets.train.dataroot_gt: '/no/such/root' does not exist"),
    'coic-unknown-key': (_set(['train', 'coic', 'stage_one'], 3), 'train.coic.stage_one: unknown key'),
    'coic-stage1-after-end': (_set(['train', 'coic', 'stage1_iter'], 99), 'train.coic.stage1_iter (99) must be smaller'),
    'coic-stage1-at-end': (_set(['train', 'coic', 'stage1_iter'], 4),  # accepted: an untrained encoder was saved
                           'train.coic.stage1_iter (4) must be smaller than train.total_iter (4)'),
    'coic-negative-negatives': (_set(['train', 'coic', 'num_detail_negatives'], -1),
                                'train.coic.num_detail_negatives: expected an integer >= 0'),
    'coic-bad-momentum': (_set(['train', 'coic', 'momentum'], 1.5), 'train.coic.momentum: expected a number in [0, 1]'),
    'coic-without-encoder': (lambda opt, tmp: (opt.pop('network_enc'), opt)[1], 'train.coic: requires a network_enc'),
    'no-loss': (lambda opt, tmp: (opt['train'].pop('pixel_opt'), opt)[1], 'train: define at least one loss'),
    'unknown-rain-preset': (_set(['datasets', 'train', 'sources', 0, 'preset'], 'drizzle'),
                            "unknown rain preset 'drizzle'"),
    'crop-larger-than-background': (_set(['datasets', 'train', 'gt_size'], 64), 'datasets.train.gt_size: 64'),
    'missing-source-root': (lambda opt, tmp: _mixed(opt, tmp, dataroot_gt=str(tmp / 'nowhere')),
                            "sources[0] (name 'src')"),
    'duplicate-source-names': (_duplicate_source, "'src'"),
    'meta-info-pair-missing': (_missing_pair, 'zz.png'),
    'lq-gt-size-mismatch': (lambda opt, tmp: _mixed(opt, tmp, lq_size=20), "name 'src'"),
    'corrupt-image': (_corrupt, "name 'src'"),
    'pretrained-weights-missing': (_set(['path', 'pretrain_network_g'], lambda tmp: str(tmp / 'none.pth')),
                                   'none.pth'),
    'pretrained-weights-do-not-fit': (_mismatched_checkpoint, 'does not fit CoICRestormer'),
    'pretrained-generator-width-differs': (_other_generator_width, 'follow network_g.generator_width '
                                           '(network_g.modulate.generator_width for CoICNet)'),
    'bad-generator-width': (_set(['network_g', 'generator_width'], 0),
                            'error: network_g.generator_width: expected a positive integer'),
    'schedule-shorter-than-training': (_set(['train', 'total_iter'], 10),
                                       'train.scheduler.periods: [2, 2] add up to 4, but train.total_iter (10)'),
    'wandb-without-tensorboard': (_set(['logger', 'wandb'], {'project': 'p'}),
                                  'logger.use_tb_logger: expected true when logger.wandb.project is set, got False'),
    'bad-cpu-malloc-cache': (_set(['cpu_malloc_cache'], 'yes'), "cpu_malloc_cache: expected true or false, got 'yes'"),
    'corrupt-resume-state': (_bad_state, 'bad.state'),
    'progressive-patch-larger-than-crop': (
        lambda opt, tmp: (opt['datasets']['train'].update(mini_batch_sizes=[2], iters=[4], gt_sizes=[32]), opt)[1],
        'datasets.train.gt_sizes: 32 is larger than datasets.train.gt_size (24)'),
    'misspelt-network-option': (_set(['network_g', 'dims'], 8),
                                "network_g: CoICRestormer has no option 'dims' (its options: inp_channels"),
    'misspelt-loss-option': (_set(['train', 'pixel_opt', 'weight'], 2),
                             "train.pixel_opt: L1Loss has no option 'weight' (its options: loss_weight, reduction)"),
    'loss-bad-value': (_set(['train', 'pixel_opt', 'reduction'], 'avg'),
                       'train.pixel_opt: Unsupported reduction mode: avg'),
    'misspelt-wrapped-backbone-option': (
        _set(['network_g'], {'type': 'CoICNet', 'backbone': {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3,
                                                              'upscal': 1}}),
        "network_g.backbone: EDSR has no option 'upscal'"),
    'misspelt-scheduler-option': (_set(['train', 'scheduler'], {'type': 'MultiStepLR', 'milestone': [2]}),
                                  "train.scheduler: MultiStepLR has no option 'milestone'"),
    'milestones-not-a-list': (_set(['train', 'scheduler'], {'type': 'MultiStepLR', 'milestones': 'x'}),
                              'train.scheduler.milestones: expected a list of positive iteration numbers'),
    'no-scheduler': (lambda opt, tmp: (opt['train'].pop('scheduler'), opt)[1], 'train.scheduler: required'),
    'optimizer-bad-option': (_set(['train', 'optim_g', 'lr'], -1),
                             'train.optim_g: AdamW does not accept these options: Invalid learning rate: -1'),
    # torch < 2.4 refuses `fused=True` on the CPU before it sees foreach
    'optimizer-conflicting-options': (lambda opt, tmp: (opt['train']['optim_g'].update(fused=True, foreach=True),
                                                        opt)[1],
                                      'train.optim_g: AdamW does not accept these options: `fused'),
    'unknown-metric-type': (_set(['val', 'metrics', 'psnr', 'type'], 'calc_psnr'),
                            "val.metrics.psnr: type 'calc_psnr' is not registered in the metric registry"),
    'print-freq-zero': (_set(['logger', 'print_freq'], 0),
                        'logger.print_freq: expected a positive number of iterations, got 0'),
    'tile-not-a-mapping': (_set(['val', 'tile'], 256), 'val.tile: expected {size: int, overlap: int}'),
    'tile-overlap-too-large': (_set(['val', 'tile'], {'size': 16}),
                               'val.tile.overlap (32, the default) must be smaller than val.tile.size (16)'),
    'misspelt-dataset-option': (_set(['datasets', 'train', 'use_flip'], False),
                                "datasets.train.use_flip: unknown key for MixedSyntheticRainDataset (did you mean "
                                "'use_hflip'? known: backgrounds,"),
    'misspelt-source-option': (_set(['datasets', 'train', 'sources', 0, 'is_real'], True),
                               "datasets.train.sources[0].is_real: unknown key for a source of "
                               "MixedSyntheticRainDataset (did you mean 'real'?"),
    'source-option-on-the-dataset': (lambda opt, tmp: (_mixed(opt, tmp)['datasets']['train'].update(
        io_backend={'type': 'lmdb'}), opt)[1],
        "datasets.train.io_backend: MixedRainDataset reads 'io_backend' in each entry of sources, not here"),
    'misspelt-sampler-option': (_set(['datasets', 'train', 'sampler', 'weigthing'], 'balanced'),
                                "datasets.train.sampler: MixedDatasetSampler has no option 'weigthing' (its options: "
                                'weighting, real_fraction)'),
    'encoder-code-length-differs': (_set(['network_enc', 'context_dim'], 32),
                                    'network_enc.context_dim (32) must equal network_g.context_dim (16)'),
    'ema-decay-not-a-number': (_set(['train', 'ema_decay'], 'x'), "train.ema_decay: expected a number in [0, 1), got 'x'"),
    'grad-clip-not-a-number': (_set(['train', 'grad_clip'], 'x'), "train.grad_clip: expected a positive gradient norm"),
    'channels-last-not-a-boolean': (_set(['channels_last'], 'yes'), "channels_last: expected true or false, got 'yes'"),
    'unknown-dist-backend': (_set(['dist_params'], {'backend': 'foo'}), 'dist_params.backend: expected one of gloo, nccl'),
    'dist-timeout-not-a-number': (_set(['dist_params'], {'timeout': 'abc'}),
                                  "dist_params.timeout: expected a positive number of seconds, or null, got 'abc'"),
    'unknown-prefetch-mode': (_set(['datasets', 'train', 'prefetch_mode'], 'gpu'),
                              "datasets.train.prefetch_mode: expected cpu, cuda, or null, got 'gpu'"),
    'batch-larger-than-the-training-set': (_set(['datasets', 'train', 'batch_size_per_gpu'], 64),
                                           'datasets.train.batch_size_per_gpu (64) is larger than the'),
    'duplicate-val-set-names': (lambda opt, tmp: (opt['datasets'].update(val_2=dict(opt['datasets']['val'])), opt)[1],
                                "datasets.val_2.name: 'val' is also the name of datasets.val"),
    'loss-reduction-none': (_set(['train', 'pixel_opt', 'reduction'], 'none'),
                            "train.pixel_opt.reduction: 'none' gives a per-pixel map"),
    'two-losses-one-log-name': (_set(['train', 'pix_opt'], {'type': 'MSELoss'}),
                                'train.pixel_opt and train.pix_opt would both be logged as l_pix'),
    'gan-loss-without-discriminator': (_set(['train', 'gan_opt'], {'type': 'GANLoss', 'gan_type': 'vanilla'}),
                                       'train.gan_opt: GANLoss needs a discriminator'),
    'encoder-with-a-plain-network': (_set(['network_g'], {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3,
                                                          'scale': 1, 'num_feat': 4, 'num_block': 1,
                                                          'num_grow_ch': 4}),
                                     'network_enc: network_g (RRDBNet) takes no representation z'),
    'stock-dataset-without-scale': (lambda opt, tmp: _set(['datasets', 'train'], dict(
        _pairs(str(tmp / 'data')), type='PairedImageDataset', io_backend={'type': 'disk'}, gt_size=16,
        use_hflip=False, use_rot=False, batch_size_per_gpu=1, num_worker_per_gpu=0))(opt, tmp),
        'scale: datasets.train (PairedImageDataset) needs the top-level scale option'),
    'tile-with-another-model': (lambda opt, tmp: _set(['val', 'tile'], {'size': 16, 'overlap': 4})(
        _set(['model_type'], 'SRModel')(opt, tmp), tmp), 'val.tile: SRModel would ignore it'),
    'crop-size-not-positive': (_set(['datasets', 'train', 'gt_size'], 0),
                               'datasets.train.gt_size: expected a positive integer, got 0'),
    'global-size-not-a-number': (_set(['datasets', 'train', 'global_size'], 'abc'),
                                 "datasets.train.global_size: expected a positive integer, got 'abc'"),
    'enlarge-ratio-not-a-number': (_set(['datasets', 'train', 'dataset_enlarge_ratio'], 'abc'),
                                   "datasets.train.dataset_enlarge_ratio: expected a number > 0, got 'abc'"),
    'real-fraction-not-a-number': (_set(['datasets', 'train', 'sampler', 'real_fraction'], 'abc'),
                                   "datasets.train.sampler.real_fraction: expected a number >= 0 or null, got 'abc'"),
    'backgrounds-not-a-list': (_set(['datasets', 'train', 'backgrounds'], 'astronaut'),
                               "datasets.train.backgrounds: expected a non-empty list of scikit-image sample names"),
    'restormer-mixup': (_set(['train', 'mixing_augs'], {'mixup': True, 'mixup_beta': 1.2}),
                        "train.mixing_augs.mixup: Restormer's mixup augmentation is not supported"),
    'metric-misspelt-key': (_set(['val', 'metrics', 'psnr'], {'type': 'calculate_psnr', 'crop_border': 0,
                                                              'test_y_chanel': True}),
                            "val.metrics.psnr: calculate_psnr has no option 'test_y_chanel' (its options: "
                            'crop_border, input_order, test_y_channel, better)'),  # it scored RGB without a word
    'metric-without-crop-border': (_set(['val', 'metrics', 'psnr'], {'type': 'calculate_psnr'}),
                                   "val.metrics.psnr: calculate_psnr needs 'crop_border'"),  # after val_freq iters
    'metric-better-misspelt': (_set(['val', 'metrics', 'psnr'], {'type': 'calculate_psnr', 'crop_border': 0,
                                                                 'better': 'higer'}),
                               "val.metrics.psnr.better: expected 'higher' or 'lower', got 'higer'"),
    'val-freq-not-a-number': (_set(['val', 'val_freq'], '5e3'),  # YAML's 5e3: a traceback after iteration 1
                              "val.val_freq: expected a positive number of iterations, got '5e3'"),
    'manual-seed-not-an-integer': (_set(['manual_seed'], 3.5),
                                   'manual_seed: expected an integer, or null (a random seed), got 3.5'),
    'total-iter-null': (_set(['train', 'total_iter'], None),
                        'train.total_iter: expected a positive number of iterations, got None'),
    'source-named-all': (_set(['datasets', 'train', 'sources', 0, 'name'], 'all'),
                         "datasets.train.sources[0]: the name 'all' is reserved for the overall row"),
    'stock-folders-of-different-lengths': (_stock_folders_of_different_lengths,
                                           'datasets.train: lq and gt datasets have different number of images: 2, '
                                           '3.'),  # BasicSR's assert: it was a traceback
    'contrastive-loss-as-a-loss-section': (_set(['train', 'con_opt'], {'type': 'CoICContrastiveLoss'}),
                                           'train.con_opt: CoICContrastiveLoss is not a loss section; it is '
                                           'configured through train.coic'),  # failed at iteration 1
    'coic-blur-sigma-reversed': (_set(['train', 'coic', 'blur_sigma'], [1.5, 0.3]),
                                 'train.coic.blur_sigma: expected a list [low, high] of numbers with 0 < low <= high'),
    'encoder-without-coic': (lambda opt, tmp: (opt['train'].pop('coic'), opt)[1],
                             'network_enc: only used by CoIC training, which needs train.coic'),  # saved untrained
    'persistent-workers-not-a-boolean': (_set(['datasets', 'train', 'persistent_workers'], 'no'),
                                         "datasets.train.persistent_workers: expected true or false, got 'no'"),
    'sampler-seed': (_set(['datasets', 'train', 'sampler', 'seed'], 5),
                     'datasets.train.sampler.seed: set by the training pipeline from manual_seed; remove it here'),
    'scheduler-last-epoch': (_set(['train', 'scheduler', 'last_epoch'], 5),
                             'train.scheduler.last_epoch: not an option (a resumed run restores the scheduler state'),
    'context-dim-a-string': (_set(['network_g', 'context_dim'], '16'),
                             "network_g.context_dim: expected an integer >= 1, got '16' (a string: write the number "
                             'without quotes)'),  # read "network_enc.context_dim (16) must equal ... (16)"
    'val-global-size-not-a-number': (_set(['val', 'global_size'], 'big'),
                                     "val.global_size: expected a positive integer, got 'big'"),
    'val-report-input-not-a-boolean': (_set(['val', 'report_input'], 'no'),
                                       "val.report_input: expected true or false, got 'no'"),
    'find-unused-parameters-not-a-boolean': (_set(['find_unused_parameters'], 'false'),
                                             "find_unused_parameters: expected true or false, got 'false'"),
    'dataset-flip-not-a-boolean': (_set(['datasets', 'train', 'use_hflip'], 'false'),
                                   "datasets.train.use_hflip: expected true or false, got 'false'"),
    'network-flag-not-a-boolean': (_set(['network_g', 'modulate'], 'false'),
                                   "network_g.modulate: expected true or false for CoICRestormer, got 'false'"),
    'ssim-window-size-a-string': (_set(['train', 'ssim_opt'], {'type': 'CoICSSIMLoss', 'window_size': '11'}),
                                  "train.ssim_opt.window_size: expected a positive odd integer for CoICSSIMLoss, "
                                  "got '11'"),  # a TypeError traceback when the model was built
    'ssim-window-size-null': (_set(['train', 'ssim_opt'], {'type': 'CoICSSIMLoss', 'window_size': None}),
                              'train.ssim_opt.window_size: expected a positive odd integer for CoICSSIMLoss, got None'),
    'multistage-base-loss-bad-value': (_set(['train', 'pixel_opt'], {'type': 'CoICMultiStageLoss', 'base_opt': {
        'type': 'CoICEdgeLoss', 'eps': 0}}),  # a key nested twice (not "train.pixel_opt: base_opt.eps: ...")
        'train.pixel_opt.base_opt.eps: expected a positive number for CoICEdgeLoss, got 0'),
    'prior-layer-weight-not-a-number': (_set(['train', 'prior_opt'], {
        'type': 'RDMCContrastivePriorLoss', 'vgg_weights': '/no/vgg.pth', 'layers': ['relu1_1'],
        'layer_weights': ['x']}),
                                        "train.prior_opt.layer_weights[0]: expected a number >= 0 for "
                                        "RDMCContrastivePriorLoss, got 'x'"),
    'ssim-padding-unknown': (_set(['train', 'ssim_opt'], {'type': 'CoICSSIMLoss', 'padding': 'foo'}),
                             "train.ssim_opt.padding: expected one of ('same', 'valid') for CoICSSIMLoss, got 'foo'"),
    'multistage-weights-per-stage': (_set(['train', 'pixel_opt'], {'type': 'CoICMultiStageLoss', 'base_opt': {
        'type': 'L1Loss'}, 'stage_weights': [0.5, 0.5, 1]}),  # found at iteration 1: CoICRestormer has one output
                                     'train.pixel_opt.stage_weights: expected 1 weight (one per stage output the '
                                     'network returned) for CoICMultiStageLoss, got [0.5, 0.5, 1.0]'),
    # sections that must be mappings (tracebacks, or accepted silently, before one early check)
    'logger-not-a-mapping': (_set(['logger'], 'x'), "logger: expected a mapping of logger options, got 'x'"),
    'wandb-not-a-mapping': (_set(['logger', 'wandb'], 'p'), "logger.wandb: expected a mapping of wandb options"),
    'train-not-a-mapping': (_set(['train'], 'x'), "train: expected a mapping of training options, got 'x'"),
    'val-not-a-mapping': (_set(['val'], 5), 'val: expected a mapping of validation options, got 5'),
    'metrics-not-a-mapping': (_set(['val', 'metrics'], 'psnr'), "val.metrics: expected a mapping of metric sections"),
    'metric-not-a-mapping': (_set(['val', 'metrics', 'psnr'], 'calculate_psnr'),
                             "val.metrics.psnr: expected a mapping of metric options with a type"),
    'path-not-a-mapping': (_set(['path'], 'x'), "path: expected a mapping of paths, got 'x'"),
    'dataset-not-a-mapping': (_set(['datasets', 'train'], 'x'),
                              "datasets.train: expected a mapping of dataset options, got 'x'"),
    'network-not-a-mapping': (_set(['network_g'], 'CoICRestormer'),
                              "network_g: expected a mapping of network options with a type"),
    'name-not-a-string': (_set(['name'], 5), 'name: expected a non-empty string (the experiment name), got 5'),
    'name-empty': (_set(['name'], ''), "name: expected a non-empty string (the experiment name), got ''"),
    'dataset-io-backend-null': (lambda opt, tmp: _stock_set(opt, tmp, io_backend=None),  # BasicSR reads it
                                'datasets.train.io_backend: expected a mapping of io_backend options (e.g. {type: '
                                'disk}), got None'),
    'source-io-backend-not-a-mapping': (
        lambda opt, tmp: _set(['datasets', 'train', 'sources', 0, 'io_backend'], 'lmdb')(_mixed(opt, tmp), tmp),
        "datasets.train.sources[0].io_backend: expected a mapping of io_backend options (e.g. {type: lmdb}), got "
        "'lmdb'"),
    'dist-params-not-a-mapping': (_set(['dist_params'], 'gloo'),  # was accepted silently
                                  "dist_params: expected a mapping of distributed options"),
    'loss-section-not-a-mapping': (_set(['train', 'pixel_opt'], 'L1Loss'),
                                   "train.pixel_opt: expected a mapping of loss options with a type"),
    'optimizer-not-a-mapping': (_set(['train', 'optim_g'], 'AdamW'),
                                "train.optim_g: expected a mapping of optimizer options with a type"),
    'scheduler-not-a-mapping': (_set(['train', 'scheduler'], 'MultiStepLR'),
                                "train.scheduler: expected a mapping of scheduler options with a type"),
    'sampler-not-a-mapping': (_set(['datasets', 'train', 'sampler'], 'MixedDatasetSampler'),
                              "datasets.train.sampler: expected a mapping of sampler options with a type"),
    'source-params-not-a-mapping': (_set(['datasets', 'train', 'sources', 0], {'name': 'light', 'params': 5}),
                                    'datasets.train.sources[0].params: expected a mapping of rain parameters'),
    'source-not-a-mapping': (_set(['datasets', 'train', 'sources', 0], 'light'),
                             "datasets.train.sources[0]: expected a mapping with a name"),
    # required keys, named in full (a bare 'error: total_iter' before)
    'no-network-g': (lambda opt, tmp: (opt.pop('network_g'), opt)[1], 'network_g: required (the network to train'),
    'no-optimizer': (lambda opt, tmp: (opt['train'].pop('optim_g'), opt)[1], 'train.optim_g: required'),
    'no-total-iter': (lambda opt, tmp: (opt['train'].pop('total_iter'), opt)[1],
                      'train.total_iter: required (the number of training iterations)'),
    'val-set-without-name': (lambda opt, tmp: (opt['datasets']['val'].pop('name'), opt)[1],
                             'datasets.val.name: required'),
    'no-batch-size': (lambda opt, tmp: (opt['datasets']['train'].pop('batch_size_per_gpu'), opt)[1],
                      'datasets.train.batch_size_per_gpu: required'),
    'no-worker-count': (lambda opt, tmp: (opt['datasets']['train'].pop('num_worker_per_gpu'), opt)[1],
                        'datasets.train.num_worker_per_gpu: required'),
    'optimizer-without-type': (_set(['train', 'optim_g'], {'lr': 1e-3}), 'train.optim_g.type: required'),
    'no-training-set': (lambda opt, tmp: (opt['datasets'].pop('train'), opt)[1],
                        'datasets.train: a training dataset is required'),
    'stock-dataset-without-flips': (lambda opt, tmp: _stock_set(opt, tmp, drop=('use_hflip',)),  # found at iteration 1
                                    'datasets.train.use_hflip: required by PairedImageDataset in training (true or '
                                    'false: random horizontal flips)'),
    'stock-dataset-without-crop-size': (lambda opt, tmp: _stock_set(opt, tmp, drop=('gt_size',)),  # at iteration 1
                                        'datasets.train.gt_size: required by PairedImageDataset in training (the size '
                                        'of the gt training crops)'),
    # values torch or numpy refused without naming the key, or that were accepted silently
    'batch-size-a-string': (_set(['datasets', 'train', 'batch_size_per_gpu'], '2'),
                            "datasets.train.batch_size_per_gpu: expected an integer >= 1, got '2'"),
    'batch-size-a-fraction': (_set(['datasets', 'train', 'batch_size_per_gpu'], 2.5),
                              'datasets.train.batch_size_per_gpu: expected an integer >= 1, got 2.5'),
    'workers-negative': (_set(['datasets', 'train', 'num_worker_per_gpu'], -1),
                         'datasets.train.num_worker_per_gpu: expected an integer from 0 (no worker processes) to 64'),
    'manual-seed-negative': (_set(['manual_seed'], -1),
                             "manual_seed: expected an integer from 0 to 4294967295 (numpy's seed range), got -1"),
    'save-img-not-a-boolean': (_set(['val', 'save_img'], 'no'), "val.save_img: expected true or false, got 'no'"),
    'tb-logger-not-a-boolean': (_set(['logger', 'use_tb_logger'], 'no'),
                                "logger.use_tb_logger: expected true or false, got 'no'"),
    'pin-memory-not-a-boolean': (_set(['datasets', 'val', 'pin_memory'], 'x'),
                                 "datasets.val.pin_memory: expected true or false, got 'x'"),
    'num-gpu-not-a-number': (_set(['num_gpu'], 'x'), "num_gpu: expected auto or an integer >= 0 (0: the CPU), got 'x'"),
    'num-gpu-negative': (_set(['num_gpu'], -3), 'num_gpu: expected auto or an integer >= 0 (0: the CPU), got -3'),
    'print-freq-a-fraction': (_set(['logger', 'print_freq'], 1.5),
                              'logger.print_freq: expected a positive number of iterations, got 1.5'),
    'checkpoint-freq-a-fraction': (_set(['logger', 'save_checkpoint_freq'], 2.5),
                                   'logger.save_checkpoint_freq: expected a positive number of iterations, got 2.5'),
    # values that failed mid-training
    'scheduler-gamma-not-a-number': (_set(['train', 'scheduler'], {'type': 'MultiStepLR', 'milestones': [2],
                                                                   'gamma': 'x'}),
                                     "train.scheduler.gamma: expected a number >= 0, got 'x'"),
    'restart-weights-not-numbers': (_set(['train', 'scheduler', 'restart_weights'], [1, 'x']),
                                    "train.scheduler.restart_weights: expected a list of numbers >= 0, got [1, 'x']"),
    'basicsr-restart-weights-too-short': (_set(['train', 'scheduler'], {'type': 'CosineAnnealingRestartLR',
                                                                        'periods': [2, 2], 'restart_weights': [1]}),
                                          'train.scheduler: periods and restart_weights must have the same length '
                                          '(got 2, 1)'),  # BasicSR's AssertionError traceback
    'loss-weight-not-a-number': (_set(['train', 'pixel_opt', 'loss_weight'], 'abc'),
                                 "train.pixel_opt.loss_weight: expected a number >= 0, got 'abc'"),
    'multistep-without-milestones': (_set(['train', 'scheduler'], {'type': 'MultiStepLR'}),
                                     'train.scheduler.milestones: required by MultiStepLR'),
    'milestones-a-fraction': (_set(['train', 'scheduler'], {'type': 'MultiStepLR', 'milestones': [2.5]}),
                              'train.scheduler.milestones: expected a list of positive iteration numbers, got [2.5]'),
    'restarts-negative': (_set(['train', 'scheduler'], {'type': 'MultiStepLR', 'milestones': [2], 'restarts': [-1]}),
                          'train.scheduler.restarts: expected a list of iteration numbers >= 0, got [-1]'),
    'periods-empty': (_set(['train', 'scheduler', 'periods'], []),
                      'train.scheduler.periods: expected a non-empty list of positive iteration numbers, got []'),
    'eta-min-not-a-number': (_set(['train', 'scheduler'], {'type': 'CosineAnnealingRestartLR', 'periods': [4],
                                                           'eta_min': 'x'}),
                             "train.scheduler.eta_min: expected a number >= 0, got 'x'"),
    'eta-mins-not-numbers': (_set(['train', 'scheduler', 'eta_mins'], [5e-4, 'x']),
                             "train.scheduler.eta_mins: expected a list of numbers >= 0, got [0.0005, 'x']"),
    'restart-periods-without-weights': (_set(['train', 'scheduler'], {'type': 'CosineAnnealingRestartLR',
                                                                      'periods': [2, 2]}),  # the default is [1]
                                        'train.scheduler: periods and restart_weights must have the same length '
                                        '(got 2, 1)'),
    # messages that named the wrong key or showed another value
    'scheduler-mod-lengths-differ': (_set(['train', 'scheduler_mod'], {
        'type': 'CosineAnnealingRestartCyclicLR', 'periods': [2, 2], 'restart_weights': [1, 1], 'eta_mins': [1e-4]}),
        'train.scheduler_mod: periods, restart_weights and eta_mins must have the same length (got 2, 2, 1)'),
    'periods-not-a-list': (_set(['train', 'scheduler', 'periods'], 'x'),
                           "train.scheduler.periods: expected a non-empty list of positive iteration numbers, got 'x'"),
    'dataset-key-not-a-phase': (lambda opt, tmp: (opt['datasets'].update(validation=opt['datasets'].pop('val')),
                                                  opt)[1],
                                "datasets.validation: a dataset key must be train, or have val or test before its "
                                "first '_'"),
    'rain-param-not-a-number': (_set(['datasets', 'train', 'sources', 0], {'name': 'light',
                                                                           'params': {'density': 'x'}}),
                                "params.density: expected a number or a [low, high] range, got 'x'"),
    'source-io-backend-type-not-a-string': (
        lambda opt, tmp: _set(['datasets', 'train', 'sources', 0, 'io_backend'], {'type': 5})(_mixed(opt, tmp), tmp),
        "io_backend.type must be 'disk' or 'lmdb', got 5"),
    'context-dim-zero': (_set(['network_g', 'context_dim'], 0),  # reported network_enc's equality first
                         'network_g.context_dim: expected an integer >= 1, got 0'),
    'val-sets-without-names': (lambda opt, tmp: (opt['datasets']['val'].pop('name'), opt['datasets'].update(
        val_2=dict(opt['datasets']['val'])), opt)[2],  # read "'MixedSyntheticRainDataset' is also the name of ..."
        'datasets.val.name: required (the name its results'),
    'option-key-a-number': (_set(['train', 1], 2),  # AttributeError tracebacks (key.endswith)
                            'train.1: expected an option name, got the int key 1'),
    'top-level-key-a-number': (_set([5], 'x'), '5: expected an option name, got the int key 5'),
    'manual-seed-past-the-worker-seeds': (
        lambda opt, tmp: _set(['manual_seed'], 2**32 - 1)(_set(['datasets', 'train', 'num_worker_per_gpu'], 2)(
            opt, tmp), tmp),  # numpy's "Seed must be between 0 and 2**32 - 1" in a loader worker
        'manual_seed: expected an integer from 0 to 4294967294 (numpy seeds up to 2**32 - 1, and 2 data loader '
        'workers seed manual_seed + 0 to 1), got 4294967295'),
    'coic-with-a-stock-dataset': (lambda opt, tmp: _set(['scale'], 1)(_set(['datasets', 'train'], dict(
        _pairs(str(tmp / 'data')), type='PairedImageDataset', io_backend={'type': 'disk'}, gt_size=16,
        use_hflip=False, use_rot=False, batch_size_per_gpu=1, num_worker_per_gpu=0))(opt, tmp), tmp),
        'train.coic: needs lq_global/gt_global in the training batches, which datasets.train.type PairedImageDataset '
        'does not give'),  # found at iteration 1
    'coic-with-another-model': (_set(['model_type'], 'SRModel'),  # trained network_g alone, without a word
                                'train.coic: only CoICModel (or a subclass) trains with CoIC; model_type SRModel would '
                                'train network_g alone (set model_type: CoICModel or remove train.coic)'),
    'prior-weights-missing': (_set(['train', 'prior_opt'], {'type': 'RDMCContrastivePriorLoss',
                                                            'vgg_weights': '/no/vgg.pth'}),
                              "train.prior_opt.vgg_weights: '/no/vgg.pth' does not exist (RDMCContrastivePriorLoss "
                              'never downloads weights'),
    # a list or a mapping as a class name: "unhashable type" tracebacks
    'network-type-a-list': (_set(['network_g', 'type'], [1, 2]),
                            'network_g.type: expected a string (a class name of the arch registry), got [1, 2]'),
    'model-type-a-mapping': (_set(['model_type'], {'a': 1}),  # and shown as a plain dict, not OrderedDict([...])
                             "model_type: expected a string (a class name of the model registry), got {'a': 1}"),
    'loss-type-a-list': (_set(['train', 'pixel_opt', 'type'], [1, 2]),
                         'train.pixel_opt.type: expected a string (a class name of the loss registry), got [1, 2]'),
    'sampler-type-a-list': (_set(['datasets', 'train', 'sampler', 'type'], [1, 2]),
                            'datasets.train.sampler.type: expected a string (a class name of the sampler registry)'),
    'metric-type-a-list': (_set(['val', 'metrics', 'psnr', 'type'], [1, 2]),
                           'val.metrics.psnr.type: expected a string (a class name of the metric registry)'),
    'scheduler-type-a-list': (_set(['train', 'scheduler', 'type'], [1, 2]),
                              'train.scheduler.type: expected a string (a scheduler class name), got [1, 2]'),
    'val-set-name-a-mapping': (_set(['datasets', 'val', 'name'], {'a': 1}),
                               "datasets.val.name: expected a string, got {'a': 1}"),
    'no-model-type': (lambda opt, tmp: (opt.pop('model_type'), opt)[1],  # a bare "error: model_type", data built
                      'model_type: required (e.g. CoICModel or SRModel)'),
    # path values BasicSR expands or makes folders of
    'path-value-not-a-string': (_set(['path', 'resume_state'], 5),
                                'path.resume_state: expected a file path, or null, got 5'),
    'path-strict-load-not-a-boolean': (_set(['path', 'strict_load_g'], 'no'),
                                       "path.strict_load_g: expected true or false, got 'no'"),
    'path-key-misspelt': (_set(['path', 'pretrained_network_g'], 'x.pth'),  # trained from scratch, made ./x.pth/
                          "path.pretrained_network_g: unknown key (did you mean 'pretrain_network_g'?"),
    'path-checkpoint-as-a-folder': (_set(['path', 'my_weights'], 'x.pth'),
                                    "path.my_weights: 'x.pth' looks like a checkpoint, but BasicSR reads no such key "
                                    'and would make a folder of it'),
    'name-with-a-separator': (_set(['name'], 'a/b'), "name: expected a folder name without a path separator and not "
                                                     ". or .. (the experiment goes to experiments/<name>), got 'a/b'"),
    'name-dot-dot': (_set(['name'], '..'), "name: expected a folder name without a path separator"),
    # values that trained wrongly without a word
    'scheduler-gamma-negative': (_set(['train', 'scheduler'], {'type': 'MultiStepLR', 'milestones': [2],
                                                               'gamma': -1}),
                                 'train.scheduler.gamma: expected a number >= 0, got -1'),
    'eta-min-negative': (_set(['train', 'scheduler'], {'type': 'CosineAnnealingRestartLR', 'periods': [4],
                                                       'eta_min': -1}),
                         'train.scheduler.eta_min: expected a number >= 0, got -1'),
    'eta-mins-negative': (_set(['train', 'scheduler', 'eta_mins'], [-1, -1]),
                          'train.scheduler.eta_mins: expected a list of numbers >= 0, got [-1, -1]'),
    'restart-weights-negative': (_set(['train', 'scheduler', 'restart_weights'], [1, -1]),
                                 'train.scheduler.restart_weights: expected a list of numbers >= 0, got [1, -1]'),
    'loss-weight-negative': (_set(['train', 'pixel_opt', 'loss_weight'], -1),
                             'train.pixel_opt.loss_weight: expected a number >= 0, got -1'),
    'eta-min-above-lr': (_set(['train', 'optim_g', 'lr'], 0),  # annealed from 0 up to 5e-4
                         'train.scheduler.eta_mins: 0.0005 is above train.optim_g.lr (0), so the cosine schedule '
                         'would raise the learning rate towards it'),
    # metric arguments: a traceback, "failed on <image>" or NaN after val_freq iterations
    'metric-crop-border-negative': (_set(['val', 'metrics', 'psnr', 'crop_border'], -1),
                                    'val.metrics.psnr.crop_border: expected an integer >= 0 (pixels cropped from each '
                                    'border), got -1'),
    'metric-crop-border-a-string': (_set(['val', 'metrics', 'psnr', 'crop_border'], 'abc'),
                                    "val.metrics.psnr.crop_border: expected an integer >= 0"),
    'metric-input-order-unknown': (_set(['val', 'metrics', 'psnr', 'input_order'], 'abc'),
                                   "val.metrics.psnr.input_order: expected 'HWC' or 'CHW', got 'abc'"),
    'metric-y-channel-not-a-boolean': (_set(['val', 'metrics', 'psnr', 'test_y_channel'], 'false'),
                                       "val.metrics.psnr.test_y_channel: expected true or false, got 'false'"),
    # optimizer values torch compared without naming the key
    'optimizer-lr-a-string': (_set(['train', 'optim_g', 'lr'], '1e-3'),
                              "train.optim_g.lr: expected a number, got '1e-3' (a string: YAML reads 1e-3 without a "
                              'dot as text; write 1.0e-3 or !!float 1e-3)'),
    'optimizer-weight-decay-null': (_set(['train', 'optim_g', 'weight_decay'], None),
                                    'train.optim_g.weight_decay: expected a number, got None'),
    'optimizer-betas-not-a-pair': (_set(['train', 'optim_g', 'betas'], 0.9),
                                   'train.optim_g.betas: expected a list of 2 numbers (e.g. [0.9, 0.999]), got 0.9'),
    'workers-absurd': (_set(['datasets', 'train', 'num_worker_per_gpu'], 10**9),  # a fork storm
                       'datasets.train.num_worker_per_gpu: expected an integer from 0 (no worker processes) to 64'),
    'mapping-value-shown-plainly': (_set(['manual_seed'], {'a': 1}),  # was OrderedDict([('a', 1)])
                                    "manual_seed: expected an integer, or null (a random seed), got {'a': 1}"),
}

FAIL_WHILE_TRAINING = {'corrupt-image', 'lq-gt-size-mismatch',  # found when the item is read
                       'multistage-weights-per-stage'}  # found when the network's outputs are known


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_input_gives_one_clear_line(case, tmp_path, monkeypatch, capsys):
    mutate, expected = CASES[case]
    opt = mutate(tiny_coic_options(name=f'bad_{case}'), tmp_path)
    monkeypatch.chdir(tmp_path)
    sigint = signal.getsignal(signal.SIGINT)  # ignored when pytest runs as a background job of a script
    code = train_main(['-opt', write_options(opt, str(tmp_path / 'opt.yml'))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err and err[-1].startswith('basicsr train: error: ') and expected in err[-1], err[-1:]
    made = (tmp_path / 'experiments').exists()
    assert made == (case in FAIL_WHILE_TRAINING), 'the experiment folder is made once data and model are built'
    assert signal.getsignal(signal.SIGINT) is sigint  # a failed run gives Ctrl-C back


def test_a_schedule_must_reach_the_last_iteration_and_no_further_is_needed():
    # BasicSR steps the scheduler from iteration 2 on: total_iter N takes N - 1 steps
    from coic_basicsr.utils.validate import check_scheduler_periods
    opt = tiny_coic_options()  # periods [2, 2]
    check_scheduler_periods(dict(opt, train=dict(opt['train'], total_iter=5)))
    with pytest.raises(ValueError, match=r'add up to 4, but train.total_iter \(6\) needs at least 5'):
        check_scheduler_periods(dict(opt, train=dict(opt['train'], total_iter=6)))


def test_coic_with_a_project_dataset_is_left_to_the_first_batch(monkeypatch):
    # a project's own dataset class may give lq_global/gt_global: only BasicSR's and ours are refused up front
    from basicsr.utils.registry import DATASET_REGISTRY
    from coic_basicsr.models.global_views import check_global_views_given
    project_set = type('ProjectRainSet', (torch.utils.data.Dataset,), {'__module__': 'my_project.data'})
    monkeypatch.setitem(DATASET_REGISTRY._obj_map, 'ProjectRainSet', project_set)
    opt = tiny_coic_options()
    check_global_views_given(opt)  # MixedSyntheticRainDataset
    opt['datasets']['train']['type'] = 'ProjectRainSet'
    check_global_views_given(opt)
    opt['datasets']['train']['type'] = 'SingleImageDataset'
    with pytest.raises(ValueError, match='^train.coic: needs lq_global/gt_global'):
        check_global_views_given(opt)


def test_coic_with_a_project_model_is_left_to_it(monkeypatch):
    # a project's own model class may read train.coic: only BasicSR's and ours that are no CoICModel are refused
    from basicsr.models.sr_model import SRModel
    from basicsr.utils.registry import MODEL_REGISTRY
    from coic_basicsr.models.global_views import check_coic_model_type
    project_model = type('ProjectCoICModel', (SRModel,), {'__module__': 'my_project.models'})
    monkeypatch.setitem(MODEL_REGISTRY._obj_map, 'ProjectCoICModel', project_model)
    opt = tiny_coic_options()
    check_coic_model_type(opt)  # CoICModel
    opt['model_type'] = 'ProjectCoICModel'
    check_coic_model_type(opt)
    opt['model_type'] = 'SwinIRModel'
    with pytest.raises(ValueError, match='^train.coic: only CoICModel .* model_type SwinIRModel would train'):
        check_coic_model_type(opt)
    opt['train']['coic'] = None  # read as absent: no CoIC training
    check_coic_model_type(opt)


@pytest.mark.parametrize('key', ['print_freq', 'save_checkpoint_freq'])
def test_logger_frequency_inf_means_never(key):
    # BasicSR tests iter % freq == 0: .inf never prints/saves (the run still saves its final weights)
    from coic_basicsr.utils.validate import check_logger
    opt = tiny_coic_options()
    opt['logger'][key] = float('inf')
    check_logger(opt)
    opt['logger'][key] = -float('inf')
    with pytest.raises(ValueError, match=rf'^logger\.{key}: expected a positive number of iterations, got -inf$'):
        check_logger(opt)


def test_tensorboard_logger_without_the_package_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    opt = tiny_coic_options(name='no_tensorboard')
    opt['logger']['use_tb_logger'] = True
    monkeypatch.chdir(tmp_path)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *args: None if name == 'tensorboard' else find_spec(name, *args))
    code = train_main(['-opt', write_options(opt, str(tmp_path / 'opt.yml'))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == ('basicsr train: error: logger.use_tb_logger: true, but the tensorboard package is '
                                     'not installed (pip install tensorboard, or set logger.use_tb_logger: false)')
    assert not (tmp_path / 'experiments').exists()


@pytest.mark.skipif(importlib.util.find_spec('wandb') is not None, reason='wandb is installed here')
def test_wandb_project_without_the_package_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    opt = tiny_coic_options(name='no_wandb')
    opt['logger'].update(use_tb_logger=True, wandb={'project': 'p'})
    monkeypatch.chdir(tmp_path)
    code = train_main(['-opt', write_options(opt, str(tmp_path / 'opt.yml'))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == ('basicsr train: error: logger.wandb.project: set, but the wandb package is not '
                                     'installed (pip install wandb, or set logger.wandb.project: ~)')
    assert not (tmp_path / 'experiments').exists()  # refused before the experiment folder is made


@pytest.mark.parametrize('argv, expected', [
    (['-opt', 'missing.yml'], "option file 'missing.yml' does not exist"),
    (['-opt', 'opt.yml', '--force_yml', 'train:nokey=1'], "option 'train:nokey' does not exist"),
    (['-opt', 'opt.yml', '--force_yml', 'train'], "'train' is not of the form key:subkey=value"),
    (['-opt', 'broken.yml'], 'is not valid YAML'),
    (['-opt', 'opt.yml', '--force_yml', 'train:total_iter=[1,'], "--force_yml: the value of 'train:total_iter' is not "
                                                                 'valid YAML'),
    (['-opt', 'bad_backend.yml', '--launcher', 'pytorch'], "dist_params.backend: expected one of gloo, nccl"),
    (['-opt', 'opt.yml', '--launcher', 'pytorch'], '--launcher pytorch: environment variable RANK is not set'),
    (['-opt', 'opt.yml', '--launcher', 'slurm'], '--launcher slurm: environment variable SLURM_PROCID is not set'),
    # --debug with no logger section: the same line as without --debug (was "error: logger", a KeyError)
    (['-opt', 'no_logger.yml', '--debug'], 'error: logger.print_freq: expected a positive number of iterations, got '
                                           'None\n'),
])
def test_bad_command_lines(argv, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no launcher variables: conftest removes them
    write_options(tiny_coic_options(), str(tmp_path / 'opt.yml'))
    (tmp_path / 'broken.yml').write_text('name: [unclosed\n')
    write_options(dict(tiny_coic_options(), dist_params={'backend': 'foo'}), str(tmp_path / 'bad_backend.yml'))
    write_options({k: v for k, v in tiny_coic_options().items() if k != 'logger'}, str(tmp_path / 'no_logger.yml'))
    assert train_main(argv) == 2
    assert expected in capsys.readouterr().err


def test_every_case_is_documented():
    with open(DOC) as f:
        doc = f.read()
    for case in CASES:
        assert f'`{case}`' in doc, case


def test_basicsr_test_refuses_untrained_networks_and_finds_the_encoder_beside(tmp_path, monkeypatch, capsys):
    from coic_basicsr.test import check_test_weights, main as test_main
    opt = tiny_coic_options(name='untrained')
    del opt['train']
    opt['datasets'] = {'test_1': opt['datasets']['val']}
    monkeypatch.chdir(tmp_path)
    assert test_main(['-opt', write_options(opt, str(tmp_path / 'a.yml'))]) == 2
    assert capsys.readouterr().err.strip().endswith("basicsr test: error: path.pretrain_network_g: basicsr test needs "
                                                    "the trained network (e.g. experiments/<name>/models/"
                                                    "net_g_latest.pth)")
    models = tmp_path / 'models'
    models.mkdir()
    torch.save({'params': {}}, models / 'net_g_5.pth')
    opt['path'] = {'pretrain_network_g': str(models / 'net_g_5.pth')}
    assert test_main(['-opt', write_options(opt, str(tmp_path / 'b.yml'))]) == 2
    assert 'path.pretrain_network_enc: the options have network_enc but name no encoder' in capsys.readouterr().err
    assert not (tmp_path / 'results').exists()  # refused before any work
    torch.save({'params': {}}, models / 'net_enc_5.pth')  # saved with net_g_5.pth: used, as the tools do
    check_test_weights(opt)
    assert opt['path']['pretrain_network_enc'] == str(models / 'net_enc_5.pth')


def test_a_test_run_that_cannot_load_its_weights_leaves_the_previous_results_alone(tmp_path, monkeypatch, capsys):
    from coic_basicsr.test import main as test_main
    opt = tiny_coic_options(name='retest')
    opt['datasets'] = {'test_1': opt['datasets']['val']}
    untrained_test_options(opt, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert test_main(['-opt', write_options(opt, str(tmp_path / 'a.yml'))]) == 0
    before = sorted(p.name for p in (tmp_path / 'results').iterdir())
    assert before == ['retest'] and any((tmp_path / 'results' / 'retest').glob('*_metrics.csv'))
    opt['network_g']['dim'] = 12  # the weights no longer fit
    assert test_main(['-opt', write_options(opt, str(tmp_path / 'b.yml'))]) == 2
    assert 'does not fit CoICRestormer' in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / 'results').iterdir()) == before  # nothing archived or added
    assert any((tmp_path / 'results' / 'retest').glob('*_metrics.csv'))


def _corrupt_stock_lmdb(opt, tmp):
    for side in ('gt', 'lq'):
        root = tmp / f'{side}.lmdb'
        root.mkdir()
        (root / 'data.mdb').write_bytes(b'not an lmdb' * 100)
        (root / 'meta_info.txt').write_text('a.png (24,24,3) 1\n')
    opt['scale'] = 1
    opt['datasets']['train'] = {'name': 'stock', 'type': 'PairedImageDataset', 'dataroot_gt': str(tmp / 'gt.lmdb'),
                                'dataroot_lq': str(tmp / 'lq.lmdb'), 'io_backend': {'type': 'lmdb'}, 'gt_size': 16,
                                'use_hflip': False, 'use_rot': False, 'batch_size_per_gpu': 1, 'num_worker_per_gpu': 0}
    return _without_coic(opt)


@pytest.mark.parametrize('case, expected', [
    ('experiments-is-a-file', "[Errno 20] Not a directory: '<tmp>/experiments/"),
    ('stock-corrupt-lmdb', '<tmp>/lq.lmdb: MDB_INVALID: File is not an LMDB file'),
])
def test_file_system_errors_are_one_line(case, expected, tmp_path, monkeypatch, capsys):
    opt = tiny_coic_options(name=case)
    if case == 'experiments-is-a-file':
        (tmp_path / 'experiments').write_text('not a folder')
    else:
        opt = _corrupt_stock_lmdb(opt, tmp_path)
    monkeypatch.chdir(tmp_path)
    code = train_main(['-opt', write_options(opt, str(tmp_path / 'opt.yml'))])
    last = capsys.readouterr().err.strip().splitlines()[-1].replace(str(tmp_path), '<tmp>')
    assert code == 2 and last.startswith('basicsr train: error: ') and expected in last, last  # were tracebacks


def test_basicsr_test_requires_model_type_before_any_work(tmp_path, monkeypatch, capsys):
    from coic_basicsr.test import main as test_main
    opt = tiny_coic_options(name='no_model_type')
    opt['datasets'] = {'test_1': opt['datasets']['val']}
    untrained_test_options(opt, tmp_path)
    del opt['model_type']
    monkeypatch.chdir(tmp_path)
    assert test_main(['-opt', write_options(opt, str(tmp_path / 'a.yml'))]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == ('basicsr test: error: model_type: required (e.g. '
                                                                'CoICModel or SRModel)')
    assert not (tmp_path / 'results').exists()


def test_project_path_keys_are_left_to_the_project():
    # keys of BasicSR's convention, and folders of the project's own, are not taken for misspellings
    from coic_basicsr.utils.path_options import check_path_section
    opt = tiny_coic_options()
    opt['path'].update(pretrain_network_d='d.pth', strict_load_d=False, param_key_d='params', pretrain_network_x=None,
                       my_outputs='out', ignore_resume_networks=['network_enc'], strict_load_enc=None)
    check_path_section(opt)
    assert 'strict_load_enc' not in opt['path']  # null: removed, so that the code's default (strict) applies
    for key, value, expected in [('strict_loads_g', True, "did you mean 'strict_load_g'"),
                                 ('resume_states', 'a.state', "did you mean 'resume_state'"),
                                 ('pretrain_network_enc', 5, 'expected a file path, or null, got 5'),
                                 ('my_outputs', None, 'expected a folder path'),
                                 ('ignore_resume_networks', 'network_g', 'expected a list of network names')]:
        with pytest.raises(ValueError, match=f'^path.{key}: .*{re.escape(expected)}'):
            check_path_section(dict(opt, path={key: value}))


def test_a_cosine_floor_is_compared_with_the_optimizer_it_schedules():
    # train.scheduler schedules optim_g, and optim_mod unless scheduler_mod is given
    from coic_basicsr.utils.optim_options import check_eta_min_below_lr
    opt = tiny_coic_options()  # eta_mins [5e-4, 1e-5]
    opt['train']['optim_mod']['lr'] = 1e-4
    with pytest.raises(ValueError, match=r'^train.scheduler.eta_mins: 0.0005 is above train.optim_mod.lr \(0.0001\)'):
        check_eta_min_below_lr(opt)
    opt['train']['scheduler_mod'] = {'type': 'CosineAnnealingRestartLR', 'periods': [4], 'eta_min': 1e-6}
    check_eta_min_below_lr(opt)
    del opt['train']['optim_mod']  # then a copy of optim_g, scheduled by scheduler_mod
    opt['train']['scheduler_mod']['eta_min'] = 2e-3
    with pytest.raises(ValueError, match=r'^train.scheduler_mod.eta_min: 0.002 is above train.optim_g.lr \(0.001\)'):
        check_eta_min_below_lr(opt)


def test_option_files_read_as_plain_dicts_keeping_yaml_aliases(tmp_path):
    from coic_basicsr.utils.options import load_option_file
    (tmp_path / 'a.yml').write_text('a: &x {p: 1}\nb: *x\nc: [{d: 2}]\n')
    opt = load_option_file(str(tmp_path / 'a.yml'))
    assert type(opt) is dict and type(opt['c'][0]) is dict and repr(opt['a']) == "{'p': 1}"
    assert opt['a'] is opt['b']  # --force_yml reports the other uses of an aliased section


def test_option_files_may_use_yaml_merge_keys(tmp_path):
    from coic_basicsr.utils.options import load_option_file
    (tmp_path / 'a.yml').write_text('base: &base {lr: 1.0e-3, betas: [0.9, 0.99]}\n'
                                    'optim_g: {<<: *base, type: AdamW}\noptim_mod: {<<: *base, lr: 2.0e-4}\n')
    opt = load_option_file(str(tmp_path / 'a.yml'))  # was "is not valid YAML: could not determine a constructor"
    assert opt['optim_g'] == {'lr': 1e-3, 'betas': [0.9, 0.99], 'type': 'AdamW'}
    assert opt['optim_mod'] == {'lr': 2e-4, 'betas': [0.9, 0.99]}
