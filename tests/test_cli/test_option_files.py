"""Every shipped option file names registered types and builds its networks (paper-scale ones without running)."""
import glob
from os import path as osp

import pytest
import yaml
from basicsr.archs import build_network

from coic_basicsr.utils.validate import check_registered_types

OPTION_FILES = sorted(glob.glob(osp.join(osp.dirname(__file__), '..', '..', 'options', '*.yml')))


def test_option_files_exist():
    names = {osp.basename(p) for p in OPTION_FILES}
    assert {'coic_restormer.yml', 'restormer_baseline.yml', 'test_coic_restormer.yml',
            'coic_restormer_demo.yml'} <= names


@pytest.mark.parametrize('path', OPTION_FILES, ids=osp.basename)
def test_option_file_types_are_registered_and_networks_build(path):
    with open(path) as f:
        opt = yaml.safe_load(f)
    check_registered_types(opt)
    for key, section in opt.items():
        if key.startswith('network_'):
            net = build_network(section)
            assert sum(p.numel() for p in net.parameters()) > 0
