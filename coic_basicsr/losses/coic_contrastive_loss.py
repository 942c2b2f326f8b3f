"""Contrastive loss of CoIC: rain-aware and detail-aware negatives, spatial cosine logits, InfoNCE."""
from typing import List, Sequence, Tuple

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, distributed as dist, nn
from torch.nn import functional as F

from coic_basicsr.losses.loss_util import bad_loss_option

_NAME = 'CoICContrastiveLoss'


def _random_flip(x: Tensor) -> Tensor:
    """Independent random horizontal and vertical flips (p = 0.5 each) per image of (N, C, H, W)."""
    flip_h = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5
    flip_v = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5
    x = torch.where(flip_h, x.flip(-1), x)
    return torch.where(flip_v, x.flip(-2), x)


def _gaussian_blur(x: Tensor, kernel_size: int, sigma: Tensor) -> Tensor:
    """Blur each image of (N, C, H, W) with its own separable Gaussian (sigma (N,)), reflect padding."""
    n, c, h, w = x.shape
    coords = torch.arange(kernel_size, device=x.device, dtype=torch.float32) - (kernel_size - 1) / 2
    kernel = torch.exp(-0.5 * (coords[None] / sigma[:, None].float())**2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).to(x.dtype).repeat_interleave(c, dim=0)  # (N*C, k)
    pad = kernel_size // 2
    mode = 'reflect' if min(h, w) > pad else 'replicate'
    out = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode=mode)
    out = F.conv2d(out, kernel[:, None, None, :], groups=n * c)
    out = F.conv2d(out, kernel[:, None, :, None], groups=n * c)
    return out.view(n, c, h, w)


