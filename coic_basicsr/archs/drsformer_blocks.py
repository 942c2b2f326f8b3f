"""Building blocks of DRSformer (Chen et al., CVPR 2023) for :class:`CoICDRSformer`.

Attribute names follow the official ``DRSformer_arch.py`` so official checkpoints load with their own keys. Layers are
built plain here; the arch turns the chosen ones into CoI-M layers with ``modulate_convs``.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from coic_basicsr.archs.restormer_blocks import ChannelLayerNorm, CoICTransformerBlock, MDTAttention
from coic_basicsr.archs.modulation import ContextEmbedding, ModulationContext

# Top-k fractions (numerator, denominator) of the four sparse attention branches, as in the official code.
TOPK_FRACTIONS: Tuple[Tuple[int, int], ...] = ((1, 2), (2, 3), (3, 4), (4, 5))
# Experts of one MEFC operation layer, in the official order: (kind, kernel, padding, dilation).
EXPERTS: Tuple[Tuple[str, int, int, int], ...] = (
    ('sep', 1, 0, 1), ('sep', 3, 1, 1), ('sep', 5, 2, 1), ('sep', 7, 3, 1),
    ('dil', 3, 2, 2), ('dil', 5, 4, 2), ('dil', 7, 6, 2), ('avg', 3, 1, 1))


def topk_counts(channels: int) -> Tuple[int, ...]:
    """Number of kept keys per branch for ``channels`` channels per head (the official ``int(C*n/d)``)."""
    return tuple(int(channels * num / den) for num, den in TOPK_FRACTIONS)


class TopKSparseAttention(MDTAttention):
    """TKSA: MDTA whose channel-attention rows keep only their top-k entries, for four k, mixed by learnable weights.

    The four masked softmaxes share one exponential and their weighted sum multiplies V once (the official code runs
    four ``attn @ v``); the result is the same.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__(dim, num_heads, bias)
        # official names attn1..attn4, initialised to 0.2
        self.attn1, self.attn2, self.attn3, self.attn4 = (nn.Parameter(torch.full((1, ), 0.2)) for _ in range(4))

    def forward(self, x: Tensor, kv_input: Optional[Tensor] = None) -> Tensor:
        q, k, v = self._heads(x, kv_input)
        attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * self.temperature
        # softmax is shift-invariant: one shift by the row maximum serves all four branches
        expo = torch.exp(attn - attn.amax(dim=-1, keepdim=True).detach())
        mixed, counts = 0, topk_counts(x.shape[1] // self.num_heads)
        for count, weight in zip(counts, (self.attn1, self.attn2, self.attn3, self.attn4)):
            # topk per branch, as the official code: ties (e.g. 1x1 maps) are broken the same way
            keep = torch.zeros_like(attn).scatter_(-1, attn.topk(count, dim=-1).indices, 1.0)
            kept = expo * keep
            mixed = mixed + kept * (weight / kept.sum(dim=-1, keepdim=True))
        return self._project_heads(mixed @ v, x)


class MixedScaleFFN(nn.Module):
    """MSFN: 1x1 expansion, parallel 3x3 / 5x5 depthwise convs, cross-scale mixing by grouped convs, 1x1 projection."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv3x3 = nn.Conv2d(hidden * 2, hidden * 2, 3, 1, 1, groups=hidden * 2, bias=bias)
        self.dwconv5x5 = nn.Conv2d(hidden * 2, hidden * 2, 5, 1, 2, groups=hidden * 2, bias=bias)
        self.dwconv3x3_1 = nn.Conv2d(hidden * 2, hidden, 3, 1, 1, groups=hidden, bias=bias)
        self.dwconv5x5_1 = nn.Conv2d(hidden * 2, hidden, 5, 1, 2, groups=hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden * 2, dim, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.project_in(x)
        a3, b3 = F.relu(self.dwconv3x3(x)).chunk(2, dim=1)
        a5, b5 = F.relu(self.dwconv5x5(x)).chunk(2, dim=1)
        x1 = F.relu(self.dwconv3x3_1(torch.cat([a3, a5], dim=1)))
        x2 = F.relu(self.dwconv5x5_1(torch.cat([b3, b5], dim=1)))
        return self.project_out(torch.cat([x1, x2], dim=1))


class SparseTransformerBlock(CoICTransformerBlock):
    """STB: ``x + TKSA(norm1(x))``, ``x + MSFN(norm2(x))``; K/V from ``norm1(x + context_embed(z))`` with a context.

    The forward (and its K/V context) is :class:`CoICTransformerBlock`'s; only the attention and FFN differ.
    """

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, layer_norm_type: str,
                 context: Optional[ModulationContext], context_dim: int) -> None:
        nn.Module.__init__(self)  # the parent's __init__ would build Restormer's attention and FFN
        self.norm1 = ChannelLayerNorm(dim, layer_norm_type)
        self.attn = TopKSparseAttention(dim, num_heads, bias)
        self.norm2 = ChannelLayerNorm(dim, layer_norm_type)
        self.ffn = MixedScaleFFN(dim, ffn_expansion_factor, bias)
        self.context_embed = None if context is None else ContextEmbedding(dim, context=context,
                                                                           context_dim=context_dim)


class _ConvStack(nn.Module):
    """Holder of an ``op`` Sequential (official key layout ``op.<i>``)."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.op = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


def _expert(channels: int, kind: str, kernel: int, padding: int, dilation: int) -> nn.Module:
    """One MEFC expert: separable (two depthwise+pointwise pairs), dilated separable, or 3x3 average pooling."""
    if kind == 'avg':
        return nn.AvgPool2d(kernel, stride=1, padding=padding, count_include_pad=False)

    def depthwise() -> nn.Conv2d:
        return nn.Conv2d(channels, channels, kernel, 1, padding, dilation, groups=channels, bias=False)

    pointwise = [nn.Conv2d(channels, channels, 1, bias=False) for _ in range(2)]
    if kind == 'dil':
        return _ConvStack(depthwise(), pointwise[0])
    return _ConvStack(depthwise(), pointwise[0], nn.ReLU(), depthwise(), pointwise[1])


class MixtureOperationLayer(nn.Module):
    """All experts on the same input, weighted per sample, concatenated and fused by ``_out`` (1x1 conv + ReLU)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self._ops = nn.ModuleList([_expert(channels, *spec) for spec in EXPERTS])
        self._out = nn.Sequential(nn.Conv2d(channels * len(EXPERTS), channels, 1, bias=False), nn.ReLU())

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:  # weights: (B, num_experts)
        states = [op(x) * weights[:, i, None, None, None] for i, op in enumerate(self._ops)]
        return self._out(torch.cat(states, dim=1))


class OperationAttention(nn.Module):
    """Per-sample expert logits (B, steps, num_experts) from the pooled input (key ``ca_fc``)."""

    def __init__(self, channels: int, steps: int, num_ops: int) -> None:
        super().__init__()
        self.steps, self.num_ops = steps, num_ops
        self.ca_fc = nn.Sequential(nn.Linear(channels, steps * num_ops * 2), nn.ReLU(),
                                   nn.Linear(steps * num_ops * 2, steps * num_ops))

    def forward(self, x: Tensor) -> Tensor:
        return self.ca_fc(x.mean(dim=(2, 3))).view(-1, self.steps, self.num_ops)


class MixtureOperationGroup(nn.Module):
    """1x1 conv + ReLU (``preprocess.op``), then ``steps`` residual mixture layers (``_ops``)."""

    def __init__(self, channels: int, steps: int) -> None:
        super().__init__()
        self.preprocess = _ConvStack(nn.Conv2d(channels, channels, 1, bias=False), nn.ReLU())
        self._ops = nn.ModuleList([MixtureOperationLayer(channels) for _ in range(steps)])

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:  # weights: (B, steps, num_experts)
        x = self.preprocess(x)
        for i, layer in enumerate(self._ops):
            x = F.relu(layer(x, weights[:, i]) + x)
        return x


class FeatureCompensator(nn.Module):
    """MEFC (official ``subnet``): ``layers = [attention, group] * layer_num``; softmax expert weights per step."""

    def __init__(self, channels: int, layer_num: int = 1, steps: int = 4) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        for _ in range(layer_num):
            layers += [OperationAttention(channels, steps, len(EXPERTS)), MixtureOperationGroup(channels, steps)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        for attention, group in zip(self.layers[0::2], self.layers[1::2]):
            x = group(x, attention(x).softmax(dim=-1))
        return x
