"""Log before the run's folder exists: a run that fails while building its data or model then leaves no folder behind
(BasicSR made it first, archiving the previous run of the same name), and a run that starts writes everything it
logged so far at the top of its log file."""
import logging
import sys
from logging.handlers import BufferingHandler
from typing import Optional

from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import get_dist_info

_FORMAT = '%(asctime)s %(levelname)s: %(message)s'  # BasicSR's get_root_logger file format


class EarlyLog:
    """BasicSR's ``basicsr`` logger with its records kept in memory until :meth:`open_file`.

    Use as a context manager: on exit the file handler it added is closed and removed, so a second run in the same
    process (tests, notebooks) logs to its own file only.
    """

    def __init__(self) -> None:
        self.logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO)
        if get_dist_info()[0] == 0:  # BasicSR sets the level only when it opens a log file (other ranks: ERROR)
            self.logger.setLevel(logging.INFO)
        self._buffer: Optional[BufferingHandler] = BufferingHandler(capacity=sys.maxsize)
        self._file: Optional[logging.FileHandler] = None
        self.logger.addHandler(self._buffer)

    def open_file(self, log_file: str, rank: int) -> None:
        """Write the records so far to ``log_file`` (rank 0, as BasicSR) and log there from now on."""
        self.logger.removeHandler(self._buffer)
        if rank == 0:
            self._file = logging.FileHandler(log_file, 'w')
            self._file.setFormatter(logging.Formatter(_FORMAT))
            self._file.setLevel(logging.INFO)
            for record in self._buffer.buffer:
                self._file.handle(record)
            self.logger.addHandler(self._file)
        self._buffer.close()
        self._buffer = None

    def __enter__(self) -> 'EarlyLog':
        return self

    def __exit__(self, *exc) -> None:
        for handler in (self._buffer, self._file):
            if handler is not None:
                self.logger.removeHandler(handler)
                handler.close()
