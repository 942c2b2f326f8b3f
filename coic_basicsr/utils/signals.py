"""SIGTERM/SIGINT during training: finish the current iteration, save a training state, exit."""
import signal
import threading
import time
from typing import Callable, Optional

import torch
import torch.distributed as dist


class GracefulStop:
    """Records SIGTERM/SIGINT instead of dying mid-step; :meth:`requested` is agreed on by all ranks.

    A second signal at least ``REPEAT_AFTER_S`` after the first ends the process at once. Closer ones belong to the
    same stop: torchrun signals each rank twice when it shuts down, and Ctrl-C under torchrun delivers SIGINT from
    the terminal and then SIGTERM from torchrun.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    REPEAT_AFTER_S = 2.0

    def __init__(self) -> None:
        self.signum = 0
        self._first_at = 0.0
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)

    def _record(self, signum: int, frame) -> None:
        if self.signum:
            if time.monotonic() - self._first_at < self.REPEAT_AFTER_S:
                return
            self.restore()  # a deliberate second signal: give up gracefulness
            signal.raise_signal(signum)
        self.signum, self._first_at = signum, time.monotonic()

    def requested(self, device: Optional[torch.device] = None) -> int:
        """The signal number any rank received (0 if none); a collective when distributed."""
        if not (dist.is_available() and dist.is_initialized()):
            return self.signum
        flag = torch.tensor([self.signum], device=device or 'cpu')
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def __enter__(self) -> 'GracefulStop':
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class StopSignalsIgnored:
    """``worker_init_fn`` wrapper: DataLoader workers ignore SIGTERM/SIGINT, which the main process handles.

    torchrun, ``timeout``, SLURM and Ctrl-C signal the whole process group; a worker that died of it made the main
    process fail on its next batch, before it could save. Workers still exit when the loader shuts down or the main
    process dies (PyTorch's watchdog).
    """

    def __init__(self, init_fn: Optional[Callable[[int], None]] = None) -> None:
        self.init_fn = init_fn

    def __call__(self, worker_id: int) -> None:
        for sig in GracefulStop.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        if self.init_fn is not None:
            self.init_fn(worker_id)
