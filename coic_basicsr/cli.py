"""The ``basicsr`` console command: ``basicsr <subcommand> [args]`` (BasicSR itself ships no command)."""
import ast
import importlib
import os
import signal
import sys
from typing import Callable, List, Optional

import lmdb
import yaml

from coic_basicsr.utils.errors import NonFiniteTrainingError
from coic_basicsr.utils.signals import StopBeforeTraining

#: subcommand -> (module with ``main(argv) -> int``, one-line help)
SUBCOMMANDS = {
    'train': ('coic_basicsr.train', 'train a model from an option file (BasicSR flags; torchrun/SLURM aware)'),
    'test': ('coic_basicsr.test', 'test a model on the test/val sets of an option file (PSNR/SSIM, images)'),
    'prepare-data': ('coic_basicsr.tools.prepare_data', 'convert official deraining datasets into LMDB pairs'),
    'derain': ('coic_basicsr.tools.derain', 'derain an image or a folder with a trained model (tiled, CPU or GPU)'),
    'analyze': ('coic_basicsr.tools.analyze', 'plots of the learned representations, dataset relations, kernel scales'),
    'convert-official': ('coic_basicsr.tools.convert', "convert the CoIC authors' checkpoints into BasicSR files"),
}

#: errors that come from the user's input (options, files, data) or the file system (a folder that is a file, no
#: permission, a corrupt LMDB: each names its path): reported in one line, no traceback wall
USER_ERRORS = (OSError, ValueError, KeyError, yaml.YAMLError, lmdb.Error, NonFiniteTrainingError)


def run_reporting_errors(prog: str, func: Callable, argv: Optional[List[str]]) -> int:
    """Run ``func(argv)``; a user error becomes one ``prog: error: ...`` line and exit code 2.

    Set ``COIC_TRACEBACK=1`` to get the full traceback instead.
    """
    try:
        func(argv)
    except USER_ERRORS as err:
        if os.environ.get('COIC_TRACEBACK'):
            raise
        print(f'{prog}: error: {one_line(err)}', file=sys.stderr, flush=True)
        _abort_process_group()
        return 2
    except StopBeforeTraining as stop:
        print(f'{prog}: stopped by {signal.Signals(stop.signum).name} before training started: nothing to save',
              file=sys.stderr, flush=True)
        _abort_process_group()
        return stop.code
    except RuntimeError as err:
        if os.environ.get('COIC_TRACEBACK') or not _another_rank_left(err):
            raise
        import torch.distributed as dist
        print(f'{prog}: error: rank {dist.get_rank()} stopped: another rank ended first (its error is above): '
              f"{(str(err).splitlines() or [''])[0]}", file=sys.stderr, flush=True)
        _abort_process_group()
        return 1
    return 0


def one_line(err: BaseException) -> str:
    """The message of ``err`` in one line.

    An error raised with several strings (BasicSR's ``ValueError('Scale mismatches. ...', 'multiplication of ...')``)
    has them joined, not shown as a tuple; one re-raised from a data loader worker (``Caught ValueError in DataLoader
    worker process 0. Original Traceback ...``) is reduced to the worker's error line.
    """
    if len(err.args) > 1 and all(isinstance(arg, str) for arg in err.args) and not isinstance(err, OSError):
        text = _joined(err.args)
    else:
        text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith('Caught ') and lines[1].startswith('Original '):
        text = lines[-1].split(': ', 1)[-1]  # "ValueError: <message>" as the worker printed it
        try:
            args = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        return _joined(args) if isinstance(args, tuple) and all(isinstance(a, str) for a in args) else text
    return text


def _joined(parts) -> str:
    text = ''
    for part in parts:
        text += part if not text or text[-1].isspace() else f' {part}'
    return text


def _another_rank_left(err: RuntimeError) -> bool:
    """A collective failed because a peer process closed its connection (it failed or was stopped)."""
    import torch.distributed as dist
    return (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
            and any(text in str(err) for text in ('Connection closed by peer', 'Connection reset by peer')))


def _abort_process_group() -> None:
    """A rank that failed must not leave the others waiting in a collective: tear the group down."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _usage() -> str:
    lines = ['usage: basicsr <command> [options]', '', 'commands:']
    lines += [f'  {name:<18}{help_}' for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ['', "Run 'basicsr <command> --help' for a command's options."]
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ('-h', '--help', 'help'):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(f"basicsr: error: unknown command '{command}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[command][0])
    return module.main(rest) or 0


if __name__ == '__main__':
    sys.exit(main())
