"""Checks of ``name`` and the ``path`` section, run before BasicSR builds folders from them."""
import difflib
import os
import re

from coic_basicsr.utils.option_values import FLAG_RULE, check_value

#: the ``path`` keys BasicSR 1.4.2's models and ours read (``pretrain_network_enc``: CoICModel's encoder); the per
#: network keys of every ``network_<x>`` section are added by :func:`check_path_section`
READ_PATH_KEYS = ('pretrain_network_g', 'strict_load_g', 'param_key_g', 'pretrain_network_d', 'strict_load_d',
                  'param_key_d', 'pretrain_network_enc', 'resume_state', 'ignore_resume_networks')
#: keys the option parser sets (the run's folders)
SET_PATH_KEYS = ('experiments_root', 'results_root', 'models', 'training_states', 'log', 'visualization')
#: BasicSR's naming of a network's checkpoint, loading strictness and state-dict key: a project's network follows it
_PER_NETWORK = re.compile(r'(pretrain_network|strict_load|param_key)_\w+')
_CHECKPOINT_SUFFIXES = ('.pth', '.pt', '.ckpt', '.state', '.safetensors')

_TEXT = (lambda v: isinstance(v, str) and bool(v), 'a file path, or null')
_NAMES = (lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v), 'a list of network names, or null')
_FOLDER = (lambda v: isinstance(v, str) and bool(v), 'a folder path (BasicSR makes a folder of every path key it '
           'does not read as a file, a flag or a key)')


def check_experiment_name(opt: dict) -> None:
    """``name`` is one folder name: BasicSR joins it to ``experiments/`` and ``results/`` and to the log file's name
    (``a/b`` made nested folders and failed to open its log; ``..`` wrote beside ``experiments/``)."""
    name = opt.get('name')
    separators = {'/', os.sep} | ({os.altsep} if os.altsep else set())
    if isinstance(name, str) and (any(s in name for s in separators) or name in ('.', '..')):
        raise ValueError(f'name: expected a folder name without a path separator and not . or .. (the experiment '
                         f'goes to experiments/<name>), got {name!r}')


def _rule(key: str):
    """(predicate, what is expected) of a path key's value; None where anything goes. Follows BasicSR's
    make_exp_dirs, which makes a folder of every key but those naming strict_load, pretrain_network, resume or
    param_key, and its parse_options, which expands ``~`` in pretrain_network and resume_state keys."""
    if 'strict_load' in key:
        return FLAG_RULE
    if 'pretrain_network' in key or 'resume_state' in key or 'param_key' in key:
        return _TEXT
    if key == 'ignore_resume_networks':
        return _NAMES
    return None if 'resume' in key else _FOLDER


def _misspelt(key: str, value, known: list) -> None:
    """Refuse a key that is not read but is close to one that is (it was ignored: a run trained from scratch, and
    BasicSR made a folder named after the checkpoint)."""
    if key in known or key in SET_PATH_KEYS or _PER_NETWORK.fullmatch(key):
        return
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    looks_like_file = isinstance(value, str) and value.lower().endswith(_CHECKPOINT_SUFFIXES)
    if not match and looks_like_file and _rule(key) is _FOLDER:
        match = difflib.get_close_matches(key, known, n=1, cutoff=0.5) or ['pretrain_network_<network>']
        raise ValueError(f"path.{key}: {value!r} looks like a checkpoint, but BasicSR reads no such key and would "
                         f"make a folder of it (did you mean '{match[0]}'?)")
    if match:
        raise ValueError(f"path.{key}: unknown key (did you mean '{match[0]}'? BasicSR would ignore it)")


def check_path_section(opt: dict) -> None:
    """Every ``path`` value has the type its key needs (an int ``resume_state`` or a bool ``pretrain_network_g`` was a
    TypeError traceback), and a key close to one the models read is refused with the key it resembles. Other keys
    are left to the project that reads them. A null flag is removed, so that the code's default applies."""
    paths = opt.get('path')
    if not isinstance(paths, dict):
        return
    networks = [str(key)[len('network_'):] for key in opt if str(key).startswith('network_')]
    known = list(READ_PATH_KEYS) + [f'{kind}_{net}' for net in networks
                                    for kind in ('pretrain_network', 'strict_load', 'param_key')]
    for key, value in list(paths.items()):
        _misspelt(key, value, known)
        rule = _rule(key)
        if rule is None:
            continue
        check_value(f'path.{key}', value, rule, allow_null=rule is not _FOLDER)
        if value is None and rule is FLAG_RULE:
            del paths[key]  # BasicSR reads .get('strict_load_g', True): a null would load non-strictly
