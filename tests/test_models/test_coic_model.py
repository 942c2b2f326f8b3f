"""CoICModel: stage switch, separate optimizers, resume equality, baseline mode, per-source validation."""
import json
import os
import re
import warnings
from os import path as osp

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.utils import set_random_seed
from torch.utils.data import DataLoader

from coic_basicsr.archs.conv_selection import split_modulation_parameters
from coic_basicsr.data.transforms import global_view
from coic_basicsr.models.lr_schedulers import CosineAnnealingRestartCyclicLR
from coic_basicsr.models.portable import build_model
from helpers.coic import in_memory, tiny_coic_options, untrained_test_options
from helpers.run import basicsr
from helpers.stock import write_options


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(before, params):
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, params))


def test_stage_switch_updates_generators_and_encoder_only_after_stage1(tmp_path):
    opt = in_memory(tiny_coic_options(total_iter=4, stage1_iter=2), tmp_path)
    model = build_model(opt)
    backbone, modulation = split_modulation_parameters(model.net_g)
    encoder = list(model.net_enc.parameters())
    key_encoder = list(model.net_enc_key.parameters())
    assert len(model.optimizers) == 2 and len(model.schedulers) == 2
    dataset = build_dataset(opt['datasets']['train'])
    batches = iter(DataLoader(dataset, batch_size=2, shuffle=True))
    for current_iter in range(1, 5):
        before = [_snapshot(group) for group in (backbone, modulation, encoder, key_encoder)]
        model.feed_data(next(batches))
        model.optimize_parameters(current_iter)
        moved = [_changed(b, group) for b, group in zip(before, (backbone, modulation, encoder, key_encoder))]
        if current_iter <= 2:
            assert moved == [True, False, False, False], current_iter
            assert 'l_con' not in model.get_current_log()
        else:
            assert moved == [True, True, True, True], current_iter
            log = model.get_current_log()
            assert log['l_con'] > 0 and 0 <= log['con_top1'] <= 1


