"""Building blocks of the dataset layout readers: the pair and listing records, folder scans that skip hidden entries
and stop at dangling links, case-insensitive folder lookup, and the rainy-to-clean file name rules."""
import os
import re
from pathlib import Path
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

IMG_EXTS = ('.png', '.jpg', '.jpeg', '.bmp')


class Pair(NamedTuple):
    """One rainy/clean pair; ``*_half`` is 'left'/'right' for side-by-side files, None for whole images."""
    key: str
    lq_path: str
    gt_path: str
    lq_half: Optional[str] = None
    gt_half: Optional[str] = None


class Listing(NamedTuple):
    """What a reader found in one split folder.

    ``missing`` names the files of pairs that had to be left out (``missing_what`` says which pairs, for messages);
    ``hint`` is added to a count-mismatch message; ``official_names`` is False where the files were renamed, so the
    shipped pair lists (official keys) do not apply.
    """
    pairs: List[Pair]
    missing: Tuple[str, ...] = ()
    missing_what: str = ''
    hint: str = ''
    official_names: bool = True

    def describe_missing(self, shown: int = 3) -> str:
        """One line: how many pairs were left out, and the first few missing files."""
        more = f' and {len(self.missing) - shown} more' if len(self.missing) > shown else ''
        first = ', '.join(f"'{path}'" for path in self.missing[:shown])
        return f'left out {len(self.missing)} {self.missing_what} with a missing file: {first}{more}'


class Layout(NamedTuple):
    """One arrangement of a dataset's files: the split folders tried per split (relative to ``--root`` or to a
    dataset folder under it; ``*`` stands for each name of the dataset's folder), what such a folder must hold
    (``x/`` a folder, ``x`` a file) and the reader of that folder."""
    label: str
    split_dirs: Dict[str, Tuple[str, ...]]
    required: Dict[str, Tuple[str, ...]]
    lister: Callable[[Path, str], Listing]


class NameRule(NamedTuple):
    """How a rainy file name gives the pair key and the clean file name: ``pattern`` matches the rainy name, and its
    groups fill the ``key`` and ``gt`` templates (``{0}``, ``{1}``, ...). Non-matching files are not pairs."""
    pattern: str
    key: str
    gt: str

    def apply(self, name: str) -> Optional[Tuple[str, str]]:
        match = re.match(self.pattern, name)
        return (self.key.format(*match.groups()), self.gt.format(*match.groups())) if match else None


def natural_key(name: str) -> list:
    """Sort key putting ``rain-2`` before ``rain-10`` (``isdecimal``: ``'²'.isdigit()`` is True, int() refuses it)."""
    return [int(tok) if tok.isdecimal() else tok for tok in re.split(r'(\d+)', name)]


def _entries(folder: Path) -> Iterator[os.DirEntry]:
    """Entries of ``folder`` except hidden ones (macOS ``._x.jpg``, ``.DS_Store``); a dangling link stops the scan
    with its path (``is_file()``/``is_dir()`` are False for it, so it would vanish unnoticed)."""
    with os.scandir(folder) as entries:  # DirEntry.is_file() needs no stat call per file (SPA has 638k)
        for entry in entries:
            if entry.name.startswith('.'):
                continue
            if entry.is_symlink() and not os.path.exists(entry.path):
                raise FileNotFoundError(f"'{entry.path}' is a symlink to '{os.readlink(entry.path)}', which does not "
                                        'exist')
            yield entry


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMG_EXTS


def images(folder: Path) -> List[Path]:
    """Image files of ``folder`` in natural order, hidden ones left out."""
    files = [Path(e.path) for e in _entries(folder) if _is_image_name(e.name) and e.is_file()]
    return sorted(files, key=lambda p: natural_key(p.name))


def subdirs(folder: Path) -> List[Path]:
    """Sub-folders of ``folder`` in natural order, hidden ones left out."""
    return sorted((Path(e.path) for e in _entries(folder) if e.is_dir()), key=lambda p: natural_key(p.name))


def image_entries(folder: Path) -> Dict[str, bool]:
    """Names with an image extension in ``folder`` -> whether the entry is a folder (SPA stores some rainy patches
    as a folder of that name holding the image)."""
    return {e.name: e.is_dir() for e in _entries(folder) if _is_image_name(e.name)}


def sole_image(folder: Path) -> Optional[Path]:
    """The one image file inside ``folder``, or None if it holds none or several."""
    found = images(folder)
    return found[0] if len(found) == 1 else None


def find_dir(base: Path, rel: str) -> Optional[Path]:
    """``base/rel`` if that is a folder; each part of ``rel`` that does not exist as written may match one folder
    whose name differs only in case (``training/`` for ``Training/``). None if not found."""
    path = base
    for part in Path(rel).parts:
        exact = path / part
        if not exact.is_dir():
            try:
                found = [exact.with_name(e.name) for e in os.scandir(path) if e.name.lower() == part.lower()]
            except OSError:
                return None
            found = [p for p in found if p.is_dir()]
            if len(found) != 1:
                return None
            exact = found[0]
        path = exact
    return path if path.is_dir() else None


def gt_file(gt: Path, lq: Path) -> str:
    if not gt.is_file():
        raise FileNotFoundError(f"ground truth '{gt}' for rainy image '{lq}' does not exist")
    return str(gt)


def paired_folders(split_dir: Path, split: str, lq_dirs: Tuple[str, ...], gt_dir: str, rule: NameRule,
                   official_names: bool = True) -> Listing:
    """Rainy images in the first of ``lq_dirs`` that exists, each with its clean image in ``gt_dir`` (``rule``)."""
    lq_dir = next((split_dir / d for d in lq_dirs if (split_dir / d).is_dir()), split_dir / lq_dirs[-1])
    pairs = []
    for path in images(lq_dir):
        named = rule.apply(path.name)
        if named:
            pairs.append(Pair(named[0], str(path), gt_file(split_dir / gt_dir / named[1], path)))
    return Listing(pairs, official_names=official_names)


def side_by_side(folder: Path, lq_half: str, gt_half: str, prefix: str = '') -> List[Pair]:
    return [Pair(prefix + p.stem, str(p), str(p), lq_half, gt_half) for p in images(folder)]
