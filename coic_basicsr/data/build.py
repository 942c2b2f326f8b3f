"""BasicSR's ``build_dataset`` with the option key in the message of a dataset's failed assertion."""
from basicsr.data import build_dataset
from torch.utils.data import Dataset


def build_dataset_of(key: str, dataset_opt: dict) -> Dataset:
    """Build ``datasets.<key>``; BasicSR's datasets check their folders with ``assert`` (e.g. lq and gt folders of
    different lengths), which would end the run in a traceback that names no option."""
    try:
        return build_dataset(dataset_opt)
    except AssertionError as err:
        raise ValueError(f'datasets.{key}: {err}') from err
