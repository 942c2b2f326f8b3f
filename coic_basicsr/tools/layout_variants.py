"""Re-packaged layouts of the deraining datasets, besides the official ones (sources in ``datasets_meta/README.md``).

- **CoIC bundle** (the CoIC authors' "well-organized data sources"): ``<X>/{train,test}/{rain,norain}``; Rain800 is
  split into ``rain-%03d.png`` / ``norain-%03d.png``, DDN keeps ``%d_%d.jpg`` / ``%d.jpg``, DID-Data is merged into
  side-by-side ``<X>/train/1..12000.jpg`` (test ``1..1200.jpg``), Rain200L/H keep their official names (read by the
  official reader). Keys: Rain800 the clean stem ``norain-001``, DID the file stem, DDN the official keys.
- **input/target** (DRSformer's copies): ``[Datasets/]{train,test}/<X>/{input,target}/<n>.png``,
  renumbered from 1. Key = file stem; the shipped pair lists (official keys) do not apply.
"""
from functools import partial
from pathlib import Path
from typing import Tuple

from coic_basicsr.tools.layout_files import Layout, Listing, NameRule, paired_folders, side_by_side

SPLITS = ('train', 'test')
SAME_NAME = NameRule(r'^(.+)(\.[^.]+)$', '{0}', '{0}{1}')
RAIN800_BUNDLE = NameRule(r'^rain-(\d+)(\.[^.]+)$', 'norain-{0}', 'norain-{0}{1}')


def coic_bundle(rule: NameRule, official_names: bool = True) -> Layout:
    """``{train,test}/rain/`` rainy and ``{train,test}/norain/`` clean images, paired by ``rule``."""
    lister = partial(paired_folders, lq_dirs=('rain', ), gt_dir='norain', rule=rule, official_names=official_names)
    return Layout('CoIC bundle', {split: (split, ) for split in SPLITS},
                  {split: ('rain/', 'norain/') for split in SPLITS}, lister)


def _list_did_bundle(split_dir: Path, split: str) -> Listing:
    # CoIC's mix_dataset.py: "rainy and gt are connected together (left: rain, right gt)"; train merged, renumbered
    return Listing(side_by_side(split_dir, lq_half='left', gt_half='right'), official_names=split == 'test')


DID_BUNDLE = Layout('CoIC bundle', {split: (split, ) for split in SPLITS}, {split: ('1.jpg', ) for split in SPLITS},
                    _list_did_bundle)
RAIN800_BUNDLE_LAYOUT = coic_bundle(RAIN800_BUNDLE, official_names=False)
INPUT_TARGET = Layout('input/target', {split: (f'{split}/*', f'Datasets/{split}/*') for split in SPLITS},
                      {split: ('input/', 'target/') for split in SPLITS},
                      partial(paired_folders, lq_dirs=('input', ), gt_dir='target', rule=SAME_NAME,
                              official_names=False))


def variants(*extra: Layout) -> Tuple[Layout, ...]:
    """The re-packaged layouts tried after a dataset's official one: its own ``extra`` ones, then input/target."""
    return extra + (INPUT_TARGET, )
