"""Crash-safe checkpoint files and training states that load with ``torch.load(weights_only=True)``."""
import os
import re
from collections import Counter
from os import path as osp
from typing import Any, Iterable, List, Mapping, Optional, Tuple

import torch
from basicsr.utils import get_root_logger
from torch import nn

TMP_SUFFIX = '.tmp'


def to_plain(obj: Any) -> Any:
    """Recursively turn containers into plain dict/list/tuple (e.g. the ``Counter`` in BasicSR's MultiStepRestartLR
    state), so the file loads without unpickling arbitrary classes."""
    if isinstance(obj, Counter):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_plain(v) for v in obj)
    return obj


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path + '.tmp'``, fsync, then rename: a crash never leaves a truncated ``path``."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp_path = path + TMP_SUFFIX
    with open(tmp_path, 'wb') as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_path, path)


def remove_unfinished_saves(folders: Iterable[str]) -> List[str]:
    """Delete the ``*.pth.tmp`` / ``*.state.tmp`` files that a save interrupted by a crash or a kill left in
    ``folders`` (:func:`atomic_save` writes there first; nothing reads them, and a state is hundreds of MB); returns
    their paths. For a resuming run, before it saves anything."""
    removed = []
    for folder in folders:
        names = sorted(os.listdir(folder)) if osp.isdir(folder) else []
        for name in names:
            path = osp.join(folder, name)
            if name.endswith(('.pth' + TMP_SUFFIX, '.state' + TMP_SUFFIX)) and osp.isfile(path):
                os.remove(path)
                removed.append(path)
    return removed


