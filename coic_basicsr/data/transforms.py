"""Crop/augment/global-view code shared by every rain dataset (and the global view reused by the model at test time)."""
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import img2tensor


def global_view(img: Tensor, size: int) -> Tensor:
    """Resize a whole image to ``size x size`` for the representation encoder.

    Args:
        img: ``(C, H, W)`` or ``(B, C, H, W)`` float tensor in [0, 1].
        size: Output height and width.

    Returns:
        Tensor with the same leading layout as ``img`` and spatial size ``(size, size)``: antialiased bilinear
        resize (``align_corners=False``) clamped to [0, 1]. The model uses the same function at test time.
    """
    if img.dim() not in (3, 4):
        raise ValueError(f'global_view expects a (C,H,W) or (B,C,H,W) tensor, got shape {tuple(img.shape)}')
    batch = img if img.dim() == 4 else img.unsqueeze(0)
    if not batch.is_floating_point():
        raise ValueError(f'global_view expects a float tensor in [0, 1], got dtype {img.dtype}')
    out = F.interpolate(batch, size=(size, size), mode='bilinear', align_corners=False, antialias=True)
    out = out.clamp_(0.0, 1.0)
    return out if img.dim() == 4 else out.squeeze(0)


def apply_augment_status(img: Tensor, status: Sequence[bool]) -> Tensor:
    """Apply ``basicsr.data.transforms.augment``'s ``(hflip, vflip, rot90)`` status to a ``(..., H, W)`` tensor.

    The order matches ``augment``: horizontal flip, vertical flip, then transpose of H and W.
    """
    hflip, vflip, rot90 = status
    if hflip:
        img = img.flip(-1)
    if vflip:
        img = img.flip(-2)
    if rot90:
        img = img.transpose(-1, -2)
    return img.contiguous()


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop an ``(H, W, C)`` array to at most ``size x size`` (smaller sides are kept)."""
    h, w = img.shape[:2]
    ch, cw = min(size, h), min(size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top:top + ch, left:left + cw]


def build_pair_item(img_lq: np.ndarray,
                    img_gt: np.ndarray,
                    *,
                    train: bool,
                    gt_size: Optional[int],
                    global_size: int,
                    use_hflip: bool = True,
                    use_rot: bool = True,
                    val_size: Optional[int] = None,
                    where: str = 'pair') -> Dict[str, Tensor]:
    """Turn an aligned (lq, gt) pair of BGR float32 ``(H, W, 3)`` arrays into the tensors of a dataset item.

    Train: ``lq``/``gt`` are the same random ``gt_size`` crop of both images, flipped/rotated together by
    ``basicsr.data.transforms.augment``; ``lq_global``/``gt_global`` are the whole images through
    :func:`global_view` with the *same* flip/rotation applied (so the rain orientation the encoder sees matches
    the crop). Val/test: full images (centre-cropped to ``val_size`` when given) and ``lq_global``.

    Raises:
        ValueError: lq/gt sizes differ or the crop is larger than the image (message starts with ``where``).
    """
    if img_lq.shape != img_gt.shape:
        raise ValueError(f'{where}: lq size {img_lq.shape[:2]} differs from gt size {img_gt.shape[:2]}')
    if not train:
        if val_size:
            img_lq, img_gt = center_crop(img_lq, val_size), center_crop(img_gt, val_size)
        lq, gt = img2tensor([img_lq, img_gt], bgr2rgb=True, float32=True)
        return {'lq': lq, 'gt': gt, 'lq_global': global_view(lq, global_size)}

    h, w = img_gt.shape[:2]
    if gt_size is None or gt_size > h or gt_size > w:
        raise ValueError(f'{where}: gt_size {gt_size} is larger than the image ({h}x{w})')
    # global views first: augment flips the crops in place, and crops are views of the whole images
    whole_lq, whole_gt = img2tensor([img_lq, img_gt], bgr2rgb=True, float32=True)
    lq_global, gt_global = global_view(torch.stack([whole_lq, whole_gt]), global_size).unbind(0)
    crop_gt, crop_lq = paired_random_crop(img_gt, img_lq, gt_size, 1, where)
    (crop_gt, crop_lq), status = augment([np.ascontiguousarray(crop_gt), np.ascontiguousarray(crop_lq)],
                                         use_hflip, use_rot, return_status=True)
    gt, lq = img2tensor([crop_gt, crop_lq], bgr2rgb=True, float32=True)
    return {
        'lq': lq,
        'gt': gt,
        'lq_global': apply_augment_status(lq_global, status),
        'gt_global': apply_augment_status(gt_global, status),
    }
