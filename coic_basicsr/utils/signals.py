"""SIGTERM/SIGINT during training: finish the current iteration, save a training state, exit."""
import signal
import threading
from typing import Optional

import torch
import torch.distributed as dist


class GracefulStop:
    """Records SIGTERM/SIGINT instead of dying mid-step; :meth:`requested` is agreed on by all ranks."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum = 0
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)

    def _record(self, signum: int, frame) -> None:
        if self.signum:  # a second signal: give up gracefulness
            self.restore()
            signal.raise_signal(signum)
        self.signum = signum

    def requested(self, device: Optional[torch.device] = None) -> int:
        """The signal number any rank received (0 if none); a collective when distributed."""
        if not (dist.is_available() and dist.is_initialized()):
            return self.signum
        flag = torch.tensor([self.signum], device=device or 'cpu')
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
