"""Every shipped option file names registered types and builds its networks (paper-scale ones without running)."""
import glob
import re
from os import path as osp

import pytest
import yaml
from basicsr.archs import build_network

from coic_basicsr.models.tiling import tile_settings
from coic_basicsr.utils.options import apply_force_yml
from coic_basicsr.utils.section_keys import check_section_keys
from coic_basicsr.utils.validate import check_optimizers, check_registered_types, check_scheduler_options

OPTION_FILES = sorted(glob.glob(osp.join(osp.dirname(__file__), '..', '..', 'options', '**', '*.yml'),
                            recursive=True))


def test_option_files_exist():
    names = {osp.basename(p) for p in OPTION_FILES}
    assert {'coic_restormer.yml', 'restormer_baseline.yml', 'test_coic_restormer.yml',
            'coic_restormer_demo.yml'} <= names


@pytest.mark.parametrize('path', OPTION_FILES, ids=osp.basename)
def test_option_file_types_are_registered_and_networks_build(path):
    with open(path) as f:
        opt = yaml.safe_load(f)
    check_registered_types(opt)
    check_section_keys(opt)  # every network/loss key is an argument of its class
    tile_settings(opt.get('val'))
    if 'train' in opt:
        check_optimizers(opt)
        check_scheduler_options(opt)
    for key, section in opt.items():
        if key.startswith('network_'):
            net = build_network(section)
            assert sum(p.numel() for p in net.parameters()) > 0


def test_force_yml_indexes_lists_and_never_creates_entries():
    opt = {'datasets': {'train': {'sources': [{'name': 'a', 'dataroot_lq': 'x'}, {'name': 'b', 'dataroot_lq': 'y'}]}},
           'train': {'scheduler': {'milestones': [10, 20]}}}
    apply_force_yml(opt, ['datasets:train:sources:1:dataroot_lq=/data/rain', 'train:scheduler:milestones:0=5'])
    assert opt['datasets']['train']['sources'][1]['dataroot_lq'] == '/data/rain'
    assert opt['train']['scheduler']['milestones'] == [5, 20]
    for entry, message in [('datasets:train:sources:2:name=c', "'datasets:train:sources:2' is not an option section"),
                           ('train:scheduler:milestones:2=30', "option 'train:scheduler:milestones:2' does not exist"),
                           ('datasets:train:sources:first:name=c', "'datasets:train:sources:first' is not an option"),
                           ('datasets:train:sources:0:name:x=c', "'datasets:train:sources:0:name' is not an option")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            apply_force_yml(opt, [entry])


def test_force_yml_reads_basicsrs_spellings_of_null():
    opt = {'val': {'suffix': 'x', 'save_img': True, 'tile': {'size': 64}}, 'path': {'pretrain_network_g': 'a.pth'},
           'network_g': {'recruitment': 'dynamic'}}
    apply_force_yml(opt, ['val:suffix=None', 'path:pretrain_network_g=~', 'val:tile=null', 'val:save_img=False',
                          'network_g:recruitment=none'])  # RDMCNet's documented ablation value, as YAML reads it
    assert opt == {'val': {'suffix': None, 'save_img': False, 'tile': None}, 'path': {'pretrain_network_g': None},
                   'network_g': {'recruitment': 'none'}}
    apply_force_yml(opt, ['val:suffix="None"'])  # quoted: the string
    assert opt['val']['suffix'] == 'None'


def test_force_yml_reports_the_other_places_an_aliased_section_is_used(capsys):
    opt = yaml.load('datasets:\n  train: {sources: &mix [{name: a, preset: mist}]}\n  val: {sources: *mix}\n'
                    'train: {total_iter: 4}\n', Loader=yaml.SafeLoader)
    apply_force_yml(opt, ['datasets:train:sources:00:preset=light_sparse', 'train:total_iter=8'])
    assert opt['datasets']['val']['sources'][0]['preset'] == 'light_sparse'  # an alias is one section (YAML)
    assert capsys.readouterr().out.splitlines() == [
        "--force_yml: 'datasets:train:sources:00:preset' also sets datasets:val:sources:0:preset (the option file "
        'shares that section through a YAML alias)']


def test_a_null_option_takes_the_code_default():
    from coic_basicsr.utils.option_values import check_scalar_options
    opt = {'train': {'ema_decay': None, 'warmup_iter': None, 'max_nonfinite_steps': None, 'total_iter': 4},
           'val': {'val_freq': None}, 'manual_seed': None}
    check_scalar_options(opt)  # the code's .get(key, default) gave None: TypeErrors mid-run
    assert opt == {'train': {'total_iter': 4}, 'val': {}}


def test_a_force_yml_value_may_contain_equals():
    opt = {'path': {'pretrain_network_g': None}}
    apply_force_yml(opt, ['path:pretrain_network_g=runs/lr=1e-4/net_g.pth'])
    assert opt['path']['pretrain_network_g'] == 'runs/lr=1e-4/net_g.pth'


def test_an_ema_decay_of_one_is_refused():
    # an EMA copy with decay 1 never moves from the initial weights
    from coic_basicsr.utils.option_values import check_scalar_options
    check_scalar_options({'train': {'ema_decay': 0.999}})
    with pytest.raises(ValueError, match='ema_decay'):
        check_scalar_options({'train': {'ema_decay': 1}})


def test_the_hints_for_yaml_1_1_floats_read_as_text():
    from coic_basicsr.utils.option_values import yaml_text_hint
    assert 'without a dot' in yaml_text_hint('1e-6') and 'write 1.0e-6' in yaml_text_hint('1e-6')
    assert 'without a sign in the exponent' in yaml_text_hint('1.0e6')
    assert 'without quotes' in yaml_text_hint('1.5e-3')
