"""Analyse a trained CoIC model: representation map, dataset relationships, rain/detail impact, kernel scales.

``basicsr analyze -opt <option file | experiments/name> [--datasets val ...] [--folders name=path ...] --output DIR``

Sources are the option file's rain datasets (each dataset source, images at full size as in testing) and/or folders
of rainy images. Every section's PNG + CSV/JSON is written as soon as it is computed; docs/analysis.md describes
them. Images that cannot be read are reported and skipped.
"""
import argparse
import csv
import json
import os
import sys
from copy import deepcopy
from functools import partial
from os import path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from basicsr.data import build_dataset

from coic_basicsr.tools import analysis_plots as plots
from coic_basicsr.tools.analysis_stats import Analysis, Loader, cosine_distance, pca_2d, relationship_matrix
from coic_basicsr.tools.image_io import list_images, read_image
from coic_basicsr.tools.inference import add_model_arguments, model_from_args

EDITS = ('rain_removed', 'details_blurred', 'rain_swapped')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='basicsr analyze', description=__doc__.split('\n\n')[0])
    add_model_arguments(parser)
    parser.add_argument('--datasets', nargs='+', help='keys of the option file\'s datasets to use (default: every '
                        'rain dataset except train, else train; none when only --folders are given)')
    parser.add_argument('--folders', nargs='+', default=[], metavar='NAME=PATH', help='folders of rainy images')
    parser.add_argument('--max-per-source', type=int, default=32,
                        help='images per source, evenly spread (default: %(default)s)')
    parser.add_argument('--blur-sigma', type=float, default=1.5,
                        help='Gaussian sigma of the "details blurred" edit (default: %(default)s)')
    parser.add_argument('--output', help='output folder (default: results/<name>/analysis)')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def _spread(count: int, limit: int) -> List[int]:
    return sorted(set(np.linspace(0, count - 1, min(count, limit)).round().astype(int).tolist()))


def _dataset_item(dataset, index: int) -> Tuple[str, torch.Tensor, torch.Tensor]:
    item = dataset[index]
    return str(item.get('lq_path', index)), item['lq'][None], item['gt'][None]


def _folder_item(root: str, rel: str) -> Tuple[str, Optional[torch.Tensor], None]:
    return rel, read_image(osp.join(root, rel)), None


def collect_sources(opt: dict, keys: Optional[Sequence[str]], folders: Sequence[str],
                    limit: int) -> List[Tuple[str, List[Loader]]]:
    """``[(source name, [loader, ...]), ...]`` from the option file's datasets and ``name=path`` folders."""
    if limit < 1:
        raise ValueError(f'--max-per-source: expected an integer >= 1, got {limit}')
    datasets = opt.get('datasets') or {}
    sources: List[Tuple[str, List[Loader]]] = []
    if keys is None and not folders:
        candidates = [k for k, d in datasets.items() if isinstance(d, dict) and d.get('sources')]
        keys = [k for k in candidates if not k.startswith('train')] or candidates
        if not keys:
            raise ValueError("-opt: the options have no rain dataset with 'sources'; pass --folders NAME=PATH ...")
    for key in keys or []:
        if key not in datasets:
            raise ValueError(f"--datasets: '{key}' is not a dataset of the options ({', '.join(datasets)})")
        dataset_opt = dict(deepcopy(datasets[key]), phase='test')  # full images, as in testing
        dataset_opt.pop('skip_bad', None)  # a training set's; analyze reads each image once
        dataset = build_dataset(dataset_opt)
        if not getattr(dataset, 'source_names', None):
            raise ValueError(f"datasets.{key} ({dataset_opt.get('type')}): items carry no source; use a "
                             'MixedSyntheticRainDataset / MixedRainDataset, or --folders')
        for s, name in enumerate(dataset.source_names):
            indices = dataset.source_indices[s]
            label = name if len(keys) == 1 else f'{key}/{name}'
            sources.append((label, [partial(_dataset_item, dataset, indices[p]) for p in _spread(len(indices), limit)]))
    for spec in folders:
        name, sep, root = spec.partition('=')
        if not sep or not name or not root:
            raise ValueError(f"--folders: '{spec}' is not NAME=PATH")
        root = osp.expanduser(root)  # the shell leaves a ~ after '=' alone
        if not osp.exists(root):
            raise FileNotFoundError(f"--folders: '{root}' (source '{name}') does not exist")
        if not osp.isdir(root):
            raise ValueError(f"--folders: '{root}' (source '{name}') is not a folder")
        images, _ = list_images(root)
        if not images:
            raise ValueError(f"--folders: no images in '{root}' (source '{name}')")
        sources.append((name, [partial(_folder_item, root, images[p]) for p in _spread(len(images), limit)]))
    total = sum(len(loaders) for _, loaders in sources)
    if total < 2:
        raise ValueError(f'analyze: {total} image in all sources; at least 2 are needed')
    names = [name for name, _ in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f'--folders/--datasets: duplicate source names {duplicates}')
    return sources


def _write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    fmt = lambda v: f'{v:.9g}' if isinstance(v, float) else v  # noqa: E731
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([[fmt(v) for v in row] for row in rows])


