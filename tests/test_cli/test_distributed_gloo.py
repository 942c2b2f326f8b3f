"""Real 2-process gloo runs on CPU: torchrun end to end, and in-process checks of sharding, DDP and loss reduction."""
import logging
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers.run import torchrun
from helpers.stock import make_paired_folders, stock_sr_options, write_options


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_gloo_completes(tmp_path):
    make_paired_folders(str(tmp_path / 'data'), count=8)
    opt = stock_sr_options(str(tmp_path / 'data'), name='ddp_run')
    opt_path = write_options(opt, str(tmp_path / 'train.yml'))
    result = torchrun(2, ['-m', 'coic_basicsr.train', '-opt', opt_path, '--launcher', 'pytorch'], cwd=str(tmp_path),
                      port=_free_port())
    assert result.returncode == 0, result.stderr[-3000:]
    models = tmp_path / 'experiments' / 'ddp_run' / 'models'
    assert (models / 'net_g_latest.pth').is_file() and (models / 'net_g_4.pth').is_file()
    assert 'World size: 2' in result.stderr and 'Validation val' in result.stderr


def test_torchrun_auto_resume_on_two_processes_matches_the_uninterrupted_run(tmp_path):
    make_paired_folders(str(tmp_path / 'data'), count=16)  # 4 iterations per epoch: the resume is mid-epoch
    opt = stock_sr_options(str(tmp_path / 'data'), name='ddp_resume')
    opt['logger']['save_checkpoint_freq'] = 2
    opt['datasets']['train']['num_worker_per_gpu'] = 1  # random crops and flips made in a loader worker per rank
    opt_path = write_options(opt, str(tmp_path / 'train.yml'))
    args = ['-m', 'coic_basicsr.train', '-opt', opt_path, '--launcher', 'pytorch']
    assert torchrun(2, args, cwd=str(tmp_path), port=_free_port()).returncode == 0
    exp = tmp_path / 'experiments' / 'ddp_resume'
    uninterrupted = torch.load(exp / 'models' / 'net_g_4.pth', weights_only=True)
    for name in ('training_states/4.state', 'models/net_g_4.pth', 'models/net_g_latest.pth'):
        (exp / name).unlink()  # as if both ranks were killed after the iteration-2 save
    result = torchrun(2, args + ['--auto_resume'], cwd=str(tmp_path), port=_free_port())
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Resuming training from epoch: 0, iter: 2 (2 batches of the epoch already consumed)' in result.stderr
    assert 'World size: 2' in result.stderr
    resumed = torch.load(exp / 'models' / 'net_g_4.pth', weights_only=True)
    for key, tensors in uninterrupted.items():
        for name, tensor in tensors.items():
            torch.testing.assert_close(resumed[key][name], tensor, rtol=0, atol=1e-6, msg=f'{key}.{name}')


