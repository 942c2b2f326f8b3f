"""Datasets (``*_dataset.py`` -> ``DATASET_REGISTRY``) and samplers (``*_sampler.py`` -> ``SAMPLER_REGISTRY``)."""
from os import path as osp

from coic_basicsr.utils.registration import import_modules_with_suffix

_data_modules = import_modules_with_suffix(__name__, osp.dirname(osp.abspath(__file__)),
                                           ('_dataset.py', '_sampler.py'))
