"""CoICModel's ``train.<name>_opt`` loss sections: built, checked, and each called the way its loss expects."""
import inspect
from dataclasses import dataclass
from typing import Dict, List

import torch
from basicsr.losses import build_loss
from torch import Tensor, nn

from coic_basicsr.losses.loss_util import nest_key
from coic_basicsr.utils.option_values import check_number

_LOG_NAMES = {'pixel': 'pix', 'perceptual': 'percep'}  # BasicSR's log names for its two loss sections


def check_loss_sections(train_opt: dict) -> None:
    """No ``train.<name>_opt`` section may name CoICContrastiveLoss: it compares encoder features of views that
    only CoIC training makes (a section of it failed at the first iteration). A ``loss_weight`` given is a number
    (a string was a TypeError at iteration 1) >= 0 (a negative one trained to maximise the loss, without a word)."""
    for key, loss_opt in train_opt.items():
        if not (key.endswith('_opt') and isinstance(loss_opt, dict)):
            continue
        if loss_opt.get('type') == 'CoICContrastiveLoss':
            raise ValueError(f'train.{key}: CoICContrastiveLoss is not a loss section; it is configured through '
                             'train.coic (contrastive_weight, temperature, ...), which CoICModel builds it from')
        for where, section in ((f'train.{key}', loss_opt), (f'train.{key}.base_opt', loss_opt.get('base_opt'))):
            if isinstance(section, dict) and 'loss_weight' in section:
                check_number(f'{where}.loss_weight', section['loss_weight'], 'a number >= 0', lambda v: v >= 0)


def build_contrastive_loss(coic_opt: dict, device: torch.device) -> nn.Module:
    """CoICContrastiveLoss from the ``train.coic`` options (defaults filled in)."""
    keys = ('temperature', 'num_detail_negatives', 'archive_size', 'blur_kernel_size', 'blur_sigma')
    loss_opt = dict(type='CoICContrastiveLoss', loss_weight=coic_opt['contrastive_weight'],
                    **{key: coic_opt[key] for key in keys})
    return build_loss(loss_opt).to(device)


def _build_loss(key: str, loss_opt: dict) -> nn.Module:
    try:
        loss = build_loss(loss_opt)
    except ValueError as err:  # the losses' "<key>: ..." under train.<key>; BasicSR's "Unsupported reduction mode"
        raise ValueError(nest_key(f'train.{key}', str(err))) from None
    except FileNotFoundError as err:  # e.g. RDMCContrastivePriorLoss's vgg_weights
        raise FileNotFoundError(nest_key(f'train.{key}', str(err))) from None
    for where, part in ((f'train.{key}', loss), (f'train.{key}.base_opt', getattr(loss, 'base', None))):
        if getattr(part, 'reduction', None) == 'none':
            raise ValueError(f"{where}.reduction: 'none' gives a per-pixel map, but the losses are summed into one "
                             "number to train: use 'mean' or 'sum'")
    return loss


def _compares_with_gt(key: str, loss: nn.Module) -> bool:
    """Whether ``loss`` is called as ``loss(output, gt)`` (True) or on the output alone (False: BasicSR's
    ``WeightedTVLoss.forward(pred, weight=None)``, which would take gt as its per-pixel weight)."""
    params = [p.name for p in inspect.signature(loss.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    second = params[1] if len(params) > 1 else None
    if second == 'target_is_real':
        raise ValueError(f'train.{key}: {type(loss).__name__} needs a discriminator, which CoICModel does not train '
                         "(BasicSR's SRGANModel does)")
    return second not in (None, 'weight')


@dataclass
class LossSection:
    """One built loss section: ``key`` (e.g. ``pixel_opt``), the loss, and whether it compares with gt."""

    key: str
    name: str
    loss: nn.Module
    takes_gt: bool

    def __call__(self, stages: List[Tensor], gt: Tensor, lq: Tensor) -> Dict[str, Tensor]:
        """The loss of the stage outputs (final last), by log name: the list for ``takes_all_stages`` losses, else
        the final one; ``takes_input`` losses also get ``lq``. BasicSR's PerceptualLoss gives two terms, logged
        as BasicSR does (``l_percep``, ``l_style``; ``l_<name>_style`` for another section name)."""
        args = [stages if getattr(self.loss, 'takes_all_stages', False) else stages[-1]]
        args += [gt] if self.takes_gt else []
        args += [lq] if getattr(self.loss, 'takes_input', False) else []
        try:
            value = self.loss(*args)
        except ValueError as err:  # e.g. CoICMultiStageLoss's stage_weights against the network's stage outputs
            raise ValueError(nest_key(f'train.{self.key}', str(err))) from err
        style = 'l_style' if self.name == 'percep' else f'l_{self.name}_style'
        terms = dict(zip((f'l_{self.name}', style), value)) if isinstance(value, tuple) else {f'l_{self.name}': value}
        terms = {log_name: term for log_name, term in terms.items() if term is not None}
        for term in terms.values():
            if term.dim() != 0:
                raise ValueError(f'train.{self.key}: {type(self.loss).__name__} returned a tensor of shape '
                                 f'{tuple(term.shape)}, not one number: the losses are summed into one to train')
        return terms


def build_loss_sections(train_opt: dict, device: torch.device) -> Dict[str, LossSection]:
    """Every ``<name>_opt`` section of ``train``, by log name (``pixel_opt`` -> ``pix``, as BasicSR logs it)."""
    check_loss_sections(train_opt)
    sections: Dict[str, LossSection] = {}
    for key, loss_opt in train_opt.items():
        if not (key.endswith('_opt') and isinstance(loss_opt, dict)):
            continue
        name = _LOG_NAMES.get(key[:-len('_opt')], key[:-len('_opt')])
        if name in sections:
            raise ValueError(f'train.{sections[name].key} and train.{key} would both be logged as l_{name} '
                             '(one would be dropped): rename one')
        loss = _build_loss(key, loss_opt).to(device)
        sections[name] = LossSection(key, name, loss, _compares_with_gt(key, loss))
    if not sections:
        raise ValueError('train: define at least one loss section (e.g. pixel_opt: {type: L1Loss})')
    return sections
