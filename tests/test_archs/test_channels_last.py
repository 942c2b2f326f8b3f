"""Channels-last networks (the top-level ``channels_last`` option): same outputs and gradients as NCHW, and the
feature maps stay channels-last (mixed formats make every gradient sum a slow transposing add on the CPU)."""
import copy

import pytest
import torch
from torch.nn import functional as F

from basicsr.utils.registry import ARCH_REGISTRY
from coic_basicsr.archs.restormer_blocks import ChannelLayerNorm
from helpers.modulated_arch import activate_modulation, perturbed

CL = torch.channels_last
TINY_ARCHS = {
    'CoICRestormer': dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 8],
                          context_dim=16),
    'CoICDRSformer': dict(dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 2, 2, 4], context_dim=16),
    'CoICIDT': dict(img_size=32, embed_dim=4, depths=[2, 1, 1, 1, 1, 1, 1, 1, 2],
                    num_heads=[1, 2, 4, 8, 16, 16, 8, 4, 2], win_size=4, spatial_win_size=4, context_dim=16,
                    drop_path_rate=0.0),  # stochastic depth would draw different paths
    'CoICBRN': dict(channels=4, num_res_blocks=2, num_rain_res_blocks=1, iterations=3, context_dim=8),
}


@pytest.mark.parametrize('ln_type', ['WithBias', 'BiasFree'])
def test_layer_norm_channels_last_path_equals_nchw_path(ln_type: str) -> None:
    torch.manual_seed(0)
    norm = perturbed(ChannelLayerNorm(6, ln_type))
    x = torch.randn(2, 6, 5, 7, requires_grad=True)
    x_cl = x.detach().contiguous(memory_format=CL).requires_grad_()
    grad = torch.randn(2, 6, 5, 7)
    out, out_cl = norm(x), norm(x_cl)
    assert out_cl.is_contiguous(memory_format=CL) and not out_cl.is_contiguous()
    torch.testing.assert_close(out_cl, out, rtol=1e-5, atol=1e-5)
    out.backward(grad)
    weight_grad = norm.body.weight.grad.clone()
    norm.zero_grad()
    out_cl.backward(grad.contiguous(memory_format=CL))
    torch.testing.assert_close(x_cl.grad, x.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm.body.weight.grad, weight_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('arch', sorted(TINY_ARCHS))
def test_channels_last_network_matches_nchw_with_context(arch: str) -> None:
    torch.manual_seed(0)
    net = ARCH_REGISTRY.get(arch)(**TINY_ARCHS[arch])
    activate_modulation(net)
    net_cl = copy.deepcopy(net).to(memory_format=CL)
    x = torch.rand(2, 3, 32, 32)
    z = F.normalize(torch.randn(2, TINY_ARCHS[arch]['context_dim']), dim=1)
    target = torch.rand(2, 3, 32, 32)
    outputs = {}
    for name, model, inp in (('nchw', net, x), ('cl', net_cl, x.contiguous(memory_format=CL))):
        out = model(inp, z)
        final = out[-1] if isinstance(out, (list, tuple)) else out
        F.l1_loss(final, target).backward()
        outputs[name] = final
    assert outputs['cl'].is_contiguous(memory_format=CL)
    torch.testing.assert_close(outputs['cl'], outputs['nchw'], rtol=1e-4, atol=1e-5)
    grads = dict(net.named_parameters())
    for name, p in net_cl.named_parameters():
        if grads[name].grad is None:
            assert p.grad is None, name
            continue
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=2e-3, atol=1e-5, msg=name)
