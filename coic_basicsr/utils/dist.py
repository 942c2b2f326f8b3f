"""Distributed setup that works on CPU (gloo) and GPU (nccl), unlike BasicSR 1.4.2's CUDA-only ``init_dist``."""
import datetime
import os
import subprocess
from typing import Optional

import torch
import torch.distributed as dist


def default_backend() -> str:
    """``nccl`` when CUDA is usable, ``gloo`` otherwise."""
    return 'nccl' if torch.cuda.is_available() and dist.is_nccl_available() else 'gloo'


def _slurm_environment(port: Optional[int]) -> None:
    """Translate SLURM variables into the ``env://`` variables torch.distributed reads."""
    for var in ('SLURM_PROCID', 'SLURM_NODELIST', 'SLURM_NTASKS'):
        if var not in os.environ:
            raise ValueError(f'--launcher slurm: environment variable {var} is not set (start the job with srun)')
    proc_id = int(os.environ['SLURM_PROCID'])
    node_list = os.environ['SLURM_NODELIST']
    gpus = max(torch.cuda.device_count(), 1)
    os.environ.setdefault('MASTER_ADDR', subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1'))
    os.environ['MASTER_PORT'] = str(port) if port is not None else os.environ.get('MASTER_PORT', '29500')
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = str(proc_id)
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', str(proc_id % gpus))


def init_dist(launcher: str, backend: Optional[str] = None, timeout_s: Optional[float] = None,
              port: Optional[int] = None) -> torch.device:
    """Initialise the default process group for ``launcher`` (``pytorch`` = torchrun's env vars, or ``slurm``).

    Args:
        launcher: ``pytorch`` or ``slurm``.
        backend: ``nccl`` / ``gloo``; ``None`` picks :func:`default_backend`.
        timeout_s: collective timeout in seconds (``dist_params.timeout``); torch's default when ``None``.
        port: master port for SLURM (``dist_params.port``).

    Returns:
        The device this process trains on: ``cuda:<LOCAL_RANK>`` with a CUDA backend, else ``cpu``.
    """
    if launcher == 'slurm':
        _slurm_environment(port)
    elif launcher != 'pytorch':
        raise ValueError(f'--launcher: expected one of none, pytorch, slurm, got {launcher!r}')
    for var in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if var not in os.environ:
            raise ValueError(f'--launcher {launcher}: environment variable {var} is not set '
                             '(start the job with torchrun or srun)')
    backend = backend or default_backend()
    if backend == 'nccl' and not torch.cuda.is_available():
        raise ValueError("dist_params.backend: 'nccl' needs CUDA, which is not available; use 'gloo' for CPU training")
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    device = torch.device('cpu')
    if backend == 'nccl':
        device = torch.device('cuda', local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    kwargs = {'timeout': datetime.timedelta(seconds=timeout_s)} if timeout_s else {}
    dist.init_process_group(backend=backend, **kwargs)
    # rank 0 validates alone: the others wait for it here, not bounded by dist_params.timeout (torch's default is
    # 30 min for gloo, 10 for nccl; a CPU validation of a full test set can take longer)
    _IDLE_WAIT[0] = dist.new_group(backend='gloo', timeout=datetime.timedelta(days=7))
    return device


_IDLE_WAIT = [None]


def barrier() -> None:
    """Synchronise all ranks (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def wait_for_rank0() -> None:
    """:func:`barrier` for ranks that idle while rank 0 validates: it waits as long as the validation takes."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier(group=_IDLE_WAIT[0])


def rank0_value(value):
    """``value`` as rank 0 has it, on every rank (itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
