"""The count check of ``basicsr prepare-data``: pairs found against ``datasets_meta/datasets.yml`` and, where
shipped, against the exact pair lists."""
from pathlib import Path

import yaml

from coic_basicsr.tools.layout_files import Listing

# a source checkout keeps the cards at the top level; an installed wheel ships them inside the package
DEFAULT_META_DIR = next((d for d in (Path(__file__).resolve().parents[2] / 'datasets_meta',
                                     Path(__file__).resolve().parents[1] / 'datasets_meta') if d.is_dir()),
                        Path(__file__).resolve().parents[2] / 'datasets_meta')


def check_counts(name: str, split: str, listing: Listing, meta_dir: Path, root: Path) -> None:
    """Compare the pairs found with ``datasets.yml`` (count) and, where shipped and the files keep their official
    names, the pair list (keys)."""
    yml = meta_dir / 'datasets.yml'
    if not yml.is_file():
        raise FileNotFoundError(f"count check needs '{yml}' (pass --meta-dir, or --no-count-check)")
    with open(yml) as fin:
        entry = yaml.safe_load(fin)['datasets'][name]['splits'][split]
    expected = entry['pairs'] if isinstance(entry['pairs'], list) else [entry['pairs']]
    if len(listing.pairs) not in expected:
        notes = ([listing.describe_missing()] if listing.missing else []) + ([listing.hint] if listing.hint else [])
        why = ''.join(f'; {note}' for note in notes)
        advice = ('extract the missing files, or use --no-count-check to convert the pairs found' if listing.missing
                  else 'use --no-count-check for partial or miniature copies')
        raise ValueError(f"{name}/{split}: found {len(listing.pairs)} pairs under '{root}' but {yml} expects "
                         f"{' or '.join(map(str, expected))}{why} ({advice})")
    if entry.get('pair_list') and listing.official_names:
        with open(meta_dir / entry['pair_list']) as fin:
            listed = {tuple(line.split()) for line in fin if line.strip()}
        found = {(p.key, p.key) for p in listing.pairs}
        if listed != found:
            raise ValueError(f"{name}/{split}: pairs under '{root}' differ from {meta_dir / entry['pair_list']} "
                             f'(missing {sorted(listed - found)[:3]}, unexpected {sorted(found - listed)[:3]})')
