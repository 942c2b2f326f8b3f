"""Listing the image files of a folder tree, shared by the datasets and the tools."""
import os
from os import path as osp
from typing import Dict, FrozenSet, List, Optional, Tuple

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def list_images(folder: str, exclude: Optional[str] = None) -> Tuple[List[str], List[str]]:
    """Relative paths (sorted, recursive) of ``(image files, other files)`` in ``folder``.

    Hidden entries (``.DS_Store``, ``.ipynb_checkpoints/``) are skipped; symlinked folders are followed wherever they
    appear (two links to one folder list its files under both names), except a link to a folder's own ancestor, which
    would loop; anything under ``exclude`` is left out.
    """
    images, others = [], []
    exclude = osp.abspath(exclude) if exclude else None
    ancestors: Dict[str, FrozenSet[str]] = {folder: frozenset({osp.realpath(folder)})}  # walked path -> real chain
    for root, dirs, files in os.walk(folder, followlinks=True):
        chain = ancestors.pop(root)
        kept = []
        for d in sorted(dirs):
            path = osp.join(root, d)
            real = osp.realpath(path)
            if not d.startswith('.') and osp.abspath(path) != exclude and real not in chain:
                ancestors[path] = chain | {real}
                kept.append(d)
        dirs[:] = kept
        for name in sorted(files):
            if not name.startswith('.'):
                rel = osp.relpath(osp.join(root, name), folder)
                (images if name.lower().endswith(IMG_EXTENSIONS) else others).append(rel)
    return sorted(images), sorted(others)
