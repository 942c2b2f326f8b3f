"""Non-finite steps, SIGTERM mid-run, a failing rank: nothing lost, nothing hangs."""
import os
import signal
import socket
import subprocess
import time
from os import path as osp

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataset
from torch.utils.data import DataLoader

from coic_basicsr.models.portable import build_model
from coic_basicsr.utils.errors import NonFiniteTrainingError
from coic_basicsr.utils.signals import GracefulStop
from helpers.coic import in_memory, tiny_coic_options
from helpers.run import BIN, basicsr, torchrun
from helpers.stock import write_options


def test_non_finite_steps_are_skipped_then_abort(tmp_path):
    opt = in_memory(tiny_coic_options(total_iter=10, stage1_iter=5), tmp_path)
    opt['train']['max_nonfinite_steps'] = 3
    model = build_model(opt)
    batch = next(iter(DataLoader(build_dataset(opt['datasets']['train']), batch_size=2)))
    before = [p.detach().clone() for p in model.net_g.parameters()]
    batch['lq'][0, 0, 0, 0] = float('nan')
    for current_iter in (1, 2):
        model.feed_data(batch)
        model.optimize_parameters(current_iter)
        assert model.get_current_log()['nonfinite_steps'] == current_iter
    assert all(torch.equal(b, p) for b, p in zip(before, model.net_g.parameters()))  # no update with NaN
    model.feed_data(batch)
    with pytest.raises(NonFiniteTrainingError, match='max_nonfinite_steps'):
        model.optimize_parameters(3)


def test_the_state_saved_when_non_finite_steps_abort_is_labelled_with_its_schedulers_iteration(tmp_path):
    opt = tiny_coic_options(name='diverge', total_iter=20, stage1_iter=10)
    opt['train'].update(max_nonfinite_steps=3, grad_clip=None, warmup_iter=None)  # null: the default, no warm-up
    opt['train']['optim_g']['lr'] = 1e30  # the first update makes every later loss non-finite
    opt['logger']['save_checkpoint_freq'] = 100
    result = basicsr(['train', '-opt', write_options(opt, str(tmp_path / 'diverge.yml'))], cwd=str(tmp_path))
    assert result.returncode == 2 and 'Non-finite training at iter 4' in result.stderr, result.stderr[-2000:]
    state = torch.load(tmp_path / 'experiments' / 'diverge' / 'training_states' / '4.state', weights_only=False)
    # it was saved as 3.state with the schedulers one step further: a resumed run ran each iteration at the next one's
    # learning rate
    assert state['iter'] == 4
    assert state['schedulers'] and all(s['last_epoch'] == 3 for s in state['schedulers'])


