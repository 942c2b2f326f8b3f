"""What ``import coic_basicsr`` registers: prefixed names, the README's table, YAML keys documented per class."""
import inspect
import re
import subprocess
import sys
from os import path as osp
from typing import Dict, Set

import pytest
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from coic_basicsr.registry import SAMPLER_REGISTRY, SCHEDULER_REGISTRY

README = osp.join(osp.dirname(__file__), '..', 'README.md')
BASICSR_REGISTRIES = {'arch': ARCH_REGISTRY, 'model': MODEL_REGISTRY, 'loss': LOSS_REGISTRY,
                      'dataset': DATASET_REGISTRY, 'metric': METRIC_REGISTRY}
OWN_REGISTRIES = {'sampler': SAMPLER_REGISTRY, 'scheduler': SCHEDULER_REGISTRY}  # BasicSR 1.4.2 has neither
PREFIXES = ('CoIC', 'RDMC', 'Mixed')
# Our scheduler keeps the name Restormer's and DRSformer's option files use; it lives in our own registry.
UNPREFIXED = {'CosineAnnealingRestartCyclicLR'}
# Constructor arguments that the training pipeline supplies, not the option file.
PIPELINE_ARGUMENTS = {'opt', 'dataset', 'num_replicas', 'rank', 'ratio', 'seed', 'optimizer', 'last_epoch'}


def ours() -> Dict[str, Dict[str, type]]:
    """registry name -> {registered name: class} for the classes that coic_basicsr registers (tests add others)."""
    found = {kind: {name: obj for name, obj in reg._obj_map.items() if obj.__module__.startswith('coic_basicsr.')}
             for kind, reg in BASICSR_REGISTRIES.items()}
    found.update({kind: dict(reg._obj_map) for kind, reg in OWN_REGISTRIES.items()})
    return found


def readme_table() -> Dict[str, Set[str]]:
    """The backticked names per row of the README's "What is registered" table."""
    with open(README, encoding='utf-8') as f:
        section = f.read().split('## What is registered', 1)[1].split('\n\n', 2)[1]
    rows = [line.split('|')[1:3] for line in section.splitlines() if line.startswith('| ') and '---' not in line]
    return {kind.strip(): set(re.findall(r'`(\w+)`', names)) for kind, names in rows[1:]}


def test_a_fresh_import_registers_every_class_of_the_package():
    code = ('import coic_basicsr\nfrom basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, '
            'MODEL_REGISTRY\nfor reg in (ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY):\n'
            '    print(*sorted(n for n, o in reg._obj_map.items() if o.__module__.startswith("coic_basicsr.")))')
    printed = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, check=True)
    in_fresh_process = set(printed.stdout.split())
    expected = set().union(*(set(ours()[kind]) for kind in ('arch', 'dataset', 'loss', 'model')))
    assert in_fresh_process == expected


def test_registered_names_are_prefixed_and_match_the_readme():
    registered = ours()
    for kind, names in registered.items():
        assert all(name.startswith(PREFIXES) or name in UNPREFIXED for name in names if name != 'EnlargedSampler'), \
            (kind, sorted(names))
    table = readme_table()
    assert {kind: set(names) for kind, names in registered.items() if names} == table


@pytest.mark.parametrize('kind, name', [(kind, name) for kind, names in ours().items() for name in names
                                        if names[name].__module__.startswith('coic_basicsr.')])
def test_every_yaml_key_is_documented_with_its_default(kind: str, name: str):
    cls = ours()[kind][name]
    doc = inspect.getdoc(cls) or ''
    entries = dict(re.findall(r'^ *(?:[\w.]+\.)?(\w+) \([^)]*\): (.*?)(?=^ *[\w.]+ \([^)]*\):|\Z)', doc,
                              re.S | re.M))
    assert entries, f'{name}: no `key (type): description` entries in its docstring'
    parameters = [p for p in inspect.signature(cls).parameters.values()
                  if p.name not in PIPELINE_ARGUMENTS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for parameter in parameters:
        assert parameter.name in entries, f'{name}: YAML key {parameter.name} is not documented'
        if parameter.default is not parameter.empty:
            assert 'Default:' in entries[parameter.name], f'{name}: {parameter.name} does not state its default'
