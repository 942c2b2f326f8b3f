"""The parts under every CoI-M layer of ``modulation.py``: the shared code holder, the kernel-scale generator and
its math, the K/V context embedding, the channel means the generator reads, and the load hook that lets plain
checkpoints load strictly."""
import threading
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from basicsr.utils import get_root_logger  # safe: importing coic_basicsr (our parent) installed the shim first


class ModulationContext:
    """Holder of the current instance code ``z`` (per thread) and of the network-wide generator setting; shared by
    all modulated layers of one network.

    Args:
        generator_width: upper bound on both hidden widths of every kernel-scale generator built with this context
            (see :func:`generator_widths`); None keeps the CoIC authors' widths.
        option_key: where ``generator_width`` came from, named in the error for a bad value (the archs pass
            :func:`~coic_basicsr.archs.arch_util.option_key` of it).
    """

    def __init__(self, generator_width: Optional[int] = None, option_key: str = 'generator_width') -> None:
        if generator_width is not None and (isinstance(generator_width, bool) or not isinstance(generator_width, int)
                                            or generator_width < 1):
            raise ValueError(f'{option_key}: expected a positive integer or null, got {generator_width!r}')
        self.generator_width = generator_width
        self._local = threading.local()

    def get(self) -> Optional[Tensor]:
        """Return the code set by the innermost active :meth:`use` of this thread, or None."""
        return getattr(self._local, 'z', None)

    def frames(self) -> int:
        """Frames per clip of the innermost :meth:`use` of this thread (1 unless a video input's code was set)."""
        return getattr(self._local, 'frames', 1)

    def layer_calls(self) -> int:
        """How many layers sharing this context have run (:func:`resolve_z`) inside the innermost :meth:`use` (outside
        any, since the thread's first call)."""
        return getattr(self._local, 'calls', 0)

    def count_layer_call(self) -> None:
        self._local.calls = self.layer_calls() + 1

    @contextmanager
    def use(self, z: Optional[Tensor], frames: int = 1) -> Iterator[None]:
        """Set ``z`` for the duration of the block and restore the previous value afterwards. ``frames`` > 1: the
        input is a batch of clips of that many frames, which a layer may see folded into its batch batch-major
        (B * T frames, B * (T - 1) frame pairs, ...): each clip's code then goes to each of its items (see
        :func:`resolve_z`)."""
        previous = (self.get(), self.frames(), self.layer_calls())
        self._local.z, self._local.frames, self._local.calls = z, int(frames), 0
        try:
            yield
        finally:
            inner_calls = self.layer_calls()
            self._local.z, self._local.frames, self._local.calls = previous[0], previous[1], previous[2] + inner_calls

    def __deepcopy__(self, memo: dict) -> 'ModulationContext':
        fresh = type(self)(self.generator_width)
        memo[id(self)] = fresh  # every copied layer then shares this one new context
        return fresh

    def __getstate__(self) -> dict:
        return {'generator_width': self.generator_width}

    def __setstate__(self, state: dict) -> None:
        self.generator_width = state.get('generator_width')
        self._local = threading.local()


