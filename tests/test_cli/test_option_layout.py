"""The early layout check of an option file: sections that must be mappings, required keys (fewer for basicsr
test), and the range of manual_seed."""
import copy
import re

import pytest

from coic_basicsr.utils.option_layout import check_required_keys, check_sections_are_mappings
from coic_basicsr.utils.option_values import check_manual_seed_range
from helpers.coic import tiny_coic_options
from helpers.stock import stock_sr_options


def _test_options() -> dict:
    """A basicsr test option file: no train section, no logger, test sets without loader keys."""
    opt = tiny_coic_options()
    for key in ('train', 'logger'):
        del opt[key]
    opt['datasets'] = {'test_1': opt['datasets']['val'], 'val_2': dict(opt['datasets']['val'], name='val_2')}
    return opt


def check_option_layout(opt: dict, is_train: bool) -> None:
    check_sections_are_mappings(opt, is_train)  # in parse_options
    check_required_keys(opt, is_train)  # in check_options


def test_basicsr_test_needs_no_training_keys():
    check_option_layout(_test_options(), is_train=False)
    opt = _test_options()
    opt['datasets']['train'] = {'type': 'MixedSyntheticRainDataset'}  # skipped by basicsr test: no name needed
    opt['datasets']['extra'] = dict(opt['datasets']['test_1'], name='extra')  # basicsr test scores any key
    opt['train'] = None
    check_option_layout(opt, is_train=False)


@pytest.mark.parametrize('change, message', [
    (lambda opt: opt['datasets']['test_1'].pop('name'), r'datasets\.test_1\.name: required'),
    (lambda opt: opt.pop('network_g'), r'network_g: required'),
    (lambda opt: opt['val'].update(metrics={'psnr': None}), r'val\.metrics\.psnr: expected a mapping'),
    (lambda opt: opt.update(path=None), r'path: expected a mapping of paths, got None'),
])
def test_basicsr_test_still_needs_what_it_reads(change, message):
    opt = _test_options()
    change(opt)
    with pytest.raises(ValueError, match=message):
        check_option_layout(opt, is_train=False)


def test_null_optional_sections_read_as_absent_and_stock_files_pass(tmp_path):
    opt = tiny_coic_options()
    opt.update(val=None, dist_params=None)
    opt['logger']['wandb'] = None
    opt['datasets']['train']['sampler'] = None
    opt['train'].update(optim_mod=None, scheduler_mod=None, coic=None)
    check_option_layout(opt, is_train=True)
    check_option_layout(stock_sr_options(str(tmp_path)), is_train=True)  # BasicSR's own kind of file, unchanged
    opt = tiny_coic_options()
    opt['val']['metrics'] = None  # validation without metrics
    opt['train'].update(mixing_augs=None, pixel_opt=None)
    check_option_layout(opt, is_train=True)


def test_training_keys_are_required_in_full_only_for_training():
    opt = tiny_coic_options()
    del opt['datasets']['train']['num_worker_per_gpu']
    check_option_layout(copy.deepcopy(opt), is_train=False)
    with pytest.raises(ValueError, match=r'^datasets\.train\.num_worker_per_gpu: required'):
        check_option_layout(opt, is_train=True)


@pytest.mark.parametrize('key', ['train_2', 'validation', 'testing'])
def test_training_dataset_keys_name_a_phase(key):
    opt = tiny_coic_options()
    opt['datasets'][key] = opt['datasets'].pop('val')
    with pytest.raises(ValueError, match=rf"^datasets\.{key}: a dataset key must be train, or have val or test "
                                         "before its first '_'"):
        check_option_layout(opt, is_train=True)


def test_training_validates_on_every_val_and_test_set():
    opt = tiny_coic_options()
    opt['datasets'].update(val_2=dict(opt['datasets']['val'], name='val_2'),
                           test_rain=dict(opt['datasets']['val'], name='test_rain'))
    check_option_layout(opt, is_train=True)


