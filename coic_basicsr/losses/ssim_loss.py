"""SSIM as a training loss (BRN/PReNet train on negative SSIM), on RGB channels or on the Y channel."""
import math

import torch
from basicsr.utils.color_util import rgb2ycbcr_pt
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from coic_basicsr.losses.loss_util import bad_loss_option, check_loss_flag, check_loss_number, check_loss_value
from coic_basicsr.utils.option_values import ODD_SIZE_RULE

_PADDINGS = ('same', 'valid')
_NAME = 'CoICSSIMLoss'


def gaussian_window(window_size: int, sigma: float) -> Tensor:
    """Normalised 1-D Gaussian of ``window_size`` taps."""
    coords = torch.arange(window_size, dtype=torch.float32) - (window_size - 1) / 2
    window = torch.exp(-coords**2 / (2 * sigma**2))
    return window / window.sum()


def ssim(pred: Tensor, target: Tensor, window: Tensor, padding: str = 'same') -> Tensor:
    """Mean SSIM of (N, C, H, W) images in [0, 1] per channel (separable Gaussian ``window``, constants K1=0.01,
    K2=0.03). ``padding='same'`` zero-pads by half a window (as the pytorch-ssim code BRN trains with), ``'valid'``
    keeps only full windows (as BasicSR's metric)."""
    c = pred.shape[1]
    pad = window.numel() // 2 if padding == 'same' else 0
    kernel_h = window.view(1, 1, 1, -1).expand(c, 1, 1, -1).to(pred)
    kernel_v = window.view(1, 1, -1, 1).expand(c, 1, -1, 1).to(pred)

    def blur(x: Tensor) -> Tensor:
        x = F.conv2d(x, kernel_h, padding=(0, pad), groups=c)
        return F.conv2d(x, kernel_v, padding=(pad, 0), groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mu_p, mu_t = blur(pred), blur(target)
    var_p = blur(pred * pred) - mu_p**2
    var_t = blur(target * target) - mu_t**2
    cov = blur(pred * target) - mu_p * mu_t
    ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return ssim_map.mean()


@LOSS_REGISTRY.register()
class CoICSSIMLoss(nn.Module):
    """SSIM loss: ``loss_weight * (-SSIM)`` (``negative: true``, BRN's objective) or ``loss_weight * (1 - SSIM)``.

    Computed in float32 on (N, C, H, W) images in [0, 1]: per channel and averaged, or on the BT.601 Y channel of
    RGB inputs (``test_y_channel: true``, Y scaled to [0, 1]).

    Args:
        loss_weight (float): Weight of the loss. Default: 1.0.
        negative (bool): Return -SSIM (minimum -1) instead of 1 - SSIM (minimum 0); same gradients. Default: False.
        test_y_channel (bool): Compare the Y channel of RGB inputs instead of every channel. Default: False.
        window_size (int): Odd size of the Gaussian window. Default: 11.
        sigma (float): Standard deviation of the Gaussian window. Default: 1.5.
        padding (str): 'same' (zero padding, as pytorch-ssim) or 'valid' (full windows only). Default: 'same'.
    """

    def __init__(self, loss_weight: float = 1.0, negative: bool = False, test_y_channel: bool = False,
                 window_size: int = 11, sigma: float = 1.5, padding: str = 'same') -> None:
        super().__init__()
        check_loss_number(_NAME, 'loss_weight', loss_weight, 'a number >= 0', lambda v: v >= 0)
        check_loss_value(_NAME, 'window_size', window_size, ODD_SIZE_RULE)
        check_loss_number(_NAME, 'sigma', sigma, 'a positive number', lambda v: 0 < v < math.inf)
        for key, value in (('negative', negative), ('test_y_channel', test_y_channel)):
            check_loss_flag(_NAME, key, value)
        if padding not in _PADDINGS:
            raise bad_loss_option(_NAME, 'padding', f'one of {_PADDINGS}', padding)
        self.loss_weight = float(loss_weight)
        self.negative = negative
        self.test_y_channel = test_y_channel
        self.padding = padding
        self.register_buffer('window', gaussian_window(int(window_size), float(sigma)), persistent=False)

    def forward(self, pred: Tensor, target: Tensor, **kwargs) -> Tensor:
        if pred.shape != target.shape or pred.dim() != 4:
            raise ValueError(f'{_NAME}: expected pred and target (N, C, H, W) of one shape, got '
                             f'{tuple(pred.shape)} and {tuple(target.shape)}')
        if self.padding == 'valid' and min(pred.shape[-2:]) < self.window.numel():
            size = self.window.numel()
            raise ValueError(f"padding: 'valid' needs images of at least the {size}x{size} window for {_NAME}, got "
                             f'images of {tuple(pred.shape[-2:])} (use padding: same)')
        pred, target = pred.float(), target.float()
        if self.test_y_channel:
            if pred.shape[1] != 3:
                raise ValueError(f'test_y_channel: true needs RGB inputs for {_NAME}, got {pred.shape[1]} '
                                 'channels')
            pred, target = rgb2ycbcr_pt(pred, y_only=True), rgb2ycbcr_pt(target, y_only=True)
        value = ssim(pred, target, self.window, self.padding)
        return self.loss_weight * (-value if self.negative else 1 - value)