def generator_widths(out_channels: int, groups: int, cap: Optional[int] = None) -> Tuple[int, int]:
    """Hidden widths of a conv's kernel-scale generator: the CoIC authors' (C_out for a dense conv, C_out // 16 for a
    grouped one, then 16), each bounded by ``cap`` when given."""
    first, second = (out_channels if groups == 1 else max(out_channels // 16, 1)), 16
    return (first, second) if cap is None else (min(first, cap), min(second, cap))


class KernelScaleGenerator(nn.Sequential):
    """MLP ``[z | GAP(x)] -> [a_out | a_in | a_k]``; its last Linear is zero-initialised (scale 1 at start)."""

    def __init__(self, in_features: int, hidden: int, out_features: int, bottleneck: int = 16) -> None:
        super().__init__(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, bottleneck),
            nn.ReLU(inplace=True), nn.Linear(bottleneck, out_features))
        nn.init.zeros_(self[-1].weight)
        nn.init.zeros_(self[-1].bias)


NO_ENCODER_WARNING = ('network_g has trained CoI-M layers but no encoder (network_enc) is given: it runs with z=None, '
                      'as its plain backbone, not as it was trained')


def has_trained_modulation(net: nn.Module) -> bool:
    """Whether a kernel-scale generator of ``net`` has left its zero-initialised last layer (trained CoI-M)."""
    return any(bool(m[-1].weight.any() or m[-1].bias.any()) for m in net.modules()
               if isinstance(m, KernelScaleGenerator))


def resolve_z(layer: nn.Module, x: Tensor, z: Optional[Tensor]) -> Optional[Tensor]:
    """Explicit ``z`` wins over the context; check its shape and broadcast a single code over the batch (and each
    clip's code over its items when the context's input is a video whose frames, or frame pairs, the layer sees
    folded into the batch batch-major, as ``x.view(B * T, ...)`` folds them). Counts the layer's call in its
    context."""
    frames = 1
    if layer.context is not None:
        layer.context.count_layer_call()
        frames = layer.context.frames()
        if z is None:
            z = layer.context.get()
    if z is None:
        return None
    if z.dim() != 2 or z.shape[1] != layer.context_dim:
        raise ValueError(f'{type(layer).__name__}: z must have shape (B, {layer.context_dim}), got {tuple(z.shape)}')
    if z.shape[0] != x.shape[0]:
        if z.shape[0] == 1:
            return z.expand(x.shape[0], -1)
        if frames > 1 and x.shape[0] % z.shape[0] == 0:  # frames (or frame pairs, e.g. optical flow) of each clip
            return z.repeat_interleave(x.shape[0] // z.shape[0], dim=0)
        raise ValueError(f'{type(layer).__name__}: z has batch {z.shape[0]} but the input has {x.shape[0]}'
                         + (' (not a whole number of items per clip)' if frames > 1 else ''))
    return z


class ContextEmbedding(nn.Module):
    """x -> x + Linear(SiLU(z)) broadcast over H,W (K/V context of transformer blocks); returns x itself (same object)
    when z is None. The Linear is zero-initialised (identity at construction)."""

    def __init__(self, channels: int, *, context: ModulationContext, context_dim: int = 128) -> None:
        super().__init__()
        if not isinstance(context, ModulationContext):
            raise TypeError(f'ContextEmbedding: context must be a ModulationContext, got {type(context)}')
        self.context = context
        self.context_dim = int(context_dim)
        self.proj = nn.Linear(self.context_dim, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self._register_load_state_dict_pre_hook(keep_modulation_if_missing, with_module=True)

    def forward(self, x: Tensor) -> Tensor:
        z = resolve_z(self, x, None)
        if z is None:
            return x
        if x.dim() != 4:
            raise ValueError(f'ContextEmbedding expects (B, C, H, W) features, got shape {tuple(x.shape)}')
        return x + self.proj(F.silu(z.to(x.dtype)))[:, :, None, None]


class WithChannelMeans(torch.autograd.Function):
    """x -> (x, its (B, C) channel means); the backward adds the means' gradient to x's in one pass.

    Plain ``x.mean`` gives x a second, stride-0 gradient that autograd accumulates into a separate buffer; in
    channels-last or mixed-format networks those sums became slow transposing adds (profiled: +0.3 s per DRSformer
    step at 64x64, the largest single cost of CoI-M).
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tuple[Tensor, Tensor]:
        ctx.shape = x.shape
        return x.view_as(x), x.mean(dim=(2, 3))

    @staticmethod
    def backward(ctx, grad_x: Optional[Tensor], grad_means: Optional[Tensor]) -> Tensor:
        if grad_means is None:
            return grad_x
        spread = (grad_means / (ctx.shape[2] * ctx.shape[3]))[:, :, None, None]
        return spread.expand(ctx.shape) if grad_x is None else grad_x + spread


class ScaledKernels(torch.autograd.Function):
    """(B, R, C, kh, kw) per-sample kernels ``weight * s`` (or the scales ``s`` alone when ``weight`` is None), with
    ``s[b, r, c] = k*k * softmax(sigmoid(a_rows[b, r] + a_cols[b, c]) * a_k[b])`` computed in at least float32 (mean
    over the window 1; exactly 1 when all logits are equal, i.e. a zero-initialised generator).

    One Function with a written-out backward: autograd's chain of the composed ops made ~20 passes over the
    B x R x C x kh x kw elements per step, ~45 % of CoI-M's per-layer cost at batch 1 (Restormer's dense
    up-sampling convs have 2.7 M such elements). The softmax's shift and its sums over the kh * kw taps avoid
    reductions over a short last dim (slow on the CPU): fwd+bwd of the 2.7 M-element layer 24.7 -> 16.2 ms.
    """

    @staticmethod
    def forward(ctx, weight: Optional[Tensor], a_rows: Tensor, a_cols: Tensor, a_k: Tensor,
                kernel_size: Tuple[int, int]) -> Tensor:
        dtype = torch.promote_types(a_rows.dtype, torch.float32)  # half precision is raised, double kept
        a_k = a_k.to(dtype)
        gate = torch.sigmoid(a_rows.to(dtype)[:, :, None] + a_cols.to(dtype)[:, None, :])
        # gate > 0, so gate * max(a_k) is each softmax's largest logit: shifting by it needs no pass over the logits
        shifted = a_k - a_k.amax(dim=-1, keepdim=True)
        scale = torch.mul(gate[..., None], shifted[:, None, None, :]).exp_()
        taps = scale.shape[-1]
        total = torch.matmul(scale, scale.new_ones(taps))  # a sum over the short last dim is faster as a product
        scale = scale.mul_((taps / total)[..., None])
        ctx.save_for_backward(weight, gate, a_k, scale)
        ctx.dtypes = (a_rows.dtype, a_cols.dtype, a_k.dtype)
        shaped = scale.view(*scale.shape[:3], *kernel_size)
        return shaped.clone() if weight is None else weight.unsqueeze(0) * shaped.to(weight.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_kernels: Tensor):
        weight, gate, a_k, scale = ctx.saved_tensors
        batch, taps = scale.shape[0], scale.shape[-1]
        # contiguous: the products below are viewed as (B, R * C, K) (a channels-last kernel's gradient is not)
        grad = grad_kernels.reshape(scale.shape).to(scale.dtype).contiguous()
        grad_weight = None
        if weight is None:
            weighted = grad * scale
        else:
            per_sample = grad * scale
            if ctx.needs_input_grad[0]:
                summed = per_sample[0] if batch == 1 else per_sample.sum(0)
                grad_weight = summed.view(weight.shape).to(weight.dtype)
            weighted = per_sample * weight.reshape(1, *scale.shape[1:]).to(scale.dtype)
        # With P = grad * W * s (``weighted``), the logits l = gate * a_k get P - mean_t(P) * s (k*k * softmax'), so
        # every reduction over the B x R x C x K elements is one batched matrix product with P or s.
        flat_p, flat_s = weighted.view(batch, -1, taps), scale.view(batch, -1, taps)
        mean_p, p_dot_k = torch.bmm(flat_p, torch.stack([torch.full_like(a_k, 1 / taps), a_k], dim=-1)).unbind(-1)
        s_dot_k = torch.bmm(flat_s, a_k[..., None]).squeeze(-1)
        gate_col = gate.reshape(batch, -1, 1)
        grad_a_k = (torch.bmm(flat_p.transpose(1, 2), gate_col)
                    - torch.bmm(flat_s.transpose(1, 2), gate_col * mean_p[..., None])).squeeze(-1)
        grad_pre = (p_dot_k - mean_p * s_dot_k).view(gate.shape).mul_(gate * (1 - gate))  # times sigmoid'
        rows_dtype, cols_dtype, k_dtype = ctx.dtypes
        return (grad_weight, grad_pre.sum(2).to(rows_dtype), grad_pre.sum(1).to(cols_dtype),
                grad_a_k.to(k_dtype), None)


def kernel_scale_from_logits(a_rows: Tensor, a_cols: Tensor, a_k: Tensor, kernel_size: Tuple[int, int]) -> Tensor:
    """(B, R, C, kh, kw) kernel scales of :class:`ScaledKernels` (no weight)."""
    return ScaledKernels.apply(None, a_rows, a_cols, a_k, tuple(kernel_size))


_last_filled_load: List[object] = [None]


def keep_modulation_if_missing(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                                missing_keys: List[str], *args) -> None:
    """Load pre-hook: a plain checkpoint lacks all modulation keys; insert current values so strict loading works."""
    own = {f'{prefix}{key}': value for key, value in module.state_dict().items() if key not in ('weight', 'bias')}
    if any(key in state_dict for key in own):
        return
    state_dict.update({key: value.detach() for key, value in own.items()})
    if _last_filled_load[0] is not missing_keys:  # one log line per load_state_dict call (same list object)
        _last_filled_load[0] = missing_keys
        get_root_logger().info(f'Checkpoint lacks the modulation parameters of {prefix[:-1] or "the network"} '
                               '(and maybe others): keeping their current values.')
