"""Every shipped option file names registered types and builds its networks (paper-scale ones without running)."""
import glob
from os import path as osp

import pytest
import yaml
from basicsr.archs import build_network

from coic_basicsr.models.tiling import tile_settings
from coic_basicsr.utils.validate import (check_optimizers, check_registered_types, check_scheduler_options,
                                         check_section_keys)

OPTION_FILES = sorted(glob.glob(osp.join(osp.dirname(__file__), '..', '..', 'options', '**', '*.yml'),
                            recursive=True))


def test_option_files_exist():
    names = {osp.basename(p) for p in OPTION_FILES}
    assert {'coic_restormer.yml', 'restormer_baseline.yml', 'test_coic_restormer.yml',
            'coic_restormer_demo.yml'} <= names


@pytest.mark.parametrize('path', OPTION_FILES, ids=osp.basename)
def test_option_file_types_are_registered_and_networks_build(path):
    with open(path) as f:
        opt = yaml.safe_load(f)
    check_registered_types(opt)
    check_section_keys(opt)  # every network/loss key is an argument of its class
    tile_settings(opt.get('val'))
    if 'train' in opt:
        check_optimizers(opt)
        check_scheduler_options(opt)
    for key, section in opt.items():
        if key.startswith('network_'):
            net = build_network(section)
            assert sum(p.numel() for p in net.parameters()) > 0
