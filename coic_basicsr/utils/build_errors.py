"""One-line errors for a network, dataset or data loader section that cannot be built from its options.

BasicSR's builders pass a section's options straight to the class: ``num_feat: abc`` or ``upscale: 0`` end in a
TypeError or AttributeError deep in the class's constructor. Such errors are reported as a ValueError naming the
section and the class (the original stays chained: ``COIC_TRACEBACK=1`` shows it). Only the build calls are wrapped:
the same errors anywhere else are bugs and keep their traceback.
"""
import traceback
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional, Tuple

from coic_basicsr.cli import USER_ERRORS, one_line
from coic_basicsr.utils.errors import is_out_of_memory


class SectionBuildError(ValueError):
    """A section's options that its class cannot be built from (a user error: one line, exit code 2)."""


@contextmanager
def building(section: str, class_name: Any, doing: Optional[str] = None,
             cannot: str = 'cannot be built') -> Iterator[None]:
    """Report an error raised while building ``section`` (an instance of ``class_name``) in one line: ``doing``
    (default: building ``section``) ran out of memory, or the class ``cannot`` ... from these options.

    Errors that are already reported in one line (ValueError, OSError, ...) pass unchanged: they name their key.
    """
    try:
        yield
    except SectionBuildError:
        raise
    except Exception as err:  # noqa: B902  (re-raised: as a one-line user error, or unchanged)
        if is_out_of_memory(err):
            raise SectionBuildError(f'{section}: {class_name} ran out of memory {doing or "building " + section}; '
                                    f'lower its sizes ({one_line(err) or type(err).__name__})') from err
        if isinstance(err, USER_ERRORS):
            raise
        raise SectionBuildError(f'{section}: {class_name} {cannot} from these options: '
                                f'{type(err).__name__}: {one_line(err)}') from err


def _failed_network(model_opt: Dict[str, Any], err: BaseException) -> Optional[Tuple[str, Any]]:
    """(section, class name) of the outermost ``build_network`` call in ``err``'s traceback, or None when the error
    came from elsewhere. That call holds the section's options as a copy without 'type' (``opt``, ``network_type``)."""
    from basicsr.archs import build_network
    for frame, _ in traceback.walk_tb(err.__traceback__):
        if frame.f_code is not build_network.__code__ or 'network_type' not in frame.f_locals:
            continue
        options, class_name = frame.f_locals.get('opt'), frame.f_locals['network_type']
        for key, section in model_opt.items():
            if str(key).startswith('network_') and isinstance(section, dict) and section.get('type') == class_name \
                    and {k: v for k, v in section.items() if k != 'type'} == options:
                return key, class_name
        return 'network', class_name
    return None


@contextmanager
def network_sections_named(model_opt: Dict[str, Any]) -> Iterator[None]:
    """While a model is made from ``model_opt``, an error raised inside one of its ``build_network`` calls (BasicSR's
    models call it as ``self.net_g = build_network(opt['network_g'])``) is reported in one line naming the section;
    any other error passes unchanged."""
    try:
        yield
    except SectionBuildError:
        raise
    except Exception as err:  # noqa: B902  (re-raised: as a one-line user error, or unchanged)
        failed = _failed_network(model_opt, err)
        if failed is None:
            raise
        with building(*failed):
            raise err
