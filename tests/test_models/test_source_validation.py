"""Per-source validation tables and the test path around them (``basicsr test`` and a project's own pipeline)."""
import json
import os
from os import path as osp

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.metrics import calculate_psnr
from basicsr.utils import tensor2img
from torch.utils.data import DataLoader

from coic_basicsr.models.portable import build_model
from coic_basicsr.models.source_validation import validate_per_source
from helpers.coic import in_memory, tiny_coic_options, untrained_test_options
from helpers.stock import write_options


def _test_options_with_a_saved_network_g(tmp_path):
    """Test options of a tiny CoIC model whose net_g_5.pth lies in ``tmp_path/models`` (no encoder saved yet)."""
    opt = in_memory(tiny_coic_options(), tmp_path)
    opt['is_train'] = False
    del opt['train']
    models = tmp_path / 'models'
    models.mkdir()
    torch.save({'params': build_network(dict(opt['network_g'])).state_dict()}, models / 'net_g_5.pth')
    opt['path']['pretrain_network_g'] = str(models / 'net_g_5.pth')
    return opt, models


def test_a_project_testing_without_an_encoder_path_loads_the_one_saved_beside_network_g(tmp_path):
    opt, models = _test_options_with_a_saved_network_g(tmp_path)
    with pytest.raises(ValueError, match=r"path.pretrain_network_enc: .* none lie next to '.*net_g_5.pth'"):
        build_model(opt)  # it tested with a random encoder, without a word
    query, key = (build_network(dict(opt['network_enc'])).state_dict() for _ in range(2))
    torch.save({'params': query, 'params_key': key}, models / 'net_enc_5.pth')
    model = build_model(opt)
    for name, value in model.net_enc_key.state_dict().items():
        assert torch.equal(value, key[name]), name


def test_an_encoder_path_in_the_options_wins_over_the_one_saved_beside_network_g(tmp_path):
    opt, models = _test_options_with_a_saved_network_g(tmp_path)
    beside, chosen = (build_network(dict(opt['network_enc'])).state_dict() for _ in range(2))
    torch.save({'params': beside, 'params_key': beside}, models / 'net_enc_5.pth')
    torch.save({'params': chosen, 'params_key': chosen}, tmp_path / 'other_enc.pth')
    opt['path']['pretrain_network_enc'] = str(tmp_path / 'other_enc.pth')
    model = build_model(opt)
    assert any(not torch.equal(beside[name], value) for name, value in chosen.items())
    for name, value in model.net_enc_key.state_dict().items():
        assert torch.equal(value, chosen[name]), name


def test_input_scores_are_the_rainy_inputs_against_the_clean_images(tmp_path):
    opt = untrained_test_options(in_memory(tiny_coic_options(), tmp_path), tmp_path)
    opt['is_train'] = False
    model = build_model(opt)
    loader = DataLoader(build_dataset(opt['datasets']['val']), batch_size=1)
    results = validate_per_source(model, loader, 0, False)
    psnr_opt = {k: v for k, v in opt['val']['metrics']['psnr'].items() if k != 'type'}
    for data in loader:
        source = loader.dataset.source_names[int(data['source'][0])]
        rainy = calculate_psnr(tensor2img([data['lq']]), tensor2img([data['gt']]), **psnr_opt)
        assert results[source]['psnr_input'] == pytest.approx(rainy)  # one image per source
        assert abs(results[source]['psnr'] - rainy) > 0.1  # the restored image scores otherwise


def _folder_pairs(root, count: int) -> dict:
    rng = np.random.default_rng(count)
    for side in ('gt', 'lq'):
        os.makedirs(osp.join(root, side), exist_ok=True)
    for i in range(count):
        for side in ('gt', 'lq'):
            cv2.imwrite(osp.join(root, side, f'{i}.png'), rng.integers(0, 256, (24, 24, 3), np.uint8))
    return {'dataroot_gt': osp.join(root, 'gt'), 'dataroot_lq': osp.join(root, 'lq')}


