"""Tests of ``basicsr prepare-data`` on miniature replicas of the six official dataset layouts."""
import multiprocessing
import os
import runpy
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from coic_basicsr.tools.official_layouts import DATASETS
from coic_basicsr.tools.prepare_data import DEFAULT_META_DIR, ResumableLmdbMaker, main, prepare

from helpers.lmdb_pairs import assert_same, read_back
from helpers.official_layouts import MAKERS, make_ddn, make_rain200


def test_all_official_layouts_convert_pixel_exact(tmp_path):
    rng = np.random.default_rng(0)
    expected = {name: make(tmp_path / 'data' / folder, rng) for name, (folder, make) in MAKERS.items()}
    out = tmp_path / 'lmdb'
    assert main(['--dataset', 'all', '--root', str(tmp_path / 'data'), '--out', str(out), '--no-count-check']) == 0
    with open(DEFAULT_META_DIR / 'datasets.yml') as fin:
        meta = yaml.safe_load(fin)['datasets']
    assert set(meta) == set(DATASETS)
    for name, exp in expected.items():
        for split in ('train', 'test'):
            assert_same(read_back(out, name, split), exp[split])
            lines = (out / f'{name}_{split}_pairs.txt').read_text().splitlines()
            assert sorted(lines) == sorted(f'{k} {k}' for k in exp[split])
            shipped = meta[name]['splits'][split].get('pair_list')
            if shipped:  # the shipped list uses the same key scheme as the converter
                assert set(lines) <= set((DEFAULT_META_DIR / shipped).read_text().splitlines()), (name, split)
            assert not (out / f'{name}_{split}_lq.lmdb.partial').exists()


def test_ddn_fourteen_rainy_images_share_one_clean_image(tmp_path):
    exp = make_ddn(tmp_path / 'DDN', np.random.default_rng(1))
    assert main(['--dataset', 'DDN-Data', '--split', 'train', '--root', str(tmp_path / 'DDN'),
                 '--out', str(tmp_path / 'out'), '--no-count-check']) == 0
    got = read_back(tmp_path / 'out', 'ddn', 'train')
    assert sorted(got) == sorted(f'{i}_{j}' for i in (1, 2) for j in range(1, 15))
    gt_2 = cv2.imread(str(tmp_path / 'DDN' / 'rainy_image_dataset' / 'training' / 'ground_truth' / '2.jpg'))
    for j in range(1, 15):
        assert np.array_equal(got[f'2_{j}'][1], gt_2)
        assert np.array_equal(got[f'2_{j}'][0], exp['train'][f'2_{j}'][0])
    assert not np.array_equal(got['1_1'][1], gt_2)


def _crash_after(root: Path, out: Path, n_puts: int) -> None:
    """Child process: start a build and die hard (no cleanup, buffers unflushed) at LMDB put number n+1."""
    real, calls = ResumableLmdbMaker.put, []

    def put(self, img_byte, key, img_shape):
        calls.append(key)
        if len(calls) > n_puts:
            os._exit(17)
        real(self, img_byte, key, img_shape)

    ResumableLmdbMaker.put = put
    prepare('rain200h', 'train', root, out, count_check=False, workers=1, commit_every=2)


def test_killed_build_resumes_and_finished_build_is_kept(tmp_path, capsys):
    exp = make_rain200(tmp_path / 'R', np.random.default_rng(2), n_train=6)['train']
    out, args = tmp_path / 'out', ['--dataset', 'rain200h', '--split', 'train', '--root', str(tmp_path / 'R'),
                                   '--out', str(tmp_path / 'out'), '--no-count-check', '--workers', '1']
    child = multiprocessing.get_context('fork').Process(target=_crash_after, args=(tmp_path / 'R', out, 6))
    child.start()
    child.join(60)
    assert child.exitcode == 17
    assert (out / 'rain200h_train_lq.lmdb.partial').is_dir() and not (out / 'rain200h_train_lq.lmdb').exists()
    assert not (out / 'rain200h_train_pairs.txt').exists()
    capsys.readouterr()
    assert main(args) == 0
    assert 'wrote 4 of 6 pairs' in capsys.readouterr().out  # pairs 1-2 committed; pair 3 was put, not committed
    assert_same(read_back(out, 'rain200h', 'train'), exp)
    meta = (out / 'rain200h_train_gt.lmdb' / 'meta_info.txt').read_text().splitlines()
    assert len(meta) == len(set(meta)) == 6
    assert main(args) == 0
    assert 'complete, 6 pairs' in capsys.readouterr().out
    assert main(args + ['--overwrite']) == 0
    assert 'wrote 6 of 6 pairs' in capsys.readouterr().out
    assert_same(read_back(out, 'rain200h', 'train'), exp)


