"""The training batches' prefetcher: BasicSR's, made per epoch."""
from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher


class EpochPrefetcher(CPUPrefetcher):
    """BasicSR's CPUPrefetcher without the loader iterator its constructor makes: the training loop makes one per
    epoch (:meth:`reset`). That first iterator was never read, yet with loader workers it kept its own workers (and,
    with ``prefetch_mode: cpu``, a prefetch thread) alive to the end; with ``persistent_workers`` two prefetch threads
    then read one iterator and training stopped."""

    def __init__(self, loader) -> None:  # not CPUPrefetcher.__init__, which iterates the loader
        self.ori_loader = loader
        self.loader = iter(())


def create_prefetcher(opt: dict, train_loader):
    """The prefetcher of ``datasets.train.prefetch_mode`` (BasicSR's: None or cpu, or cuda with pinned memory)."""
    mode = opt['datasets']['train'].get('prefetch_mode')
    if mode in (None, 'cpu'):
        return EpochPrefetcher(train_loader)
    if mode == 'cuda' and opt['num_gpu'] > 0:
        pin_memory = opt['datasets']['train'].get('pin_memory')
        if pin_memory is not True:
            raise ValueError(f'datasets.train.pin_memory: expected true with prefetch_mode: cuda, got {pin_memory!r}')
        return CUDAPrefetcher(train_loader, opt)
    if mode == 'cuda':
        return EpochPrefetcher(train_loader)  # no CUDA here: same batches, without the copy stream
    raise ValueError(f'datasets.train.prefetch_mode: expected cpu, cuda, or null, got {mode!r}')
