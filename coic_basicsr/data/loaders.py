"""The training run's data loaders, and its first batch: errors in building or reading them name the dataset section."""
import logging
import math

from coic_basicsr.cli import USER_ERRORS, one_line
from coic_basicsr.data.build import build_dataloader_of, build_dataset_of
from coic_basicsr.data.samplers import ResumableSampler, SeededDraws, build_sampler
from coic_basicsr.utils.build_errors import SectionBuildError, building
from coic_basicsr.utils.signals import StopBeforeTraining, StopSignalsIgnored


def create_dataloaders(opt: dict, logger: logging.Logger):
    """Train loader + sampler and one loader per ``val*`` dataset."""
    train_loader = train_sampler = None
    val_loaders = []
    for phase, dataset_opt in opt['datasets'].items():
        if opt['num_gpu'] == 0 and dataset_opt.get('pin_memory'):  # a GPU option file on the CPU: nothing to pin for
            dataset_opt = dict(dataset_opt, pin_memory=False)
        if phase == 'train':
            train_set = build_dataset_of(phase, dataset_opt)
            with building('datasets.train', f'the sampler of {type(train_set).__name__}'):
                train_sampler = ResumableSampler(
                    build_sampler(train_set, dataset_opt, opt['world_size'], opt['rank'], opt['manual_seed']),
                    seed=opt['manual_seed'], rank=opt['rank'])
            train_loader = build_dataloader_of(phase, SeededDraws(train_set), dataset_opt, num_gpu=opt['num_gpu'],
                                               dist=opt['dist'], sampler=train_sampler, seed=opt['manual_seed'])
            train_loader.worker_init_fn = StopSignalsIgnored(train_loader.worker_init_fn)
            if dataset_opt.get('prefetch_mode') == 'cpu' and not dataset_opt.get('num_worker_per_gpu'):
                logger.warning('datasets.train.prefetch_mode: cpu with num_worker_per_gpu: 0 makes the training data '
                               'in a thread that shares the random state with training: the run is not reproducible '
                               'and a resumed run will not match; use num_worker_per_gpu >= 1 with it.')
            if len(train_loader) == 0:  # the loader drops the last incomplete batch: no iteration would ever run
                raise ValueError(f'datasets.train.batch_size_per_gpu ({train_loader.batch_size}) is larger than the '
                                 f'{len(train_sampler)} training items each process draws per epoch: no batch '
                                 'could be made; lower it or add data')
            iters_per_epoch = len(train_loader)
            total_iters = int(opt['train']['total_iter'])
            total_epochs = math.ceil(total_iters / iters_per_epoch)
            logger.info(f'Training statistics:\n\tNumber of train images: {len(train_set)}'
                        f'\n\tSampler: {type(train_sampler.sampler).__name__}, '
                        f'samples per rank per epoch: {len(train_sampler)}'
                        f'\n\tBatch size per process: {dataset_opt["batch_size_per_gpu"]}'
                        f'\n\tWorld size: {opt["world_size"]}\n\tIters per epoch: {iters_per_epoch}'
                        f'\n\tTotal epochs: {total_epochs}; iters: {total_iters}.')
        else:  # a val* or test* set: check_required_keys refused any other key
            val_set = build_dataset_of(phase, dataset_opt)
            val_loaders.append(build_dataloader_of(phase, val_set, dataset_opt, num_gpu=opt['num_gpu'],
                                                   dist=opt['dist'], sampler=None, seed=opt['manual_seed']))
            logger.info(f'Number of val images/folders in {dataset_opt["name"]}: {len(val_set)}')
    return train_loader, train_sampler, val_loaders, total_epochs, total_iters


def first_batch(prefetcher, dataset_opt: dict):
    """The run's first training batch (``prefetcher.reset()``, ``next()``); an error making it names ``datasets.train``.

    BasicSR's datasets check ``gt_size`` and ``scale`` against the images only when they read an item: ``scale: 0``
    or ``gt_size: [1, 2]`` end in a ZeroDivisionError or TypeError here, a scale mismatch in a ValueError that names
    no option (also when raised in a data loader worker, which wraps it in its traceback).
    """
    class_name = dataset_opt.get('type')
    try:
        with building('datasets.train', class_name, 'making the first training batch', 'cannot make a training batch'):
            prefetcher.reset()  # starts the loader workers
            return prefetcher.next()
    except StopBeforeTraining as stop:
        _mark_half_made_iterators_shut_down(stop.__traceback__)
        raise
    except SectionBuildError:
        raise
    except USER_ERRORS as err:  # they name no option here
        message = one_line(err)
        if not message.startswith('datasets.'):
            raise ValueError(f'datasets.train: {class_name}: {message}') from err
        if message != str(err):  # re-raised from a loader worker, with its traceback in the message
            raise ValueError(message) from err
        raise


def _mark_half_made_iterators_shut_down(trace) -> None:
    """A stop signal while a loader iterator's constructor ran, before it listed its workers, left an object whose
    ``__del__`` fails ('Exception ignored in ... no attribute _workers'): there is nothing of it to shut down."""
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter
    while trace is not None:
        obj = trace.tb_frame.f_locals.get('self')
        if isinstance(obj, _MultiProcessingDataLoaderIter) and not hasattr(obj, '_workers'):
            obj._shutdown = True
        trace = trace.tb_next