def _worker(rank: int, port: int, data_root: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE='2', LOCAL_RANK=str(rank))
    from coic_basicsr.models.portable import build_model
    from coic_basicsr.train import create_dataloaders
    from coic_basicsr.utils.dist import init_dist

    device = init_dist('pytorch', backend='gloo')
    opt = stock_sr_options(data_root)
    opt.update(dist=True, rank=rank, world_size=2, num_gpu=0, is_train=True, device=str(device))
    for phase, dataset in opt['datasets'].items():
        dataset['phase'] = phase
        dataset['scale'] = opt['scale']
    opt['path'].update(models=out_dir, training_states=out_dir)
    train_loader, sampler, _, _, _ = create_dataloaders(opt, logging.getLogger('test'))
    sampler.set_epoch(0)
    seen = [path for batch in train_loader for path in batch['lq_path']]
    everyone = [None, None]
    dist.all_gather_object(everyone, seen)

    model = build_model(opt)
    model.feed_data(next(iter(train_loader)))
    model.optimize_parameters(1)
    flat = torch.cat([p.detach().flatten() for p in model.get_bare_model(model.net_g).parameters()])
    flats = [torch.zeros_like(flat) for _ in range(2)]
    dist.all_gather(flats, flat)
    reduced = model.reduce_loss_dict({'l_test': torch.tensor(float(rank + 1))})
    torch.save({'seen': everyone, 'same_params': torch.equal(flats[0], flats[1]), 'reduced': reduced,
                'ddp': type(model.net_g).__name__}, os.path.join(out_dir, f'rank{rank}.pt'))
    dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_two_ranks_disjoint_data_synchronised_ddp_and_reduced_losses(tmp_path):
    make_paired_folders(str(tmp_path / 'data'), count=8)
    mp.spawn(_worker, args=(_free_port(), str(tmp_path / 'data'), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / 'rank0.pt', weights_only=False)
    seen0, seen1 = rank0['seen']
    assert len(seen0) == len(seen1) == 4 and not set(seen0) & set(seen1)  # disjoint, together the whole epoch
    assert len(set(seen0) | set(seen1)) == 8
    assert rank0['ddp'] == 'DistributedDataParallel' and rank0['same_params']
    assert rank0['reduced']['l_test'] == pytest.approx(1.5)  # mean of 1 and 2 on rank 0


def _seed_worker(rank: int, port: int, opt_path: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE='2',
                      LOCAL_RANK=str(rank))
    from coic_basicsr.utils.options import parse_options

    opt, _ = parse_options(['-opt', opt_path, '--launcher', 'pytorch'], out_dir, is_train=True)
    seeds = [None, None]
    dist.all_gather_object(seeds, opt['manual_seed'])
    torch.save(seeds, os.path.join(out_dir, f'seeds{rank}.pt'))
    dist.barrier()  # then exit, as basicsr train does: destroy_process_group() here hung a rank on torch 2.1.2


@pytest.mark.timeout(300)
def test_ranks_share_the_manual_seed_drawn_when_the_option_file_has_none(tmp_path):
    # MixedDatasetSampler derives its epoch plans from manual_seed on every rank: they must agree
    opt = stock_sr_options(str(tmp_path / 'data'))
    opt.pop('manual_seed', None)
    opt_path = write_options(opt, str(tmp_path / 'train.yml'))
    mp.spawn(_seed_worker, args=(_free_port(), opt_path, str(tmp_path)), nprocs=2, join=True)
    seeds = torch.load(tmp_path / 'seeds1.pt', weights_only=True)
    assert seeds[0] == seeds[1] and 1 <= seeds[0] <= 10000


def _encoder_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE='2',
                      LOCAL_RANK=str(rank))
    from coic_basicsr.models.portable import build_model
    from coic_basicsr.utils.dist import init_dist
    from helpers.coic import in_memory, tiny_coic_options

    init_dist('pytorch', backend='gloo')
    torch.manual_seed(rank)  # the training entry seeds manual_seed + rank: every rank draws its own weights
    opt = in_memory(tiny_coic_options(), out_dir)
    opt.update(dist=True, rank=rank, world_size=2, num_gpu=0)
    model = build_model(opt)
    same = {}
    for name in ('net_g', 'net_enc', 'net_enc_key'):
        flat = torch.cat([t.detach().flatten() for t in model.get_bare_model(getattr(model, name)).state_dict().values()])
        flats = [torch.zeros_like(flat) for _ in range(2)]
        dist.all_gather(flats, flat)
        same[name] = torch.equal(flats[0], flats[1])
    torch.save(same, os.path.join(out_dir, f'same{rank}.pt'))
    dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_ranks_start_from_the_same_query_and_momentum_key_encoders(tmp_path):
    # the key encoder was copied before DDP broadcast rank 0's encoder: rank 1 kept its own random one
    mp.spawn(_encoder_worker, args=(_free_port(), tmp_path), nprocs=2, join=True)
    assert torch.load(tmp_path / 'same1.pt', weights_only=True) == {'net_g': True, 'net_enc': True,
                                                                     'net_enc_key': True}


