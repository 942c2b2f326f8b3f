"""The shipped RDMC smoke options (plain and with CoIC) train through ``basicsr train`` with the contrastive prior."""
import re
from os import path as osp

import torch
import yaml

from coic_basicsr.archs.coic_encoder_arch import CoICEncoder
from helpers.run import basicsr
from helpers.stock import write_options

SMOKE = osp.join(osp.dirname(__file__), '..', '..', 'options', 'smoke')


def _smoke(name: str) -> dict:
    with open(osp.join(SMOKE, f'{name}.yml')) as f:
        return yaml.safe_load(f)


def _logged(stderr: str, name: str) -> list:
    return [float(v) for v in re.findall(rf'{name}: ([-0-9.e+]+)', stderr)]


def _tiny_vgg19(path: str) -> None:
    """Random VGG19 ``features`` weights up to conv3_2 (all the default prior layers need), torchvision keys."""
    gen = torch.Generator().manual_seed(0)
    convs = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256)}
    state = {}
    for index, (c_in, c_out) in convs.items():
        state[f'features.{index}.weight'] = torch.randn(c_out, c_in, 3, 3, generator=gen) * (2 / (9 * c_in))**0.5
        state[f'features.{index}.bias'] = torch.zeros(c_out)
    torch.save(state, path)


def test_rdmc_smoke_trains_with_the_vgg_prior(tmp_path):
    opt = _smoke('rdmc_smoke')
    _tiny_vgg19(str(tmp_path / 'vgg19.pth'))
    opt['train']['prior_opt'] = {'type': 'RDMCContrastivePriorLoss', 'loss_weight': 0.1,
                                 'vgg_weights': str(tmp_path / 'vgg19.pth')}
    result = basicsr(['train', '-opt', write_options(opt, str(tmp_path / 'rdmc.yml'))], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ('l_pix', 'l_ssim', 'l_prior'):
        values = _logged(result.stderr, name)
        assert len(values) == 4 and all(v == v and abs(v) < 1e6 for v in values), (name, values)
    assert 'l_con' not in result.stderr
    assert re.search(r'\[all\] \(3 images\) psnr: [0-9.]+', result.stderr)
    params = torch.load(tmp_path / 'experiments' / 'rdmc_smoke' / 'models' / 'net_g_4.pth', weights_only=True)['params']
    assert any(key.startswith('branches.2.levels.4.') for key in params)  # third dilation branch, fifth level
    assert not any('generator' in key for key in params)


def test_rdmc_coic_smoke_trains_with_the_encoder_prior(tmp_path):
    opt = _smoke('rdmc_coic_smoke')
    torch.manual_seed(0)
    encoder = CoICEncoder(context_dim=16, base_channels=4)
    torch.save({'params': encoder.state_dict(), 'params_key': encoder.state_dict()}, tmp_path / 'net_enc_prior.pth')
    opt['train']['prior_opt'] = {'type': 'RDMCContrastivePriorLoss', 'loss_weight': 0.1,
                                 'encoder_weights': str(tmp_path / 'net_enc_prior.pth')}
    result = basicsr(['train', '-opt', write_options(opt, str(tmp_path / 'rdmc_coic.yml'))], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_logged(result.stderr, 'l_con')) == 2  # stage 2 = iterations 3 and 4
    assert len(_logged(result.stderr, 'l_prior')) == 4
    models = tmp_path / 'experiments' / 'rdmc_coic_smoke' / 'models'
    params = torch.load(models / 'net_g_4.pth', weights_only=True)['params']
    assert any(key.startswith('backbone.branches.2.levels.0.3.generator.') for key in params)  # dilated conv
    assert (models / 'net_enc_4.pth').is_file()
