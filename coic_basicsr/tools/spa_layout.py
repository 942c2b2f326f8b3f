"""Reader of the SPA-Data training set (SPANet): ``real_world/<v>/<v>-<f>/<v>-<f>_<x>_<y>.png`` rainy patches with
clean patches ``real_world_gt/<v>/<v>_<x>_<y>.png``, listed in ``real_world.txt``.

SPANet's authors load the training set through that list (their ``dataset.py``; "just use the txt file", SPANet
issue #15), so it is the authority when it is there: one ``rainy clean`` line per pair, paths relative to the folder
holding the list, written with a leading ``/`` (SPANet issue #24) or ``./`` (issue #12). Without it the folders are
scanned. Either way a rainy patch stored as a folder of that name holding one image (issue #24: the folder
``274-14_0_3.png`` holds ``rain_s208_resize-14_0_3.png``) is read from inside the folder, and a pair whose file is
missing is left out and reported (see ``datasets_meta/spa.md``).
"""
import re
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from coic_basicsr.tools.layout_files import Listing, Pair, image_entries, natural_key, sole_image, subdirs

LIST_FILE = 'real_world.txt'
_PATCH_RE = re.compile(r'^(.+)-[^-_]+_(\d+)_(\d+)$')  # <v>-<f>_<x>_<y>: frame f of video v, position (x, y)


def _read_list(list_file: Path) -> Iterator[Tuple[str, str]]:
    """(rainy, clean) paths relative to the list's folder; an exactly repeated line is read once."""
    seen = set()
    with open(list_file) as fin:
        for number, line in enumerate(fin, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f"'{list_file}' line {number}: expected 'rainy_path clean_path', got {line.strip()!r}")
            entry = tuple(re.sub(r'^(\./|/)+', '', field) for field in fields)
            if entry not in seen:
                seen.add(entry)
                yield entry


def _scan(split_dir: Path, entries: Callable[[Path], Dict[str, bool]]) -> Iterator[Tuple[str, str]]:
    """(rainy, clean) paths relative to ``split_dir`` for every rainy patch under ``real_world/``."""
    for scene in subdirs(split_dir / 'real_world'):
        for frame_dir in subdirs(scene):
            for name in sorted(entries(frame_dir), key=natural_key):
                match = _PATCH_RE.match(Path(name).stem)
                if match:
                    video, x, y = match.groups()
                    yield (f'real_world/{scene.name}/{frame_dir.name}/{name}',
                           f'real_world_gt/{scene.name}/{video}_{x}_{y}{Path(name).suffix}')


def list_spa_train(split_dir: Path, split: str) -> Listing:
    """Pairs of the SPA-Data training set; key = stem of the rainy patch as listed (``<v>-<f>_<x>_<y>``)."""

    @lru_cache(maxsize=None)  # one listing per folder instead of two stat calls per pair (638k pairs), in any order
    def entries(folder: Path) -> Dict[str, bool]:
        return image_entries(folder) if folder.is_dir() else {}

    def resolve(rel: str) -> Optional[Path]:
        path = split_dir / rel
        is_dir = entries(path.parent).get(path.name)
        if is_dir is None:
            return None
        return sole_image(path) if is_dir else path

    list_file = split_dir / LIST_FILE
    listed = list_file.is_file()
    pairs: List[Pair] = []
    missing: List[str] = []
    for lq_rel, gt_rel in (_read_list(list_file) if listed else _scan(split_dir, entries)):
        lq, gt = resolve(lq_rel), resolve(gt_rel)
        if lq is None or gt is None:
            missing.append(str(split_dir / (gt_rel if lq else lq_rel)))
        else:
            pairs.append(Pair(Path(lq_rel).stem, str(lq), str(gt)))
    if listed:
        return Listing(pairs, tuple(missing), f"pairs listed in '{list_file}'")
    return Listing(pairs, tuple(missing), 'rainy patches',
                   hint=f"no '{list_file}' was found, so the folders were scanned: put SPANet's list there, through "
                        'which its authors load the training set')
