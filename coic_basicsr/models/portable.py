"""Device-, distribution- and crash-safe behaviour shared by every model the pipeline builds.

BasicSR 1.4.2's ``BaseModel`` wraps DDP with ``device_ids=[cuda]``, knows only the Adam optimizer and two schedulers,
and writes checkpoints in place. :class:`PortableModelMixin` fixes that by ordinary method overriding; the pipeline
puts it in front of any registered BasicSR model class (stock ``SRModel`` included) via :func:`portable_model_class`.
"""
from copy import deepcopy
from os import path as osp
from typing import Dict, List, Type

import torch
from basicsr.models import lr_scheduler
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from torch.nn.parallel import DataParallel, DistributedDataParallel

from coic_basicsr.models.resume import (check_optimizer_states, continue_multistep, optimizer_settings,
                                       restore_optimizer_settings, scheduler_progress)
from coic_basicsr.registry import SCHEDULER_REGISTRY
from coic_basicsr.utils.build_errors import network_sections_named
from coic_basicsr.utils.checkpoint import (GATE_LAYOUT_KEY, atomic_save, check_gate_layout,
                                          describe_shape_mismatches, gate_layouts, load_checkpoint, to_plain)
from coic_basicsr.utils.errors import NonFiniteTrainingError


_BASICSR_SCHEDULERS = {'MultiStepLR': lr_scheduler.MultiStepRestartLR,
                       'MultiStepRestartLR': lr_scheduler.MultiStepRestartLR,
                       'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR}  # names BasicSR's models take


def optimizer_class(name: str, key: str = 'train.optim_*') -> type:
    """The ``torch.optim`` class named by an ``optim_*`` section's ``type``."""
    if name is None:
        raise ValueError(f'{key}.type: required (a torch.optim class name, e.g. Adam or AdamW)')
    optim_cls = getattr(torch.optim, str(name), None)
    if not (isinstance(optim_cls, type) and issubclass(optim_cls, torch.optim.Optimizer)):
        raise ValueError(f"{key}.type: '{name}' is not a torch.optim optimizer")
    return optim_cls


def scheduler_class(name: str, key: str = 'train.scheduler') -> type:
    """The scheduler class named by a scheduler section's ``type`` (BasicSR's names or our SCHEDULER_REGISTRY)."""
    if name in SCHEDULER_REGISTRY:
        return SCHEDULER_REGISTRY.get(name)
    if name not in _BASICSR_SCHEDULERS:
        known = list(_BASICSR_SCHEDULERS) + sorted(SCHEDULER_REGISTRY.keys())
        raise ValueError(f"{key}.type: '{name}' is not a known scheduler (known: {', '.join(known)})")
    return _BASICSR_SCHEDULERS[name]


class PortableModelMixin:
    """Mixin placed before a BasicSR model class in the MRO.

    YAML keys it adds:
        find_unused_parameters (bool): Passed to DDP. Default: False.
        channels_last (bool): Keep every network's conv weights and 4-D inputs in channels-last memory format
            (on the CPU the CoIC-DRSformer step now takes the same time either way, docs/benchmarks.md; not measured
            on GPU). Checkpoints are unchanged. Default: False.
        train.optim_* (dict): ``type`` may be any ``torch.optim`` class name (Adam, AdamW, SGD, ...).
        train.scheduler (dict): ``type`` may also be a name in ``coic_basicsr.registry.SCHEDULER_REGISTRY``.
        train.grad_clip (float): Max global gradient norm (models calling ``_gradients_finite``). Default: null.
        train.use_grad_clip (bool): Restormer's switch: clip at norm 0.01 when grad_clip is not set. Default: false.
        train.max_nonfinite_steps (int): Consecutive skipped non-finite steps before aborting. Default: 10.
    """

    def model_to_device(self, net: torch.nn.Module) -> torch.nn.Module:
        net = net.to(self.device)
        channels_last = self.opt.get('channels_last', False)
        if not isinstance(channels_last, bool):
            raise ValueError(f'channels_last: expected true or false, got {channels_last!r}')
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            net.register_forward_pre_hook(_inputs_to_channels_last)
        if self.opt['dist']:
            device_ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()
                          ] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(
                net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net

    @torch.no_grad()
    def model_ema(self, decay: float = 0.999) -> None:
        """BasicSR's parameter EMA, plus buffers copied from the trained net (BatchNorm running statistics would
        otherwise stay at their initial values in the EMA copy used for validation and saving)."""
        super().model_ema(decay)
        ema_buffers = dict(self.net_g_ema.named_buffers())
        for name, buffer in self.get_bare_model(self.net_g).named_buffers():
            ema_buffers[name].copy_(buffer)

    def get_optimizer(self, optim_type: str, params, lr: float, **kwargs) -> torch.optim.Optimizer:
        return optimizer_class(optim_type)(params, lr, **kwargs)

    def scheduler_options(self, optimizer_index: int) -> dict:
        """Scheduler options of the ``optimizer_index``-th optimizer (override for per-optimizer schedules)."""
        return self.opt['train']['scheduler']

    def setup_schedulers(self) -> None:
        for index, optimizer in enumerate(self.optimizers):
            scheduler_opt = dict(self.scheduler_options(index))
            self.schedulers.append(scheduler_class(scheduler_opt.pop('type'))(optimizer, **scheduler_opt))

    @master_only
    def save_network(self, net, net_label: str, current_iter, param_key='params') -> None:
        current_iter = 'latest' if current_iter == -1 else current_iter
        nets = net if isinstance(net, list) else [net]
        param_keys = param_key if isinstance(param_key, list) else [param_key]
        save_dict = {}
        for net_, key in zip(nets, param_keys):
            state_dict = self.get_bare_model(net_).state_dict()
            save_dict[key] = {k[7:] if k.startswith('module.') else k: v.cpu() for k, v in state_dict.items()}
        if gate_layouts(self.get_bare_model(nets[0])) == {'official'}:  # keep the converted checkpoint's record
            save_dict[GATE_LAYOUT_KEY] = 'official'
        atomic_save(save_dict, osp.join(self.opt['path']['models'], f'{net_label}_{current_iter}.pth'))

    def load_network(self, net, load_path: str, strict: bool = True, param_key: str = 'params') -> None:
        """BasicSR's ``load_network`` reading the file with ``weights_only=True`` and one-line errors."""
        checkpoint = load_checkpoint(load_path)
        bare = self.get_bare_model(net)
        check_gate_layout(bare, checkpoint, load_path)
        if param_key is not None:
            if param_key not in checkpoint and 'params' in checkpoint:
                get_root_logger().info(f"Loading: '{param_key}' is not in {load_path}, using 'params'.")
                param_key = 'params'
            if param_key not in checkpoint:
                raise ValueError(f"checkpoint '{load_path}' has no '{param_key}' entry (has: {sorted(checkpoint)})")
            checkpoint = checkpoint[param_key]
        state_dict = {k[7:] if k.startswith('module.') else k: v for k, v in checkpoint.items()}
        if hasattr(bare, 'adapt_state_dict'):  # CoICNet: a plain backbone checkpoint's keys under backbone.
            state_dict = bare.adapt_state_dict(state_dict)
        get_root_logger().info(f'Loading {bare.__class__.__name__} model from {load_path}, with param key: '
                               f'[{param_key}].')
        self._print_different_keys_loading(bare, state_dict, strict)
        try:
            bare.load_state_dict(state_dict, strict=strict)
        except RuntimeError:
            detail = describe_shape_mismatches(bare, state_dict)
            if not detail:  # a copy loads non-strictly: the load hooks fill what a plain checkpoint may lack
                keys = deepcopy(bare).load_state_dict(state_dict, strict=False)
                missing, unexpected = sorted(keys.missing_keys), sorted(keys.unexpected_keys)
                detail = (f'{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected keys '
                          f'(e.g. {unexpected[:2]})')
            raise ValueError(f"checkpoint '{load_path}' does not fit {bare.__class__.__name__}: {detail}") from None

    def _gradients_finite(self) -> bool:
        """Clip (``train.grad_clip``) and check the global gradient norm; skip non-finite steps, abort after
        ``train.max_nonfinite_steps`` consecutive ones. DDP has already averaged the gradients, so every rank
        takes the same decision."""
        clip = self.opt['train'].get('grad_clip')
        if clip is None and self.opt['train'].get('use_grad_clip'):
            clip = 0.01  # Restormer's switch and its fixed norm
        params = [p for opt_ in self.optimizers for group in opt_.param_groups for p in group['params']]
        norm = torch.nn.utils.clip_grad_norm_(params, float(clip) if clip else float('inf'))
        if torch.isfinite(norm):
            self.consecutive_nonfinite = 0
            return True
        self.nonfinite_steps = getattr(self, 'nonfinite_steps', 0) + 1
        self.consecutive_nonfinite = getattr(self, 'consecutive_nonfinite', 0) + 1
        self.log_dict['nonfinite_steps'] = float(self.nonfinite_steps)
        get_root_logger().warning(f'Non-finite loss/gradient at iter {getattr(self, "current_iter", "?")}: step skipped '
                                  f'({self.consecutive_nonfinite} in a row, {self.nonfinite_steps} in total).')
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        limit = int(self.opt['train'].get('max_nonfinite_steps', 10))
        if self.consecutive_nonfinite >= limit:
            raise NonFiniteTrainingError(f'{self.consecutive_nonfinite} consecutive non-finite steps '
                                         f'(train.max_nonfinite_steps: {limit}); last good state saved')
        return False

    def extra_training_state(self) -> Dict:
        """Model-specific entries stored in the training state (override; tensors and plain containers only)."""
        return {}

    def load_extra_training_state(self, state: Dict) -> None:
        """Restore what :meth:`extra_training_state` saved."""

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        if current_iter == -1:
            return
        state = {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'extra': self.extra_training_state(),
            'manual_seed': self.opt.get('manual_seed'),  # a resume of a run without manual_seed reuses it
        }
        atomic_save(to_plain(state), osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state: Dict) -> None:
        for key, mine in (('optimizers', self.optimizers), ('schedulers', self.schedulers)):
            if len(resume_state[key]) != len(mine):
                raise ValueError(f'path.resume_state: the state has {len(resume_state[key])} {key}, '
                                 f'this model has {len(mine)}')
        schedulers = [scheduler_progress(saved, mine, index)
                      for index, (saved, mine) in enumerate(zip(resume_state['schedulers'], self.schedulers))]
        settings = optimizer_settings(self.optimizers)
        check_optimizer_states(resume_state['optimizers'], settings, self.optimizers)
        super().resume_training(dict(resume_state, schedulers=schedulers))
        restore_optimizer_settings(self.optimizers, settings)
        for saved, scheduler in zip(resume_state['schedulers'], self.schedulers):
            continue_multistep(saved, scheduler)
        self.load_extra_training_state(resume_state.get('extra', {}))
        get_root_logger().info(f"Resumed optimizers/schedulers at iter {resume_state['iter']}.")


_PORTABLE_CLASSES: Dict[type, type] = {}


def _inputs_to_channels_last(module: torch.nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4
                 else a for a in args)


def portable_model_class(model_cls: Type) -> Type:
    """``model_cls`` itself if it already has the mixin, else a subclass ``(PortableModelMixin, model_cls)``."""
    if issubclass(model_cls, PortableModelMixin):
        return model_cls
    if model_cls not in _PORTABLE_CLASSES:
        _PORTABLE_CLASSES[model_cls] = type(model_cls.__name__, (PortableModelMixin, model_cls),
                                            {'__doc__': model_cls.__doc__, '__module__': model_cls.__module__})
    return _PORTABLE_CLASSES[model_cls]


def build_model(opt: dict):
    """BasicSR's ``build_model`` with :class:`PortableModelMixin` in front of the registered class; an error building
    one of its ``network_*`` sections is reported in one line naming it."""
    from basicsr.utils.registry import MODEL_REGISTRY
    opt = deepcopy(opt)  # model constructors pop keys (e.g. optimizer 'type')
    model_cls = portable_model_class(MODEL_REGISTRY.get(opt['model_type']))
    with network_sections_named(opt):  # network_g: MSRResNet cannot be built from these options: ...
        model = model_cls(opt)
    get_root_logger().info(f'Model [{model.__class__.__name__}] is created.')
    return model


__all__: List[str] = ['PortableModelMixin', 'portable_model_class', 'build_model']
