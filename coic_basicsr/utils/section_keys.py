"""Which option sections name a registered class, and the check that each holds only that class's arguments."""
import inspect
from typing import Iterator, List, Tuple

from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from coic_basicsr.data.option_keys import check_dataset_keys
from coic_basicsr.data.samplers import PIPELINE_ARGUMENTS, check_pipeline_arguments
from coic_basicsr.registry import SAMPLER_REGISTRY
from coic_basicsr.utils.option_values import FLAG_RULE, check_value, is_integer


def typed_sections(opt: dict) -> Iterator[Tuple[str, dict, object]]:
    """Yield (key path, section, registry) for every option section whose ``type`` names a registered class. The
    sections are mappings (check_sections_are_mappings); a null sampler or loss section is skipped."""
    if opt.get('model_type') is not None:  # required: check_registered_types says so
        yield 'model_type', {'type': opt['model_type']}, MODEL_REGISTRY
    for key, section in opt.items():
        if str(key).startswith('network_'):
            yield key, section, ARCH_REGISTRY
    for phase, dataset in (opt.get('datasets') or {}).items():
        yield f'datasets.{phase}', dataset, DATASET_REGISTRY
        if dataset.get('sampler') is not None:
            yield f'datasets.{phase}.sampler', dataset['sampler'], SAMPLER_REGISTRY
    for key, section in (opt.get('train') or {}).items():
        if str(key).endswith('_opt') and section is not None:
            yield f'train.{key}', section, LOSS_REGISTRY
    for name, section in ((opt.get('val') or {}).get('metrics') or {}).items():
        yield f'val.metrics.{name}', section, METRIC_REGISTRY


def check_section_keys(opt: dict) -> None:
    """Network, loss, sampler and BasicSR metric sections may only hold their arguments (a misspelt key was a TypeError
    traceback; for a sampler, after the datasets were built); rain dataset sections only their declared keys (a
    misspelt one was ignored)."""
    for key, section, registry in typed_sections(opt):
        if registry in (ARCH_REGISTRY, LOSS_REGISTRY):
            _check_arguments(key, section, registry)
        elif registry is SAMPLER_REGISTRY:
            check_pipeline_arguments(section, key)
            _check_arguments(key, section, registry, excluded=tuple(PIPELINE_ARGUMENTS))
        elif registry is METRIC_REGISTRY:
            _check_metric_keys(key, section)
        elif hasattr(registry.get(section['type']), 'SOURCE_KEYS'):  # our rain datasets declare their keys
            check_dataset_keys(section, registry.get(section['type']), key)


def _check_arguments(key: str, section: dict, registry, excluded: Tuple[str, ...] = ()) -> None:
    params = inspect.signature(registry.get(section['type'])).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        _refuse_unknown(key, section, [name for name in params if name not in excluded])
    for name, value in section.items():  # a wrapped arch (CoICNet's backbone)
        if isinstance(value, dict) and isinstance(value.get('type'), str) and value['type'] in registry:
            _check_arguments(f'{key}.{name}', value, registry)


def _refuse_unknown(key: str, section: dict, accepted: List[str]) -> None:
    unknown = sorted(set(section) - {'type'} - set(accepted))
    if unknown:
        raise ValueError(f"{key}: {section['type']} has no option '{unknown[0]}' (its options: {', '.join(accepted)})")


def _check_metric_keys(key: str, section: dict) -> None:
    """BasicSR's metric functions take ``**kwargs`` and drop what they do not know: a misspelt ``test_y_channel``
    scored RGB without a word. A project's own metric may read extra keys, so only BasicSR's are checked."""
    func = METRIC_REGISTRY.get(section['type'])
    if not getattr(func, '__module__', '').startswith('basicsr.metrics'):
        return
    params = {name: p for name, p in inspect.signature(func).parameters.items()
              if p.kind is not inspect.Parameter.VAR_KEYWORD and name not in ('img', 'img2')}
    _refuse_unknown(key, section, list(params) + ['better'])  # better: read by BasicSR's best-metric tracking
    missing = [name for name, p in params.items() if p.default is inspect.Parameter.empty and name not in section]
    if missing:
        raise ValueError(f"{key}: {section['type']} needs '{missing[0]}'")
    if section.get('better', 'higher') not in ('higher', 'lower'):
        raise ValueError(f"{key}.better: expected 'higher' or 'lower', got {section['better']!r}")
    for name, value in section.items():
        if name in params and name in METRIC_VALUE_RULES:  # null too: it replaces the function's default
            check_value(f'{key}.{name}', value, METRIC_VALUE_RULES[name], allow_null=False)


#: arguments of BasicSR's metric functions: (predicate, what is expected). A wrong one failed after val_freq
#: iterations, in a traceback or "failed on <image>"; a string test_y_channel 'false' scored the Y channel.
METRIC_VALUE_RULES = {
    'crop_border': (lambda v: is_integer(v) and v >= 0, 'an integer >= 0 (pixels cropped from each border)'),
    'input_order': (lambda v: v in ('HWC', 'CHW'), "'HWC' or 'CHW'"),
    'test_y_channel': FLAG_RULE,
    'convert_to': (lambda v: v in ('y', 'gray'), "'y' or 'gray'"),
}
