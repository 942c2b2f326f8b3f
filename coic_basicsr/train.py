"""``basicsr train``: BasicSR's training loop on CPU or GPU, single process or torchrun/SLURM (gloo or nccl)."""
import datetime
import logging
import os
import sys
import time
from os import path as osp
from typing import List, Optional

import coic_basicsr  # noqa: F401  (shim + registration before basicsr's builders are used)
import torch
from basicsr.utils import (AvgTimer, MessageLogger, check_resume, get_env_info, get_root_logger, get_time_str,
                           init_tb_logger, init_wandb_logger, make_exp_dirs, mkdir_and_rename, set_random_seed)
from basicsr.utils.options import dict2str

from coic_basicsr.data.loaders import create_dataloaders, first_batch
from coic_basicsr.data.prefetch import create_prefetcher
from coic_basicsr.data.progressive import ProgressivePatches
from coic_basicsr.data.samplers import ResumableSampler
from coic_basicsr.models.portable import build_model
from coic_basicsr.utils.checkpoint import latest_training_state, load_training_state, remove_unfinished_saves
from coic_basicsr.utils.cpu_memory import apply_cpu_malloc_option
from coic_basicsr.utils.dist import barrier, wait_for_rank0
from coic_basicsr.utils.early_log import EarlyLog
from coic_basicsr.utils.errors import NonFiniteTrainingError
from coic_basicsr.utils.options import parse_options, save_options_as_run
from coic_basicsr.utils.signals import GracefulStop
from coic_basicsr.utils.unread_keys import unread_key_warnings
from coic_basicsr.utils.validate import check_options


def init_tb_loggers(opt: dict):
    """Tensorboard (and wandb syncing it) on rank 0, as BasicSR does; ``None`` for debug runs."""
    logger_opt = opt['logger']
    if (logger_opt.get('wandb') or {}).get('project') and 'debug' not in opt['name']:
        init_wandb_logger(opt)  # check_logger made sure it can
    if logger_opt.get('use_tb_logger') and 'debug' not in opt['name']:
        return init_tb_logger(log_dir=osp.join(opt['root_path'], 'tb_logger', opt['name']))
    return None


def load_resume_state(opt: dict) -> Optional[dict]:
    """The training state to resume from: the latest complete one with ``--auto_resume``, else ``path.resume_state``."""
    state_path, state = opt['path'].get('resume_state'), None
    if opt['auto_resume']:
        state_path, state = latest_training_state(opt['path']['training_states'], torch.device(opt['device'])) or \
            (state_path, None)
        opt['path']['resume_state'] = state_path
    if not state_path:
        return None
    if state is None:
        state = load_training_state(state_path, torch.device(opt['device']))
    # the networks saved with the state: the models/ folder next to its training_states/ (another run's, when
    # path.resume_state forks a run under a new name); else this run's, as in BasicSR
    own_models = opt['path']['models']
    beside_state = osp.join(osp.dirname(osp.dirname(osp.abspath(state_path))), 'models')
    opt['path']['models'] = beside_state if osp.isdir(beside_state) else own_models
    check_resume(opt, state['iter'])
    opt['path']['models'] = own_models
    if opt.get('manual_seed_drawn') and state.get('manual_seed') is not None:  # the interrupted run's data and seeds
        opt['manual_seed'] = int(state['manual_seed'])
        set_random_seed(opt['manual_seed'] + opt['rank'])
        get_root_logger().info(f"Set manual_seed to the resumed run's {opt['manual_seed']} (not set in the option file)")
    return state


def seed_for(opt: dict, current_iter: int, stream: int) -> None:
    """Re-seed python/numpy/torch from (manual_seed, rank, iteration, stream) so a resumed run draws the same random
    numbers as an uninterrupted one (data drawn in the main process and the model's own sampling, e.g. CoIC views)."""
    set_random_seed((opt['manual_seed'] * 1_000_003 + opt['rank'] * 7919 + current_iter * 2 + stream) % 2**31)


def validate(model, val_loaders, current_iter: int, tb_logger, opt: dict) -> None:
    """Validate on every ``val*`` set; the barrier keeps ranks that skip validation from running ahead."""
    for val_loader in val_loaders:
        model.validation(val_loader, current_iter, tb_logger, opt['val'].get('save_img', False))
    wait_for_rank0()


def make_run_folders(opt: dict, args, resumed: bool) -> None:
    """BasicSR's experiment folders (an existing one of the same name is archived; a resumed run adds what is
    missing), the tensorboard folder and the copy of the option file as run."""
    if not resumed:
        make_exp_dirs(opt)
        if opt['logger'].get('use_tb_logger') and 'debug' not in opt['name'] and opt['rank'] == 0:
            mkdir_and_rename(osp.join(opt['root_path'], 'tb_logger', opt['name']))
    elif opt['rank'] == 0:  # resuming (maybe another run's state under a new name): add the folders that are missing
        for key in ('experiments_root', 'models', 'training_states', 'visualization'):
            os.makedirs(opt['path'][key], exist_ok=True)
        for path in remove_unfinished_saves(opt['path'][key] for key in ('models', 'training_states')):
            get_root_logger().info(f'Removed {path}: a save that the interrupted run did not finish')
    barrier()
    save_options_as_run(args, opt['path']['experiments_root'])


