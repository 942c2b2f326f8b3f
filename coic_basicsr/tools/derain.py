"""Derain an image or a folder (recursively) with a trained model; outputs mirror the input names.

``basicsr derain -opt <option file | experiments/name> [--checkpoint net_g.pth] INPUT OUTPUT``

The representation z comes from the key encoder on the whole image (as in testing) and is shared by every tile of
a large image (``--tile``: overlapping windows, averaged where they overlap). A folder is scanned recursively; each
result is written (atomically) as soon as it is ready, to ``OUTPUT/<same relative path>``. Files without an image
extension are ignored and listed; unreadable images are reported and skipped (exit status 1 at the end). A result
keeps its input's form where the output format allows: grey-scale stays grey-scale, the alpha channel is copied
(PNG, TIFF, WebP), 16-bit depth stays 16-bit (PNG, TIFF), and 16-bit inputs are derained at their full precision.
An OUTPUT under a file or in a folder that cannot be written is refused before the model is loaded; an image whose
result cannot be written is reported and skipped like an unreadable one.
"""
import argparse
import os
import sys
import time
from os import path as osp
from typing import List, Optional, Tuple

import torch
from tqdm import tqdm

from coic_basicsr.data.image_files import IMG_EXTENSIONS
from coic_basicsr.tools.image_io import list_images, read_image_and_form, write_image
from coic_basicsr.tools.inference import add_model_arguments, model_from_args
from coic_basicsr.utils.errors import is_out_of_memory


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='basicsr derain', description=__doc__.split('\n\n')[0])
    add_model_arguments(parser)
    parser.add_argument('input', help='rainy image, or a folder of rainy images (scanned recursively)')
    parser.add_argument('output', help='output image (for an image input with an image extension) or folder')
    parser.add_argument('--ext', help='output format, e.g. png (default: the input\'s format)')
    parser.add_argument('--skip-existing', action='store_true', help='keep outputs that already exist (resume)')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def _output_name(rel: str, ext: Optional[str]) -> str:
    return rel if not ext else f"{osp.splitext(rel)[0]}.{ext.lstrip('.')}"


def plan(input_path: str, output: str, ext: Optional[str]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """``([(input file, output file), ...], ignored non-image files)``; raises for a missing/empty input."""
    if ext and not f".{ext.lstrip('.').lower()}".endswith(IMG_EXTENSIONS):
        raise ValueError(f"--ext: '{ext}' is not an image format ({', '.join(IMG_EXTENSIONS)})")
    if osp.isfile(output) and not (osp.isfile(input_path) and output.lower().endswith(IMG_EXTENSIONS)):
        raise ValueError(f"OUTPUT: '{output}' is an existing file, not a folder for the results")
    if osp.isfile(input_path):
        if not input_path.lower().endswith(IMG_EXTENSIONS):
            raise ValueError(f"INPUT: '{input_path}' is not an image file ({', '.join(IMG_EXTENSIONS)})")
        if output.lower().endswith(IMG_EXTENSIONS) and not osp.isdir(output):  # an existing folder holds the result
            if ext and osp.splitext(output)[1].lower() != f".{ext.lstrip('.').lower()}":
                raise ValueError(f"--ext: '{ext}' contradicts OUTPUT '{output}', an image file name that sets the "
                                 'format (drop --ext, or name the output folder)')
            return [(input_path, output)], []
        return [(input_path, osp.join(output, _output_name(osp.basename(input_path), ext)))], []
    if not osp.isdir(input_path):
        raise FileNotFoundError(f"INPUT: '{input_path}' does not exist")
    images, others = list_images(input_path, exclude=output)
    if not images:
        raise ValueError(f"INPUT: no images ({', '.join(IMG_EXTENSIONS)}) in folder '{input_path}'")
    jobs = [(osp.join(input_path, rel), osp.join(output, _output_name(rel, ext))) for rel in images]
    seen = {}
    for src, dst in jobs:
        if dst in seen:
            raise ValueError(f"--ext: '{src}' and '{seen[dst]}' would both be written to '{dst}'")
        seen[dst] = src
    return jobs, others


def _never_over_inputs(jobs: List[Tuple[str, str]]) -> None:
    inputs = {osp.realpath(src) for src, _ in jobs}
    for _, dst in jobs:
        if osp.realpath(dst) in inputs:
            raise ValueError(f"OUTPUT: '{dst}' is one of the input images; derain does not overwrite its inputs "
                             '(choose another output)')


def _images_in_output(input_path: str, output: str) -> int:
    """Images in an OUTPUT folder inside the INPUT folder, which the scan leaves out (they may be earlier results)."""
    source, target = osp.abspath(input_path), osp.abspath(output)
    inside = target != source and osp.commonpath([source, target]) == source
    return len(list_images(output)[0]) if inside and osp.isdir(input_path) and osp.isdir(output) else 0


def _check_writable(folder: str) -> None:
    """Refuse a results folder that cannot be made: under a file or a dangling link, or in a read-only folder."""
    path = osp.normpath(folder)
    while not osp.lexists(path) and osp.dirname(path) != path:
        path = osp.dirname(path) or '.'
    if osp.islink(path) and not osp.exists(path):
        raise ValueError(f"OUTPUT: '{path}' is a link to nothing, not a folder for the results")
    if not osp.isdir(path):
        raise ValueError(f"OUTPUT: '{path}' is a file, not a folder for the results")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"OUTPUT: cannot write in '{path}' (no permission, or a read-only file system)")