def test_basicsr_test_tables_for_odd_set_names_without_a_val_section_and_beside_a_training_set(
        tmp_path, monkeypatch, capsys, caplog):
    from coic_basicsr.test import main as test_main
    opt = untrained_test_options(tiny_coic_options(name='odd_names'), tmp_path)
    opt['scale'] = 1
    train_set = opt['datasets']['train']
    opt['datasets'] = {
        'train': train_set,  # a training option file given to basicsr test: its random crops were scored
        'test_1': dict(_folder_pairs(str(tmp_path / 'three'), 3), name='all', type='PairedImageDataset',
                       io_backend={'type': 'disk'}),  # each image was counted twice
        'test_2': dict(_folder_pairs(str(tmp_path / 'two'), 2), name='Rain100L/test', type='PairedImageDataset',
                       io_backend={'type': 'disk'})}  # its tables could not be written
    monkeypatch.chdir(tmp_path)
    metrics = opt.pop('val')['metrics']
    assert test_main(['-opt', write_options(opt, str(tmp_path / 'test.yml'))]) == 0, capsys.readouterr().err[-2000:]
    capsys.readouterr()  # without a val section it failed with "basicsr test: error: val"

    opt.update(name='odd_names_2', val={'metrics': metrics, 'pbar': True})
    caplog.clear()
    assert test_main(['-opt', write_options(opt, str(tmp_path / 'test.yml'))]) == 0
    err = capsys.readouterr().err
    results = tmp_path / 'results' / 'odd_names_2'
    assert json.loads((results / 'all_metrics.json').read_text())['all']['count'] == 3
    assert json.loads((results / 'Rain100L' / 'test_metrics.json').read_text())['all']['count'] == 2
    log = caplog.text
    assert 'datasets.train: a training set, not tested' in log and 'Number of test images in train' not in log
    assert 'Test 2' in err  # val.pbar's progress bar
    assert 'Validation all' in log and '# Best' not in log  # 'Best: psnr: ... @ odd_names_2 iter' of one pass

    opt['datasets'] = {'train': train_set}
    assert test_main(['-opt', write_options(opt, str(tmp_path / 'test.yml'))]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith('basicsr test: error: datasets: no test set')


def test_the_best_scores_are_logged_in_training_only(monkeypatch):
    from coic_basicsr.models import source_validation
    logged = []
    monkeypatch.setattr(source_validation, 'get_root_logger', lambda: type('Log', (), {'info': logged.append})())
    results, metrics = {'all': {'count': 2, 'psnr': 30.0}}, {'psnr': {'type': 'calculate_psnr'}}
    source_validation.log_results('val', results, metrics, 5000, None, {'psnr': {'val': 31.0, 'iter': 4000}})
    assert logged.pop().splitlines()[-1] == '\t # Best: psnr: 31.0000 @ 4000 iter'
    source_validation.log_results('test', results, metrics, 'my_test', None, {'psnr': {'val': 30.0, 'iter': 'my_test'}})
    assert 'Best' not in logged.pop()  # basicsr test: one pass, its iteration is the run's name


@pytest.mark.parametrize('crop_border, refused', [(15, False), (16, True), (40, True)])
def test_a_crop_border_that_leaves_nothing_to_score_is_named(crop_border, refused):
    from coic_basicsr.models.source_validation import _score
    img = np.random.default_rng(0).integers(0, 256, (32, 40, 3)).astype(np.uint8)
    metric = {'type': 'calculate_psnr', 'crop_border': crop_border}
    if not refused:
        assert np.isfinite(_score('psnr', metric, img, img // 2, 'val: a'))
        return
    with pytest.raises(ValueError) as err:  # BasicSR scored an empty array: psnr nan in the log, no error
        _score('psnr', metric, img, img // 2, 'val: a')
    assert str(err.value) == f"val.metrics.psnr.crop_border ({crop_border}) leaves nothing of 'val: a' (32x40) to score"
