"""Validation that reports metrics per val set AND per source (Rain200L, Rain200H, ... inside one mixed set)."""
import csv
import inspect
import json
import os
import time
from collections import defaultdict
from os import path as osp
from typing import Dict, Optional

import numpy as np
import torch
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.registry import METRIC_REGISTRY
from tqdm import tqdm


def _source_name(dataset, data: dict) -> str:
    names = getattr(dataset, 'source_names', None)
    if names is None or 'source' not in data:
        return dataset.opt['name']
    return names[int(data['source'][0])]


def _image_name(data: dict, index: int) -> str:
    if 'image_name' in data:  # MixedRainDataset: unique within a source, sub-folders kept
        return str(data['image_name'][0])
    path = data.get('lq_path', [f'{index:06d}'])[0]
    return osp.splitext(osp.basename(str(path)))[0]


@torch.no_grad()
def validate_per_source(model, dataloader, current_iter, save_img: bool) -> Dict:
    """Run ``model.test()`` on every item; return mean metrics overall (``'all'``) and per source (log them with
    :func:`log_results`).

    Besides each metric of ``val.metrics`` it records ``<metric>_input`` (the rainy input scored against the clean
    image, when ``val.report_input`` is true, the default for ``scale`` 1) so gains over the input are visible per
    source.
    """
    dataset = dataloader.dataset
    dataset_name = dataset.opt['name']
    val_opt = model.opt.get('val') or {}
    metrics = val_opt.get('metrics') or {}
    report_input = val_opt.get('report_input', model.opt.get('scale', 1) == 1)  # an SR input is smaller than gt
    full_reference = {name for name, metric_opt in metrics.items()  # need the clean image; NIQE does not
                      if 'img2' in inspect.signature(METRIC_REGISTRY.get(metric_opt['type'])).parameters}
    sums: Dict[str, Dict[str, float]] = defaultdict(lambda: defaultdict(float))
    seconds = 0.0
    pbar = tqdm(total=len(dataloader), unit='image') if val_opt.get('pbar') else None
    for index, data in enumerate(dataloader):
        source, image_name = _source_name(dataset, data), _image_name(data, index)
        model.feed_data(data)
        start = time.perf_counter()
        try:
            model.test()
        except (ValueError, RuntimeError, AssertionError) as err:  # e.g. a size the network cannot take: say which
            size = 'x'.join(str(s) for s in data['lq'].shape[-2:])
            reason = str(err) if isinstance(err, ValueError) else \
                f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]} (if the network cannot take this size, " \
                'val.tile: {size: N, overlap: M} runs it in tiles of a size it takes)'
            raise ValueError(f"{dataset_name}: image '{source}/{image_name}' ({size}): {reason}") from err
        seconds += time.perf_counter() - start
        visuals = model.get_current_visuals()
        restored = tensor2img([visuals['result']])
        scores = {'count': 1.0}
        clean = tensor2img([visuals['gt']]) if 'gt' in visuals else None
        rainy = tensor2img([visuals['lq']]) if report_input else None
        for name, metric_opt in metrics.items():
            if clean is None and name in full_reference:
                continue
            scores[name] = _score(name, metric_opt, restored, clean, f'{dataset_name}: {image_name}')
            if report_input:
                scores[f'{name}_input'] = _score(name, metric_opt, rainy, clean, f'{dataset_name}: {image_name}')
        for group in ('all',) if source == 'all' else ('all', source):  # a stock set may be named 'all'
            for key, value in scores.items():
                sums[group][key] += value
        if save_img:
            tag = current_iter if model.opt['is_train'] else (val_opt.get('suffix') or model.opt['name'])
            # <set>[/<source>] first: val sets of one benchmark family share file names (norain-1.png, ...)
            parts = [dataset_name] + ([source] if source != dataset_name else [])
            folder, stem = osp.split(image_name)  # a name may keep the sub-folders of its source
            parts.append(image_name if model.opt['is_train'] else folder)  # training: BasicSR's folder per image
            imwrite(restored, osp.join(model.opt['path']['visualization'], *parts, f'{stem}_{tag}.png'))
        if pbar is not None:
            pbar.update(1)
            pbar.set_description(f'Test {image_name}')
    if pbar is not None:
        pbar.close()
    results = {group: {k: (int(v) if k == 'count' else v / values['count']) for k, v in values.items()}
               for group, values in sums.items()}
    if 'all' in results:
        results['all']['seconds_per_image'] = seconds / results['all']['count']
    return results


def _score(name: str, metric_opt: dict, img: np.ndarray, clean: Optional[np.ndarray], where: str) -> float:
    """One metric value; a metric that fails names its key and the image (BasicSR's NIQE needs >= 192 px, ...)."""
    data = {'img': img} if clean is None else {'img': img, 'img2': clean}
    crop = metric_opt.get('crop_border', 0)
    if isinstance(crop, int) and 2 * crop >= min(img.shape[:2]):  # BasicSR then scores an empty array: NaN
        raise ValueError(f"val.metrics.{name}.crop_border ({crop}) leaves nothing of '{where}' "
                         f'({img.shape[0]}x{img.shape[1]}) to score')
    try:
        return float(calculate_metric(data, metric_opt))
    except Exception as err:
        raise ValueError(f"val.metrics.{name} ({metric_opt['type']}) failed on '{where}' "
                         f'({img.shape[0]}x{img.shape[1]}): {type(err).__name__}: {err}') from err


def log_results(dataset_name: str, results: Dict, metrics: dict, current_iter, tb_logger,
                best: Optional[Dict] = None) -> None:
    """Log one validation's table (and tensorboard scalars); ``best``: BasicSR's ``best_metric_results`` of the
    set, logged after the overall row as BasicSR's models do."""
    lines = [f'Validation {dataset_name}']
    for group, values in results.items():
        scores = '  '.join(f'{k}: {v:.4f}' for k, v in values.items() if k not in ('count', 'seconds_per_image'))
        lines.append(f'\t # [{group}] ({int(values["count"])} images) {scores}')
        if group == 'all' and best and isinstance(current_iter, int):  # a test is one pass, named, not an iteration
            lines.append('\t # Best: ' + '  '.join(f"{metric}: {best[metric]['val']:.4f} @ {best[metric]['iter']} iter"
                                                   for metric in metrics if metric in values and metric in best))
    get_root_logger().info('\n'.join(lines))
    if tb_logger and isinstance(current_iter, int):
        for group, values in results.items():
            for metric in metrics:
                if metric in values:
                    tag = f'metrics/{dataset_name}/{metric}' if group == 'all' else \
                        f'metrics/{dataset_name}/{group}/{metric}'
                    tb_logger.add_scalar(tag, values[metric], current_iter)


def write_result_tables(results: Dict, folder: str, dataset_name: str) -> None:
    """Save one validation's per-source table as Markdown, CSV and JSON (``<folder>/<dataset>_metrics.*``)."""
    columns = sorted({k for values in results.values() for k in values})
    rows = [[group] + [values.get(c, '') for c in columns] for group, values in results.items()]
    base = osp.join(folder, f'{dataset_name}_metrics')
    os.makedirs(osp.dirname(base), exist_ok=True)  # a set name may hold folders, as BasicSR's image paths do
    with open(base + '.json', 'w') as f:
        json.dump(results, f, indent=2)
    with open(base + '.csv', 'w', newline='') as f:
        csv.writer(f).writerows([['source'] + columns] + rows)
    fmt = lambda v: f'{v:.4f}' if isinstance(v, float) else str(v)  # noqa: E731
    with open(base + '.md', 'w') as f:
        f.write('| source | ' + ' | '.join(columns) + ' |\n|' + '---|' * (len(columns) + 1) + '\n')
        f.writelines('| ' + ' | '.join(fmt(v) for v in row) + ' |\n' for row in rows)