def _reason(err: Exception, path: str) -> str:
    """One line: an OSError's message, with the file it concerns where that is not ``path`` (or its temp file)."""
    if not isinstance(err, OSError) or not err.strerror:
        return (str(err).splitlines() or [''])[0] or type(err).__name__
    elsewhere = err.filename and osp.dirname(osp.abspath(err.filename)) != osp.dirname(osp.abspath(path))
    return f"{err.strerror}: '{err.filename}'" if elsewhere else err.strerror


def _restore_failure(err: Exception, tile: Optional[int]) -> str:
    """One line on why an image could not be restored; running out of GPU or CPU memory gets a ``--tile`` hint."""
    gpu = isinstance(err, torch.cuda.OutOfMemoryError)
    if not is_out_of_memory(err):
        return (str(err).splitlines() or [''])[0] or type(err).__name__
    memory = 'GPU memory' if gpu else 'memory'
    if tile:
        return f'out of {memory} with tiles of {tile}: use a smaller --tile'
    return f'out of {memory}, use --tile (e.g. --tile 512)'


def derain(argv: Optional[List[str]] = None) -> int:
    """Run ``basicsr derain``; returns 0, or 1 when some images could not be read or written (the others are)."""
    args = build_parser().parse_args(argv)
    args.input, args.output = osp.expanduser(args.input), osp.expanduser(args.output)
    jobs, ignored = plan(args.input, args.output, args.ext)
    _never_over_inputs(jobs)
    _check_writable(osp.dirname(args.output) if jobs == [(args.input, args.output)] else args.output)
    if ignored:
        shown = ', '.join(ignored[:5]) + (' ...' if len(ignored) > 5 else '')
        print(f'basicsr derain: ignoring {len(ignored)} non-image file(s): {shown}', file=sys.stderr, flush=True)
    left_out = _images_in_output(args.input, args.output)
    if left_out:
        print(f"basicsr derain: not deraining {left_out} image(s) inside OUTPUT '{args.output}'", file=sys.stderr,
              flush=True)
    if args.skip_existing:
        jobs = [(src, dst) for src, dst in jobs if not osp.isfile(dst)]
    model = model_from_args(args)
    failed: List[str] = []
    seconds, done = 0.0, 0
    for src, dst in tqdm(jobs, desc='derain', unit='img', disable=args.quiet or None):
        try:
            read = read_image_and_form(src)
        except OSError as err:  # a dangling link, no permission
            read, problem = None, f'cannot be read: {_reason(err, src)}'
        else:
            problem = 'empty, corrupt or not an image'
        if read is None:
            failed.append(src)
            tqdm.write(f"basicsr derain: skipping '{src}': {problem}", file=sys.stderr)
            continue
        lq, form = read
        start = time.perf_counter()
        try:
            out = model.restore(lq)
        except (ValueError, RuntimeError, AssertionError) as err:  # out of memory, a size the network cannot take
            failed.append(src)
            reason = _restore_failure(err, model.tile)
            tqdm.write(f"basicsr derain: skipping '{src}' ({lq.shape[-2]}x{lq.shape[-1]}): {reason}", file=sys.stderr)
            if isinstance(err, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            continue
        seconds += time.perf_counter() - start
        try:
            write_image(out, dst, form)
        except (OSError, ValueError) as err:  # OUTPUT/<name> an existing folder, a full disk, a size WebP cannot hold
            failed.append(src)
            tqdm.write(f"basicsr derain: skipping '{src}': cannot write '{dst}': {_reason(err, dst)}", file=sys.stderr)
            continue
        done += 1
    per_image = f' ({seconds / done:.3f} s/image on {model.device})' if done else ''
    print(f'basicsr derain: wrote {done} image(s) to {args.output}{per_image}', flush=True)
    if failed:
        print(f'basicsr derain: {len(failed)} image(s) failed: {", ".join(failed)}', file=sys.stderr, flush=True)
    return 1 if failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``basicsr derain`` and ``python -m coic_basicsr.tools.derain``."""
    from coic_basicsr.cli import run_reporting_errors
    result = {'code': 0}
    code = run_reporting_errors('basicsr derain', lambda a: result.update(code=derain(a)), argv)
    return code or result['code']


if __name__ == '__main__':
    sys.exit(main())
