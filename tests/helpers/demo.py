"""The embedded default option file and the --force_yml overrides that shrink it to a seconds-long CPU run."""
from os import path as osp

DEMO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', 'options', 'coic_restormer_demo.yml'))
SHRINK = ['train:total_iter=4', 'train:coic:stage1_iter=2', 'train:scheduler:periods=[2,2]', 'val:val_freq=4',
          'logger:save_checkpoint_freq=4', 'logger:print_freq=1', 'datasets:train:num_per_source=4',
          'datasets:val:num_per_source=1', 'datasets:train:batch_size_per_gpu=2', 'network_g:dim=8',
          'network_g:num_blocks=[1,1,1,1]', 'network_g:heads=[1,1,1,1]']