def _all_gather(x: Tensor) -> Tuple[Tensor, int]:
    """Concatenate ``x`` (dim 0) over all ranks (sizes may differ); also return this rank's offset."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    sizes = [int(s.item()) for s in sizes]
    padded = x.new_zeros(max(sizes), *x.shape[1:])
    padded[:x.shape[0]] = x
    chunks = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(chunks, padded.contiguous())
    return torch.cat([chunk[:size] for chunk, size in zip(chunks, sizes)]), sum(sizes[:rank])


@LOSS_REGISTRY.register()
class CoICContrastiveLoss(nn.Module):
    """InfoNCE between the query features of the rainy image and key features of its views.

    Logits: spatial mean of the cosine similarity between the anchor map and each key map, divided by
    ``temperature``; the positive (the same rainy image, randomly flipped) sits at index 0. Negatives per sample:
    one rain-aware view (its clean image plus the rain layer, ``rainy - clean``, of the archived or current sample
    whose rain layer differs most in L1 from its own, clamped to [0, 1]) and ``num_detail_negatives`` detail-aware
    views (the clean image Gaussian-blurred with a random sigma, randomly flipped). Key features are treated as
    constants (MoCo): gradients reach the anchor only. The archive of recent rain layers (all ranks' layers in
    distributed runs) is the persistent buffer ``rain_archive``, saved with the state dict for resuming.

    CoICModel builds it from ``train.coic`` (``contrastive_weight`` is its ``loss_weight``; the other keys keep
    their names) and calls it with the encoders' features of the views of :meth:`build_views`; it cannot be a
    ``train.<name>_opt`` loss section, which is called as ``loss(output, gt)``.

    Args:
        loss_weight (float): Weight of the loss. Default: 0.2.
        temperature (float): Softmax temperature. Default: 1.0.
        num_detail_negatives (int): Detail-aware negatives per sample. Default: 4.
        archive_size (int): Recent rain layers kept as rain-aware candidates (besides the current batch); 0 picks from
            the current batch only, as the CoIC authors' code does. Default: 64.
        blur_kernel_size (int): Odd size of the Gaussian kernel of the detail-aware negatives. Default: 11.
        blur_sigma (list[float]): Range [low, high] of the uniformly drawn Gaussian sigma. Default: [0.3, 1.5].
    """

    def __init__(self, loss_weight: float = 0.2, temperature: float = 1.0, num_detail_negatives: int = 4,
                 archive_size: int = 64, blur_kernel_size: int = 11, blur_sigma: Sequence[float] = (0.3, 1.5)) -> None:
        super().__init__()
        if temperature <= 0:
            raise bad_loss_option(_NAME, 'temperature', 'a number > 0', temperature)
        for key, value in (('num_detail_negatives', num_detail_negatives), ('archive_size', archive_size)):
            if value < 0:
                raise bad_loss_option(_NAME, key, 'an integer >= 0', value)
        if blur_kernel_size < 1 or blur_kernel_size % 2 == 0:
            raise bad_loss_option(_NAME, 'blur_kernel_size', 'a positive odd integer', blur_kernel_size)
        if len(blur_sigma) != 2 or not 0 < blur_sigma[0] <= blur_sigma[1]:
            raise bad_loss_option(_NAME, 'blur_sigma', 'a list [low, high] of numbers with 0 < low <= high',
                                  blur_sigma)
        self.loss_weight = float(loss_weight)
        self.temperature = float(temperature)
        self.num_detail_negatives = int(num_detail_negatives)
        self.archive_size = int(archive_size)
        self.blur_kernel_size = int(blur_kernel_size)
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.register_buffer('rain_archive', torch.zeros(0), persistent=True)  # (N <= archive_size, C, H, W)
        self._register_load_state_dict_pre_hook(self._resize_archive)

    def _resize_archive(self, state_dict: dict, prefix: str, *args: List) -> None:
        saved = state_dict.get(f'{prefix}rain_archive')
        if saved is not None:
            self.rain_archive = self.rain_archive.new_zeros(saved.shape, dtype=saved.dtype)

    @torch.no_grad()
    def build_views(self, lq_global: Tensor, gt_global: Tensor) -> Tuple[Tensor, Tensor]:
        """Return the positive (B, C, H, W) and negatives (B, 1 + n, C, H, W) [index 0 = rain-aware].

        Also pushes this batch's rain layers (of all ranks) into the archive.
        """
        if lq_global.dim() != 4 or lq_global.shape != gt_global.shape:
            raise ValueError('CoICContrastiveLoss.build_views: expected lq_global and gt_global (B, C, H, W) tensors '
                             f'of one shape, got {tuple(lq_global.shape)} and {tuple(gt_global.shape)}')
        b = lq_global.shape[0]
        rain = (lq_global - gt_global).float()
        archive = self.rain_archive.to(rain.device)
        if archive.numel() and archive.shape[1:] != rain.shape[1:]:
            raise ValueError(f'CoICContrastiveLoss: global views of shape {tuple(rain.shape[1:])} differ from the '
                             f'archived rain layers {tuple(archive.shape[1:])}; resize them to one fixed size')
        current, offset = _all_gather(rain)
        candidates = torch.cat([archive.float(), current])
        own = archive.shape[0] + offset + torch.arange(b, device=rain.device)
        if candidates.shape[0] > 1:
            dist_l1 = torch.cdist(rain.flatten(1)[None], candidates.flatten(1)[None], p=1)[0]  # (B, N)
            dist_l1[torch.arange(b, device=rain.device), own] = -1.0  # never pick the sample's own layer
            other_rain = candidates[dist_l1.argmax(dim=1)]
        else:  # a lone sample with an empty archive: no other rain layer exists, use the clean image
            other_rain = torch.zeros_like(rain)
        rain_neg = (gt_global.float() + other_rain).clamp(0.0, 1.0).to(gt_global.dtype)
        n = self.num_detail_negatives
        details = gt_global.repeat_interleave(n, dim=0)
        if n:
            sigma = torch.empty(b * n, device=gt_global.device).uniform_(*self.blur_sigma)
            details = _random_flip(_gaussian_blur(details, self.blur_kernel_size, sigma))
        details = details.view(b, n, *gt_global.shape[1:])
        if self.archive_size:
            self.rain_archive = candidates[-self.archive_size:].clone()
        return _random_flip(lq_global), torch.cat([rain_neg[:, None], details], dim=1)

    def forward(self, anchor: Tensor, positive: Tensor, negatives: Tensor) -> Tuple[Tensor, Tensor]:
        """Feature maps (B, C, h, w), (B, C, h, w), (B, 1 + n, C, h, w) -> (weighted loss, logits (B, 2 + n))."""
        if anchor.dim() != 4 or positive.shape != anchor.shape or negatives.dim() != 5 or \
                negatives.shape[0] != anchor.shape[0] or negatives.shape[2:] != anchor.shape[1:]:
            raise ValueError('CoICContrastiveLoss: expected anchor/positive (B, C, h, w) and negatives '
                             f'(B, K, C, h, w), got {tuple(anchor.shape)}, {tuple(positive.shape)}, '
                             f'{tuple(negatives.shape)}')
        anchor = F.normalize(anchor, dim=1)
        keys = torch.cat([positive[:, None], negatives], dim=1).detach()
        keys = F.normalize(keys, dim=2)
        logits = (anchor[:, None] * keys).sum(dim=2).mean(dim=(-2, -1)) / self.temperature  # (B, 1 + K)
        target = torch.zeros(anchor.shape[0], dtype=torch.long, device=anchor.device)
        return self.loss_weight * F.cross_entropy(logits, target), logits
