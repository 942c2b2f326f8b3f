"""A base loss applied to every stage output of a multi-stage network, with per-stage weights."""
from typing import List, Optional, Sequence, Union

from basicsr.losses import build_loss
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn

from coic_basicsr.losses.loss_util import bad_loss_option, check_loss_number, check_loss_weights, nest_key

_NAME = 'CoICMultiStageLoss'


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
            raise bad_loss_option(_NAME, 'base_opt', "a loss dict with a 'type'", base_opt)
        if base_opt['type'] == type(self).__name__:
            raise ValueError(f'base_opt.type: {_NAME} cannot wrap another {_NAME}')
        for key, value in (('loss_weight', loss_weight), ('intermediate_weight', intermediate_weight),
                           ('final_weight', final_weight)):
            check_loss_number(_NAME, key, value, 'a number >= 0', lambda v: v >= 0)
        check_loss_weights(_NAME, 'stage_weights', stage_weights, 'stage')
        try:
            self.base = build_loss(base_opt)
        except ValueError as err:  # the base loss's key, under base_opt
            raise ValueError(nest_key('base_opt', str(err))) from None
        except FileNotFoundError as err:
            raise FileNotFoundError(nest_key('base_opt', str(err))) from None
        self.takes_input = bool(getattr(self.base, 'takes_input', False))
        self.loss_weight = float(loss_weight)
        self.stage_weights = None if stage_weights is None else [float(w) for w in stage_weights]
        self.intermediate_weight, self.final_weight = float(intermediate_weight), float(final_weight)

    def weights(self, num_stages: int) -> List[float]:
        """The weight of each of ``num_stages`` stages (first to final)."""
        if self.stage_weights is not None:
            if len(self.stage_weights) != num_stages:
                weights = f"{num_stages} weight{'s' if num_stages != 1 else ''}"
                raise bad_loss_option(_NAME, 'stage_weights', f'{weights} (one per stage output the network returned)',
                                      self.stage_weights)
            return list(self.stage_weights)
        return [self.intermediate_weight] * (num_stages - 1) + [self.final_weight]

    def forward(self, stages: Union[Tensor, Sequence[Tensor]], target: Tensor, *lq: Tensor) -> Tensor:
        stages = [stages] if isinstance(stages, Tensor) else list(stages)
        if not stages:
            raise ValueError(f'{_NAME}: expected one or more stage outputs, got none')
        weights = self.weights(len(stages))
        return self.loss_weight * sum(w * self.base(stage, target, *lq) for w, stage in zip(weights, stages))