def test_torchrun_without_launcher_pytorch_is_refused_before_any_folder_is_made(tmp_path):
    # each process ran the whole job alone and archived the other's experiment folder
    make_paired_folders(str(tmp_path / 'data'), count=8)
    opt_path = write_options(stock_sr_options(str(tmp_path / 'data'), name='nolaunch'), str(tmp_path / 'train.yml'))
    result = torchrun(2, ['-m', 'coic_basicsr.train', '-opt', opt_path], cwd=str(tmp_path), port=_free_port())
    assert result.returncode != 0
    assert 'basicsr train: error: --launcher: none, but this is one of 2 processes' in result.stderr
    assert not (tmp_path / 'experiments').exists()


class _SlowValidationModel:
    """Rank 0 validates for longer than dist_params.timeout; the others wait for it."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def validation(self, *args) -> None:
        if self.rank == 0:
            import time
            time.sleep(3)


def _validation_wait_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE='2',
                      LOCAL_RANK=str(rank))
    from coic_basicsr.train import validate
    from coic_basicsr.utils.dist import init_dist

    init_dist('pytorch', backend='gloo', timeout_s=1)
    validate(_SlowValidationModel(rank), [None], 1, None, {'val': {}})
    flag = torch.ones(1)
    dist.all_reduce(flag)  # training collectives keep dist_params.timeout
    torch.save(float(flag), os.path.join(out_dir, f'after{rank}.pt'))
    dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_ranks_wait_for_a_validation_longer_than_the_collective_timeout(tmp_path):
    # the waiting ranks' barrier timed out after dist_params.timeout and killed a healthy run
    mp.spawn(_validation_wait_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    assert torch.load(tmp_path / 'after1.pt', weights_only=True) == 2.0


def test_a_rank_failing_in_validation_leaves_one_line_per_rank(tmp_path):
    # rank 1, waiting for rank 0's validation, printed a traceback about a connection closed by peer
    from helpers.coic import tiny_coic_options
    opt = tiny_coic_options(name='val_fails', total_iter=4, stage1_iter=2)
    opt['val']['metrics'] = {'niqe': {'type': 'calculate_niqe', 'crop_border': 0}}  # needs larger images
    opt_path = write_options(opt, str(tmp_path / 'train.yml'))
    result = torchrun(2, ['-m', 'coic_basicsr.train', '-opt', opt_path, '--launcher', 'pytorch'], cwd=str(tmp_path),
                      port=_free_port())
    assert result.returncode != 0
    assert 'basicsr train: error: val.metrics.niqe (calculate_niqe) failed on' in result.stderr
    assert '[rank1]: Traceback' not in result.stderr, result.stderr[-3000:]  # (torchrun prints its own, always)
    if 'Connection closed by peer' in result.stderr:  # else torchrun ended rank 1 before it noticed
        assert 'basicsr train: error: rank 1 stopped: another rank ended first (its error is above)' in result.stderr


def test_under_slurm_the_local_rank_is_slurm_localid(monkeypatch):
    # not the global rank modulo the GPUs of the node
    from coic_basicsr.utils import dist as coic_dist
    for key, value in dict(SLURM_PROCID='5', SLURM_NODELIST='node1', SLURM_NTASKS='8', SLURM_LOCALID='1',
                           MASTER_ADDR='127.0.0.1').items():
        monkeypatch.setenv(key, value)
    for key in ('MASTER_PORT', 'LOCAL_RANK', 'RANK', 'WORLD_SIZE'):
        monkeypatch.setenv(key, 'x')  # recorded, so the values _slurm_environment sets are removed afterwards
        monkeypatch.delenv(key)  # (delenv of an absent key records nothing: WORLD_SIZE=8 leaked into later tests)
    coic_dist._slurm_environment(29555)
    assert os.environ['LOCAL_RANK'] == '1' and os.environ['RANK'] == '5' and os.environ['WORLD_SIZE'] == '8'
    assert os.environ['MASTER_PORT'] == '29555'