def test_unreadable_image_stops_with_its_path_and_rerun_finishes(tmp_path, capsys):
    root = tmp_path / 'R'
    exp = make_rain200(root, np.random.default_rng(3), n_train=6)['train']
    bad = root / 'train' / 'rain' / 'norain-4x2.png'
    good = bad.read_bytes()
    bad.write_bytes(b'not an image')
    args = ['--dataset', 'rain200h', '--split', 'train', '--root', str(root), '--out', str(tmp_path / 'out'),
            '--no-count-check', '--workers', '1', '--commit-every', '2']
    assert main(args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith('basicsr prepare-data: error: ') and f"'{bad}'" in last
    bad.write_bytes(good)
    assert main(args) == 0
    assert 'wrote 3 of 6 pairs' in capsys.readouterr().out
    assert_same(read_back(tmp_path / 'out', 'rain200h', 'train'), exp)


def test_reconcile_drops_keys_and_lines_that_do_not_match(tmp_path):
    path = str(tmp_path / 'x.lmdb.partial')
    maker = ResumableLmdbMaker(path, map_size=1 << 24, batch=100)
    for key in ('a', 'b', 'c'):
        maker.put(b'bytes-' + key.encode(), key, (1, 1, 3))
    maker.close()
    meta = Path(path) / 'meta_info.txt'
    lines = meta.read_text().splitlines(keepends=True)  # simulate a kill: line of 'c' lost, line of 'd' uncommitted
    meta.write_text(lines[0] + lines[1] + 'd.png (1,1,3) 1\n' + 'e.png (1,')
    maker = ResumableLmdbMaker(path, map_size=1 << 24, batch=100)
    assert maker.done == {'a', 'b'}
    with maker.env.begin() as txn:
        assert txn.get(b'c') is None and txn.get(b'a') == b'bytes-a'
    maker.close()
    assert meta.read_text() == lines[0] + lines[1]


def test_count_check_and_pair_list_check(tmp_path, capsys):
    make_rain200(tmp_path / 'R', np.random.default_rng(4))
    args = ['--dataset', 'rain200h', '--split', 'train', '--root', str(tmp_path / 'R'), '--out', str(tmp_path / 'o')]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert 'found 3 pairs' in err and '1800' in err and '--no-count-check' in err
    assert not (tmp_path / 'o').exists()
    meta = tmp_path / 'meta'
    meta.mkdir()
    (meta / 'datasets.yml').write_text(yaml.safe_dump(
        {'datasets': {'rain200h': {'splits': {'train': {'pairs': 3, 'pair_list': 'l.txt'}}}}}))
    (meta / 'l.txt').write_text('norain-1 norain-1\nnorain-2 norain-2\nnorain-9 norain-9\n')
    assert main(args + ['--meta-dir', str(meta)]) == 2
    assert "missing [('norain-9', 'norain-9')]" in capsys.readouterr().err
    (meta / 'l.txt').write_text('norain-1 norain-1\nnorain-2 norain-2\nnorain-3 norain-3\n')
    assert main(args + ['--meta-dir', str(meta)]) == 0


def test_bad_root_and_missing_files_name_the_path(tmp_path, capsys):
    missing = tmp_path / 'nowhere'
    assert main(['--dataset', 'spa', '--root', str(missing), '--out', str(tmp_path / 'o')]) == 2
    assert f"--root: '{missing}' does not exist" in capsys.readouterr().err
    (tmp_path / 'empty').mkdir()
    assert main(['--dataset', 'rain200h', '--root', str(tmp_path / 'empty'), '--out', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / 'empty') in err and 'Rain200H train' in err and len(err.strip().splitlines()) == 1
    make_ddn(tmp_path / 'D', np.random.default_rng(5))
    gt = tmp_path / 'D' / 'rainy_image_dataset' / 'training' / 'ground_truth' / '2.jpg'
    gt.unlink()
    assert main(['--dataset', 'ddn', '--root', str(tmp_path / 'D'), '--out', str(tmp_path / 'o'),
                 '--no-count-check']) == 2
    assert f"ground truth '{gt}'" in capsys.readouterr().err


@pytest.mark.filterwarnings('ignore:.*found in sys.modules:RuntimeWarning')
def test_module_entry_point_and_unknown_dataset(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['prepare_data', '--dataset', 'rain9000', '--root', '.', '--out', '.'])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module('coic_basicsr.tools.prepare_data', run_name='__main__')
    assert exit_info.value.code == 2
    assert "unknown dataset 'rain9000'" in capsys.readouterr().err


def test_bad_input_exits_2_with_one_line_as_the_other_commands_and_an_interrupt_130(tmp_path, capsys, monkeypatch):
    from coic_basicsr import cli
    from coic_basicsr.tools import prepare_data
    assert cli.main(['prepare-data', '--dataset', 'rain9000', '--root', '.', '--out', str(tmp_path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("basicsr prepare-data: error: --dataset: unknown dataset 'rain9000'")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_data, 'prepare', interrupted)
    assert main(['--dataset', 'rain200h', '--root', '.', '--out', str(tmp_path)]) == 130
    assert 'run the same command again to resume' in capsys.readouterr().err


def test_shipped_pair_lists_match_datasets_yml():
    with open(DEFAULT_META_DIR / 'datasets.yml') as fin:
        meta = yaml.safe_load(fin)['datasets']
    for name, entry in meta.items():
        assert (DEFAULT_META_DIR / entry['card']).is_file()
        for split, info in entry['splits'].items():
            if info.get('pair_list'):
                lines = (DEFAULT_META_DIR / info['pair_list']).read_text().splitlines()
                assert len(lines) == len(set(lines)) == info['pairs'], (name, split)
                assert all(a == b for a, b in (line.split() for line in lines))


def test_a_users_own_lmdb_of_the_same_name_is_never_touched(tmp_path, capsys):
    exp = make_rain200(tmp_path / 'R', np.random.default_rng(4), n_train=3)['train']
    out = tmp_path / 'out'
    args = ['--dataset', 'rain200h', '--split', 'train', '--root', str(tmp_path / 'R'), '--out', str(out),
            '--no-count-check', '--workers', '1']
    own = out / 'rain200h_train_lq.lmdb'  # made earlier by the user with BasicSR's scripts, say
    own.mkdir(parents=True)
    (own / 'data.mdb').write_bytes(b'users data')
    (own / 'meta_info.txt').write_text('mine.png (4,4,3) 1\n')
    before = {p.name: p.read_bytes() for p in own.iterdir()}
    assert main(args) == 2
    assert 'was not built by prepare-data' in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in own.iterdir()} == before and sorted(os.listdir(out)) == [own.name]
    shutil.rmtree(own)
    assert main(args) == 0
    (out / 'rain200h_train_pairs.txt').unlink()  # killed after renaming the LMDBs: ours, so finished on a re-run
    capsys.readouterr()
    assert main(args) == 0 and 'wrote 0 of 3 pairs' in capsys.readouterr().out
    assert_same(read_back(out, 'rain200h', 'train'), exp)


def test_hidden_files_and_folders_are_skipped(tmp_path):
    rng = np.random.default_rng(6)
    expected = {name: make(tmp_path / 'data' / folder, rng) for name, (folder, make) in MAKERS.items()}
    for folder in {p.parent for p in (tmp_path / 'data').rglob('*') if p.is_file()}:
        for image in list(folder.iterdir()):  # what macOS leaves on exFAT/SMB drives: '._x.jpg' beside each 'x.jpg'
            (folder / f'._{image.name}').write_bytes(b'\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X')
        (folder / '.DS_Store').write_bytes(b'Bud1')
    frame = tmp_path / 'data' / 'SPA-Data' / 'real_world' / '000' / '000-1'
    shutil.copytree(frame, frame.parent / '.thumbnails')  # a hidden folder among the frames of a scene
    out = tmp_path / 'lmdb'
    assert main(['--dataset', 'all', '--root', str(tmp_path / 'data'), '--out', str(out), '--no-count-check']) == 0
    for name, exp in expected.items():
        for split in ('train', 'test'):
            assert_same(read_back(out, name, split), exp[split])


def test_a_dangling_link_stops_with_its_path(tmp_path, capsys):
    root = tmp_path / 'R'
    make_rain200(root, np.random.default_rng(7), n_train=3)
    dangling = root / 'train' / 'rain' / 'norain-4x2.png'  # a moved file, or one on a disk not mounted now
    os.symlink(tmp_path / 'elsewhere' / 'norain-4x2.png', dangling)
    assert main(['--dataset', 'rain200h', '--split', 'train', '--root', str(root), '--out', str(tmp_path / 'o'),
                 '--no-count-check']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"'{dangling}'" in err[0] and 'does not exist' in err[0], err


def test_a_torn_last_meta_info_line_of_an_interrupted_build_is_not_done(tmp_path):
    import lmdb
    path = tmp_path / 'x.lmdb'
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b'a', b'1')
        txn.put(b'b', b'2')
    env.close()
    (path / 'meta_info.txt').write_text('a.png (2,2,3) 1\nb.png (2,2')
    maker = ResumableLmdbMaker(str(path), map_size=1 << 24)
    try:
        assert maker.done == {'a'}
    finally:
        maker.close()
    assert (path / 'meta_info.txt').read_text() == 'a.png (2,2,3) 1\n'


def test_a_finished_lmdb_whose_meta_info_repeats_a_key_does_not_verify(tmp_path):
    from coic_basicsr.tools.layout_files import Pair
    from coic_basicsr.tools.prepare_data import _verify
    (tmp_path / 'meta_info.txt').write_text('a.png (2,2,3) 1\na.png (2,2,3) 1\nb.png (2,2,3) 1\n')
    with pytest.raises(ValueError, match='does not match'):
        _verify(tmp_path, [Pair('a', 'x', 'y'), Pair('b', 'x', 'y')])


def test_a_pair_whose_images_differ_in_size_is_refused(tmp_path):
    from coic_basicsr.tools.layout_files import Pair
    from coic_basicsr.tools.prepare_data import _encode_pair
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / 'lq.png'), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / 'gt.png'), rng.integers(0, 256, (8, 10, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match='sizes differ'):
        _encode_pair(Pair('k', str(tmp_path / 'lq.png'), str(tmp_path / 'gt.png')), 1)