def train_pipeline(argv: Optional[List[str]] = None, root_path: Optional[str] = None) -> None:
    # until the first iteration a stop signal ends the run at once (nothing to save); handlers restored afterwards: a
    # project calling us in-process keeps Ctrl-C
    with GracefulStop(at_once=True) as stop:
        root_path = root_path or os.getcwd()
        opt, args = parse_options(argv, root_path, is_train=True)
        opt['root_path'] = root_path
        check_options(opt)
        torch.backends.cudnn.benchmark = True
        log_file = osp.join(opt['path']['log'], f"train_{opt['name']}_{get_time_str()}.log")
        with EarlyLog() as early:  # the folders are made once data and model are built: a failure there archives none
            logger = early.logger
            logger.info(get_env_info())
            resume_state = load_resume_state(opt)  # what it skips or sets goes into the log too
            logger.info(dict2str(opt))
            for message in unread_key_warnings(opt):
                logger.warning(message)
            apply_cpu_malloc_option(opt, logger)
            train_loader, train_sampler, val_loaders, _, total_iters = create_dataloaders(opt, logger)
            model = build_model(opt)
            if resume_state:
                model.resume_training(resume_state)
            make_run_folders(opt, args, resumed=resume_state is not None)
            early.open_file(log_file, opt['rank'])
            tb_logger = init_tb_loggers(opt)
            try:
                run_training(opt, model, train_loader, train_sampler, val_loaders, total_iters, resume_state,
                             tb_logger, logger, stop)
            finally:
                train_loader.worker_init_fn.release()  # leftover loader workers may end with the process now


def run_training(opt: dict, model, train_loader, train_sampler: ResumableSampler, val_loaders: list, total_iters: int,
                 resume_state: Optional[dict], tb_logger, logger: logging.Logger, stop: GracefulStop) -> None:
    """BasicSR's training loop: per-iteration seeding, checkpoints, validation, graceful stop, final save."""
    current_iter = start_iter = resume_state['iter'] if resume_state else 0
    msg_logger = MessageLogger(opt, current_iter, tb_logger)
    prefetcher = create_prefetcher(opt, train_loader)
    progressive = ProgressivePatches.from_options(opt['datasets']['train'], opt.get('scale', 1))
    if progressive is not None:
        logger.info(f'Progressive learning: {progressive.describe()}.')
    data_timer, iter_timer = AvgTimer(), AvgTimer()
    start_time = time.time()
    val_freq = (opt.get('val') or {}).get('val_freq')
    iters_per_epoch = max(len(train_loader), 1)
    epoch, consumed = divmod(current_iter, iters_per_epoch)
    train_sampler.skip_next_epoch(consumed * train_loader.batch_size)
    if resume_state:
        logger.info(f'Resuming training from epoch: {epoch}, iter: {current_iter} '
                    f'({consumed} batches of the epoch already consumed).')
    logger.info(f'Start training from epoch: {epoch}, iter: {current_iter}')
    while current_iter < total_iters:
        train_sampler.set_epoch(epoch)
        seed_for(opt, current_iter + 1, stream=0)
        if current_iter == start_iter:  # BasicSR's datasets check sizes and scale only when reading an item
            train_data = first_batch(prefetcher, opt['datasets']['train'])
        else:
            prefetcher.reset()
            train_data = prefetcher.next()
        while train_data is not None and current_iter < total_iters:
            stop.training_started()  # from here a stop signal waits for the iteration's end and saves a state
            data_timer.record()
            current_iter += 1
            model.update_learning_rate(current_iter, warmup_iter=opt['train'].get('warmup_iter', -1))
            seed_for(opt, current_iter, stream=1)
            if progressive is not None:  # after the per-iteration seed: a resumed run cuts the same batches
                train_data = progressive(train_data, current_iter)
            model.feed_data(train_data)
            try:
                model.optimize_parameters(current_iter)
            except NonFiniteTrainingError:
                # as the state of this iteration (its schedulers have stepped): the weights are the last finite
                # step's, every non-finite update was skipped
                logger.error(f'Non-finite training at iter {current_iter}: saving the last good weights as its state.')
                model.save(epoch, current_iter)
                raise
            iter_timer.record()
            if current_iter == 1:
                msg_logger.reset_start_time()
            if current_iter % opt['logger']['print_freq'] == 0:
                log_vars = {'epoch': epoch, 'iter': current_iter, 'lrs': model.get_current_learning_rate(),
                            'time': iter_timer.get_avg_time(), 'data_time': data_timer.get_avg_time()}
                log_vars.update(model.get_current_log())
                msg_logger(log_vars)
            if current_iter % opt['logger']['save_checkpoint_freq'] == 0:
                logger.info('Saving models and training states.')
                model.save(epoch, current_iter)
            if val_freq and current_iter % val_freq == 0:
                validate(model, val_loaders, current_iter, tb_logger, opt)
            signum = stop.requested(torch.device(opt['device']))
            if signum:
                logger.warning(f'Signal {signum} received: saving models and training state at iter {current_iter}.')
                model.save(epoch, current_iter)
                barrier()
                raise SystemExit(128 + signum)
            data_timer.start()
            iter_timer.start()
            seed_for(opt, current_iter + 1, stream=0)
            train_data = prefetcher.next()
        epoch += 1
    logger.info(f'End of training. Time consumed: {datetime.timedelta(seconds=int(time.time() - start_time))}')
    logger.info('Save the latest model.')
    model.save(epoch=-1, current_iter=-1)
    if opt.get('val') is not None and val_loaders:
        if val_freq and current_iter % val_freq == 0 and current_iter > start_iter:
            # BasicSR validates again here; the weights are the ones just scored
            logger.info(f'Final validation skipped: iter {current_iter} was validated above.')
        else:
            validate(model, val_loaders, current_iter, tb_logger, opt)
    if tb_logger:
        tb_logger.close()
    barrier()


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``basicsr train`` and ``python -m coic_basicsr.train``."""
    from coic_basicsr.cli import run_reporting_errors
    return run_reporting_errors('basicsr train', train_pipeline, argv)


if __name__ == '__main__':
    sys.exit(main())
