"""grouped_conv.conv2d: the plain op's values and gradients, whichever kernel-gradient rewrite it picks."""
import pytest
import torch
from torch.nn import functional as F
from torch.nn.modules.utils import _pair

from coic_basicsr.archs import grouped_conv

# (batch, in channels, out channels, groups, size, kernel, padding, dilation,
#  kernel-gradient strategy NCHW, same channels-last, input-gradient strategy NCHW, same channels-last)
CASES = [
    (1, 6, 6, 6, 9, 5, 2, 1, 'as_conv', 'as_conv', 'as_forward', None),  # depthwise, batch 1 (per-sample path)
    (1, 8, 4, 4, 7, 5, 2, 1, 'as_conv', 'as_conv', 'as_forward', None),  # channel pairs (DRSformer's MSFN)
    (1, 6, 6, 6, 10, 7, 6, 2, 'as_conv', 'as_conv', 'as_forward', 'as_forward'),  # dilated (DRSformer's MEFC)
    (1, 4, 4, 4, 8, 5, 1, 1, 'as_conv', 'as_conv', 'as_forward', None),  # padding that shrinks the map
    (3, 6, 6, 6, 8, 5, 2, 1, 'as_conv', 'as_conv', 'as_forward', None),  # batch > 1: one conv per sample, summed
    (2, 4, 4, 4, 9, 7, 6, 2, 'as_conv', 'as_conv', 'as_forward', 'as_forward'),
    (3, 8, 4, 4, 12, 5, 2, 1, 'as_conv', 'as_conv', 'as_forward', None),
    (1, 8, 4, 4, 9, 3, 1, 1, 'as_conv', None, 'as_forward', None),  # 3x3 channel pairs
    (2, 8, 4, 4, 9, 3, 1, 1, 'as_conv', None, 'as_forward', None),
    (1, 6, 6, 6, 9, 3, 1, 1, None, None, None, None),  # depthwise 3x3: the plain op
    (1, 6, 6, 3, 9, 5, 2, 1, None, None, None, None),  # two output channels per group: the plain op
    (2, 4, 4, 4, 9, 5, 5, 1, 'as_conv', 'as_conv', None, None),  # padding beyond the kernel's reach
    (2, 8, 4, 4, 9, 5, (2, 1), 1, 'as_conv', 'as_conv', 'as_forward', None),  # rows padded unlike columns
]


def _run(conv, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, args: tuple, needs=(True, True, True)):
    leaves = [t.detach().clone().requires_grad_(need) for t, need in zip((x, weight, bias), needs)]
    out = conv(*leaves, *args)
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
    return [out.detach()] + [t.grad for t in leaves]


@pytest.mark.parametrize('case', CASES, ids=[str(c) for c in CASES])
@pytest.mark.parametrize('channels_last', [False, True])
def test_values_and_gradients_equal_the_plain_op(case: tuple, channels_last: bool) -> None:
    batch, channels, out_channels, groups, size, kernel, padding, dilation, *expected = case
    torch.manual_seed(0)
    x = torch.randn(batch, channels, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(out_channels, channels // groups, kernel, kernel)
    bias = torch.randn(out_channels)
    args = ((1, 1), _pair(padding), (dilation, dilation), groups)
    leaf_x, leaf_w = x.detach().requires_grad_(), weight.detach().requires_grad_()
    assert grouped_conv.weight_grad_strategy(leaf_x, leaf_w, *args[:2], groups) == expected[1 if channels_last else 0]
    assert grouped_conv.input_grad_strategy(leaf_x, leaf_w, *args) == expected[3 if channels_last else 2]
    plain, ours = (_run(conv, x, weight, bias, args) for conv in (F.conv2d, grouped_conv.conv2d))
    for mine, reference, name in zip(ours, plain, ('output', 'x', 'weight', 'bias')):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize('needs', [(True, False, False), (False, True, True)], ids=['input only', 'kernel only'])
def test_one_gradient_alone(needs: tuple) -> None:
    torch.manual_seed(0)
    x, weight, bias = torch.randn(1, 8, 9, 9), torch.randn(4, 2, 5, 5), torch.randn(4)
    args = ((1, 1), (2, 2), (1, 1), 4)
    plain, ours = (_run(conv, x, weight, bias, args, needs) for conv in (F.conv2d, grouped_conv.conv2d))
    for mine, reference in zip(ours, plain):
        assert (mine is None) == (reference is None)
        if mine is not None:
            torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('strategy_case', [CASES[1], CASES[2], CASES[5], CASES[6], CASES[7], CASES[8]])
def test_gradcheck_in_double(strategy_case: tuple) -> None:
    batch, channels, _, groups, size, kernel, padding, dilation, *_ = strategy_case
    torch.manual_seed(0)
    x = torch.randn(batch, channels, size, size, dtype=torch.double, requires_grad=True)
    weight = torch.randn(groups, channels // groups, kernel, kernel, dtype=torch.double, requires_grad=True)
    bias = torch.randn(groups, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *t: grouped_conv.conv2d(*t, (1, 1), (padding, padding), (dilation, dilation), groups),
        (x, weight, bias))


def test_no_rewrite_without_grad_or_with_stride() -> None:
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    weight = torch.randn(4, 1, 5, 5, requires_grad=True)
    for stride, padding in (((2, 2), (2, 2)), ((1, 1), 'same')):
        assert grouped_conv.weight_grad_strategy(x, weight, stride, padding, 4) is None
        assert grouped_conv.input_grad_strategy(x, weight, stride, padding, (1, 1), 4) is None
    assert grouped_conv.weight_grad_strategy(x, weight.detach(), (1, 1), (2, 2), 4) is None
    assert grouped_conv.input_grad_strategy(x.detach(), weight, (1, 1), (2, 2), (1, 1), 4) is None
