"""CoICRCDNet: z=None is the plain RCDNet, an independent functional RCDNet agrees, shipped rain kernels, stages."""
import hashlib
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from scipy.io import loadmat
from torch import Tensor
from torch.nn import functional as F

import coic_basicsr  # noqa: F401  (shim + registration)
from basicsr.archs import build_network
from coic_basicsr.archs.coic_rcdnet_arch import INIT_KERNEL_PATH, CoICRCDNet, init_rain_kernel
from coic_basicsr.archs.modulation import ModulatedConv2d

WEIGHTS = Path(__file__).resolve().parents[2].parent / 'shared' / 'weights'
TINY = dict(num_map=4, num_channel=3, num_block=1, num_stage=3, context_dim=8)



def _perturb(net: torch.nn.Module, pattern: str, std: float, seed: int = 0) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if pattern in name:
                p.add_(torch.randn_like(p) * std)


def reference_rcdnet(sd: Dict[str, Tensor], x: Tensor, num_stage: int, num_block: int, scale: float) -> List[Tensor]:
    """RCDNet's proximal-gradient unfolding written from the paper, reading a plain state dict (BN in eval mode)."""
    def prox(prefix: str, t: Tensor, sparse: bool) -> Tensor:
        for j in range(num_block):
            p = f'{prefix}.layer.{j}.'
            def bn(u, k):
                return F.batch_norm(u, sd[p + k + '.running_mean'], sd[p + k + '.running_var'], sd[p + k + '.weight'],
                                    sd[p + k + '.bias'], False, 0.0, 1e-5)
            y = bn(F.conv2d(t, sd[p + 'conv1.weight'], sd[p + 'conv1.bias'], padding=1), 'bn1')
            y = bn(F.conv2d(torch.relu(y), sd[p + 'conv2.weight'], sd[p + 'conv2.bias'], padding=1), 'bn2')
            t = torch.relu(t + y)
        return torch.relu(t - sd[f'{prefix}.tau']) if sparse else t

    o = x * scale
    rain_conv = lambda m: F.conv2d(m, sd['c'] / 10, padding=4)  # noqa: E731  R = C * M
    rain_adj = lambda r: F.conv_transpose2d(r, sd['c'] / 10, padding=4)  # noqa: E731  C^T * R
    bz = prox('proxNet_B_0', torch.cat([o, F.conv2d(o, sd['cz'], padding=1)], 1), False)
    b, z = bz[:, :3], bz[:, 3:]
    outs = [b]
    m = prox('proxNet_M_S.0', F.conv_transpose2d(torch.relu(o - b - sd['tau']), sd['c0'] / 10, padding=4), True)
    for s in range(num_stage):
        if s:
            m = prox(f'proxNet_M_S.{s}', m - sd['m_step'][s - 1] / 10 * rain_adj(rain_conv(m) - (o - b)), True)
        r = rain_conv(m)
        eta = sd['b_step'][s] / 10
        bz = prox(f'proxNet_B_S.{s}', torch.cat([(1 - eta) * b + eta * (o - r), z], 1), False)
        b, z = bz[:, :3], bz[:, 3:]
        outs.append(b)
    outs.append(prox('proxNet_B_L', bz, False)[:, :3])
    return [t / scale for t in outs]


def test_z_none_is_the_plain_rcdnet_and_matches_a_functional_reference():
    plain = CoICRCDNet(**TINY, modulate=False).double()
    _perturb(plain, 'step', 0.5)
    _perturb(plain, 'proxNet', 0.05, seed=1)
    with torch.no_grad():
        for name, buf in plain.named_buffers():
            if 'running_var' in name:
                buf.uniform_(0.5, 2.0)
            elif 'running_mean' in name:
                buf.normal_(0, 0.2)
    plain.eval()
    net = CoICRCDNet(**TINY).double().eval()
    net.load_state_dict(plain.state_dict(), strict=True)
    x = torch.rand(2, 3, 14, 12, dtype=torch.float64)
    with torch.no_grad():
        outs = plain(x)
        assert len(outs) == TINY['num_stage'] + 2 and all(o.shape == x.shape for o in outs)
        ref = reference_rcdnet(plain.state_dict(), x, TINY['num_stage'], TINY['num_block'], 255.)
        assert all(torch.allclose(o, r, atol=1e-9) for o, r in zip(outs, ref))
        assert all(torch.equal(a, b) for a, b in zip(net(x), outs))
        z = torch.randn(2, 8, dtype=torch.float64)
        _perturb(net, '.generator.', 0.3, seed=2)
        assert (net(x, z)[-1] - outs[-1]).abs().max() > 1e-4
        assert all(torch.equal(a, b) for a, b in zip(net(x), outs))


def test_only_the_proximal_convs_are_modulated_and_kernels_train():
    net = build_network({'type': 'CoICRCDNet', **TINY})
    modulated = [n for n, m in net.named_modules() if isinstance(m, ModulatedConv2d)]
    assert modulated and all(n.startswith('proxNet_') and n.split('.')[-1] in ('conv1', 'conv2') for n in modulated)
    assert len(modulated) == 2 * TINY['num_block'] * (2 * TINY['num_stage'] + 2)
    out = net(torch.rand(1, 3, 10, 10), torch.randn(1, 8))
    out[-1].mean().backward()
    for name in ('c', 'c0', 'cz', 'tau', 'm_step', 'b_step'):
        assert getattr(net, name).grad is not None and getattr(net, name).grad.abs().sum() > 0, name


def test_initial_rain_kernels_are_the_shipped_authors_file():
    assert Path(INIT_KERNEL_PATH).is_file()
    c9 = torch.from_numpy(loadmat(INIT_KERNEL_PATH)['C9']).float()
    assert tuple(c9.shape) == (3, 32, 9, 9)
    net = CoICRCDNet(num_block=1, num_stage=2, modulate=False)
    assert torch.equal(net.c0.detach(), c9) and torch.equal(net.c.detach(), c9)
    assert net.c0.data_ptr() != net.c.data_ptr()  # two parameters, not one storage
    assert torch.equal(init_rain_kernel(4), c9[:, :4])
    with pytest.raises(ValueError, match=r'^network_g\.num_map: expected at most 32 for CoICRCDNet \(the initial rain '
                                         r'kernels in .* have shape \(3, 32, 9, 9\)\), got 33$'):
        init_rain_kernel(33)
    with pytest.raises(ValueError, match=r'^network_g\.in_channels: expected 3 for CoICRCDNet \(the initial rain '):
        CoICRCDNet(in_channels=1)
    shared = WEIGHTS / 'rcdnet_init_kernel.mat'
    if shared.is_file():
        assert hashlib.sha256(shared.read_bytes()).digest() == \
            hashlib.sha256(Path(INIT_KERNEL_PATH).read_bytes()).digest()


def test_rejects_bad_input():
    net = CoICRCDNet(**TINY)
    with pytest.raises(ValueError, match='z must have shape'):
        net(torch.rand(1, 3, 8, 8), torch.zeros(2, 8))
    with pytest.raises(ValueError, match='input channels'):
        net(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match='network_g.num_stage'):
        CoICRCDNet(num_stage=0)
