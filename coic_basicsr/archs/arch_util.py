"""What every CoIC arch shares: constructor option checks (one-line errors naming the option's full key, see
:func:`option_prefix`), and for ``forward(x, z=None)`` checking z, padding to a size multiple, cropping back."""
import inspect
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from coic_basicsr.utils.option_values import is_integer, yaml_text_hint

Outputs = Union[Tensor, List[Tensor]]


_PREFIX: ContextVar[str] = ContextVar('coic_option_prefix', default='network_g.')


@contextmanager
def option_prefix(prefix: str) -> Iterator[None]:
    """Name the options of every arch built inside the block ``<prefix><key>`` (default ``network_g.``): e.g.
    ``network_g.backbone.`` for CoICNet's backbone, ``--opt `` for ``basicsr convert-official``."""
    token = _PREFIX.set(prefix)
    try:
        yield
    finally:
        _PREFIX.reset(token)


def option_key(key: str, section: Optional[str] = None) -> str:
    """``key`` as the user wrote it: ``<section>.<key>`` when ``section`` is given, else the current prefix (see
    :func:`option_prefix`) and ``key``."""
    return f'{section}.{key}' if section else _PREFIX.get() + key


def bad_option(arch: str, key: str, expected: str, value: Any, reason: str = '', section: Optional[str] = None,
               hint: str = '') -> ValueError:
    """The one-line ValueError ``<key>: expected <expected> for <arch>[ (<reason>)], got <value!r><hint>`` (a numpy
    integer shown as the plain integer)."""
    because = f' ({reason})' if reason else ''
    shown = int(value) if is_integer(value) else value
    return ValueError(f'{option_key(key, section)}: expected {expected} for {arch}{because}, got {shown!r}{hint}')


def check_choice(arch: str, key: str, value: Any, choices: Sequence[Any]) -> None:
    """Refuse (:func:`bad_option`) a ``value`` that is not one of ``choices``."""
    if value not in choices:
        raise bad_option(arch, key, f'one of {tuple(choices)}', value)


def check_at_least(arch: str, minimum: int, values: Iterable[Tuple[str, Any]], section: Optional[str] = None) -> None:
    """Refuse (:func:`bad_option`, naming ``<section>.<key>`` when ``section`` is given) the first ``(key, value)``
    that is not an integer (floats such as 2.5 or 2.0, bools and strings included) or is below ``minimum``."""
    for key, value in values:
        if not is_integer(value) or value < minimum:
            raise bad_option(arch, key, f'an integer >= {minimum}', value, section=section, hint=yaml_text_hint(value))


def check_int_list(arch: str, key: str, values: Any, min_length: int = 1) -> List[int]:
    """``values`` as a list; refused (:func:`bad_option`) unless it is a list (or tuple) of at least ``min_length``
    positive integers: a scalar or a string (which would be split into characters) is refused."""
    entries = 'a non-empty list of' if min_length == 1 else f'a list of {min_length} or more'
    if not (isinstance(values, (list, tuple)) and len(values) >= min_length
            and all(is_integer(v) and v >= 1 for v in values)):
        raise bad_option(arch, key, f'{entries} positive integers', values)
    return [int(v) for v in values]


def check_flag(arch: str, key: str, value: Any) -> None:
    """Refuse (:func:`bad_option`) a ``value`` that is not true or false (``'false'``, a string, is refused:
    ``bool('false')`` is True)."""
    if not isinstance(value, bool):
        raise bad_option(arch, key, 'true or false', value)


def check_flags(arch: str, values: Iterable[Tuple[str, Any]]) -> None:
    """:func:`check_flag` for every ``(key, value)``."""
    for key, value in values:
        check_flag(arch, key, value)


def check_list_length(arch: str, key: str, values: Any, length: int, what: str) -> None:
    """Refuse (:func:`bad_option`) ``values`` unless it is a list (or tuple) of ``length`` entries, one per ``what``
    (a scalar or a string is refused)."""
    if not isinstance(values, (list, tuple)) or len(values) != length:
        raise bad_option(arch, key, f'a list of {length} entries ({what})', values)


def check_parity(arch: str, key: str, value: int, odd: bool, reason: str) -> None:
    """Refuse (:func:`bad_option`) a ``value`` that is not odd (``odd``) or even; ``reason`` says which layer needs
    it."""
    if int(value) % 2 != int(odd):
        raise bad_option(arch, key, f"an {'odd' if odd else 'even'} integer", value, reason)


def takes_representation(net: nn.Module) -> bool:
    """Whether ``net.forward`` takes a second positional input, the code z (``forward(x, z=None)``)."""
    inputs = [p for p in inspect.signature(net.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(inputs) >= 2


def is_channels_last(x: Tensor) -> bool:
    """True for a map stored channels-last and not also NCHW-contiguous (as maps with C == 1 or H == W == 1 are)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def check_context(arch: nn.Module, x: Tensor, z: Optional[Tensor]) -> None:
    """Raise a one-line ValueError when ``z`` cannot condition ``arch`` (attributes ``modulate``, ``context_dim``)."""
    name = type(arch).__name__
    if x.dim() != 4:
        raise ValueError(f'{name}: expected a (B, C, H, W) input, got shape {tuple(x.shape)}')
    if z is None:
        return
    if not arch.modulate:
        raise ValueError(f'{name} built with modulate=False cannot take a context z')
    if z.dim() != 2 or z.shape[0] not in (1, x.shape[0]) or z.shape[1] != arch.context_dim:
        raise ValueError(f'{name}: z must have shape ({x.shape[0]} or 1, {arch.context_dim}), got {tuple(z.shape)}')


def pad_to_multiple(x: Tensor, multiple: int) -> Tuple[Tensor, Tuple[int, int]]:
    """Pad bottom/right to a multiple of ``multiple`` (reflect, or replicate when the image is too small to
    reflect); returns the padded map and the original (H, W) to crop back to."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode='reflect' if pad_h < h and pad_w < w else 'replicate')
    return x, (h, w)


def crop(outputs: Outputs, size: Tuple[int, int]) -> Outputs:
    """Crop one output or a list of stage outputs back to ``size``."""
    h, w = size
    if isinstance(outputs, (list, tuple)):
        return [out[..., :h, :w] for out in outputs]
    return outputs[..., :h, :w]


def conditioned_forward(arch: nn.Module, x: Tensor, z: Optional[Tensor], body: Callable[[Tensor], Outputs],
                        multiple: int, min_size: int = 0) -> Outputs:
    """``body`` on ``x`` padded to ``multiple``, with ``z`` set in ``arch.context`` for every modulated layer;
    inputs whose shorter side is not larger than ``min_size`` are refused."""
    check_context(arch, x, z)
    if min(x.shape[-2:]) <= min_size:
        raise ValueError(f'{type(arch).__name__} needs inputs larger than {min_size}x{min_size} pixels, '
                         f'got {x.shape[-2]}x{x.shape[-1]}')
    padded, size = pad_to_multiple(x, multiple)
    with arch.context.use(z):
        return crop(body(padded), size)
