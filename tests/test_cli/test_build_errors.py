"""Stock BasicSR sections that cannot be built from their options, and stop signals before the first iteration."""
import gc
import os
import signal
import sys

import pytest
import torch
from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.models.sr_model import SRModel
from torch._utils import ExceptionWrapper
from torch.utils.data import dataloader

from coic_basicsr.cli import one_line
from coic_basicsr.train import main as train_main
from coic_basicsr.utils.build_errors import SectionBuildError
from coic_basicsr.utils.signals import GracefulStop, StopBeforeTraining
from helpers.stock import make_paired_folders, stock_sr_options, write_options


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('pairs'))
    make_paired_folders(root, count=2)
    return root


def _set(*changes):
    def mutate(opt):
        for path, value in changes:
            node = opt
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        return opt
    return mutate


def _raise(exc):
    def init(*args, **kwargs):
        raise exc
    return init


_ALLOC = RuntimeError('[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can\'t allocate memory: you tried to '
                      'allocate 108000000000 bytes.')

#: case -> (change of the stock options, (class, attribute, replacement) or None, expected line, fails while training)
CASES = {
    'num-in-ch-null': (_set((['network_g', 'num_in_ch'], None)), None, 'network_g: MSRResNet cannot be built from '
                       "these options: TypeError: unsupported operand type(s) for %: 'NoneType' and 'int'", False),
    'num-feat-text': (_set((['network_g', 'num_feat'], 'abc')), None,
                      'network_g: MSRResNet cannot be built from these options: TypeError: ', False),
    'upscale-zero': (_set((['network_g', 'upscale'], 0)), None, 'network_g: MSRResNet cannot be built from these '
                     "options: AttributeError: 'MSRResNet' object has no attribute 'upconv1'", False),
    'filename-tmpl-number': (_set((['datasets', 'train', 'filename_tmpl'], 0.0)), None,
                             'datasets.train: PairedImageDataset cannot be built from these options: AttributeError: '
                             "'float' object has no attribute 'format'", False),
    'val-io-backend-mapping': (_set((['datasets', 'val', 'io_backend'], {'type': {'a': 1}})), None,
                               "datasets.val.io_backend.type: expected one of disk, memcached, lmdb, got {'a': 1}",
                               False),
    'network-out-of-memory': (lambda opt: opt, (MSRResNet, '__init__', _raise(MemoryError())),
                              'network_g: MSRResNet ran out of memory building network_g', False),
    'network-allocation-fails': (lambda opt: opt, (MSRResNet, '__init__', _raise(_ALLOC)),
                                 'network_g: MSRResNet ran out of memory building network_g', False),
    'dataset-out-of-memory': (lambda opt: opt, (PairedImageDataset, '__init__', _raise(MemoryError())),
                              'datasets.train: PairedImageDataset ran out of memory building datasets.train', False),
    'gt-size-list': (_set((['datasets', 'train', 'gt_size'], [1, 2])), None,
                     'datasets.train: PairedImageDataset cannot make a training batch from these options: TypeError: '
                     "unsupported operand type(s) for //: 'list' and 'int'", True),
    'scale-zero': (_set((['scale'], 0), (['val', 'metrics', 'psnr', 'crop_border'], 0)), None,
                   'datasets.train: PairedImageDataset cannot make a training batch from these options: '
                   'ZeroDivisionError: integer division or modulo by zero', True),
    'scale-mismatch': (_set((['scale'], 3)), None, 'datasets.train: PairedImageDataset: Scale mismatches. GT (32, 32) '
                       'is not 3x multiplication of LQ (16, 16).', True),
}


