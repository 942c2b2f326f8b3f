"""CoICNet: any BasicSR backbone with its convs turned into CoI-M modulated convs."""
from typing import List, Optional

import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from coic_basicsr.archs.arch_util import bad_option, check_at_least, option_key, option_prefix
from coic_basicsr.archs.conv_selection import modulate_convs
from coic_basicsr.archs.modulation import ModulationContext

_MODULATE_KEYS = ('include', 'exclude', 'generator_width')
_PROBE_SIZE = 32  # the side of the image of the eval-mode check at construction


class UnmodulatedForwardError(ValueError):
    """A forward with z in which none of the modulated convs ran."""


@ARCH_REGISTRY.register()
class CoICNet(nn.Module):
    """Instance-modulated wrapper of a BasicSR restoration backbone.

    network_g: {type: CoICNet, backbone: {type: EDSR, ...}, context_dim: 128,
    modulate: {include: [...], exclude: [...]}}

    Every ``nn.Conv2d`` / ``nn.ConvTranspose2d`` with a kernel larger than 1x1 inside the backbone becomes a modulated
    layer that shares the original weight; its generator parameters live under ``backbone.<conv name>.generator``.
    Only exact instances of these two classes can be: a subclass, a parametrized conv or one with a weight-/spectral-
    norm hook is refused unless ``modulate.exclude`` names it; deformable convs (EDVR's DCNv2Pack) are not convs of
    these classes and stay plain. A backbone that computes with its convs' weights without calling them (ECBSR in
    eval mode) cannot be modulated: a forward with z in which no modulated conv ran is refused. A video backbone's
    input (B, T, C, H, W) takes one code per clip, repeated over its frames where a layer sees them in its batch.
    With ``z=None`` the output is bit-identical to the plain backbone. A plain backbone checkpoint (keys without the
    ``backbone.`` prefix, no generator keys) loads with ``strict=True``.

    Args:
        backbone (dict): BasicSR network options of the plain restoration network (``type`` plus its arguments).
        context_dim (int): Length of the instance code ``z``. Default: 128.
        modulate (dict | None): Which convs to modulate, by qualified name inside the backbone:
            ``include`` (list[str]) fnmatch patterns, None = all; ``exclude`` (list[str]) fnmatch patterns (each
            pattern must match at least one such conv);
            ``generator_width`` (int | None) upper bound on the hidden widths of every kernel-scale generator (None:
            the CoIC authors' widths). Default: None (all convs with kernel > 1, the authors' widths).
    """

    def __init__(self, backbone: dict, context_dim: int = 128, modulate: Optional[dict] = None) -> None:
        super().__init__()
        if not isinstance(backbone, dict) or 'type' not in backbone:
            raise bad_option('CoICNet', 'backbone', "a mapping of network options with a 'type' key", backbone)
        check_at_least('CoICNet', 1, [('context_dim', context_dim)])
        if modulate is not None and not isinstance(modulate, dict):
            raise bad_option('CoICNet', 'modulate', f'null or a mapping with keys among {_MODULATE_KEYS}', modulate)
        modulate = dict(modulate or {})
        unknown = sorted(map(str, set(modulate) - set(_MODULATE_KEYS)))
        if unknown:
            raise bad_option('CoICNet', 'modulate', f'keys among {_MODULATE_KEYS}', modulate,
                             f"unknown: {', '.join(unknown)}")
        self.context_dim = int(context_dim)
        self.context = ModulationContext(modulate.get('generator_width'), option_key('modulate.generator_width'))
        with option_prefix(option_key('backbone.')):  # the backbone's own checks name network_g.backbone.<key>
            self.backbone = build_network(backbone)
        self.modulated_layers: List[str] = modulate_convs(self.backbone, self.context, self.context_dim,
                                                          modulate.get('include'), modulate.get('exclude'),
                                                          option_key=option_key('modulate'),
                                                          module_name=backbone['type'])
        if not self.modulated_layers and not modulate.get('include'):
            raise ValueError(f"{option_key('backbone')}: {backbone['type']} has no nn.Conv2d / nn.ConvTranspose2d "
                             'with a kernel larger than 1x1 for CoICNet to modulate')
        if not self.modulated_layers:
            raise bad_option('CoICNet', 'modulate', f"a selection of at least one conv with kernel > 1 in backbone "
                             f"'{backbone['type']}'", modulate)
        self._register_load_state_dict_pre_hook(_add_backbone_prefix, with_module=True)
        self._refuse_eval_bypass(backbone['type'])

    def _refuse_eval_bypass(self, backbone_type: str) -> None:
        """Run the backbone once in eval mode with z on a small image: one that calls none of its modulated convs
        there (ECBSR convolves with re-parameterised weights in eval) would train, then fail at its first
        validation."""
        first = next((m for m in self.backbone.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))), None)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                self(first.weight.new_zeros(1, first.in_channels, _PROBE_SIZE, _PROBE_SIZE),
                     first.weight.new_zeros(1, self.context_dim))
        except UnmodulatedForwardError:
            raise ValueError(f"{option_key('backbone')}: {backbone_type} computes its eval-mode output without "
                             f'calling its {len(self.modulated_layers)} modulated convs (it convolves with their '
                             'weights directly, as ECBSR does), so validation and testing could not use z') from None
        except Exception:  # noqa: BLE001 -- other inputs (video clips, sizes): the first real forward checks them
            pass
        finally:
            self.train(was_training)

    def adapt_state_dict(self, state_dict: dict) -> dict:
        """``state_dict`` with a plain backbone checkpoint's keys moved under ``backbone.``, as loading does (so that
        a loader comparing keys and shapes first compares the right ones)."""
        adapted = dict(state_dict)
        _add_backbone_prefix(self, adapted, '', {}, True, [], [], [])
        return adapted

    def forward(self, x: Tensor, z: Optional[Tensor] = None) -> Tensor:
        """Restore ``x`` (B, C, H, W), or a video backbone's clips (B, T, C, H, W), with instance codes ``z``
        (B, context_dim), one per image or clip; ``z=None`` runs the plain net."""
        if z is not None and (z.dim() != 2 or z.shape[1] != self.context_dim or z.shape[0] not in (1, x.shape[0])):
            raise ValueError(f'CoICNet: z must have shape ({x.shape[0]}, {self.context_dim}), got {tuple(z.shape)}')
        with self.context.use(z, frames=x.shape[1] if x.dim() == 5 else 1):
            out = self.backbone(x)
            if z is not None and self.context.layer_calls() == 0:
                mode = 'training' if self.training else 'eval'
                raise UnmodulatedForwardError(f'CoICNet: backbone {type(self.backbone).__name__} computed its output ({mode} mode) '
                                 f'without calling any of its {len(self.modulated_layers)} modulated convs, so z '
                                 "cannot modulate it (it uses their weights directly, as ECBSR's eval path does)")
            return out


def _add_backbone_prefix(module: CoICNet, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                         missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
    """A plain backbone checkpoint has no ``backbone.`` prefix: add it in place. Decided by which key set matches
    more of the network's own keys (a backbone may have a ``backbone`` member of its own, as ECBSR does); on a tie
    (e.g. an unrelated checkpoint) keys are prefixed when none starts with ``backbone.``."""
    own = [key for key in state_dict if key.startswith(prefix)]
    if not own:
        return
    expected = set(module.state_dict(keep_vars=True))
    relative = [key[len(prefix):] for key in own]
    as_is = sum(key in expected for key in relative)
    prefixed = sum(f'backbone.{key}' in expected for key in relative)
    if prefixed < as_is or (prefixed == as_is and any(key.startswith('backbone.') for key in relative)):
        return
    for key in own:
        state_dict[f'{prefix}backbone.{key[len(prefix):]}'] = state_dict.pop(key)
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:  # per-module version info (e.g. BatchNorm), keyed by module path
        path = prefix[:-1]
        for key in [k for k in metadata if k == path or k.startswith(prefix)]:
            metadata[f'{prefix}backbone' + (f'.{key[len(prefix):]}' if key != path else '')] = metadata[key]
