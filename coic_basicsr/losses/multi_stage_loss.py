"""A base loss applied to every stage output of a multi-stage network, with per-stage weights."""
from typing import List, Optional, Sequence, Union

from basicsr.losses import build_loss
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn


@LOSS_REGISTRY.register()
class CoICMultiStageLoss(nn.Module):
    """``loss_weight * sum_s w_s * base(stage_s, gt)`` over the stage outputs of a network (final last).

    The weights are ``stage_weights`` when given (one per stage), otherwise ``intermediate_weight`` for every stage
    but the last and ``final_weight`` for the last. CoICModel passes the whole list because of
    ``takes_all_stages = True``; a single tensor counts as one (final) stage. When the base loss takes the rainy
    input (``takes_input``), so does this wrapper, and it forwards ``lq`` to every call.

    Args:
        base_opt (dict): Options of the base loss, built with BasicSR's ``build_loss`` (its own ``loss_weight``
            applies too), e.g. ``{type: MSELoss}``, ``{type: CharbonnierLoss, eps: 1.0e-6}``, ``{type: CoICEdgeLoss}``.
        loss_weight (float): Weight of the whole sum. Default: 1.0.
        stage_weights (list[float] | None): Weight of each stage, first to final; its length must equal the number
            of stages. Default: None.
        intermediate_weight (float): Weight of each non-final stage when stage_weights is None. Default: 1.0.
        final_weight (float): Weight of the final stage when stage_weights is None. Default: 1.0.
    """

    takes_all_stages = True

    def __init__(self, base_opt: dict, loss_weight: float = 1.0, stage_weights: Optional[Sequence[float]] = None,
                 intermediate_weight: float = 1.0, final_weight: float = 1.0) -> None:
        super().__init__()
        if not isinstance(base_opt, dict) or 'type' not in base_opt:
            raise ValueError(f"CoICMultiStageLoss: base_opt must be a loss dict with a 'type', got {base_opt!r}")
        if base_opt['type'] == type(self).__name__:
            raise ValueError('CoICMultiStageLoss: base_opt cannot be another CoICMultiStageLoss')
        self.base = build_loss(base_opt)
        self.takes_input = bool(getattr(self.base, 'takes_input', False))
        self.loss_weight = float(loss_weight)
        self.stage_weights = None if stage_weights is None else [float(w) for w in stage_weights]
        self.intermediate_weight, self.final_weight = float(intermediate_weight), float(final_weight)

    def weights(self, num_stages: int) -> List[float]:
        """The weight of each of ``num_stages`` stages (first to final)."""
        if self.stage_weights is not None:
            if len(self.stage_weights) != num_stages:
                raise ValueError(f'CoICMultiStageLoss: stage_weights has {len(self.stage_weights)} entries but the '
                                 f'network returned {num_stages} stage outputs')
            return list(self.stage_weights)
        return [self.intermediate_weight] * (num_stages - 1) + [self.final_weight]

    def forward(self, stages: Union[Tensor, Sequence[Tensor]], target: Tensor, *lq: Tensor) -> Tensor:
        stages = [stages] if isinstance(stages, Tensor) else list(stages)
        if not stages:
            raise ValueError('CoICMultiStageLoss: got no stage outputs')
        weights = self.weights(len(stages))
        return self.loss_weight * sum(w * self.base(stage, target, *lq) for w, stage in zip(weights, stages))
