"""grouped_conv.conv2d: the plain op's values and gradients, whichever kernel-gradient rewrite it picks."""
import pytest
import torch
from torch.nn import functional as F

from coic_basicsr.archs import grouped_conv

# (batch, in channels, out channels, groups, size, kernel, padding, dilation, expected strategy)
CASES = [
    (1, 6, 6, 6, 9, 5, 2, 1, 'as_conv'),  # depthwise, batch 1 (the per-sample path of modulation.py)
    (1, 8, 4, 4, 7, 5, 2, 1, 'as_conv'),  # two input channels per group (DRSformer's MSFN mixing convs)
    (1, 6, 6, 6, 10, 7, 6, 2, 'as_conv'),  # dilated (DRSformer's MEFC experts)
    (1, 4, 4, 4, 8, 5, 1, 1, 'as_conv'),  # padding that shrinks the map
    (3, 6, 6, 6, 8, 5, 2, 1, 'per_offset'),  # depthwise, small map, batch > 1
    (2, 4, 4, 4, 9, 7, 6, 2, 'per_offset'),
    (2, 4, 4, 4, 20, 5, 2, 1, None),  # large map at batch > 1: the plain op
    (1, 6, 6, 6, 9, 3, 1, 1, None),  # 3x3: the plain op
    (1, 6, 6, 3, 9, 5, 2, 1, None),  # two output channels per group: the plain op
]


@pytest.mark.parametrize('case', CASES, ids=[str(c) for c in CASES])
@pytest.mark.parametrize('channels_last', [False, True])
def test_values_and_gradients_equal_the_plain_op(case: tuple, channels_last: bool) -> None:
    batch, channels, out_channels, groups, size, kernel, padding, dilation, strategy = case
    torch.manual_seed(0)
    x = torch.randn(batch, channels, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(out_channels, channels // groups, kernel, kernel)
    bias = torch.randn(out_channels)
    args = ((1, 1), (padding, padding), (dilation, dilation), groups)
    assert grouped_conv.weight_grad_strategy(x, weight.requires_grad_(), *args[:2], groups) == strategy
    results = []
    for conv in (F.conv2d, grouped_conv.conv2d):
        leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
        out = conv(*leaves, *args)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        results.append([out.detach()] + [t.grad for t in leaves])
    for ours, plain, name in zip(results[1], results[0], ('output', 'x', 'weight', 'bias')):
        torch.testing.assert_close(ours, plain, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize('strategy_case', [CASES[1], CASES[2], CASES[5]])
def test_gradcheck_in_double(strategy_case: tuple) -> None:
    batch, channels, _, groups, size, kernel, padding, dilation, _ = strategy_case
    torch.manual_seed(0)
    x = torch.randn(batch, channels, size, size, dtype=torch.double, requires_grad=True)
    weight = torch.randn(groups, channels // groups, kernel, kernel, dtype=torch.double, requires_grad=True)
    bias = torch.randn(groups, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *t: grouped_conv.conv2d(*t, (1, 1), (padding, padding), (dilation, dilation), groups),
        (x, weight, bias))


def test_no_rewrite_without_grad_or_with_stride() -> None:
    x = torch.randn(1, 4, 8, 8)
    weight = torch.randn(4, 1, 5, 5, requires_grad=True)
    assert grouped_conv.weight_grad_strategy(x, weight, (2, 2), (2, 2), 4) is None
    assert grouped_conv.weight_grad_strategy(x, weight, (1, 1), 'same', 4) is None
    assert grouped_conv.weight_grad_strategy(x, weight.detach(), (1, 1), (2, 2), 4) is None
