"""A key nothing reads that resembles an unset key that is read is warned about (BasicSR ignores it silently)."""
import glob
from os import path as osp

import pytest
import yaml

from coic_basicsr.train import main as train_main
from coic_basicsr.utils.unread_keys import unread_key_warnings
from helpers.coic import tiny_coic_options
from helpers.stock import write_options

OPTIONS = osp.join(osp.dirname(__file__), '..', '..', 'options')


@pytest.mark.parametrize('where, typo, meant', [
    (('train',), 'ema_decey', 'ema_decay'), (('val',), 'val_frequency', 'val_freq'),
    (('logger',), 'print_frequency', 'print_freq'), ((), 'manul_seed', 'manual_seed'),
    (('dist_params',), 'prot', 'port'), (('train',), 'total_iters', 'total_iter')])
def test_a_misspelt_key_is_named_with_the_key_it_resembles(where, typo, meant):
    opt = tiny_coic_options()
    section = opt
    for key in where:
        section = section.setdefault(key, {})
    section.pop(meant, None)
    section[typo] = 1
    assert list(unread_key_warnings(opt)) == [
        f"{'.'.join(where + (typo,))}: not an option BasicSR or coic-basicsr reads, and ignored (did you mean "
        f"'{meant}'? it is not set, so its default applies)"]


def test_a_misspelt_key_of_a_basicsr_dataset_is_named_and_ours_are_left_to_their_own_check():
    opt = tiny_coic_options()
    opt['datasets']['val_2'] = {'name': 'v', 'type': 'PairedImageDataset', 'use_rott': True, 'phase': 'val'}
    opt['datasets']['train']['use_rott'] = True  # MixedSyntheticRainDataset: refused by check_section_keys
    assert list(unread_key_warnings(opt)) == [
        "datasets.val_2.use_rott: not an option BasicSR or coic-basicsr reads, and ignored (did you mean 'use_rot'? "
        'it is not set, so its default applies)']


def test_project_keys_families_and_keys_next_to_the_right_one_are_left_alone():
    opt = tiny_coic_options()
    opt['train'].update(my_project_weight=2, optim_gg={'type': 'Adam'}, edge_opt={'type': 'L1Loss'})
    opt['network_gg'] = {'type': 'X'}
    opt['manual_seeds'] = [1, 2]  # close to manual_seed, which is set: a project's own key
    assert list(unread_key_warnings(opt)) == []


def test_no_shipped_option_file_gets_a_warning():
    for path in glob.glob(osp.join(OPTIONS, '**', '*.yml'), recursive=True):
        with open(path) as f:
            assert list(unread_key_warnings(yaml.safe_load(f))) == [], path


def test_the_training_log_names_the_misspelt_key(tmp_path, monkeypatch):
    opt = tiny_coic_options(name='typo', total_iter=3, coic=False)
    opt['train']['ema_decey'] = opt['train'].pop('ema_decay')
    monkeypatch.chdir(tmp_path)
    assert train_main(['-opt', write_options(opt, str(tmp_path / 'opt.yml'))]) == 0
    log = next((tmp_path / 'experiments' / 'typo').glob('train_typo_*.log')).read_text()
    assert "WARNING: train.ema_decey: not an option BasicSR or coic-basicsr reads, and ignored (did you mean " \
        "'ema_decay'?" in log
