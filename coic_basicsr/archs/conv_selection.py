"""Which convs of a network become CoI-M modulated convs (by qualified name, refusing those that cannot), and how
their parameters split into backbone and modulation."""
import fnmatch
import math
from typing import List, Optional, Sequence, Tuple, Union

from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from coic_basicsr.archs.arch_util import check_choice
from coic_basicsr.archs.modulation import GATE_LAYOUTS, ModulatedConv2d, ModulatedConvTranspose2d
from coic_basicsr.archs.modulation_core import ContextEmbedding, KernelScaleGenerator, ModulationContext


_REPLACEMENTS = {nn.Conv2d: ModulatedConv2d, nn.ConvTranspose2d: ModulatedConvTranspose2d}


def _as_patterns(patterns: Union[None, str, Sequence[str]]) -> Optional[List[str]]:
    return None if patterns is None else [patterns] if isinstance(patterns, str) else list(patterns)


def _why_not_modulatable(conv: nn.Module) -> Optional[str]:
    """None for a conv :func:`modulate_convs` can replace, else why not (a subclass, a parametrized weight, hooks)."""
    base = nn.ConvTranspose2d if isinstance(conv, nn.ConvTranspose2d) else nn.Conv2d
    if parametrize.is_parametrized(conv):
        return f"parametrized {', '.join(conv.parametrizations.keys())}"
    for hook in conv._forward_pre_hooks.values():
        if isinstance(hook, SpectralNorm):
            return f"spectral-norm hook on its {hook.name}"
        if isinstance(hook, WeightNorm):
            return f"weight-norm hook on its {hook.name}"
    if type(conv) is not base:
        own = ' with its own forward' if type(conv).forward is not base.forward else ''
        return f'subclass {type(conv).__name__} of nn.{base.__name__}{own}'
    if conv._forward_pre_hooks or conv._forward_hooks:
        return 'forward hooks, which its modulated twin would not run'
    if not isinstance(conv.weight, nn.Parameter):
        return 'its weight is not an nn.Parameter'
    return None


def modulate_convs(module: nn.Module, context: ModulationContext, context_dim: int = 128,
                   include: Optional[Sequence[str]] = None, exclude: Optional[Sequence[str]] = None,
                   gate_layout: str = 'paper', option_key: Optional[str] = None,
                   module_name: Optional[str] = None) -> List[str]:
    """Replace in place every nn.Conv2d / nn.ConvTranspose2d with kernel > 1 whose qualified name matches `include`
    (fnmatch patterns; None = all) and not `exclude` by its modulated version (weights shared); returns the names.
    ``gate_layout='official'`` computes kernel scales exactly as the CoIC authors' code (their checkpoints). The root
    module itself never is replaced, nor an already modulated conv.

    Only exact nn.Conv2d / nn.ConvTranspose2d instances whose weight is an nn.Parameter and that carry no hooks can
    be replaced: a subclass may have its own forward, and a parametrized or weight-/spectral-norm conv computes its
    weight on every call. With ``option_key`` (the user's patterns) such a conv counts as a conv for the patterns,
    and one they select is refused, naming ``<option_key>.exclude``; a pattern that matches no conv is refused,
    naming ``<option_key>.<include|exclude>``. Without it (the CoIC archs' own convs) subclasses and parametrized
    convs are skipped, and a selected hooked plain conv is refused. ``module_name`` names ``module`` in these errors
    (default: its class name).
    """
    if not isinstance(context, ModulationContext):
        raise TypeError(f'modulate_convs: context must be a ModulationContext, got {type(context)}')
    module_name = module_name or type(module).__name__
    check_choice(module_name, 'gate_layout', gate_layout, GATE_LAYOUTS)
    include, exclude = _as_patterns(include), _as_patterns(exclude) or []
    replacements, names, eligible, refused = {}, [], [], []
    for name, conv in module.named_modules():
        if not name or not isinstance(conv, tuple(_REPLACEMENTS)) or math.prod(conv.kernel_size) <= 1:
            continue
        if isinstance(conv, (ModulatedConv2d, ModulatedConvTranspose2d)):
            continue
        why = _why_not_modulatable(conv)
        if why is not None and option_key is None and type(conv) not in _REPLACEMENTS:
            continue  # the CoIC archs' own networks (no option_key) build plain convs: anything else stays plain
        eligible.append(name)
        if include is not None and not any(fnmatch.fnmatchcase(name, p) for p in include):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in exclude):
            continue
        if why is not None:
            refused.append((name, why))
            continue
        replacements[id(conv)] = _REPLACEMENTS[type(conv)].from_conv(conv, context, context_dim)
        replacements[id(conv)].gate_layout = gate_layout
        names.append(name)
    for key, patterns in (('include', include or []), ('exclude', exclude)) if option_key else ():
        for pattern in patterns:  # a misspelt one was ignored whenever another matched
            if not any(fnmatch.fnmatchcase(name, str(pattern)) for name in eligible):
                raise ValueError(f"{option_key}.{key}: '{pattern}' matches no conv with kernel > 1 in "
                                 f"{module_name} (e.g. {', '.join(eligible[:4])})")
    if refused:
        (name, why), more = refused[0], [f"'{n}'" for n, _ in refused[1:]]
        advice = f'add it to {option_key}.exclude' if option_key else 'exclude it'
        others = f" (and {len(more)} more that cannot: {', '.join(more[:4])}{', ...' if len(more) > 4 else ''})" \
            if more else ''
        raise ValueError(f"{option_key or 'modulate_convs'}: conv '{name}' of {module_name} cannot be "
                         f'modulated ({why}): {advice}{others}')
    for parent in list(module.modules()):
        for child_name, child in list(parent._modules.items()):
            if child is not None and id(child) in replacements:
                setattr(parent, child_name, replacements[id(child)])
    return names


def split_modulation_parameters(net: nn.Module) -> Tuple[List[nn.Parameter], List[nn.Parameter]]:
    """(backbone params, modulation params): modulation = params inside KernelScaleGenerator / ContextEmbedding."""
    modulation_ids = {
        id(p)
        for m in net.modules() if isinstance(m, (KernelScaleGenerator, ContextEmbedding)) for p in m.parameters()
    }
    backbone, modulation = [], []
    for p in net.parameters():
        (modulation if id(p) in modulation_ids else backbone).append(p)
    return backbone, modulation