def _train(opt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return train_main(['-opt', write_options(opt, str(tmp_path / 'opt.yml'))])


@pytest.mark.parametrize('case', sorted(CASES))
def test_a_section_that_cannot_be_built_or_read_gives_one_line(case, data_root, tmp_path, monkeypatch, capsys):
    mutate, patch, expected, while_training = CASES[case]
    if patch:
        monkeypatch.setattr(*patch)
    code = _train(mutate(stock_sr_options(data_root, total_iter=2)), tmp_path, monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and 'Traceback' not in '\n'.join(err)
    assert err[-1] == f'basicsr train: error: {expected}' or err[-1].startswith(f'basicsr train: error: {expected}'), \
        err[-1]
    assert (tmp_path / 'experiments').exists() == while_training


def test_coic_traceback_shows_the_error_the_build_raised(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv('COIC_TRACEBACK', '1')
    opt = stock_sr_options(data_root)
    opt['network_g']['num_in_ch'] = None
    with pytest.raises(SectionBuildError) as raised:
        _train(opt, tmp_path, monkeypatch)
    assert isinstance(raised.value.__cause__, TypeError)


def test_the_same_error_outside_a_build_keeps_its_traceback(data_root, tmp_path, monkeypatch):
    monkeypatch.setattr(SRModel, 'optimize_parameters', _raise(TypeError('a bug of ours')))
    with pytest.raises(TypeError, match='a bug of ours'):
        _train(stock_sr_options(data_root), tmp_path, monkeypatch)


def test_several_strings_are_one_line():
    assert one_line(ValueError('GT is not 3x ', 'multiplication of LQ.')) == 'GT is not 3x multiplication of LQ.'
    assert one_line(ValueError('a', 'b')) == 'a b'
    assert one_line(KeyError('key')) == 'key'
    assert one_line(FileNotFoundError(2, 'No such file')) == '[Errno 2] No such file'
    try:  # as a data loader worker's error reaches the main process (the worker itself is slow to end in-process)
        raise ValueError('Scale mismatches. GT (32, 32) is not 3x ', 'multiplication of LQ (16, 16).')
    except ValueError:
        wrapped = ExceptionWrapper(where='in DataLoader worker process 0')
    with pytest.raises(ValueError) as raised:
        wrapped.reraise()
    assert one_line(raised.value) == 'Scale mismatches. GT (32, 32) is not 3x multiplication of LQ (16, 16).'
    with pytest.raises(ValueError) as raised:
        ExceptionWrapper((ValueError, ValueError('datasets.train: bad item'), None)).reraise()
    assert one_line(raised.value) == 'datasets.train: bad item'


@pytest.fixture
def sigint_raises():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job starts ignoring it
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_stop_before_training_ends_at_once_and_after_it_waits(sigint_raises):
    with GracefulStop(at_once=True) as stop:
        with pytest.raises(StopBeforeTraining) as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
        assert stopped.value.code == 128 + signal.SIGTERM
    with GracefulStop(at_once=True) as stop:
        stop.training_started()
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested() == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize('signum, where', [(signal.SIGTERM, 'build'), (signal.SIGINT, 'build'),
                                           (signal.SIGTERM, 'first-batch')])
def test_a_stop_signal_before_the_first_iteration_ends_the_run(signum, where, data_root, tmp_path, monkeypatch,
                                                              capsys, sigint_raises):
    # a build or a first batch that takes minutes (a loader starting a huge number of workers): it was only recorded,
    # to be acted on at the end of an iteration that did not come
    def stopped_while(original):
        def slow(*args, **kwargs):
            os.kill(os.getpid(), signum)
            return original(*args, **kwargs)
        return slow
    if where == 'build':
        monkeypatch.setattr(MSRResNet, '__init__', stopped_while(MSRResNet.__init__))
    else:
        monkeypatch.setattr(PairedImageDataset, '__getitem__', stopped_while(PairedImageDataset.__getitem__))
    saves = []
    monkeypatch.setattr(SRModel, 'save', lambda *args: saves.append(args))
    code = _train(stock_sr_options(data_root), tmp_path, monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    name = signal.Signals(signum).name
    assert code == 128 + signum and not saves
    assert err[-1] == f'basicsr train: stopped by {name} before training started: nothing to save', err[-3:]
    assert (tmp_path / 'experiments').exists() == (where == 'first-batch')
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_stop_signal_while_the_loader_starts_its_workers_leaves_no_noise(data_root, tmp_path, monkeypatch, capsys,
                                                                          sigint_raises):
    # the iterator's constructor interrupted before it listed its workers: its __del__ printed an AttributeError
    base_init = dataloader._BaseDataLoaderIter.__init__

    def stopped_in(self, loader):
        base_init(self, loader)
        os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(dataloader._BaseDataLoaderIter, '__init__', stopped_in)
    opt = stock_sr_options(data_root)
    opt['datasets']['train']['num_worker_per_gpu'] = 1
    unraisable = []
    monkeypatch.setattr(sys, 'unraisablehook', unraisable.append)
    code = _train(opt, tmp_path, monkeypatch)
    gc.collect()
    assert code == 128 + signal.SIGTERM and not unraisable, [u.exc_value for u in unraisable]


def test_a_stop_signal_once_training_started_saves_at_the_iteration_end(data_root, tmp_path, monkeypatch, capsys):
    optimize = SRModel.optimize_parameters

    def stopped_during(self, current_iter):
        if current_iter == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        optimize(self, current_iter)
    monkeypatch.setattr(SRModel, 'optimize_parameters', stopped_during)
    with pytest.raises(SystemExit) as stopped:
        _train(stock_sr_options(data_root, total_iter=4), tmp_path, monkeypatch)
    assert stopped.value.code == 128 + signal.SIGTERM
    states = tmp_path / 'experiments' / 'stock_msrresnet' / 'training_states'
    assert [p.name for p in states.iterdir()] == ['1.state']
    assert torch.load(states / '1.state', weights_only=True)['iter'] == 1