def test_basicsr_training_sets_need_the_crop_size_and_flips_their_items_read(tmp_path):
    # BasicSR's training datasets read them as opt[key] from each item: "error: use_hflip" at iteration 1
    opt = stock_sr_options(str(tmp_path))
    opt['datasets']['train']['use_hflip'] = None  # BasicSR reads a null flip as false
    check_option_layout(copy.deepcopy(opt), is_train=True)  # its val set reads none of them
    for key, change in (('use_rot', lambda train: train.pop('use_rot')),
                        ('gt_size', lambda train: train.pop('gt_size')),
                        ('gt_size', lambda train: train.update(gt_size=None))):  # a null crop size: a TypeError
        broken = copy.deepcopy(opt)
        change(broken['datasets']['train'])
        with pytest.raises(ValueError, match=rf'^datasets\.train\.{key}: required by PairedImageDataset in training '):
            check_option_layout(broken, is_train=True)
    for name in ('RealESRGANPairedDataset', 'RealESRGANPairedDataset_basicsr'):  # BasicSR registers the second
        aliased = copy.deepcopy(opt)
        aliased['datasets']['train'].update(type=name, use_hflip=True)
        del aliased['datasets']['train']['gt_size']
        with pytest.raises(ValueError, match=rf'^datasets\.train\.gt_size: required by {name} in training'):
            check_option_layout(aliased, is_train=True)
    ffhq = opt['datasets']['train']
    ffhq['type'] = 'FFHQDataset'  # it flips, never rotates
    del ffhq['use_hflip'], ffhq['use_rot']
    with pytest.raises(ValueError, match=r'^datasets\.train\.use_hflip: required by FFHQDataset in training \(true '
                                         r'or false: random horizontal flips\)$'):
        check_option_layout(opt, is_train=True)
    ffhq['use_hflip'] = True
    check_option_layout(opt, is_train=True)


#: what each BasicSR 1.4.2 training dataset reads as opt[key] from each item (read off its source, not the table)
_READ_BY = {'PairedImageDataset': ('gt_size', 'use_hflip', 'use_rot'),
            'RealESRGANPairedDataset': ('gt_size', 'use_hflip', 'use_rot'),
            'RealESRGANDataset': ('use_hflip', 'use_rot'), 'FFHQDataset': ('use_hflip',),
            'REDSDataset': ('gt_size', 'use_hflip', 'use_rot'),
            'REDSRecurrentDataset': ('gt_size', 'use_hflip', 'use_rot'),
            'Vimeo90KDataset': ('gt_size', 'use_hflip', 'use_rot'),
            'Vimeo90KRecurrentDataset': ('gt_size', 'use_hflip', 'use_rot')}
_WHAT = {'gt_size': 'the size of the gt training crops', 'use_hflip': 'true or false: random horizontal flips',
         'use_rot': 'true or false: random vertical flips and 90-degree rotations'}


@pytest.mark.parametrize('dataset_type, key', [(t, k) for t in _READ_BY for k in _WHAT])
def test_each_basicsr_training_set_needs_exactly_the_item_keys_it_reads(tmp_path, dataset_type, key):
    opt = stock_sr_options(str(tmp_path))
    opt['datasets']['train'].update(type=dataset_type, gt_size=16, use_hflip=True, use_rot=True)
    del opt['datasets']['train'][key]
    if key not in _READ_BY[dataset_type]:
        check_option_layout(opt, is_train=True)  # a key it never reads is not asked for
        return
    with pytest.raises(ValueError) as err:
        check_option_layout(opt, is_train=True)
    assert str(err.value) == f'datasets.train.{key}: required by {dataset_type} in training ({_WHAT[key]})'


def test_manual_seed_plus_rank_stays_in_numpy_range():
    check_manual_seed_range(0, 1)
    check_manual_seed_range(2**32 - 1, 1)
    check_manual_seed_range(2**32 - 2, 2)
    with pytest.raises(ValueError, match=re.escape(
            'manual_seed: expected an integer from 0 to 4294967294 (numpy seeds up to 2**32 - 1, and 2 processes seed '
            'manual_seed + 0 to 1), got 4294967295')):
        check_manual_seed_range(2**32 - 1, 2)
    # BasicSR seeds loader worker w of rank r with manual_seed + workers * r + w
    check_manual_seed_range(2**32 - 6, 2, loader_workers=3)
    check_manual_seed_range(2**32 - 1, 1, loader_workers=1)
    with pytest.raises(ValueError, match=re.escape(
            'expected an integer from 0 to 4294967290 (numpy seeds up to 2**32 - 1, and 6 data loader workers, 3 per '
            'process, seed manual_seed + 0 to 5), got 4294967291')):
        check_manual_seed_range(2**32 - 5, 2, loader_workers=3)
    with pytest.raises(ValueError, match=r'got -1'):
        check_manual_seed_range(-1, 1)


@pytest.mark.parametrize('change, message', [
    (lambda opt: opt['train'].update({1: 2}), r'^train\.1: expected an option name, got the int key 1 '),
    (lambda opt: opt.update({5: 'x'}), r'^5: expected an option name, got the int key 5 '),
    (lambda opt: opt['datasets']['train']['sources'][0].update({True: 1}),
     r'^datasets\.train\.sources\[0\]\.True: expected an option name, got the bool key True '),
])
def test_option_keys_are_text(change, message):
    # they were AttributeError tracebacks (key.startswith), and a TypeError in BasicSR's dict2str
    opt = tiny_coic_options()
    change(opt)
    with pytest.raises(ValueError, match=message):
        check_option_layout(opt, is_train=True)
