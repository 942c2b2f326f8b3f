"""The losses' one-line option errors, ``<key>: expected <what> for <Loss>, got <value>``: the model's loss sections
put the section's key in front (:func:`nest_key`), e.g. ``train.ssim_opt.padding: ...``."""
import re
from typing import Any, Callable, Optional, Sequence

from coic_basicsr.utils.option_values import FLAG_RULE, check_value, is_number

_KEY_FIRST = re.compile(r'[a-z_]\w*(?:\.\w+|\[\d+\])*: ')  # an option key (a class name starts with a capital)


def nest_key(where: str, message: str) -> str:
    """``message`` placed under the option key ``where``: ``<where>.<key>: ...`` when it starts with a key (the
    losses' messages), else ``<where>: ...`` (e.g. BasicSR's "Unsupported reduction mode: ...")."""
    return f'{where}.{message}' if _KEY_FIRST.match(message) else f'{where}: {message}'


def bad_loss_option(loss: str, key: str, expected: str, value: Any) -> ValueError:
    """The ValueError ``<key>: expected <expected> for <loss>, got <value!r>``."""
    return ValueError(f'{key}: expected {expected} for {loss}, got {value!r}')


def check_loss_number(loss: str, key: str, value: Any, expected: str, valid: Callable[[float], bool]) -> None:
    """A required real number (not a bool, not a numeric string) for which ``valid`` holds."""
    check_value(key, value, (lambda v: is_number(v) and valid(v), f'{expected} for {loss}'), allow_null=False)


def check_loss_value(loss: str, key: str, value: Any, rule) -> None:
    """A required value that passes ``rule`` = (predicate, what is expected), e.g. option_values' FLAG_RULE."""
    check_value(key, value, (rule[0], f'{rule[1]} for {loss}'), allow_null=False)


def check_loss_flag(loss: str, key: str, value: Any) -> None:
    """A required true or false (``'false'``, a string, is refused: ``bool('false')`` is True)."""
    check_loss_value(loss, key, value, FLAG_RULE)


def check_loss_weights(loss: str, key: str, weights: Optional[Sequence], per: str) -> None:
    """Null, or a list of numbers >= 0 (one per ``per``); each bad entry is named ``<key>[i]``."""
    if weights is None:
        return
    if not isinstance(weights, (list, tuple)):
        raise bad_loss_option(loss, key, f'a list of numbers >= 0 (one per {per}), or null', weights)
    for i, weight in enumerate(weights):
        check_loss_number(loss, f'{key}[{i}]', weight, 'a number >= 0', lambda v: v >= 0)
