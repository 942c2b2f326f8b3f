"""Listing the image files of a folder tree, shared by the datasets and the tools."""
import os
from os import path as osp
from typing import List, Optional, Tuple

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def list_images(folder: str, exclude: Optional[str] = None) -> Tuple[List[str], List[str]]:
    """Relative paths (sorted, recursive) of ``(image files, other files)`` in ``folder``.

    Hidden entries (``.DS_Store``, ``.ipynb_checkpoints/``) are skipped; symlinked folders are followed, each real
    folder once (a link back to a parent would loop); anything under ``exclude`` is left out.
    """
    images, others = [], []
    exclude = osp.abspath(exclude) if exclude else None
    visited = {osp.realpath(folder)}
    for root, dirs, files in os.walk(folder, followlinks=True):
        kept = []
        for d in sorted(dirs):
            real = osp.realpath(osp.join(root, d))
            if not d.startswith('.') and osp.abspath(osp.join(root, d)) != exclude and real not in visited:
                visited.add(real)
                kept.append(d)
        dirs[:] = kept
        for name in sorted(files):
            if not name.startswith('.'):
                rel = osp.relpath(osp.join(root, name), folder)
                (images if name.lower().endswith(IMG_EXTENSIONS) else others).append(rel)
    return sorted(images), sorted(others)
