"""The GPU path (CUDA device, CUDA prefetcher; nccl with 2 GPUs) — runs only where CUDA is available."""
import socket

import pytest
import torch

from helpers.run import basicsr, torchrun
from helpers.stock import make_paired_folders, stock_sr_options, write_options

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA is not available')


@needs_cuda
def test_train_on_gpu_with_cuda_prefetcher_and_resume(tmp_path):
    make_paired_folders(str(tmp_path / 'data'))
    opt = stock_sr_options(str(tmp_path / 'data'), name='gpu_run')
    opt['datasets']['train'].update(prefetch_mode='cuda', pin_memory=True)
    path = write_options(opt, str(tmp_path / 'gpu.yml'))
    result = basicsr(['train', '-opt', path], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(tmp_path / 'experiments' / 'gpu_run' / 'training_states' / '4.state', weights_only=True)
    assert state['iter'] == 4
    result = basicsr(['train', '-opt', path, '--auto_resume', '--force_yml', 'train:total_iter=6'], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='nccl test needs 2 GPUs')
def test_torchrun_nccl_two_gpus(tmp_path):
    make_paired_folders(str(tmp_path / 'data'), count=8)
    opt = stock_sr_options(str(tmp_path / 'data'), name='nccl_run')
    opt['dist_params'] = {'backend': 'nccl'}
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    result = torchrun(2, ['-m', 'coic_basicsr.train', '-opt', write_options(opt, str(tmp_path / 'n.yml')),
                          '--launcher', 'pytorch'], cwd=str(tmp_path), port=port)
    assert result.returncode == 0, result.stderr[-3000:]
