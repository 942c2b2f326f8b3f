"""`basicsr train/test` on a stock BasicSR option file (PairedImageDataset + MSRResNet), CPU."""
import glob
import logging
import warnings

import pytest
import torch

from coic_basicsr.train import create_dataloaders
from coic_basicsr.train import main as train_main
from helpers.run import basicsr
from helpers.stock import make_paired_folders, stock_sr_options, write_options


def _setup(tmp_path, **kwargs):
    make_paired_folders(str(tmp_path / 'data'))
    opt = stock_sr_options(str(tmp_path / 'data'), **kwargs)
    return opt, write_options(opt, str(tmp_path / 'train.yml'))


def test_help_lists_every_subcommand(tmp_path, capsys):
    from coic_basicsr.cli import SUBCOMMANDS, main
    result = basicsr(['--help'], cwd=str(tmp_path))
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert name in result.stdout
    with pytest.raises(SystemExit) as done:
        main(['test', '--help'])
    out = capsys.readouterr().out
    assert done.value.code == 0 and '-opt' in out and '--auto_resume' not in out  # accepted, does nothing


def test_train_writes_checkpoints_states_and_validates_then_test_reproduces(tmp_path):
    opt, opt_path = _setup(tmp_path)
    result = basicsr(['train', '-opt', opt_path], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    exp = tmp_path / 'experiments' / opt['name']
    assert sorted(p.name for p in (exp / 'models').iterdir()) == ['net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth']
    assert sorted(p.name for p in (exp / 'training_states').iterdir()) == ['2.state', '4.state']
    state = torch.load(exp / 'training_states' / '4.state', weights_only=True)  # plain, safe to load
    assert state['iter'] == 4
    assert 'Validation val' in result.stderr and '# psnr' in result.stderr
    # at 2 and 4; not again after the final save (BasicSR scores iteration 4 twice)
    assert result.stderr.count('Validation val') == 2 and 'skipped: iter 4 was validated above' in result.stderr
    assert glob.glob(str(tmp_path / 'tb_logger' / opt['name'] / 'events.*'))

    test_opt = {k: v for k, v in opt.items() if k not in ('train', 'logger')}
    test_opt['name'] = 'stock_test'
    test_opt['datasets'] = {'test_1': dict(opt['datasets']['val'], name='val_set')}
    test_opt['path'] = {'pretrain_network_g': str(exp / 'models' / 'net_g_latest.pth'), 'strict_load_g': True,
                        'param_key_g': 'params_ema'}
    test_opt['val']['suffix'] = 'out'
    result = basicsr(['test', '-opt', write_options(test_opt, str(tmp_path / 'test.yml'))], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert '# psnr' in result.stderr and '# ssim' in result.stderr
    saved = glob.glob(str(tmp_path / 'results' / 'stock_test' / 'visualization' / 'val_set' / '*_out.png'))
    assert len(saved) == 6
    del test_opt['val']['suffix']  # optional for us; BasicSR's SRModel read it (KeyError) when saving test images
    test_opt['name'] = 'stock_test_2'
    result = basicsr(['test', '-opt', write_options(test_opt, str(tmp_path / 'test.yml'))], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(glob.glob(str(tmp_path / 'results' / 'stock_test_2' / 'visualization' / 'val_set' / '*.png'))) == 6


def test_auto_resume_continues_and_matches_uninterrupted_run(tmp_path):
    opt, opt_path = _setup(tmp_path, name='full', total_iter=4)
    assert basicsr(['train', '-opt', opt_path], cwd=str(tmp_path)).returncode == 0
    opt['name'] = 'interrupted'
    opt_path = write_options(opt, str(tmp_path / 'interrupted.yml'))
    assert basicsr(['train', '-opt', opt_path], cwd=str(tmp_path)).returncode == 0
    exp = tmp_path / 'experiments' / 'interrupted'
    # simulate a kill right after the iteration-2 save, with a half-written state file left behind, and a damaged
    # newest state (a full disk, a bad copy): skipped
    for name in ('models/net_g_4.pth', 'models/net_g_latest.pth'):
        (exp / name).unlink()
    (exp / 'training_states' / '4.state.tmp').write_bytes(b'truncated')
    (exp / 'training_states' / '4.state').write_bytes(b'damaged')
    result = basicsr(['train', '-opt', opt_path, '--auto_resume'], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    skipped = f"--auto_resume: skipping checkpoint '{exp / 'training_states' / '4.state'}' cannot be loaded"
    assert skipped in result.stderr and skipped in max(exp.glob('train_*.log')).read_text()  # in the run's log too
    assert 'Resuming training from epoch: 0, iter: 2 ' in result.stderr
    resumed = torch.load(exp / 'models' / 'net_g_4.pth', weights_only=True)
    full = torch.load(tmp_path / 'experiments' / 'full' / 'models' / 'net_g_4.pth', weights_only=True)
    for key in ('params', 'params_ema'):
        for name, tensor in full[key].items():
            assert torch.allclose(resumed[key][name], tensor, atol=1e-6), (key, name)


def test_a_run_without_manual_seed_resumes_with_the_seed_it_drew(tmp_path):
    opt, _ = _setup(tmp_path, name='seedless', total_iter=4)
    del opt['manual_seed']
    opt_path = write_options(opt, str(tmp_path / 'train.yml'))
    assert basicsr(['train', '-opt', opt_path], cwd=str(tmp_path)).returncode == 0
    exp = tmp_path / 'experiments' / 'seedless'
    full = torch.load(exp / 'models' / 'net_g_4.pth', weights_only=True)
    drawn = torch.load(exp / 'training_states' / '2.state', weights_only=True)['manual_seed']
    for name in ('training_states/4.state', 'models/net_g_4.pth', 'models/net_g_latest.pth'):
        (exp / name).unlink()
    result = basicsr(['train', '-opt', opt_path, '--auto_resume'], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Set manual_seed to the resumed run's {drawn}" in result.stderr  # logged: also in the run's log file
    resumed = torch.load(exp / 'models' / 'net_g_4.pth', weights_only=True)
    for name, tensor in full['params'].items():  # the same crops as the interrupted run drew
        assert torch.allclose(resumed['params'][name], tensor, atol=1e-6), name


def test_path_resume_state_forks_another_run_under_a_new_name(tmp_path):
    opt, opt_path = _setup(tmp_path, name='origin', total_iter=4)
    assert basicsr(['train', '-opt', opt_path], cwd=str(tmp_path)).returncode == 0
    origin = tmp_path / 'experiments' / 'origin'
    opt['name'] = 'fork'
    opt['path']['resume_state'] = str(origin / 'training_states' / '2.state')
    result = basicsr(['train', '-opt', write_options(opt, str(tmp_path / 'fork.yml'))], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Set pretrain_network_g to {origin / 'models' / 'net_g_2.pth'}" in result.stdout  # weights of the state
    fork = torch.load(tmp_path / 'experiments' / 'fork' / 'models' / 'net_g_4.pth', weights_only=True)
    full = torch.load(origin / 'models' / 'net_g_4.pth', weights_only=True)
    for name, tensor in full['params'].items():
        assert torch.allclose(fork['params'][name], tensor, atol=1e-6), name
    assert (tmp_path / 'experiments' / 'fork' / 'training_states' / '4.state').is_file()
    # --auto_resume in a run with no states of its own yet starts from path.resume_state (BasicSR: from scratch)
    opt['name'] = 'requeued_fork'
    result = basicsr(['train', '-opt', write_options(opt, str(tmp_path / 'fork2.yml')), '--auto_resume'],
                     cwd=str(tmp_path))
    assert result.returncode == 0 and 'Start training from epoch: 0, iter: 2' in result.stderr, result.stderr[-3000:]


def test_coic_model_validates_a_super_resolution_option_file(tmp_path):
    # CoICModel without train.coic is a plain restoration model; at scale 2 the input cannot be scored against gt
    opt, _ = _setup(tmp_path, name='sr_with_coic_model')
    opt['model_type'] = 'CoICModel'
    result = basicsr(['train', '-opt', write_options(opt, str(tmp_path / 'sr.yml'))], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert '[all] (6 images) psnr: ' in result.stderr and 'psnr_input' not in result.stderr


def test_user_errors_are_one_clear_line(tmp_path, monkeypatch, capsys):
    opt, opt_path = _setup(tmp_path)
    result = basicsr(['train', '-opt', str(tmp_path / 'missing.yml')], cwd=str(tmp_path))  # the console script
    assert result.returncode == 2 and 'missing.yml' in result.stderr and 'Traceback' not in result.stderr

    def train_error(name, *extra):  # the same entry point in this process: no interpreter start-up per case
        code = train_main(['-opt', write_options(opt, str(tmp_path / name)), *extra])
        err = capsys.readouterr().err
        assert code == 2 and 'Traceback' not in err, err[-2000:]
        return err.strip().splitlines()[-1]

    monkeypatch.chdir(tmp_path)
    opt['network_g']['type'] = 'NoSuchNet'
    assert "network_g: type 'NoSuchNet' is not registered" in train_error('bad_type.yml')
    opt['network_g']['type'] = 'MSRResNet'
    opt['datasets']['train']['dataroot_gt'] = str(tmp_path / 'nowhere')
    line = train_error('bad_root.yml')
    assert 'datasets.train.dataroot_gt' in line and 'nowhere' in line
    opt['datasets']['train']['dataroot_gt'] = str(tmp_path / 'data' / 'gt')
    assert 'train:no_such_key' in train_error('train.yml', '--force_yml', 'train:no_such_key=1')


def test_a_gpu_option_file_on_the_cpu_does_not_pin_memory(tmp_path):
    make_paired_folders(str(tmp_path / 'data'))
    opt = stock_sr_options(str(tmp_path / 'data'))
    opt.update(dist=False, rank=0, world_size=1, num_gpu=0, is_train=True)
    for phase, dataset in opt['datasets'].items():
        dataset.update(phase=phase, scale=opt['scale'], pin_memory=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        train_loader, _, val_loaders, _, _ = create_dataloaders(opt, logging.getLogger('test'))
        next(iter(train_loader))
    assert not train_loader.pin_memory and not val_loaders[0].pin_memory
    assert not [w for w in caught if 'pin_memory' in str(w.message)]


def test_cpu_prefetch_without_workers_warns_that_the_run_is_not_reproducible(tmp_path, caplog):
    make_paired_folders(str(tmp_path / 'data'))
    opt = stock_sr_options(str(tmp_path / 'data'))
    opt.update(dist=False, rank=0, world_size=1, num_gpu=0, is_train=True)
    for phase, dataset in opt['datasets'].items():
        dataset.update(phase=phase, scale=opt['scale'])
    for workers, warned in ((1, False), (0, True)):
        opt['datasets']['train'].update(prefetch_mode='cpu', num_worker_per_gpu=workers)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger='test'):
            create_dataloaders(opt, logging.getLogger('test'))
        assert any('num_worker_per_gpu >= 1' in r.getMessage() for r in caplog.records) == warned
