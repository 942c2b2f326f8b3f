"""BasicSR's ``build_dataset`` and ``build_dataloader`` with the option key in the message of a failed build."""
from collections.abc import Mapping

from basicsr.data import build_dataloader, build_dataset
from basicsr.utils.file_client import FileClient
from torch.utils.data import DataLoader, Dataset

from coic_basicsr.utils.build_errors import building
from coic_basicsr.utils.option_layout import basicsr_dataset_name


def build_dataset_of(key: str, dataset_opt: dict) -> Dataset:
    """Build ``datasets.<key>``; BasicSR's datasets check their folders with ``assert`` (e.g. lq and gt folders of
    different lengths), and take bad values (``filename_tmpl: 0.0``) into a TypeError or AttributeError: either
    would end the run in a traceback that names no option."""
    check_stock_io_backend(key, dataset_opt)
    with building(f'datasets.{key}', dataset_opt.get('type')):
        try:
            return build_dataset(dataset_opt)
        except AssertionError as err:
            raise ValueError(f'datasets.{key}: {err}') from err


def build_dataloader_of(key: str, dataset: Dataset, dataset_opt: dict, **kwargs) -> DataLoader:
    """BasicSR's ``build_dataloader(dataset, dataset_opt, **kwargs)`` for ``datasets.<key>``: an error names it."""
    with building(f'datasets.{key}', f'the data loader of {type(dataset).__name__}'):
        return build_dataloader(dataset, dataset_opt, **kwargs)


def check_stock_io_backend(key: str, dataset_opt: dict) -> None:
    """BasicSR's datasets make their file client when they read the first item: a bad ``io_backend.type`` of a
    ``val`` set would end the run at its first validation, after training."""
    backend = dataset_opt.get('io_backend')
    if not basicsr_dataset_name(dataset_opt.get('type')) or not isinstance(backend, Mapping):
        return  # a project's or our dataset: it reads its own io_backend options
    kind = backend.get('type')
    if not isinstance(kind, str) or kind not in FileClient._backends:
        raise ValueError(f"datasets.{key}.io_backend.type: expected one of {', '.join(FileClient._backends)}, "
                         f'got {dict(kind) if isinstance(kind, Mapping) else kind!r}')
