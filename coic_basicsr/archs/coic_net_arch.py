"""CoICNet: any BasicSR backbone with its convs turned into CoI-M modulated convs."""
from typing import List, Optional

from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from coic_basicsr.archs.arch_util import check_at_least
from coic_basicsr.archs.modulation import ModulationContext, modulate_convs

_MODULATE_KEYS = ('include', 'exclude', 'generator_width')


@ARCH_REGISTRY.register()
class CoICNet(nn.Module):
    """Instance-modulated wrapper of a BasicSR restoration backbone.

    network_g: {type: CoICNet, backbone: {type: EDSR, ...}, context_dim: 128,
    modulate: {include: [...], exclude: [...]}}

    Every ``nn.Conv2d`` / ``nn.ConvTranspose2d`` with a kernel larger than 1x1 inside the backbone becomes a modulated
    layer that shares the original weight; its generator parameters live under ``backbone.<conv name>.generator``.
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
            raise ValueError(f"CoICNet: 'backbone' must be a dict with a 'type' key, got {backbone!r}")
        check_at_least('CoICNet', 1, [('context_dim', context_dim)])
        modulate = dict(modulate or {})
        unknown = sorted(set(modulate) - set(_MODULATE_KEYS))
        if unknown:
            raise ValueError(f'CoICNet: unknown key(s) {unknown} in modulate (allowed: {list(_MODULATE_KEYS)})')
        self.context_dim = int(context_dim)
        self.context = ModulationContext(modulate.get('generator_width'), 'network_g.modulate.generator_width')
        self.backbone = build_network(backbone)
        self.modulated_layers: List[str] = modulate_convs(self.backbone, self.context, self.context_dim,
                                                          modulate.get('include'), modulate.get('exclude'),
                                                          option_key='network_g.modulate')
        if not self.modulated_layers:
            raise ValueError(f"CoICNet: modulate {modulate} matches no conv with kernel > 1 in backbone "
                             f"'{backbone['type']}'")
        self._register_load_state_dict_pre_hook(_add_backbone_prefix)

    def adapt_state_dict(self, state_dict: dict) -> dict:
        """``state_dict`` with a plain backbone checkpoint's keys moved under ``backbone.``, as loading does (so that
        a loader comparing keys and shapes first compares the right ones)."""
        adapted = dict(state_dict)
        _add_backbone_prefix(adapted, '', {}, True, [], [], [])
        return adapted

    def forward(self, x: Tensor, z: Optional[Tensor] = None) -> Tensor:
        """Restore ``x`` (B, C, H, W) with instance codes ``z`` (B, context_dim); ``z=None`` runs the plain net."""
        if z is not None and (z.dim() != 2 or z.shape[1] != self.context_dim or z.shape[0] not in (1, x.shape[0])):
            raise ValueError(f'CoICNet: z must have shape ({x.shape[0]}, {self.context_dim}), got {tuple(z.shape)}')
        with self.context.use(z):
            return self.backbone(x)


def _add_backbone_prefix(state_dict: dict, prefix: str, local_metadata: dict, strict: bool, missing_keys: list,
                         unexpected_keys: list, error_msgs: list) -> None:
    """A plain backbone checkpoint has no ``backbone.`` prefix: add it in place."""
    own = [key for key in state_dict if key.startswith(prefix)]
    if not own or any(key.startswith(f'{prefix}backbone.') for key in own):
        return
    for key in own:
        state_dict[f'{prefix}backbone.{key[len(prefix):]}'] = state_dict.pop(key)
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:  # per-module version info (e.g. BatchNorm), keyed by module path
        path = prefix[:-1]
        for key in [k for k in metadata if k == path or k.startswith(prefix)]:
            metadata[f'{prefix}backbone' + (f'.{key[len(prefix):]}' if key != path else '')] = metadata[key]