def test_stage1_schedule_of_the_idle_modulation_optimizer_does_not_warn(tmp_path):
    opt = in_memory(tiny_coic_options(total_iter=4, stage1_iter=2), tmp_path)
    model = build_model(opt)
    batches = iter(DataLoader(build_dataset(opt['datasets']['train']), batch_size=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for current_iter in range(1, 5):  # the pipeline's order: learning rate, then the step
            model.update_learning_rate(current_iter)
            model.feed_data(next(batches))
            model.optimize_parameters(current_iter)
    assert not [w for w in caught if 'lr_scheduler.step()' in str(w.message)]
    assert model.schedulers[1].last_epoch == 3 and model.optimizer_mod.state  # stepped, and trained in stage 2


def test_coic_training_refuses_a_batch_without_global_views_at_the_first_iteration(tmp_path):
    # it trained through stage 1 (40k iterations by default) and failed at the first stage-2 iteration
    opt = in_memory(tiny_coic_options(total_iter=4, stage1_iter=2), tmp_path)
    opt['datasets']['train']['type'] = 'PairedImageDataset'  # what the message names; SR pairs have no global views
    model = build_model(opt)
    batch = next(iter(DataLoader(build_dataset(dict(opt['datasets']['train'], type='MixedSyntheticRainDataset')),
                                 batch_size=2)))
    before = _snapshot(model.net_g.parameters())
    model.feed_data({k: v for k, v in batch.items() if k not in ('lq_global', 'gt_global')})
    with pytest.raises(ValueError, match=re.escape(
            'train.coic: needs lq_global/gt_global in the training batches, which datasets.train.type '
            'PairedImageDataset does not give (use MixedRainDataset or MixedSyntheticRainDataset, scale 1)')):
        model.optimize_parameters(1)
    assert not _changed(before, model.net_g.parameters())
    model.feed_data(batch)  # with them it trains
    model.optimize_parameters(1)
    assert _changed(before, model.net_g.parameters())


def test_baseline_without_coic_is_an_ordinary_model(tmp_path):
    opt = in_memory(tiny_coic_options(coic=False), tmp_path)
    model = build_model(opt)
    assert model.net_enc_key is None and len(model.optimizers) == 1
    dataset = build_dataset(opt['datasets']['train'])
    model.feed_data(next(iter(DataLoader(dataset, batch_size=2))))
    model.optimize_parameters(1)
    assert set(model.get_current_log()) == {'l_pix'}


def test_a_loss_of_the_output_alone_is_not_given_gt(tmp_path):
    # BasicSR's WeightedTVLoss.forward(pred, weight=None) took gt as its per-pixel weight
    from basicsr.losses.basic_loss import WeightedTVLoss
    opt = in_memory(tiny_coic_options(coic=False), tmp_path)
    opt['train']['tv_opt'] = {'type': 'WeightedTVLoss', 'loss_weight': 1.0}
    model = build_model(opt)
    model.feed_data(next(iter(DataLoader(build_dataset(opt['datasets']['train']), batch_size=2))))
    model.optimize_parameters(1)
    assert model.get_current_log()['l_tv'] == pytest.approx(WeightedTVLoss()(model.output.detach()).item())


def test_a_per_image_loss_of_a_multi_stage_network_scores_its_final_stage():
    from coic_basicsr.models.loss_sections import build_loss_sections
    sections = build_loss_sections({'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}, torch.device('cpu'))
    gt = torch.zeros(1, 3, 4, 4)
    stages = [torch.full_like(gt, 1.0), torch.full_like(gt, 0.25)]  # the final stage last, as the networks return
    assert sections['pix'](stages, gt, gt)['l_pix'].item() == pytest.approx(0.25)


class CoICTestTwoTermLoss(torch.nn.Module):
    """Test-only loss returning (term, style term) as BasicSR's PerceptualLoss does."""

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()

    def forward(self, x, gt):
        return (x - gt).abs().mean(), (x - gt).pow(2).mean()


def test_a_two_term_loss_logs_both_terms_as_basicsr_does(tmp_path):
    # PerceptualLoss's style term was summed into l_percep; BasicSR logs l_percep and l_style
    from basicsr.utils.registry import LOSS_REGISTRY
    if 'CoICTestTwoTermLoss' not in LOSS_REGISTRY:
        LOSS_REGISTRY.register(CoICTestTwoTermLoss)
    opt = in_memory(tiny_coic_options(coic=False), tmp_path)
    opt['train']['perceptual_opt'] = {'type': 'CoICTestTwoTermLoss'}
    model = build_model(opt)
    model.feed_data(next(iter(DataLoader(build_dataset(opt['datasets']['train']), batch_size=2))))
    model.optimize_parameters(1)
    log, diff = model.get_current_log(), model.output.detach() - model.gt
    assert set(log) == {'l_pix', 'l_percep', 'l_style'}
    assert log['l_percep'] == pytest.approx(diff.abs().mean().item(), rel=1e-5)
    assert log['l_style'] == pytest.approx(diff.pow(2).mean().item(), rel=1e-5)


def test_resumed_run_with_loader_workers_matches_uninterrupted_run_without(tmp_path):
    opt = tiny_coic_options(name='full', total_iter=6, stage1_iter=2)
    opt['logger']['save_checkpoint_freq'] = 3
    assert basicsr(['train', '-opt', write_options(opt, str(tmp_path / 'full.yml'))], cwd=str(tmp_path)).returncode == 0
    # augmentation is seeded per draw, not per worker: two workers and a resume change no crop or flip
    opt['name'], opt['datasets']['train']['num_worker_per_gpu'] = 'cut', 2
    cut_path = write_options(opt, str(tmp_path / 'cut.yml'))
    assert basicsr(['train', '-opt', cut_path], cwd=str(tmp_path)).returncode == 0
    exp = tmp_path / 'experiments' / 'cut'
    for name in ('training_states/6.state', 'models/net_g_6.pth', 'models/net_enc_6.pth', 'models/net_g_latest.pth',
                 'models/net_enc_latest.pth'):
        (exp / name).unlink()
    result = basicsr(['train', '-opt', cut_path, '--auto_resume'], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'iter: 3 ' in result.stderr
    state = torch.load(exp / 'training_states' / '6.state', weights_only=True)
    assert state['extra']['contrastive']['rain_archive'].shape[0] > 0  # the rain archive travels with the state
    for file_name in ('net_g_6.pth', 'net_enc_6.pth'):
        resumed = torch.load(exp / 'models' / file_name, weights_only=True)
        full = torch.load(tmp_path / 'experiments' / 'full' / 'models' / file_name, weights_only=True)
        for key, tensors in full.items():
            for name, tensor in tensors.items():
                assert torch.allclose(resumed[key][name], tensor, atol=1e-6), (file_name, key, name)


def test_resumed_run_takes_a_longer_schedule_from_the_option_file(tmp_path):
    opt = tiny_coic_options(name='extended', total_iter=4, stage1_iter=2)  # periods [2, 2]
    assert basicsr(['train', '-opt', write_options(opt, str(tmp_path / 'a.yml'))], cwd=str(tmp_path)).returncode == 0
    opt['train']['total_iter'] = 7
    opt['train']['scheduler']['periods'] = [2, 4]
    opt['logger']['save_checkpoint_freq'] = 7
    opt['train']['optim_g'].update(lr=2e-3, weight_decay=0.5, betas=[0.5, 0.9])  # the state: 1e-3, 0.01, (0.9, 0.999)
    result = basicsr(['train', '-opt', write_options(opt, str(tmp_path / 'b.yml')), '--auto_resume'], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]  # the state's periods [2, 2] would end at iteration 5
    assert "Scheduler 0 resumes with the option file's schedule, not the state's: periods: [2, 2] -> [2, 4]" \
        in result.stderr
    assert "Optimizer 0 (AdamW) resumes with the option file's settings, not the state's: betas: (0.9, 0.999) -> " \
        "(0.5, 0.9); weight_decay: 0.01 -> 0.5" in result.stderr  # they were silently the state's
    assert 'Optimizer 0 (AdamW): lr 0.002 in the option file, 0.001 in the state' in result.stderr
    assert 'Optimizer 1' not in result.stderr  # optim_mod did not change
    saved = torch.load(tmp_path / 'experiments' / 'extended' / 'training_states' / '7.state', weights_only=True)
    group = saved['optimizers'][0]['param_groups'][0]
    assert group['weight_decay'] == 0.5 and tuple(group['betas']) == (0.5, 0.9) and group['initial_lr'] == 1e-3
    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1e-3)
    scheduler = CosineAnnealingRestartCyclicLR(optimizer, **{k: v for k, v in opt['train']['scheduler'].items()
                                                             if k != 'type'})
    for _ in range(6):  # BasicSR steps the schedulers from the second iteration on
        optimizer.step()
        scheduler.step()
    assert saved['schedulers'][0]['last_epoch'] == 6
    assert saved['schedulers'][0]['_last_lr'] == pytest.approx(scheduler.get_last_lr())


def test_validation_and_test_report_every_source(tmp_path):
    opt = tiny_coic_options(name='val_run', total_iter=3, stage1_iter=1)
    opt['datasets']['val_again'] = dict(opt['datasets']['val'], name='val_again')  # the same file names
    opt['val']['save_img'] = True
    result = basicsr(['train', '-opt', write_options(opt, str(tmp_path / 'train.yml'))], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    for source in ('light', 'heavy', 'mist'):
        assert f'[{source}] (1 images)' in result.stderr
    shown = tmp_path / 'experiments' / 'val_run' / 'visualization'
    assert sorted(str(p.relative_to(shown)) for p in shown.rglob('light*.png')) == [
        'val/light/light_00000_rain/light_00000_rain_3.png', 'val_again/light/light_00000_rain/light_00000_rain_3.png']
    models = tmp_path / 'experiments' / 'val_run' / 'models'
    test_opt = {k: v for k, v in opt.items() if k not in ('train', 'logger')}
    photos = tmp_path / 'photos'  # a real-rain set without clean images, after one with them
    photos.mkdir()
    for i in range(2):
        cv2.imwrite(str(photos / f'rain{i}.png'), np.random.default_rng(i).integers(0, 256, (192, 208, 3), np.uint8))
    test_opt.update(name='val_run_test', datasets={
        'test_1': dict(opt['datasets']['val'], name='synthetic_test', bg_size=192),
        'test_2': {'name': 'photos', 'type': 'SingleImageDataset', 'dataroot_lq': str(photos),
                   'io_backend': {'type': 'disk'}}})
    test_opt['val'] = dict(test_opt['val'], metrics=dict(test_opt['val']['metrics'],
                                                         niqe={'type': 'calculate_niqe', 'crop_border': 0}))
    test_opt['path'] = {'pretrain_network_g': str(models / 'net_g_latest.pth'), 'param_key_g': 'params_ema',
                        'pretrain_network_enc': str(models / 'net_enc_latest.pth')}
    result = basicsr(['test', '-opt', write_options(test_opt, str(tmp_path / 'test.yml'))], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    table = json.loads((tmp_path / 'results' / 'val_run_test' / 'synthetic_test_metrics.json').read_text())
    assert set(table) == {'all', 'light', 'heavy', 'mist'} and table['all']['count'] == 3
    assert all('psnr' in row and 'psnr_input' in row and 'niqe' in row for row in table.values())
    assert (tmp_path / 'results' / 'val_run_test' / 'synthetic_test_metrics.md').is_file()
    table = json.loads((tmp_path / 'results' / 'val_run_test' / 'photos_metrics.json').read_text())
    assert table['all']['count'] == 2 and 'niqe' in table['all'] and 'niqe_input' in table['all']
    assert 'psnr' not in table['all']  # no clean image: full-reference metrics are left out, not scored against
    # the previous set's last clean image
    shown = tmp_path / 'results' / 'val_run_test' / 'visualization'
    assert (shown / 'synthetic_test' / 'mist' / 'mist_00000_rain_val_run_test.png').is_file()
    assert (shown / 'photos' / 'rain1_val_run_test.png').is_file()  # one folder for a set of one source

    test_opt['datasets'] = {'test_1': dict(opt['datasets']['val'], name='small')}  # NIQE needs larger images
    result = basicsr(['test', '-opt', write_options(test_opt, str(tmp_path / 'test.yml'))], cwd=str(tmp_path))
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
        "basicsr test: error: val.metrics.niqe (calculate_niqe) failed on 'small: light_00000_rain' (32x32)")


def test_ema_copy_follows_batchnorm_statistics(tmp_path):
    opt = in_memory(tiny_coic_options(coic=False), tmp_path)
    opt['network_g'] = {'type': 'CoICNet', 'context_dim': 16,
                        'backbone': {'type': 'RDMCNet', 'iterations': 1, 'widths': [4, 4, 4, 4, 4]}}
    model = build_model(opt)
    model.feed_data(next(iter(DataLoader(build_dataset(opt['datasets']['train']), batch_size=2))))
    model.optimize_parameters(1)
    trained = dict(model.net_g.named_buffers())
    ema = dict(model.net_g_ema.named_buffers())
    assert any('running_mean' in name for name in trained)
    assert all(torch.equal(ema[name], buffer) for name, buffer in trained.items())


def _train_four_iterations(opt: dict):
    set_random_seed(0)
    model = build_model(opt)
    batches = iter(DataLoader(build_dataset(opt['datasets']['train']), batch_size=2))
    for current_iter in range(1, 5):  # two iterations per stage
        set_random_seed(current_iter)  # the same crops and contrastive negatives in both runs
        model.feed_data(next(batches))
        model.optimize_parameters(current_iter)
    return model


def test_channels_last_option_trains_like_nchw_and_saves_ordinary_checkpoints(tmp_path):
    opt = in_memory(tiny_coic_options(total_iter=4, stage1_iter=2), tmp_path)
    nchw = _train_four_iterations(opt)
    channels_last = _train_four_iterations(dict(opt, channels_last=True))
    weight = channels_last.net_g.patch_embed.proj.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    for name, param in nchw.net_g.named_parameters():
        torch.testing.assert_close(dict(channels_last.net_g.named_parameters())[name], param, rtol=1e-3, atol=1e-5,
                                   msg=name)
    channels_last.test()
    nchw.test()
    torch.testing.assert_close(channels_last.output, nchw.output, rtol=1e-3, atol=1e-4)
    channels_last.save_network(channels_last.net_g, 'net_g', 4)
    plain = build_network(opt['network_g'])
    plain.load_state_dict(torch.load(tmp_path / 'experiments' / 'tiny_coic' / 'models' / 'net_g_4.pth',
                                     weights_only=True)['params'])
    torch.testing.assert_close(plain.patch_embed.proj.weight, weight, rtol=0, atol=0)

    with pytest.raises(ValueError, match='channels_last: expected true or false'):
        build_model(dict(opt, channels_last='yes'))


@pytest.mark.parametrize('train_changes, max_norm', [
    ({'grad_clip': None, 'use_grad_clip': True}, 0.01),  # Restormer's switch and norm
    ({'grad_clip': 0.5, 'use_grad_clip': True}, 0.5),
    ({'grad_clip': None}, float('inf')),
])
def test_restormer_use_grad_clip_clips_at_its_norm(train_changes, max_norm, tmp_path, monkeypatch):
    opt = in_memory(tiny_coic_options(total_iter=2, stage1_iter=1), tmp_path)
    opt['train'].update(train_changes)
    model = build_model(opt)
    norms, clip = [], torch.nn.utils.clip_grad_norm_

    def recording_clip(params, norm):
        norms.append(norm)
        return clip(params, norm)

    monkeypatch.setattr(torch.nn.utils, 'clip_grad_norm_', recording_clip)
    model.feed_data(next(iter(DataLoader(build_dataset(opt['datasets']['train']), batch_size=2))))
    model.optimize_parameters(1)
    assert norms == [max_norm]


def test_test_results_of_images_sharing_a_name_are_all_kept(tmp_path, monkeypatch):
    from coic_basicsr.test import main as test_main
    rng = np.random.default_rng(0)
    names = ['scene1/000.png', 'scene2/000.png', 'x.png', 'x.jpg']  # frames per scene; one stem, two formats
    for name in names:
        for side in ('gt', 'lq'):
            os.makedirs(tmp_path / side / osp.dirname(name), exist_ok=True)
            cv2.imwrite(str(tmp_path / side / name), rng.integers(0, 256, (32, 32, 3), np.uint8))
    opt = tiny_coic_options(name='same_names')
    opt['datasets'] = {'test_1': {'name': 'set', 'type': 'MixedRainDataset', 'global_size': 32, 'sources': [
        {'name': 'src', 'dataroot_gt': str(tmp_path / 'gt'), 'dataroot_lq': str(tmp_path / 'lq')}]}}
    opt['val']['save_img'] = True
    untrained_test_options(opt, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert test_main(['-opt', write_options(opt, str(tmp_path / 'test.yml'))]) == 0
    shown = tmp_path / 'results' / 'same_names' / 'visualization' / 'set' / 'src'
    assert sorted(str(p.relative_to(shown)) for p in shown.rglob('*.png')) == [
        'scene1/000_same_names.png', 'scene2/000_same_names.png', 'x_jpg_same_names.png', 'x_png_same_names.png']
    opt['datasets']['test_1']['skip_bad'] = 1  # a skipped test image would be replaced and scored twice
    with pytest.raises(ValueError, match=r'datasets.test.skip_bad: only for training'):
        build_dataset(dict(opt['datasets']['test_1'], phase='test'))


def _untrained_test_model(tmp_path, **network_g):
    opt = in_memory(tiny_coic_options(), tmp_path)
    opt['network_g'] = network_g or opt['network_g']
    opt = untrained_test_options(opt, tmp_path)
    opt['is_train'] = False
    return build_model(opt)


def test_the_test_time_code_comes_from_the_batchs_global_view_else_the_input_at_val_global_size(tmp_path):
    model = _untrained_test_model(tmp_path)
    torch.manual_seed(0)
    lq, view = torch.rand(1, 3, 40, 48), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        model.feed_data({'lq': lq, 'lq_global': view})
        torch.testing.assert_close(model.representation(), model.net_enc_key(view)[0])
        model.feed_data({'lq': lq})  # val.global_size: 32 (the default is 128)
        torch.testing.assert_close(model.representation(), model.net_enc_key(global_view(lq, 32))[0])


def test_testing_a_multi_stage_network_gives_its_final_stage(tmp_path):
    model = _untrained_test_model(tmp_path, type='CoICRCDNet', num_map=4, num_channel=4, num_block=1, num_stage=2,
                                  context_dim=16)
    torch.manual_seed(0)
    lq = torch.rand(1, 3, 24, 24)
    model.feed_data({'lq': lq})
    model.test()
    net = model.get_bare_model(model.net_g).eval()
    with torch.no_grad():
        stages = net(lq, model.representation())
    assert isinstance(stages, (list, tuple)) and not torch.allclose(stages[0], stages[-1])
    torch.testing.assert_close(model.output, stages[-1])


def test_an_image_the_network_cannot_take_is_named_in_the_error(tmp_path, monkeypatch, capsys):
    from coic_basicsr.test import main as test_main
    opt = tiny_coic_options(name='too_small')
    opt['network_g'] = {'type': 'CoICDGUNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4,
                        'reduction': 4, 'depth': 1, 'context_dim': 16}  # refuses inputs of 8 pixels or fewer
    opt['datasets'] = {'test_1': dict(opt['datasets']['val'], name='tiny_set', bg_size=8)}
    untrained_test_options(opt, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert test_main(['-opt', write_options(opt, str(tmp_path / 'test.yml'))]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "basicsr test: error: tiny_set: image 'light/light_00000_rain' (8x8): CoICDGUNet needs inputs larger than "
        '8x8 pixels, got 8x8')


def test_a_size_a_wrapped_swinir_cannot_take_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    from coic_basicsr.test import main as test_main
    opt = tiny_coic_options(name='swin_sizes')
    opt['network_g'] = {'type': 'CoICNet', 'context_dim': 16, 'backbone': {
        'type': 'SwinIR', 'upscale': 1, 'in_chans': 3, 'img_size': 16, 'window_size': 4, 'embed_dim': 8,
        'depths': [1], 'num_heads': [1], 'mlp_ratio': 1, 'upsampler': '', 'resi_connection': '1conv'}}
    opt['datasets'] = {'test_1': dict(opt['datasets']['val'], name='odd_set', bg_size=18)}  # windows do not divide
    untrained_test_options(opt, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert test_main(['-opt', write_options(opt, str(tmp_path / 'test.yml'))]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # was a RuntimeError traceback
    assert last.startswith("basicsr test: error: odd_set: image 'light/light_00000_rain' (18x18): RuntimeError: ")
    assert last.endswith('val.tile: {size: N, overlap: M} runs it in tiles of a size it takes)')


def test_testing_a_trained_coic_network_without_an_encoder_warns(tmp_path):
    import logging
    from basicsr.utils import get_root_logger
    from coic_basicsr.archs.modulation import KernelScaleGenerator
    opt = in_memory(tiny_coic_options(coic=False), tmp_path)
    opt.update(is_train=False)
    del opt['train']  # and no network_enc
    net = build_network(dict(opt['network_g']))
    torch.save({'params': net.state_dict()}, tmp_path / 'untrained.pth')
    next(m for m in net.modules() if isinstance(m, KernelScaleGenerator))[-1].bias.data.fill_(0.5)
    torch.save({'params': net.state_dict()}, tmp_path / 'trained.pth')
    warned = []
    handler = logging.Handler()
    handler.emit = lambda record: warned.append(record.getMessage()) if record.levelno >= logging.WARNING else None
    logger = get_root_logger()
    logger.addHandler(handler)
    try:
        for name in ('untrained', 'trained'):
            opt['path']['pretrain_network_g'] = str(tmp_path / f'{name}.pth')
            build_model(opt)
            assert any('no encoder (network_enc) is given' in w for w in warned) == (name == 'trained'), warned
    finally:
        logger.removeHandler(handler)


def test_a_test_logs_the_key_encoder_weights_it_loads(tmp_path):
    # the log named the query encoder's 'params', loaded and unused: a test's z comes from the key encoder
    import logging
    from basicsr.utils import get_root_logger
    opt = untrained_test_options(in_memory(tiny_coic_options(), tmp_path), tmp_path)
    opt['is_train'] = False
    enc = opt['path']['pretrain_network_enc']
    query, key = (build_network(dict(opt['network_enc'])).state_dict() for _ in range(2))
    torch.save({'params': query, 'params_key': key}, enc)
    logged = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logger = get_root_logger()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        model = build_model(opt)
        torch.save({'params': query}, enc)  # an encoder file without the key encoder's copy
        build_model(opt)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [m for m in logged if m.startswith('Loading CoICEncoder')] == [
        f'Loading CoICEncoder model from {enc}, with param key: [params_key].',
        f'Loading CoICEncoder model from {enc}, with param key: [params].']
    assert f"Loading: 'params_key' is not in {enc}, using 'params'." in logged
    for name, value in model.net_enc_key.state_dict().items():
        assert torch.equal(value, key[name]), name


def test_a_plain_backbone_checkpoint_loads_into_coicnet_like_into_the_backbone(tmp_path):
    import logging
    from basicsr.utils import get_root_logger
    edsr = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 1}
    torch.save({'params': build_network(dict(edsr)).state_dict()}, tmp_path / 'same.pth')
    torch.save({'params': build_network(dict(edsr, num_feat=16)).state_dict()}, tmp_path / 'wider.pth')
    opt = in_memory(tiny_coic_options(coic=False), tmp_path)
    opt['network_g'] = {'type': 'CoICNet', 'context_dim': 16, 'backbone': edsr}
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = get_root_logger()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        opt['path'].update(pretrain_network_g=str(tmp_path / 'same.pth'), strict_load_g=True)
        model = build_model(opt)
        loaded = torch.load(tmp_path / 'same.pth', weights_only=True)['params']
        assert torch.equal(model.net_g.backbone.conv_first.weight, loaded['conv_first.weight'])
        warned = [r.getMessage().strip() for r in records if r.levelno >= logging.WARNING]
        keys = [w for w in warned if not w.endswith(':')]  # BasicSR lists the keys one side lacks
        assert keys and all('.generator.' in k for k in keys), keys  # only the generators the plain file lacks
        opt['path'].update(pretrain_network_g=str(tmp_path / 'wider.pth'), strict_load_g=False)
        build_model(opt)  # BasicSR's non-strict loading: tensors of another size are skipped, with a warning
        assert any('Size different, ignore [backbone.conv_first.weight]' in r.getMessage() for r in records)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    opt['path']['strict_load_g'] = True
    with pytest.raises(ValueError, match=r"does not fit CoICNet: \d+ tensors differ in shape \(e.g. backbone\."):
        build_model(opt)
    plain = torch.load(tmp_path / 'same.pth', weights_only=True)
    plain['params']['weird.weight'] = torch.zeros(1)
    torch.save(plain, tmp_path / 'extra.pth')
    opt['path']['pretrain_network_g'] = str(tmp_path / 'extra.pth')
    with pytest.raises(ValueError, match=re.escape("does not fit CoICNet: 0 missing keys (e.g. []), 1 unexpected keys "
                                                   "(e.g. ['backbone.weird.weight'])")):
        build_model(opt)  # the generators a plain checkpoint lacks were listed as missing


@pytest.mark.parametrize('key', ['network_enc', 'optim_mod', 'scheduler_mod'])
def test_coic_sections_without_train_coic_are_refused(key, tmp_path):
    # they were ignored, and an untrained encoder was saved as net_enc_*.pth
    opt = in_memory(tiny_coic_options(coic=False), tmp_path)
    if key == 'network_enc':
        opt['network_enc'] = {'type': 'CoICEncoder', 'context_dim': 16, 'base_channels': 4}
    else:
        opt['train'][key] = dict(opt['train']['optim_g' if key == 'optim_mod' else 'scheduler'])
    where = key if key == 'network_enc' else f'train.{key}'
    with pytest.raises(ValueError) as err:
        build_model(opt)
    assert str(err.value) == (f'{where}: only used by CoIC training, which needs train.coic (e.g. '
                              '{stage1_iter: 40000}); add train.coic or remove it')
    from coic_basicsr.utils.option_values import check_coic_section
    check_coic_section({k: v for k, v in opt.items() if k != 'train'})  # a test option file keeps its network_enc
    (opt if key == 'network_enc' else opt['train'])[key] = None  # null, e.g. --force_yml network_enc=~: not set
    check_coic_section(opt)


def test_the_blur_of_the_detail_negatives_comes_from_train_coic(tmp_path):
    opt = in_memory(tiny_coic_options(), tmp_path)
    opt['train']['coic'].update(blur_kernel_size=5, blur_sigma=[0.5, 0.9])
    model = build_model(opt)
    assert (model.cri_con.blur_kernel_size, model.cri_con.blur_sigma) == (5, (0.5, 0.9))
    assert model.cri_con.num_detail_negatives == 2 and model.cri_con.archive_size == 8  # the other keys still pass


def test_the_epoch_advances_every_iters_per_epoch(tmp_path):
    # iteration i is logged (and its batch drawn) in epoch (i - 1) // iters_per_epoch
    opt = tiny_coic_options(name='ep', total_iter=6, stage1_iter=2)
    opt['logger']['save_checkpoint_freq'] = 100
    opt['datasets']['train']['num_per_source'] = 2  # fewer iterations per epoch than total_iter
    result = basicsr(['train', '-opt', write_options(opt, str(tmp_path / 'ep.yml'))], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    per_epoch = int(re.search(r'Iters per epoch: (\d+)', result.stderr).group(1))
    logged = [(int(e), int(i.replace(',', '')))
              for e, i in re.findall(r'\[epoch:\s*(\d+), iter:\s*([\d,]+)', result.stderr)]
    assert per_epoch < 6 and len(logged) == 6
    assert all(e == (i - 1) // per_epoch for e, i in logged), logged


def test_basicsr_test_skips_a_training_set_with_a_warning(tmp_path):
    opt = untrained_test_options(tiny_coic_options(name='te'), tmp_path)
    opt['datasets']['train']['phase'] = 'train'
    result = basicsr(['test', '-opt', write_options(opt, str(tmp_path / 'te.yml'))], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'datasets.train: a training set, not tested' in result.stderr
    assert 'Testing train' not in result.stderr and 'Testing val' in result.stderr


def _bare_portable_model():
    from basicsr.models.sr_model import SRModel
    from coic_basicsr.models.portable import PortableModelMixin

    class Bare(PortableModelMixin, SRModel):
        def __init__(self):  # load_network needs no options
            pass
    return Bare()


def test_load_network_strips_ddp_module_prefix_even_without_strict(tmp_path):
    torch.manual_seed(0)
    src, dst = torch.nn.Conv2d(3, 3, 3), torch.nn.Conv2d(3, 3, 3)
    torch.save({'params': {f'module.{k}': v for k, v in src.state_dict().items()}}, tmp_path / 'ddp.pth')
    _bare_portable_model().load_network(dst, str(tmp_path / 'ddp.pth'), strict=False)
    assert torch.equal(dst.weight, src.weight)


def test_load_network_falls_back_to_params_when_param_key_is_missing(tmp_path):
    torch.manual_seed(0)
    src, dst = torch.nn.Conv2d(3, 3, 3), torch.nn.Conv2d(3, 3, 3)
    torch.save({'params': src.state_dict()}, tmp_path / 'plain.pth')
    _bare_portable_model().load_network(dst, str(tmp_path / 'plain.pth'), strict=True, param_key='params_ema')
    assert torch.equal(dst.weight, src.weight)


def test_auto_resume_of_a_finished_run_validates_the_weights(tmp_path):
    # nothing was trained, so nothing "was validated above"
    opt = tiny_coic_options(name='fin', total_iter=3, stage1_iter=1, coic=False)
    opt['logger']['save_checkpoint_freq'] = 3  # a training state at the last iteration
    path = write_options(opt, str(tmp_path / 'fin.yml'))
    assert basicsr(['train', '-opt', path], cwd=str(tmp_path)).returncode == 0
    result = basicsr(['train', '-opt', path, '--auto_resume'], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'was validated above' not in result.stderr and 'Validation val' in result.stderr
