"""Shared pieces of the arch tests: an independent channel LayerNorm reference and modulation helpers."""
from typing import List

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from coic_basicsr.archs.modulation import ContextEmbedding, KernelScaleGenerator

MODULATION_TYPES = (KernelScaleGenerator, ContextEmbedding)


class RefNorm(nn.Module):
    """Channel LayerNorm of Restormer/DRSformer written from the papers (official key names ``body.weight/bias``)."""

    def __init__(self, c: int, bias_free: bool) -> None:
        super().__init__()
        self.bias_free = bias_free
        self.body = nn.Module()
        self.body.weight = nn.Parameter(torch.ones(c))
        if not bias_free:
            self.body.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x: Tensor) -> Tensor:
        t = x.permute(0, 2, 3, 1)
        if self.bias_free:
            t = t * torch.rsqrt(t.var(-1, keepdim=True, unbiased=False) + 1e-5) * self.body.weight
        else:
            t = F.layer_norm(t, t.shape[-1:], self.body.weight, self.body.bias, eps=1e-5)
        return t.permute(0, 3, 1, 2)


def perturbed(net: nn.Module, scale: float = 0.1) -> nn.Module:
    """Move every parameter (LN affine, temperatures, conv weights) off its init value."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn_like(p))
    return net


def activate_modulation(net: nn.Module, types: tuple = MODULATION_TYPES) -> None:
    """Move generators and context embeddings (or only ``types``) off their zero-initialised (identity) state."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, types):
                for p in m.parameters():
                    p.normal_(0.0, 0.3)


def modulation_keys(net: nn.Module) -> List[str]:
    """State-dict keys of the generators and context embeddings."""
    prefixes = [n + '.' for n, m in net.named_modules() if isinstance(m, MODULATION_TYPES)]
    return [k for k in net.state_dict() if any(k.startswith(p) for p in prefixes)]


def activate_context_embeddings(net: nn.Module) -> None:
    """Move only the context embeddings (K/V context) off their zero-initialised state."""
    activate_modulation(net, (ContextEmbedding, ))


def assert_plain_twins_match_reference(net: nn.Module, plain: nn.Module, ref: nn.Module, x: Tensor) -> None:
    """``net`` (z=None) and ``plain`` (modulate=False) compute the reference's outputs and input gradients."""
    expected = ref(x)
    assert torch.allclose(net(x), expected, atol=1e-6, rtol=0)
    out = plain(x)
    assert torch.allclose(out, expected, atol=1e-6, rtol=0)
    grad_ref, = torch.autograd.grad(expected.square().sum(), x)
    grad_net, = torch.autograd.grad(out.square().sum(), x)
    assert torch.allclose(grad_net, grad_ref, atol=1e-6, rtol=0)


def assert_pads_like_reference(net: nn.Module, ref: nn.Module, size: tuple, context_dim: int) -> None:
    """Sizes not a multiple of 8: reflect-pad bottom/right (replicate when too small), run, crop back."""
    x = torch.rand(1, 3, *size, dtype=torch.float64)
    h, w = size
    mode = 'reflect' if -h % 8 < h and -w % 8 < w else 'replicate'
    with torch.no_grad():
        expected = ref(F.pad(x, (0, -w % 8, 0, -h % 8), mode=mode))[..., :h, :w]
        assert torch.allclose(net(x), expected, atol=1e-6, rtol=0)
        assert net(x, torch.randn(1, context_dim, dtype=torch.float64)).shape == x.shape
