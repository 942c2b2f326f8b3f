"""Edge loss of MPRNet / DGUNet: Charbonnier distance between the Laplacian (band-pass) images."""
import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from coic_basicsr.losses.loss_util import check_loss_number

_BINOMIAL_5 = (0.05, 0.25, 0.4, 0.25, 0.05)


@LOSS_REGISTRY.register()
class CoICEdgeLoss(nn.Module):
    """``loss_weight * mean(sqrt((L(pred) - L(gt))**2 + eps**2))`` with the one-level Laplacian
    ``L(x) = x - G(up(down(G(x))))``: ``G`` is the 5x5 binomial blur (replicate padding), ``down`` keeps every
    second pixel and ``up`` re-inserts them (times 4) between zeros, as in MPRNet/DGUNet's ``EdgeLoss``.

    Args:
        loss_weight (float): Weight of the loss (DGUNet: 0.05). Default: 1.0.
        eps (float): Charbonnier constant (added squared; write 1.0e-3 or !!float 1e-3: YAML reads 1e-3 as text).
            Default: 1e-3.
    """

    def __init__(self, loss_weight: float = 1.0, eps: float = 1e-3) -> None:
        super().__init__()
        check_loss_number('CoICEdgeLoss', 'loss_weight', loss_weight, 'a number >= 0', lambda v: v >= 0)
        check_loss_number('CoICEdgeLoss', 'eps', eps, 'a positive number', lambda v: v > 0)
        self.loss_weight = float(loss_weight)
        self.eps = float(eps)
        taps = torch.tensor(_BINOMIAL_5)
        self.register_buffer('kernel', torch.outer(taps, taps)[None, None], persistent=False)

    def _blur(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode='replicate'), self.kernel.to(x).expand(c, 1, 5, 5), groups=c)

    def laplacian(self, x: Tensor) -> Tensor:
        """One level of the Laplacian pyramid of (N, C, H, W) images, same shape as ``x``."""
        blurred = self._blur(x)
        sparse = torch.zeros_like(blurred)
        sparse[..., ::2, ::2] = blurred[..., ::2, ::2] * 4
        return x - self._blur(sparse)

    def forward(self, pred: Tensor, target: Tensor, **kwargs) -> Tensor:
        if pred.shape != target.shape or pred.dim() != 4:
            raise ValueError(f'CoICEdgeLoss: expected pred and target (N, C, H, W) of one shape, got '
                             f'{tuple(pred.shape)} and {tuple(target.shape)}')
        diff = self.laplacian(pred) - self.laplacian(target)
        return self.loss_weight * torch.sqrt(diff * diff + self.eps**2).mean()