@pytest.mark.parametrize('signum, workers', [(signal.SIGTERM, 0), (signal.SIGTERM, 1), (signal.SIGINT, 1)])
def test_a_stop_signal_saves_state_and_auto_resume_finishes(tmp_path, signum, workers):
    # sent to the process group, as torchrun, timeout, SLURM and Ctrl-C do: the loader workers get it too
    opt = tiny_coic_options(name='sig', total_iter=400, stage1_iter=2)
    opt['logger'].update(save_checkpoint_freq=1000, print_freq=1)
    opt['val']['val_freq'] = 1000
    opt['datasets']['train']['num_worker_per_gpu'] = workers
    opt_path = write_options(opt, str(tmp_path / 'sig.yml'))
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    proc = subprocess.Popen([osp.join(BIN, 'basicsr'), 'train', '-opt', opt_path], cwd=str(tmp_path), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stderr:
        if 'iter:       3,' in line:
            os.killpg(proc.pid, signum)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 128 + signum, rest[-2000:]
    states = os.listdir(tmp_path / 'experiments' / 'sig' / 'training_states')
    assert len(states) == 1 and int(states[0].split('.')[0]) >= 3
    saved_iter = int(states[0].split('.')[0])
    result = basicsr(['train', '-opt', opt_path, '--auto_resume', '--force_yml', f'train:total_iter={saved_iter + 2}'],
                     cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f'iter: {saved_iter} ' in result.stderr
    assert (tmp_path / 'experiments' / 'sig' / 'models' / 'net_g_latest.pth').is_file()


@pytest.mark.parametrize('persistent', [False, True])
def test_training_with_prefetching_loader_workers_ends(tmp_path, persistent):
    # it hung after training (leftover workers ignored Python's SIGTERM at exit); with persistent workers two prefetch
    # threads read one iterator and training stopped at the first epoch's end
    opt = tiny_coic_options(name='prefetch', total_iter=8, stage1_iter=2)  # 6 iterations per epoch: ends mid-epoch
    opt['datasets']['train'].update(num_worker_per_gpu=1, prefetch_mode='cpu', persistent_workers=persistent)
    opt['val']['val_freq'] = 1000
    result = basicsr(['train', '-opt', write_options(opt, str(tmp_path / 'prefetch.yml'))], cwd=str(tmp_path),
                     timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr and 'End of training' in result.stderr, result.stderr[-3000:]


def test_repeated_stop_signals_close_together_are_one_stop(monkeypatch):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job starts ignoring it
    try:
        _stop_signals_close_together_are_one_stop(monkeypatch)
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_signals_close_together_are_one_stop(monkeypatch):
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)  # torchrun's SIGTERM right after the terminal's Ctrl-C
        assert stop.requested() == signal.SIGINT
        monkeypatch.setattr(GracefulStop, 'REPEAT_AFTER_S', 0.0)
        with pytest.raises(KeyboardInterrupt):  # a later, deliberate second Ctrl-C stops at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_to_torchrun_with_loader_workers_saves_a_state(tmp_path):
    # torchrun signals each rank's process group, loader workers included, and each rank twice
    opt = tiny_coic_options(name='sigddp', total_iter=400, stage1_iter=2)
    opt['logger'].update(save_checkpoint_freq=1000, print_freq=1)
    opt['val']['val_freq'] = 1000
    opt['datasets']['train']['num_worker_per_gpu'] = 1
    opt_path = write_options(opt, str(tmp_path / 'sig.yml'))
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    proc = subprocess.Popen([osp.join(BIN, 'torchrun'), '--nproc_per_node=2', f'--master_port={_free_port()}', '-m',
                             'coic_basicsr.train', '-opt', opt_path, '--launcher', 'pytorch'], cwd=str(tmp_path),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if 'iter:       3,' in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    assert 'Signal 15 received' in rest and 'RuntimeError' not in rest, rest[-3000:]
    states = os.listdir(tmp_path / 'experiments' / 'sigddp' / 'training_states')
    assert len(states) == 1 and int(states[0].split('.')[0]) >= 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_a_failing_rank_ends_the_whole_job_quickly(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ('gt', 'lq'):
        os.makedirs(tmp_path / folder)
    for i in range(8):
        img = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / 'gt' / f'{i}.png'), img)
        cv2.imwrite(str(tmp_path / 'lq' / f'{i}.png'), img)
    for i in range(8):
        if i != 0:
            (tmp_path / 'lq' / f'{i}.png').write_bytes(b'not an image')  # every rank soon meets a corrupt file
    opt = tiny_coic_options(name='fail', total_iter=50, stage1_iter=2)
    opt['datasets']['train'] = {'name': 'train', 'type': 'MixedRainDataset', 'gt_size': 16, 'global_size': 16,
                                'sources': [{'name': 'src', 'dataroot_gt': str(tmp_path / 'gt'),
                                             'dataroot_lq': str(tmp_path / 'lq')}],
                                'num_worker_per_gpu': 0, 'batch_size_per_gpu': 1}
    opt_path = write_options(opt, str(tmp_path / 'fail.yml'))
    start = time.time()
    result = torchrun(2, ['-m', 'coic_basicsr.train', '-opt', opt_path, '--launcher', 'pytorch'], cwd=str(tmp_path),
                      port=_free_port(), timeout=240)
    assert result.returncode != 0
    assert time.time() - start < 180
    assert "basicsr train: error: datasets.train.sources[0] (name 'src')" in result.stderr


def test_kill_9_then_auto_resume_matches_an_uninterrupted_run(tmp_path):
    opt = tiny_coic_options(name='full9', total_iter=6, stage1_iter=2)
    opt['val']['val_freq'] = 1000
    assert basicsr(['train', '-opt', write_options(opt, str(tmp_path / 'full.yml'))], cwd=str(tmp_path)).returncode == 0
    opt['name'] = 'killed'
    opt_path = write_options(opt, str(tmp_path / 'killed.yml'))
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    proc = subprocess.Popen([osp.join(BIN, 'basicsr'), 'train', '-opt', opt_path], cwd=str(tmp_path), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if 'iter:       3,' in line:  # the state of iteration 2 is on disk, iteration 4's is not yet
            proc.kill()
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    exp = tmp_path / 'experiments' / 'killed'
    saved = sorted(int(name.split('.')[0]) for name in os.listdir(exp / 'training_states'))
    assert saved and saved[-1] < 6  # killed mid-run (normally right after the iteration-2 save)
    unfinished = [exp / 'models' / 'net_g_4.pth.tmp', exp / 'training_states' / '4.state.tmp',
                  exp / 'models' / 'net_g_3.pth.tmp', exp / 'training_states' / '3.state.tmp']  # 3: never saved again
    for path in unfinished + [exp / 'models' / 'notes.tmp']:  # what a kill during atomic_save leaves (+ not ours)
        path.write_bytes(b'partial')
    result = basicsr(['train', '-opt', opt_path, '--auto_resume'], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f'iter: {saved[-1]} ' in result.stderr
    assert not any(path.exists() for path in unfinished) and (exp / 'models' / 'notes.tmp').exists()
    assert f"Removed {unfinished[1]}: a save that the interrupted run did not finish" in result.stderr
    resumed = torch.load(exp / 'models' / 'net_g_6.pth', weights_only=True)
    full = torch.load(tmp_path / 'experiments' / 'full9' / 'models' / 'net_g_6.pth', weights_only=True)
    for key, tensors in full.items():
        for name, tensor in tensors.items():
            assert torch.allclose(resumed[key][name], tensor, atol=1e-6), (key, name)


def test_damaged_or_foreign_state_files_are_one_line_errors(tmp_path):
    from coic_basicsr.utils.checkpoint import latest_training_state, load_checkpoint, load_training_state
    states = tmp_path / 'training_states'
    states.mkdir()
    torch.save({'iter': 1, 'epoch': 0}, states / '1.state')  # an older loadable state: not the one taken
    torch.save({'iter': 2, 'epoch': 0}, states / '2.state')
    (states / '4.state').write_bytes(b'')  # a full disk: empty, torch's EOFError has no message
    torch.save({'weights': 1}, states / '6.state')  # loads, but is no training state
    for name, reason in (('4.state', r'cannot be loaded: not a PyTorch checkpoint \(an empty file\)'),
                         ('6.state', "is not a training state")):
        with pytest.raises(ValueError, match=f"checkpoint '.*{name}' {reason}"):
            load_training_state(str(states / name))
    with pytest.raises(ValueError, match=r'cannot be loaded: not a PyTorch checkpoint \(an empty file\)'):
        load_checkpoint(str(states / '4.state'))
    path, state = latest_training_state(str(states))  # the newest that is a training state
    assert path == str(states / '2.state') and state['iter'] == 2


class NotAllowedByWeightsOnly:
    """A class ``torch.load(weights_only=True)`` refuses to build."""


def test_a_file_that_is_no_checkpoint_is_named_so_and_a_refused_class_is_unsafe(tmp_path):
    from coic_basicsr.utils.checkpoint import load_checkpoint
    torch.save({'params': {'weight': torch.zeros(64, 64)}}, tmp_path / 'real.pth')
    data = (tmp_path / 'real.pth').read_bytes()
    (tmp_path / 'truncated.pth').write_bytes(data[:len(data) // 2])  # an interrupted copy
    (tmp_path / 'junk.pth').write_text('junk\n')  # was "cannot be loaded safely: 174812789", torch's bare KeyError
    (tmp_path / 'empty.pth').write_bytes(b'')
    torch.save({'params': {'weight': torch.zeros(64, 64)}}, tmp_path / 'legacy.pth',
               _use_new_zipfile_serialization=False)  # the format before PyTorch 1.6
    (tmp_path / 'legacy_truncated.pth').write_bytes((tmp_path / 'legacy.pth').read_bytes()[:-100])
    for name, reason in (('truncated.pth', 'a truncated, damaged or foreign zip archive'),
                         ('junk.pth', 'neither a zip archive nor a pickle'), ('empty.pth', 'an empty file'),
                         ('legacy_truncated.pth', 'a truncated, damaged or foreign pickle')):
        with pytest.raises(ValueError) as err:
            load_checkpoint(str(tmp_path / name))
        assert str(err.value) == (f"checkpoint '{tmp_path / name}' cannot be loaded: not a PyTorch checkpoint "
                                  f'({reason})')
    assert load_checkpoint(str(tmp_path / 'legacy.pth'))['params']['weight'].shape == (64, 64)
    torch.save({'params': NotAllowedByWeightsOnly()}, tmp_path / 'unsafe.pth')
    with pytest.raises(ValueError) as err:
        load_checkpoint(str(tmp_path / 'unsafe.pth'))
    refused = f'{__name__}.NotAllowedByWeightsOnly'
    assert str(err.value) == f"checkpoint '{tmp_path / 'unsafe.pth'}' cannot be loaded safely: " + (
        f'Unsupported global: GLOBAL {refused} was not an allowed global by default'
        if 'Unsupported global' in str(err.value) else f'Unsupported class {refused}')  # torch < 2.4 says this


def test_a_class_refused_by_torch_before_2_4_is_unsafe_not_damage(tmp_path, monkeypatch):
    import pickle
    from coic_basicsr.utils.checkpoint import load_checkpoint

    def refuse(*args, **kwargs):  # torch 2.1-2.3's text: an UnpicklingError, no "Unsupported global"
        raise pickle.UnpicklingError('Weights only load failed. Re-running `torch.load` with `weights_only` set to '
                                     '`False` will likely succeed, but it can result in arbitrary code execution.Do it '
                                     'only if you get the file from a trusted source. WeightsUnpickler error: '
                                     'Unsupported class numpy.core.multiarray.scalar')
    torch.save({'params': {'weight': torch.zeros(2)}}, tmp_path / 'np.pth')  # a complete zip: not damage
    monkeypatch.setattr(torch, 'load', refuse)
    with pytest.raises(ValueError) as err:
        load_checkpoint(str(tmp_path / 'np.pth'))
    assert str(err.value) == (f"checkpoint '{tmp_path / 'np.pth'}' cannot be loaded safely: Unsupported class "
                              'numpy.core.multiarray.scalar')


def test_a_loader_worker_ends_on_a_stop_signal_two_seconds_after_the_first(monkeypatch):
    # a close second signal in between does not restart the clock
    from coic_basicsr.utils.signals import StopSignalsIgnored
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    clock = [100.0]
    monkeypatch.setattr(time, 'monotonic', lambda: clock[0])

    def fake_exit(code):
        raise SystemExit(code)
    monkeypatch.setattr(os, '_exit', fake_exit)
    try:
        StopSignalsIgnored()(0)
        handler = signal.getsignal(signal.SIGTERM)
        handler(signal.SIGTERM, None)  # ignored
        clock[0] = 101.0
        handler(signal.SIGTERM, None)  # 1 s after the first: ignored
        clock[0] = 102.5
        with pytest.raises(SystemExit):
            handler(signal.SIGTERM, None)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def test_a_complete_checkpoint_that_fails_to_load_for_another_reason_is_not_called_damaged(tmp_path, monkeypatch):
    # a RuntimeError about something else (a device, memory) says nothing about the file: its own message is shown
    from coic_basicsr.utils.checkpoint import load_checkpoint
    torch.save({'params': {'weight': torch.zeros(2)}}, tmp_path / 'net.pth')  # a complete zip

    def out_of_memory(*args, **kwargs):
        raise RuntimeError('CUDA out of memory')

    monkeypatch.setattr(torch, 'load', out_of_memory)
    with pytest.raises(ValueError) as err:
        load_checkpoint(str(tmp_path / 'net.pth'))
    assert str(err.value) == f"checkpoint '{tmp_path / 'net.pth'}' cannot be loaded: CUDA out of memory"
