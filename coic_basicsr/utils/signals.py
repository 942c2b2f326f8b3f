"""SIGTERM/SIGINT during training: finish the current iteration, save a training state, exit; before the first
iteration (data, loaders, model being built, the first batch being made): exit at once, there is nothing to save."""
import multiprocessing
import os
import signal
import threading
import time
from typing import Callable, List, Optional

import torch
import torch.distributed as dist


class StopBeforeTraining(SystemExit):
    """A stop signal before the first training iteration: the run ends with exit code 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class GracefulStop:
    """Records SIGTERM/SIGINT instead of dying mid-step; :meth:`requested` is agreed on by all ranks.

    Made with ``at_once=True``, a stop signal raises :class:`StopBeforeTraining` instead of being recorded, until
    :meth:`training_started`: no iteration has run, so no state would be saved (and the builds or a data loader
    starting many workers could take minutes to reach an iteration's end).

    A second signal at least ``REPEAT_AFTER_S`` after the first ends the process at once. Closer ones belong to the
    same stop: torchrun signals each rank twice when it shuts down, and Ctrl-C under torchrun delivers SIGINT from
    the terminal and then SIGTERM from torchrun.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    REPEAT_AFTER_S = 2.0

    def __init__(self, at_once: bool = False) -> None:
        self.at_once = at_once
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
        if self.at_once:
            raise StopBeforeTraining(signum)

    def training_started(self) -> None:
        """From now on a stop signal is recorded, to be acted on at the end of an iteration."""
        self.at_once = False

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
    """``worker_init_fn`` wrapper: DataLoader workers leave SIGTERM/SIGINT to the main process while it trains.

    torchrun, ``timeout``, SLURM and Ctrl-C signal the whole process group; a worker that died of it made the main
    process fail on its next batch, before it could save. Once the main process is done with the loader
    (:meth:`release`), a stop signal ends a worker again (Python's exit ends leftover workers with SIGTERM), as does
    a second one ``GracefulStop.REPEAT_AFTER_S`` or more after the first, which ends the main process too.
    """

    def __init__(self, init_fn: Optional[Callable[[int], None]] = None) -> None:
        self.init_fn = init_fn
        self._released = multiprocessing.Event()

    def release(self) -> None:
        self._released.set()

    def __call__(self, worker_id: int) -> None:
        first: List[float] = []

        def on_stop(signum: int, frame) -> None:
            now = time.monotonic()
            if self._released.is_set():
                os._exit(0)  # a normal end: PyTorch reports workers that end otherwise as failed
            if first and now - first[0] >= GracefulStop.REPEAT_AFTER_S:
                os._exit(128 + signum)
            first[:] = first or [now]

        for sig in GracefulStop.SIGNALS:
            signal.signal(sig, on_stop)
        if self.init_fn is not None:
            self.init_fn(worker_id)
