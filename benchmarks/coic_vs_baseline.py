"""Does CoIC beat the same backbone without CoIC on mixed rain? One reproducible, seeded command.

Builds a deterministic mixed benchmark (four rain types; one source also has different backgrounds), trains the same
backbone with and without CoIC for each seed (identical architecture and initialisation — the baseline simply never
switches z on — identical data order, iterations and optimiser), tests both per source, and writes a Markdown table
with mean ± std over seeds and the per-source difference. With ``--generator-width`` the CoIC arm's backbone starts from
other weights than the baseline's (its generators draw a different number of random values before the backbone is
built). Re-running into the same ``--out`` reuses the data and each arm's result only where the settings that produced
them (recorded in ``settings.json`` beside them) equal the current ones; anything else is rebuilt or retrained.

    python benchmarks/coic_vs_baseline.py --backbone restormer-small --iters 600 --seeds 3 --out bench_runs
    python benchmarks/coic_vs_baseline.py ... --generator-width 4   (CoIC arm with compact CoI-M generators)
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from os import path as osp
from typing import Dict, List, Optional

import cv2
import numpy as np
import yaml

from bench_common import positive_int

BACKBONES = {
    'restormer-tiny': {'type': 'CoICRestormer', 'dim': 8, 'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1,
                       'heads': [1, 1, 2, 2], 'ffn_expansion_factor': 2},
    'restormer-small': {'type': 'CoICRestormer', 'dim': 16, 'num_blocks': [1, 1, 2, 2], 'num_refinement_blocks': 1,
                        'heads': [1, 2, 4, 8], 'ffn_expansion_factor': 2.66},
}
# source -> (rain preset, backgrounds): 'mist' also differs in background (textures instead of photos)
SOURCES = {
    'light_sparse': ('light_sparse', ['astronaut', 'coffee', 'chelsea', 'rocket']),
    'heavy_dense': ('heavy_dense', ['astronaut', 'coffee', 'chelsea', 'rocket']),
    'slanted_long': ('slanted_long', ['astronaut', 'coffee', 'chelsea', 'rocket']),
    'mist_textures': ('mist', ['brick', 'grass', 'gravel', 'coins']),
}


SETTINGS = 'settings.json'  # beside each cached item: the settings that produced it


def read_settings(folder: str) -> Optional[object]:
    """The settings recorded in ``folder``, or None if there are none (or they are unreadable)."""
    try:
        with open(osp.join(folder, SETTINGS)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_settings(folder: str, settings: object) -> None:
    with open(osp.join(folder, SETTINGS), 'w') as f:
        json.dump(settings, f, indent=1)


def same_settings(folder: str, settings: object) -> bool:
    """Whether ``folder`` holds an item made with exactly ``settings`` (compared as JSON)."""
    return read_settings(folder) == json.loads(json.dumps(settings))


def make_benchmark(root: str, train_per_source: int, test_per_source: int, size: int) -> None:
    """Write ``root/<split>/<source>/{lq,gt}/*.png`` deterministically (seeded by split, source and index); a folder
    made with other settings (count, size) is rebuilt."""
    from coic_basicsr.data.synthetic_rain import render_rain
    from coic_basicsr.data.synthetic_rain_dataset import load_skimage_background
    for split, count in (('train', train_per_source), ('test', test_per_source)):
        for s_index, (source, (preset, backgrounds)) in enumerate(SOURCES.items()):
            folder = osp.join(root, split, source)
            settings = {'count': count, 'size': size}
            if same_settings(folder, settings):
                continue
            shutil.rmtree(folder, ignore_errors=True)
            for sub in ('lq', 'gt'):
                os.makedirs(osp.join(folder, sub))
            for k in range(count):
                rng = np.random.default_rng([7, split == 'test', s_index, k])
                img = load_skimage_background(backgrounds[int(rng.integers(len(backgrounds)))])
                side = int(rng.integers(min(img.shape[:2]) // 3, min(img.shape[:2]) + 1))
                top, left = int(rng.integers(img.shape[0] - side + 1)), int(rng.integers(img.shape[1] - side + 1))
                clean = cv2.resize(img[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
                clean = clean.astype(np.float32) / 255
                rainy = render_rain(clean, preset, seed=int(rng.integers(2**62)))
                cv2.imwrite(osp.join(folder, 'gt', f'{k:04d}.png'), np.round(clean * 255).astype(np.uint8))
                cv2.imwrite(osp.join(folder, 'lq', f'{k:04d}.png'), np.round(np.clip(rainy, 0, 1) * 255).astype(np.uint8))
            write_settings(folder, settings)


def _sources(root: str, split: str) -> List[dict]:
    return [{'name': s, 'dataroot_gt': osp.join(root, split, s, 'gt'), 'dataroot_lq': osp.join(root, split, s, 'lq')}
            for s in SOURCES]


def options(args, root: str, seed: int, coic: bool) -> dict:
    width = f'_width{args.generator_width}' if coic and args.generator_width else ''
    name = f"{'coic' if coic else 'baseline'}{width}_{args.backbone}_seed{seed}"
    opt = {
        'name': name, 'model_type': 'CoICModel', 'num_gpu': 'auto', 'manual_seed': seed,
        'datasets': {
            'train': {'name': 'bench_train', 'type': 'MixedRainDataset', 'sources': _sources(root, 'train'),
                      'gt_size': args.crop, 'global_size': 64, 'sampler': {'type': 'MixedDatasetSampler',
                                                                           'weighting': 'balanced'},
                      'num_worker_per_gpu': 0, 'batch_size_per_gpu': args.batch},
        },
        'network_g': dict(BACKBONES[args.backbone], context_dim=128),
        'network_enc': {'type': 'CoICEncoder', 'context_dim': 128, 'base_channels': 16},
        'path': {'pretrain_network_g': None, 'resume_state': None},
        'train': {'total_iter': args.iters, 'warmup_iter': -1, 'ema_decay': 0.99, 'grad_clip': 0.5,
                  'optim_g': {'type': 'AdamW', 'lr': 2e-3, 'weight_decay': 1e-4},
                  'optim_mod': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 1e-4},
                  'scheduler': {'type': 'CosineAnnealingRestartCyclicLR',
                                'periods': [args.stage1, args.iters - args.stage1], 'restart_weights': [1, 1],
                                'eta_mins': [1e-3, 1e-5]},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                  'coic': {'stage1_iter': args.stage1, 'contrastive_weight': args.contrastive_weight,
                           'momentum': 0.99}},
        'logger': {'print_freq': 50, 'save_checkpoint_freq': 10**9, 'use_tb_logger': False},
    }
    if not coic:  # same arch and init; z never switched on, no encoder
        del opt['network_enc'], opt['train']['coic'], opt['train']['optim_mod']
    elif args.generator_width:
        opt['network_g']['generator_width'] = args.generator_width
    return opt


def test_options(train_opt: dict, root: str) -> dict:
    models = osp.join('experiments', train_opt['name'], 'models')
    opt = {'name': train_opt['name'] + '_test', 'model_type': 'CoICModel', 'num_gpu': 'auto', 'manual_seed': 0,
           'datasets': {'test': {'name': 'bench_test', 'type': 'MixedRainDataset', 'sources': _sources(root, 'test'),
                                 'global_size': 64}},
           'network_g': train_opt['network_g'],
           'path': {'pretrain_network_g': osp.join(models, 'net_g_latest.pth'), 'param_key_g': 'params_ema'},
           'val': {'save_img': False, 'global_size': 64,
                   'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': True},
                               'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': True}}}}
    if 'network_enc' in train_opt:
        opt['network_enc'] = train_opt['network_enc']
        opt['path']['pretrain_network_enc'] = osp.join(models, 'net_enc_latest.pth')
    return opt


def run(command: List[str], workdir: str) -> None:
    result = subprocess.run([osp.join(osp.dirname(sys.executable), 'basicsr'), *command], cwd=workdir)
    if result.returncode:
        raise SystemExit(f'basicsr {" ".join(command)} failed with exit code {result.returncode}')


def train_and_test(args, root: str, seed: int, coic: bool) -> Dict:
    """Train and test one arm and seed; a result recorded with the same options and data settings is reused."""
    train_opt = options(args, root, seed, coic)
    test_opt = test_options(train_opt, root)
    folder = osp.join(args.out, 'results', test_opt['name'])
    settings = {'train': train_opt, 'test': test_opt, 'data': data_settings(args)}
    table = osp.join(folder, 'bench_test_metrics.json')
    if not (osp.isfile(table) and same_settings(folder, settings)):
        for kind, opt in (('train', train_opt), ('test', test_opt)):  # basicsr archives the stale folders
            path = osp.join(args.out, f"{opt['name']}.yml")
            with open(path, 'w') as f:
                yaml.safe_dump(opt, f, sort_keys=False)
            run([kind, '-opt', osp.basename(path)], args.out)
        write_settings(folder, settings)
    with open(table) as f:
        return json.load(f)


def data_settings(args) -> Dict[str, int]:
    return {'train_per_source': args.train_per_source, 'test_per_source': args.test_per_source, 'size': args.size}


def _mean_std(values: List[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.mean(values):.2f} ± {std:.2f}'


def report(results: Dict[str, List[Dict]], args) -> str:
    groups = [g for g in results['baseline'][0] if g != 'all'] + ['all']
    width = f', CoIC generator_width {args.generator_width}' if args.generator_width else ''
    lines = [f'Backbone `{args.backbone}`, {args.iters} iterations (stage 1: {args.stage1}), batch {args.batch}, '
             f'crop {args.crop}, seeds {list(range(args.seeds))}{width}; PSNR/SSIM on Y, mean ± std over seeds.', '',
             '| source | rainy input PSNR | baseline PSNR | CoIC PSNR | CoIC − baseline (dB) | baseline SSIM | '
             'CoIC SSIM |', '|---|---|---|---|---|---|---|']
    for group in groups:
        base = [r[group] for r in results['baseline']]
        coic = [r[group] for r in results['coic']]
        gain = [c['psnr'] - b['psnr'] for b, c in zip(base, coic)]
        lines.append(f"| {group} | {base[0]['psnr_input']:.2f} | {_mean_std([b['psnr'] for b in base])} | "
                     f"{_mean_std([c['psnr'] for c in coic])} | {_mean_std(gain)} | "
                     f"{_mean_std([b['ssim'] for b in base])} | {_mean_std([c['ssim'] for c in coic])} |")
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--backbone', choices=sorted(BACKBONES), default='restormer-small')
    parser.add_argument('--iters', type=positive_int, default=600)
    parser.add_argument('--stage1', type=positive_int, default=200, help='stage-1 iterations (fewer than --iters)')
    parser.add_argument('--seeds', type=positive_int, default=3)
    parser.add_argument('--batch', type=positive_int, default=8)
    parser.add_argument('--crop', type=positive_int, default=48)
    parser.add_argument('--contrastive-weight', type=float, default=0.2)
    parser.add_argument('--generator-width', type=positive_int, default=None,
                        help="network_g.generator_width of the CoIC arm; default: the CoIC authors' widths")
    parser.add_argument('--train-per-source', type=positive_int, default=96)
    parser.add_argument('--test-per-source', type=positive_int, default=16)
    parser.add_argument('--size', type=positive_int, default=96, help='side of the benchmark images')
    parser.add_argument('--out', default='bench_runs', help='working folder (data, experiments, results); items '
                        'recorded with other settings are rebuilt')
    args = parser.parse_args(argv)
    if args.stage1 >= args.iters:
        parser.error(f'--stage1 ({args.stage1}) must be below --iters ({args.iters}): stage 2 needs iterations')
    os.makedirs(args.out, exist_ok=True)
    args.out = osp.abspath(args.out)
    root = osp.join(args.out, 'data')
    make_benchmark(root, args.train_per_source, args.test_per_source, args.size)
    results = {arm: [train_and_test(args, root, seed, arm == 'coic') for seed in range(args.seeds)]
               for arm in ('baseline', 'coic')}
    table = report(results, args)
    with open(osp.join(args.out, 'coic_vs_baseline.md'), 'w') as f:
        f.write(table + '\n')
    print(table)


if __name__ == '__main__':
    main()