def write_outputs(a: Analysis, out: str) -> Dict[str, object]:
    """Write every section (in order, each complete before the next starts); return the summary."""
    names, labels, src = a.source_names, np.asarray(a.labels), lambda i: a.source_names[a.labels[i]]
    z, z_clean = a.code_array('z'), a.code_array('z_clean')
    _write_csv(osp.join(out, 'representations.csv'), ['image', 'source'] + [f'z{k}' for k in range(z.shape[1])],
               [[n, src(i), *z[i].tolist()] for i, n in enumerate(a.names)])
    coords, mean, comps, ratio = pca_2d(z)
    clean_coords = (z_clean - mean) @ comps.T
    _write_csv(osp.join(out, 'embedding.csv'), ['image', 'source', 'pc1', 'pc2', 'clean_pc1', 'clean_pc2'],
               [[n, src(i), *coords[i].tolist(), *clean_coords[i].tolist()] for i, n in enumerate(a.names)])
    plots.plot_embedding(osp.join(out, 'embedding.png'), coords, labels, names, ratio, clean_coords)

    matrix, bandwidth = relationship_matrix(z, labels, len(names))
    _write_csv(osp.join(out, 'relationships.csv'), ['source'] + names,
               [[n, *matrix[s].tolist()] for s, n in enumerate(names)])
    relations = {'sources': names, 'matrix': matrix.tolist(), 'bandwidth': bandwidth,
                 'definition': 'K[s,t]/sqrt(K[s,s]K[t,t]), K[s,t] = mean over code pairs of exp(-|a-b|^2/bandwidth), '
                               'bandwidth = median nonzero pairwise squared distance'}
    with open(osp.join(out, 'relationships.json'), 'w') as f:
        json.dump(relations, f, indent=2)
    plots.plot_relationships(osp.join(out, 'relationships.png'), matrix, names)

    zt = torch.from_numpy(z)
    per_image = {'rain_removed': cosine_distance(zt, torch.from_numpy(z_clean)).numpy(),
                 'details_blurred': cosine_distance(zt, torch.from_numpy(a.code_array('z_blur'))).numpy()}
    move, attraction = a.swap_impact()
    impact = []
    for s, n in enumerate(names):
        row = {'source': n, 'count': int((labels == s).sum()), 'clean_reference': a.reference[n]}
        row.update({k: float(v[labels == s].mean()) for k, v in per_image.items()})
        others = [t for t in range(len(names)) if t != s]
        row['rain_swapped'] = float(np.mean(move[s, others])) if others else None  # one source: nothing to swap
        row['donor_attraction'] = float(np.mean(attraction[s, others])) if others else None
        impact.append(row)
    _write_csv(osp.join(out, 'impact.csv'), list(impact[0]), [list(r.values()) for r in impact])
    _write_csv(osp.join(out, 'impact_swap.csv'), ['image_source', 'rain_source', 'move', 'donor_attraction'],
               [[names[s], names[t], move[s, t], attraction[s, t]] for s in range(len(names))
                for t in range(len(names)) if s != t])
    moves = {e: [np.nan if r[e] is None else r[e] for r in impact] for e in EDITS}
    plots.plot_impact(osp.join(out, 'impact.png'), names, moves, move)

    kernel_rows = a.recorder.table(names)
    if kernel_rows:
        _write_csv(osp.join(out, 'kernel_scales.csv'), ['layer', 'index', 'source', 'count', *a.recorder.METRICS],
                   [[r['layer'], r['index'], r['group'], r['count'], *(r[k] for k in a.recorder.METRICS)]
                    for r in kernel_rows])
        plots.plot_kernel_scales(osp.join(out, 'kernel_scales.png'), kernel_rows, names)
    return {'sources': [{'name': n, 'count': int((labels == s).sum()), 'clean_reference': a.reference[n]}
                        for s, n in enumerate(names)],
            'pca_explained_variance_ratio': ratio.tolist(), 'relationships': relations, 'impact': impact,
            'kernel_scales': 'kernel_scales.csv' if kernel_rows else 'network_g has no modulated layers',
            'skipped': a.skipped}


def analyze(argv: Optional[List[str]] = None) -> int:
    """Run ``basicsr analyze``; returns 0, or 1 when some images were skipped."""
    args = build_parser().parse_args(argv)
    if not args.blur_sigma > 0:
        raise ValueError(f'--blur-sigma: expected a positive Gaussian sigma, got {args.blur_sigma}')
    model = model_from_args(args)
    if model.key_encoder is None:
        raise ValueError('-opt: the options have no network_enc section: analyze needs a CoIC model')
    sources = collect_sources(model.opt, args.datasets, args.folders, args.max_per_source)
    out = osp.expanduser(args.output) if args.output else osp.join('results', str(model.opt.get('name')), 'analysis')
    os.makedirs(out, exist_ok=True)
    analysis = Analysis(model, sources, args.blur_sigma)
    analysis.run(args.quiet)
    summary = write_outputs(analysis, out)
    summary.update(checkpoint=model.checkpoint, param_key=model.param_key, global_size=model.global_size,
                   encoder_checkpoint=model.encoder_checkpoint, blur_sigma=args.blur_sigma)
    with open(osp.join(out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print(f'basicsr analyze: {len(analysis.names)} image(s) from {len(analysis.source_names)} source(s) -> {out}')
    for row in summary['impact']:
        print('  ' + ', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in row.items()))
    return 1 if analysis.skipped else 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``basicsr analyze`` and ``python -m coic_basicsr.tools.analyze``."""
    from coic_basicsr.cli import run_reporting_errors
    result = {'code': 0}
    code = run_reporting_errors('basicsr analyze', lambda a: result.update(code=analyze(a)), argv)
    return code or result['code']


if __name__ == '__main__':
    sys.exit(main())
