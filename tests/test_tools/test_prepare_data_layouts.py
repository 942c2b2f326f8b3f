"""Tests of ``basicsr prepare-data`` on the re-packaged layouts (CoIC bundle, DRSformer input/target,
PReNet's DDN copy), on folder-name variants, and on SPA-Data read through SPANet's ``real_world.txt``."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from coic_basicsr.tools.count_check import check_counts
from coic_basicsr.tools.layout_files import Listing, Pair
from coic_basicsr.tools.prepare_data import DEFAULT_META_DIR, main

from helpers.layout_variants import make_coic_bundle, make_input_target, make_prenet_ddn, make_spa_listed
from helpers.lmdb_pairs import assert_same, read_back
from helpers.official_layouts import make_rain200, make_spa


def _run(root: Path, out: Path, dataset: str, *extra: str) -> int:
    return main(['--dataset', dataset, '--root', str(root), '--out', str(out), '--workers', '1', *extra])


def _shipped(name: str, split: str) -> set:
    with open(DEFAULT_META_DIR / 'datasets.yml') as fin:
        pair_list = yaml.safe_load(fin)['datasets'][name]['splits'][split]['pair_list']
    return set((DEFAULT_META_DIR / pair_list).read_text().splitlines())


def test_spa_list_file_is_the_authority_and_a_patch_stored_as_a_folder_is_read(tmp_path):
    exp = make_spa_listed(tmp_path / 'SPA', np.random.default_rng(10))
    assert _run(tmp_path / 'SPA', tmp_path / 'o', 'spa', '--split', 'train', '--no-count-check') == 0
    assert_same(read_back(tmp_path / 'o', 'spa', 'train'), exp['train'])  # 274-14_*: read from inside the folder


def test_spa_listed_pairs_whose_files_are_missing_are_left_out_and_reported(tmp_path, capsys):
    split_dir = tmp_path / 'SPA'
    exp = make_spa_listed(split_dir, np.random.default_rng(11))['train']
    gone = [split_dir / 'real_world_gt' / '274' / '274_1_1.png', split_dir / 'real_world' / '001' / '001-2' /
            '001-2_0_3.png']
    for path in gone:
        path.unlink()
    meta = tmp_path / 'meta'
    meta.mkdir()
    (meta / 'datasets.yml').write_text(yaml.safe_dump({'datasets': {'spa': {'splits': {'train': {'pairs': [4, 5]}}}}}))
    args = ['--split', 'train', '--meta-dir', str(meta)]
    assert _run(tmp_path / 'SPA', tmp_path / 'o', 'spa', *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith('basicsr prepare-data: warning: spa/train: left out 2 pairs listed in')
    for line in err:
        assert all(f"'{path}'" in line for path in gone) and str(split_dir / 'real_world.txt') in line
    assert 'found 2 pairs' in err[1] and 'expects 4 or 5' in err[1] and 'extract the missing files' in err[1]
    assert _run(tmp_path / 'SPA', tmp_path / 'o', 'spa', *args, '--no-count-check') == 0
    assert_same(read_back(tmp_path / 'o', 'spa', 'train'), {k: exp[k] for k in ('001-1_0_3', '274-14_0_3')})


def test_spa_scanned_without_its_list_reports_a_missing_clean_patch_instead_of_stopping(tmp_path, capsys):
    exp = make_spa(tmp_path / 'SPA', np.random.default_rng(12))['train']
    gt = tmp_path / 'SPA' / 'real_world_gt' / '001' / '001_1_2.png'
    gt.unlink()
    assert _run(tmp_path / 'SPA', tmp_path / 'o', 'spa', '--split', 'train') == 2
    err = capsys.readouterr().err
    assert f"left out 1 rainy patches with a missing file: '{gt}'" in err and 'real_world.txt' in err
    assert _run(tmp_path / 'SPA', tmp_path / 'o', 'spa', '--split', 'train', '--no-count-check') == 0
    assert_same(read_back(tmp_path / 'o', 'spa', 'train'), {k: v for k, v in exp.items() if not k.startswith('001')})


def test_spa_count_accepts_both_published_totals(tmp_path):
    pair = Pair('000-1_0_0', 'a.png', 'b.png')
    for total in (638492, 638493):
        check_counts('spa', 'train', Listing([pair] * total), DEFAULT_META_DIR, tmp_path)
    with pytest.raises(ValueError, match='expects 638492 or 638493'):
        check_counts('spa', 'train', Listing([pair] * 638491), DEFAULT_META_DIR, tmp_path)


def test_coic_bundle_converts_every_dataset_it_holds(tmp_path):
    exp = make_coic_bundle(tmp_path / 'datasets', np.random.default_rng(13))
    assert _run(tmp_path / 'datasets', tmp_path / 'o', ','.join(exp), '--no-count-check') == 0
    for name, splits in exp.items():
        for split, pairs in splits.items():
            assert_same(read_back(tmp_path / 'o', name, split), pairs)
    for split in ('train', 'test'):  # DDN keeps its official names: the shipped pair lists apply
        lines = (tmp_path / 'o' / f'ddn_{split}_pairs.txt').read_text().splitlines()
        assert set(lines) <= _shipped('ddn', split)


def test_input_target_layout_converts_and_skips_the_official_pair_list(tmp_path, capsys):
    exp = make_input_target(tmp_path / 'drs', np.random.default_rng(14), 'Rain200H')
    meta = tmp_path / 'meta'
    meta.mkdir()
    (meta / 'l.txt').write_text('norain-1 norain-1\nnorain-2 norain-2\nnorain-3 norain-3\n')
    (meta / 'datasets.yml').write_text(yaml.safe_dump({'datasets': {'rain200h': {'splits': {
        'train': {'pairs': 3, 'pair_list': 'l.txt'}, 'test': {'pairs': 2}}}}}))
    for root in (tmp_path / 'drs', tmp_path / 'drs' / 'Datasets'):
        assert _run(root, tmp_path / 'o', 'rain200h', '--meta-dir', str(meta), '--overwrite') == 0, capsys.readouterr()
        for split in ('train', 'test'):
            assert_same(read_back(tmp_path / 'o', 'rain200h', split), exp[split])
    (meta / 'datasets.yml').write_text(yaml.safe_dump({'datasets': {'rain200h': {'splits': {'train': {'pairs': 4}}}}}))
    assert _run(tmp_path / 'drs', tmp_path / 'o', 'rain200h', '--split', 'train', '--meta-dir', str(meta)) == 2
    assert 'found 3 pairs' in capsys.readouterr().err  # the count check still applies


def test_prenet_ddn_copy_holding_the_image_folders_directly(tmp_path):
    exp = make_prenet_ddn(tmp_path / 'datasets', np.random.default_rng(15))
    assert _run(tmp_path / 'datasets', tmp_path / 'o', 'ddn', '--no-count-check') == 0
    for split in ('train', 'test'):
        assert_same(read_back(tmp_path / 'o', 'ddn', split), exp[split])
        assert set((tmp_path / 'o' / f'ddn_{split}_pairs.txt').read_text().splitlines()) <= _shipped('ddn', split)
    (tmp_path / 'nested' / 'train').mkdir(parents=True)  # PReNet's datasets/{train,test}/ as the root
    shutil.move(str(tmp_path / 'datasets' / 'Rain12600'), str(tmp_path / 'nested' / 'train'))
    assert _run(tmp_path / 'nested', tmp_path / 'o2', 'ddn', '--split', 'train', '--no-count-check') == 0
    assert_same(read_back(tmp_path / 'o2', 'ddn', 'train'), exp['train'])


def test_folder_names_as_spanet_and_third_party_copies_spell_them(tmp_path):
    rng = np.random.default_rng(16)
    for parent in ('Real_Rain_Streaks_Dataset_CVPR19', 'real_world_rain_dataset_CVPR19'):
        root = tmp_path / parent
        exp = make_spa_listed(root / parent / 'training', rng)  # SPANet's main.py reads training/, testing/
        exp['test'] = make_spa(tmp_path / 'spa_test', rng)['test']
        shutil.move(str(tmp_path / 'spa_test' / 'real_test_1000'), str(root / parent / 'testing' / 'real_test_1000'))
        shutil.rmtree(tmp_path / 'spa_test')
        assert _run(root, tmp_path / parent / 'o', 'spa', '--no-count-check') == 0
        for split in ('train', 'test'):
            assert_same(read_back(tmp_path / parent / 'o', 'spa', split), exp[split])
    exp = make_rain200(tmp_path / 'r', rng)['test']
    (tmp_path / 'Rain200L' / 'rain_data_test_light').mkdir(parents=True)
    shutil.move(str(tmp_path / 'r' / 'test'), str(tmp_path / 'Rain200L' / 'rain_data_test_light' / 'rain_light_test'))
    assert _run(tmp_path, tmp_path / 'o', 'rain200l', '--split', 'test', '--no-count-check') == 0
    assert_same(read_back(tmp_path / 'o', 'rain200l', 'test'), exp)


def test_file_names_sort_naturally_and_other_digit_characters_are_text():
    from coic_basicsr.tools.layout_files import natural_key
    # '²'.isdigit() is True: int('²') raised "invalid literal for int()" and the build stopped naming no file
    assert sorted(['rain-10.png', 'rain-2.png', '1²2.png', 'rain-1.png'], key=natural_key) == [
        '1²2.png', 'rain-1.png', 'rain-2.png', 'rain-10.png']


def test_a_line_repeated_in_spanets_list_is_read_once(tmp_path):
    from coic_basicsr.tools.spa_layout import _read_list
    (tmp_path / 'list.txt').write_text('./a/r.png ./b/c.png\n/a/r.png b/c.png\nx.png y.png\n')
    assert list(_read_list(tmp_path / 'list.txt')) == [('a/r.png', 'b/c.png'), ('x.png', 'y.png')]


def test_a_case_insensitive_folder_lookup_with_two_candidates_finds_none(tmp_path):
    from coic_basicsr.tools.layout_files import find_dir
    (tmp_path / 'Training').mkdir()
    (tmp_path / 'TRAINING').mkdir()
    assert find_dir(tmp_path, 'training') is None
    assert find_dir(tmp_path, 'Training') == tmp_path / 'Training'
