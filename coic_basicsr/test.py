"""``basicsr test``: evaluate a model on every dataset of a test option file (BasicSR's test pipeline)."""
import logging
import os
import sys
from os import path as osp
from typing import List, Optional

import coic_basicsr  # noqa: F401
import torch
from basicsr.data import build_dataloader
from basicsr.utils import get_env_info, get_time_str, make_exp_dirs
from basicsr.utils.options import dict2str

from coic_basicsr.data.build import build_dataset_of
from coic_basicsr.models.portable import build_model
from coic_basicsr.utils.checkpoint import test_encoder_path
from coic_basicsr.utils.cpu_memory import apply_cpu_malloc_option
from coic_basicsr.utils.dist import barrier, wait_for_rank0
from coic_basicsr.utils.early_log import EarlyLog
from coic_basicsr.utils.options import parse_options
from coic_basicsr.utils.unread_keys import unread_key_warnings
from coic_basicsr.utils.validate import check_options


def check_test_weights(opt: dict) -> None:
    """A test of untrained networks is a mistake: require network_g's weights, and the encoder's for a CoIC model
    (taken from beside network_g's file, as the tools do, when the option file names none)."""
    paths = opt['path']
    net_g = paths.get('pretrain_network_g')
    if not net_g:
        raise ValueError('path.pretrain_network_g: basicsr test needs the trained network '
                         '(e.g. experiments/<name>/models/net_g_latest.pth)')
    if 'network_enc' in opt and not paths.get('pretrain_network_enc'):
        paths['pretrain_network_enc'] = test_encoder_path(paths)
        print(f"Set pretrain_network_enc to {paths['pretrain_network_enc']}", flush=True)


def test_pipeline(argv: Optional[List[str]] = None, root_path: Optional[str] = None) -> None:
    root_path = root_path or os.getcwd()
    opt, _ = parse_options(argv, root_path, is_train=False, prog='basicsr test')
    check_options(opt)
    check_test_weights(opt)
    if not any(d.get('phase') != 'train' for d in (opt.get('datasets') or {}).values()):
        raise ValueError('datasets: no test set (basicsr test scores every datasets.val*/test* section, and a training '
                         'set is not one)')
    opt['val'] = opt.get('val') or {}  # BasicSR's models read opt['val'] (and the model keeps its own copy of opt)
    torch.backends.cudnn.benchmark = True
    log_file = osp.join(opt['path']['log'], f"test_{opt['name']}_{get_time_str()}.log")
    with EarlyLog() as early:  # the results folder is made once data and model are built (else nothing is archived)
        logger = early.logger
        logger.info(get_env_info())
        logger.info(dict2str(opt))
        for message in unread_key_warnings(opt):
            logger.warning(message)
        apply_cpu_malloc_option(opt, logger)
        test_loaders = []
        for key, dataset_opt in sorted(opt['datasets'].items()):
            if dataset_opt.get('phase') == 'train':  # random crops of the training set are no test
                logger.warning(f'datasets.{key}: a training set, not tested (basicsr test scores the val/test sets)')
                continue
            test_set = build_dataset_of(key, dataset_opt)
            test_loaders.append(build_dataloader(test_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'],
                                                 sampler=None, seed=opt['manual_seed']))
            logger.info(f"Number of test images in {dataset_opt['name']}: {len(test_set)}")
        model = build_model(opt)
        make_exp_dirs(opt)
        barrier()
        early.open_file(log_file, opt['rank'])
        run_tests(opt, model, test_loaders, logger)


def run_tests(opt: dict, model, test_loaders: list, logger: logging.Logger) -> None:
    """Validate the model on every test set (per-source tables for CoICModel)."""
    val_opt = opt['val']
    for test_loader in test_loaders:
        logger.info(f"Testing {test_loader.dataset.opt['name']}...")
        model.validation(test_loader, current_iter=opt['name'], tb_logger=None, save_img=val_opt.get('save_img', False))
    wait_for_rank0()


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``basicsr test`` and ``python -m coic_basicsr.test``."""
    from coic_basicsr.cli import run_reporting_errors
    return run_reporting_errors('basicsr test', test_pipeline, argv)


if __name__ == '__main__':
    sys.exit(main())