def load_checkpoint(path: str, device: Optional[torch.device] = None) -> Any:
    """Load a model or state file safely (``weights_only=True``), mapped to ``device`` (CPU by default)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location=device or 'cpu', weights_only=True)
    except Exception as err:
        damage = _not_a_checkpoint(path, err)
        if damage:
            raise ValueError(f"checkpoint '{path}' cannot be loaded: not a PyTorch checkpoint ({damage})") from None
        refusal = re.search(r'WeightsUnpickler error: (.+?)(?:\. Please|$)', str(err), re.MULTILINE)
        if refusal:  # weights_only refused a class: loading it would run code from the file
            raise ValueError(f"checkpoint '{path}' cannot be loaded safely: {refusal.group(1)}") from None
        reason = (str(err).splitlines() or [type(err).__name__])[0]  # e.g. a device or out of memory
        raise ValueError(f"checkpoint '{path}' cannot be loaded: {reason}") from None


def _not_a_checkpoint(path: str, err: Exception) -> Optional[str]:
    """Why ``path`` holds no PyTorch checkpoint (empty, cut short, another format: torch's errors then are bare
    KeyErrors, opcodes, miniz internals, or EINVAL for a short zip); None when ``err`` is about something else (a
    class that weights_only refuses, a device, a file that cannot be read)."""
    if re.search(r'Unsupported (global|class)', str(err)):  # torch >= 2.4 | torch < 2.4
        return None
    if isinstance(err, RuntimeError) and not re.search(r'PytorchStreamReader|inline_container|unexpected EOF',
                                                       str(err)):
        return None
    try:
        with open(path, 'rb') as f:
            head = f.read(4)
    except OSError:
        return None
    if not head:
        return 'an empty file'
    if head == b'PK\x03\x04':  # torch.save's format
        return 'a truncated, damaged or foreign zip archive'
    if head.startswith(b'\x80'):  # a pickle, as torch.save wrote before PyTorch 1.6
        return 'a truncated, damaged or foreign pickle'
    return 'neither a zip archive nor a pickle'


def load_training_state(path: str, device: Optional[torch.device] = None) -> dict:
    """:func:`load_checkpoint` of a ``<iter>.state`` file, which must be a training state (a mapping with 'iter')."""
    state = load_checkpoint(path, device)
    if not isinstance(state, Mapping) or not isinstance(state.get('iter'), int):
        raise ValueError(f"checkpoint '{path}' is not a training state (no 'iter')")
    return state


#: Recorded next to 'params' by ``basicsr convert-official`` (and kept by our saves) for CoI-M generators that compute
#: kernel scales in the CoIC authors' layout; the tensors' shapes are the same in both layouts.
GATE_LAYOUT_KEY = 'gate_layout'


def gate_layouts(net: nn.Module) -> set:
    """The ``gate_layout`` values of the modulated layers of ``net`` (empty without CoI-M)."""
    return {m.gate_layout for m in net.modules() if hasattr(m, 'gate_layout')}


def check_gate_layout(net: nn.Module, checkpoint: Any, path: str) -> None:
    """A checkpoint that records a gate layout loads only into modulated layers computing that layout: with the
    other one it would load without error and compute different kernel scales."""
    recorded = checkpoint.get(GATE_LAYOUT_KEY) if isinstance(checkpoint, Mapping) else None
    layouts = gate_layouts(net)
    if recorded is None or not layouts or layouts == {recorded}:
        return
    raise ValueError(f"checkpoint '{path}' holds CoI-M generators for network_g.gate_layout: {recorded}, the network "
                     f"uses {', '.join(sorted(layouts))}: set network_g.gate_layout: {recorded}")


def describe_shape_mismatches(net: nn.Module, state_dict: Mapping[str, Any]) -> str:
    """'N tensors differ in shape (e.g. ...)' for the keys of ``state_dict`` whose shapes differ from ``net``'s, with a
    hint when only CoI-M generators differ (their shapes follow ``generator_width``); '' when all common shapes
    agree."""
    own = net.state_dict()
    differing = [k for k, v in state_dict.items() if k in own and hasattr(v, 'shape') and v.shape != own[k].shape]
    if not differing:
        return ''
    first = differing[0]
    text = (f'{len(differing)} tensors differ in shape (e.g. {first}: checkpoint {tuple(state_dict[first].shape)}, '
            f'network {tuple(own[first].shape)})')
    if all('.generator.' in key for key in differing):
        text += ('; CoI-M generator shapes follow network_g.generator_width (network_g.modulate.generator_width '
                 'for CoICNet): set the value the checkpoint was trained with')
    return text


def latest_training_state(state_dir: str, device: Optional[torch.device] = None) -> Optional[Tuple[str, Any]]:
    """``(path, state)`` of the highest-iteration ``<iter>.state`` in ``state_dir`` that loads (temp files ignored;
    a damaged file, e.g. truncated by a full disk or a copy, is skipped with a warning); None when there is none."""
    if not osp.isdir(state_dir):
        return None
    iters = [int(name[:-len('.state')]) for name in os.listdir(state_dir)
             if name.endswith('.state') and name[:-len('.state')].isdigit()]
    for iteration in sorted(iters, reverse=True):
        path = osp.join(state_dir, f'{iteration}.state')
        try:
            return path, load_training_state(path, device)
        except ValueError as err:
            get_root_logger().warning(f'--auto_resume: skipping {err}')
    return None


def encoder_beside(net_g_path: str) -> Optional[str]:
    """``models/net_enc_<X>.pth`` saved with ``models/net_g_<X>.pth`` (the same training iteration), if it exists."""
    match = re.fullmatch(r'net_g_(.+)\.pth', osp.basename(net_g_path))
    path = match and osp.join(osp.dirname(net_g_path), f'net_enc_{match.group(1)}.pth')
    return path if path and osp.isfile(path) else None


def test_encoder_path(paths: dict) -> Optional[str]:
    """The encoder weights a test of a CoIC model uses: ``path.pretrain_network_enc``, else the file saved beside
    ``path.pretrain_network_g`` (None when network_g has no weights either: an untrained model stays untrained)."""
    net_g = paths.get('pretrain_network_g')
    found = paths.get('pretrain_network_enc') or (net_g and encoder_beside(net_g))
    if net_g and not found:
        raise ValueError(f"path.pretrain_network_enc: the options have network_enc but name no encoder weights, "
                         f"and none lie next to '{net_g}'")
    return found or None
