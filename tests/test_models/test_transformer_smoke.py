"""The shipped CoICDRSformer / CoICIDT smoke options train through both CoIC stages via ``basicsr train``."""
import re
from os import path as osp

import pytest
import torch

from helpers.run import basicsr

SMOKE = osp.join(osp.dirname(__file__), '..', '..', 'options', 'smoke')


def _logged_iters(stderr: str, name: str) -> list:
    """Iterations whose log line reports ``name``."""
    return [int(it) for it, line in re.findall(r'iter:\s+(\d+),([^\n]*)', stderr) if f'{name}:' in line]


@pytest.mark.parametrize('name,loss', [('coic_drsformer_smoke', 'l_pix'), ('coic_idt_smoke', 'l_ssim')])
def test_smoke_option_trains_both_stages(tmp_path, name: str, loss: str) -> None:
    result = basicsr(['train', '-opt', osp.abspath(osp.join(SMOKE, f'{name}.yml'))], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert _logged_iters(result.stderr, loss) == [1, 2, 3, 4]
    assert _logged_iters(result.stderr, 'l_con') == [3, 4]  # stage 2 (contrastive + modulation) after stage1_iter 2
    assert re.search(r'\[all\] \(3 images\) psnr: [0-9.]+', result.stderr)
    models = tmp_path / 'experiments' / name / 'models'
    params = torch.load(models / 'net_g_4.pth', weights_only=True)['params']
    assert (models / 'net_enc_4.pth').is_file()
    # the zero-initialised last layers of the generators and the context embeddings moved during stage 2
    last_gen = [v for k, v in params.items() if re.search(r'\.generator\.4\.weight$', k)]
    embeds = [v for k, v in params.items() if k.endswith('context_embed.proj.weight')]
    assert last_gen and embeds
    assert any(v.abs().sum() > 0 for v in last_gen) and any(v.abs().sum() > 0 for v in embeds)
