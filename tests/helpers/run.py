"""Run the ``basicsr`` command (or torchrun) in a subprocess, as a user would."""
import os
import subprocess
import sys
from os import path as osp
from typing import List

BIN = osp.dirname(sys.executable)


def basicsr(args: List[str], cwd: str, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1', **env)
    return subprocess.run([osp.join(BIN, 'basicsr'), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def torchrun(nproc: int, module_args: List[str], cwd: str, port: int, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    cmd = [osp.join(BIN, 'torchrun'), f'--nproc_per_node={nproc}', f'--master_port={port}', *module_args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
