"""CoICModel: two-stage joint training of a backbone with CoI-M and the rain-/detail-aware contrastive encoder."""
import warnings
from collections import OrderedDict
from copy import deepcopy
from typing import Dict, Optional

import torch
from basicsr.archs import build_network
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from coic_basicsr.archs.arch_util import takes_representation
from coic_basicsr.archs.coic_encoder_arch import momentum_update
from coic_basicsr.archs.conv_selection import split_modulation_parameters
from coic_basicsr.archs.modulation_core import NO_ENCODER_WARNING, has_trained_modulation
from coic_basicsr.data.transforms import global_view
from coic_basicsr.models.loss_sections import build_contrastive_loss, build_loss_sections
from coic_basicsr.models.portable import PortableModelMixin
from coic_basicsr.models.global_views import require_global_views
from coic_basicsr.models.source_validation import log_results, validate_per_source, write_result_tables
from coic_basicsr.models.tiling import tile_settings, tiled_forward
from coic_basicsr.utils.checkpoint import load_checkpoint, test_encoder_path
from coic_basicsr.utils.option_values import COIC_DEFAULTS, check_coic_section


@MODEL_REGISTRY.register()
class CoICModel(PortableModelMixin, SRModel):
    """Restoration model with CoIC; without ``train.coic`` and ``network_enc`` it is a plain (baseline) model.

    Stage 1 (iterations ``1..stage1_iter``) trains the backbone alone with z=None and the pixel loss. Stage 2 feeds
    ``z`` from the query encoder on ``lq_global`` to the backbone and adds the contrastive loss; backbone parameters
    are updated by ``optim_g``, modulation parameters (generators, context embeddings) and the encoder by
    ``optim_mod``. Testing uses z from the momentum key encoder on the resized input.

    YAML keys:
        network_g (dict): Any arch with ``forward(x, z=None)`` (CoICRestormer, CoICNet, ...) or a plain arch.
        network_enc (dict): The representation encoder, e.g. ``{type: CoICEncoder}``. Required with ``train.coic``;
            a training option file without ``train.coic`` may not have it (nor optim_mod, scheduler_mod).
        path.pretrain_network_enc (str): Encoder checkpoint (``params`` = query, ``params_key`` = key encoder).
        train.coic.stage1_iter (int): Iterations of stage 1. Default: 40000.
        train.coic.contrastive_weight (float): Weight of the contrastive loss. Default: 0.2.
        train.coic.temperature (float): InfoNCE temperature. Default: 1.0.
        train.coic.num_detail_negatives (int): Detail-aware negatives per sample. Default: 4.
        train.coic.archive_size (int): Rain layers kept for rain-aware negatives; 0: current batch only. Default: 64.
        train.coic.momentum (float): Momentum of the key encoder. Default: 0.999.
        train.coic.blur_kernel_size (int): Odd Gaussian kernel size of the detail-aware negatives. Default: 11.
        train.coic.blur_sigma (list[float]): [low, high] of their uniformly drawn blur sigma. Default: [0.3, 1.5].
        train.<name>_opt (dict): Every loss section (pixel_opt, ssim_opt, ...) is built and summed, logged as
            ``l_<name>``. An arch may return a list of stage outputs (final last); a loss whose class sets
            ``takes_all_stages = True`` gets the list, others the final output; ``takes_input = True`` adds ``lq``.
            The contrastive loss is not one of them: it is built from ``train.coic``.
        train.optim_mod (dict): Optimizer of the modulation parameters and encoder. Default: a copy of optim_g.
        train.scheduler_mod (dict): Scheduler of optim_mod. Default: a copy of train.scheduler.
        train.grad_clip (float): Max global gradient norm; null disables clipping. Default: null.
        train.max_nonfinite_steps (int): Consecutive non-finite steps (skipped) before aborting. Default: 10.
        val.tile (dict): ``{size: int >= 16, overlap: int}`` tiled inference for large images (overlap defaults to 32).
            Default: null.
        val.global_size (int): Size of the encoder's view when a batch has no ``lq_global``. Default: 128.
        val.report_input (bool): Also score the rainy input per source. Default: true (false when ``scale`` > 1).
        find_unused_parameters (bool): Passed to DDP. Default: true with ``train.coic`` (the generators idle
            through stage 1), else false.
    """

    reads_val_tile = True

    def __init__(self, opt: dict):
        if opt['is_train']:
            check_coic_section(opt)  # again: BasicSR's own train_pipeline runs none of our option checks
        coic = (opt.get('train') or {}).get('coic') if opt['is_train'] else None
        self.coic_opt = None if coic is None else {**COIC_DEFAULTS, **coic}
        if self.coic_opt is not None:
            opt.setdefault('find_unused_parameters', True)  # generators are idle during stage 1
        self.current_iter = 0
        self.net_enc = self.net_enc_key = self.cri_con = None
        super().__init__(opt)
        if not self.is_train:
            self._build_encoders()
            if self.net_enc_key is None and has_trained_modulation(self.get_bare_model(self.net_g)):
                get_root_logger().warning(NO_ENCODER_WARNING)

    def _build_encoders(self) -> None:
        if 'network_enc' not in self.opt:
            return
        if not takes_representation(self.get_bare_model(self.net_g)):
            raise ValueError(f"network_enc: network_g ({self.opt['network_g']['type']}) takes no representation z "
                             '(forward(x, z=None)): remove network_enc, or use a CoIC arch or CoICNet')
        encoder = build_network(self.opt['network_enc'])
        paths = self.opt['path']
        load_path = paths.get('pretrain_network_enc') if self.is_train else test_encoder_path(paths)
        if load_path != paths.get('pretrain_network_enc'):  # a test that found the encoder saved with network_g
            get_root_logger().info(f'Set pretrain_network_enc to {load_path}')
        if load_path is not None:  # a test uses the key encoder alone: 'params_key' (else 'params') is what it loads
            self.load_network(encoder, load_path, True, 'params' if self.is_train else 'params_key')
        key_encoder = deepcopy(encoder)
        if self.is_train:
            self.net_enc = self.model_to_device(encoder)
            self.net_enc.train()
        if self.is_train and load_path is not None:
            checkpoint = load_checkpoint(load_path)
            key_encoder.load_state_dict(checkpoint.get('params_key', checkpoint['params']))
        elif self.is_train:  # DDP has made every rank's encoder rank 0's: the key encoder must start from it too
            key_encoder.load_state_dict(encoder.state_dict())
        key_encoder.requires_grad_(False)
        self.net_enc_key = key_encoder.to(self.device)

    def init_training_settings(self) -> None:
        self._build_encoders()
        train_opt = self.opt['train']
        self.losses = build_loss_sections(train_opt, self.device)
        loss_keys = [section.key for section in self.losses.values()]
        # SRModel builds pixel/perceptual losses itself; ours are in self.losses
        self.opt['train'] = {k: v for k, v in train_opt.items() if k not in loss_keys}
        self.opt['train']['pixel_opt'] = train_opt[loss_keys[0]]
        super().init_training_settings()
        self.opt['train'] = train_opt
        if self.coic_opt is not None:
            self.cri_con = build_contrastive_loss(self.coic_opt, self.device)

    def setup_optimizers(self) -> None:
        train_opt = self.opt['train']
        backbone, modulation = split_modulation_parameters(self.get_bare_model(self.net_g))
        optim_g = dict(train_opt['optim_g'])
        self.optimizer_g = self.get_optimizer(optim_g.pop('type'), [p for p in backbone if p.requires_grad], **optim_g)
        self.optimizers = [self.optimizer_g]
        self.optimizer_mod = None
        if self.coic_opt is not None:
            if not modulation:
                raise ValueError(f"train.coic: network_g ({self.opt['network_g']['type']}) has no modulated layers")
            optim_mod = dict(train_opt.get('optim_mod') or train_opt['optim_g'])
            params = modulation + list(self.get_bare_model(self.net_enc).parameters())
            self.optimizer_mod = self.get_optimizer(optim_mod.pop('type'), params, **optim_mod)
            self.optimizers.append(self.optimizer_mod)

    def scheduler_options(self, optimizer_index: int) -> dict:
        scheduler = self.opt['train']['scheduler']
        return (self.opt['train'].get('scheduler_mod') or scheduler) if optimizer_index == 1 else scheduler

    def update_learning_rate(self, current_iter: int, warmup_iter: int = -1) -> None:
        # optim_mod idles through stage 1 while its schedule follows the iteration count; torch's warning about a
        # scheduler stepped before its optimizer is expected here, not a wrong call order.
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message=r'Detected call of `lr_scheduler\.step\(\)` before')
            super().update_learning_rate(current_iter, warmup_iter)

    def feed_data(self, data: dict) -> None:
        if 'gt' not in data and hasattr(self, 'gt'):  # else an item without gt is scored against the last one's gt
            del self.gt
        super().feed_data(data)
        self.lq_global = data['lq_global'].to(self.device) if 'lq_global' in data else None
        self.gt_global = data['gt_global'].to(self.device) if 'gt_global' in data else None

    def in_stage2(self, current_iter: int) -> bool:
        return self.coic_opt is not None and current_iter > self.coic_opt['stage1_iter']

    def optimize_parameters(self, current_iter: int) -> None:
        self.current_iter = current_iter
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss_dict = OrderedDict()
        if self.coic_opt is not None:  # from the first batch on, not at the first stage-2 iteration
            require_global_views(self.opt, self.lq_global is not None and self.gt_global is not None)
        if self.in_stage2(current_iter):
            z, anchor = self.net_enc(self.lq_global)
            with torch.no_grad():
                momentum_update(self.net_enc_key, self.get_bare_model(self.net_enc), self.coic_opt['momentum'])
                positive, negatives = self.cri_con.build_views(self.lq_global, self.gt_global)
                keys = self.net_enc_key(torch.cat([positive, negatives.flatten(0, 1)]))[1]
                key_pos, key_neg = keys[:len(positive)], keys[len(positive):].unflatten(0, negatives.shape[:2])
            outputs = self.net_g(self.lq, z)
            l_con, logits = self.cri_con(anchor, key_pos, key_neg)
            loss_dict['l_con'] = l_con
            loss_dict['con_top1'] = (logits.argmax(dim=1) == 0).float().mean()
        else:
            outputs = self.net_g(self.lq)
        stages = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        self.output = stages[-1]
        total = loss_dict.get('l_con', 0)
        for section in self.losses.values():
            for log_name, value in section(stages, self.gt, self.lq).items():
                loss_dict[log_name] = value
                total = total + value
        total.backward()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if not self._gradients_finite():
            return
        self.optimizer_g.step()
        if self.in_stage2(current_iter):
            self.optimizer_mod.step()
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def representation(self) -> Optional[torch.Tensor]:
        """z for the current batch from the key encoder, or None when CoIC is off (or still in stage 1)."""
        if self.net_enc_key is None or (self.is_train and not self.in_stage2(self.current_iter)):
            return None
        view = self.lq_global if self.lq_global is not None else \
            global_view(self.lq, (self.opt.get('val') or {}).get('global_size', 128))
        self.net_enc_key.eval()
        z = self.net_enc_key(view)[0]
        self.net_enc_key.train(self.is_train)
        return z

    @torch.no_grad()
    def test(self) -> None:
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)
        was_training = net.training
        net.eval()
        z = self.representation()
        def run(x):
            out = net(x) if z is None else net(x, z)
            return out[-1] if isinstance(out, (list, tuple)) else out

        tile = tile_settings(self.opt.get('val'))
        self.output = tiled_forward(run, self.lq, *tile) if tile else run(self.lq)
        net.train(was_training)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img) -> None:
        name, metrics = dataloader.dataset.opt['name'], (self.opt.get('val') or {}).get('metrics') or {}
        results = validate_per_source(self, dataloader, current_iter, save_img)
        self.last_validation = getattr(self, 'last_validation', {})
        self.last_validation[name] = results
        if metrics and 'all' in results:
            self._initialize_best_metric_results(name)
            for metric in metrics:
                if metric in results['all']:  # a set without clean images has no full-reference scores
                    self._update_best_metric_result(name, metric, results['all'][metric], current_iter)
        log_results(name, results, metrics, current_iter, tb_logger,
                    getattr(self, 'best_metric_results', {}).get(name))
        if not self.is_train:
            write_result_tables(results, self.opt['path']['results_root'], name)

    def save(self, epoch: int, current_iter: int) -> None:
        with_ema = hasattr(self, 'net_g_ema')
        nets, keys = ([self.net_g, self.net_g_ema], ['params', 'params_ema']) if with_ema else (self.net_g, 'params')
        self.save_network(nets, 'net_g', current_iter, param_key=keys)
        if self.net_enc is not None:
            self.save_network([self.net_enc, self.net_enc_key], 'net_enc', current_iter,
                              param_key=['params', 'params_key'])
        self.save_training_state(epoch, current_iter)

    def extra_training_state(self) -> Dict:
        return {'contrastive': self.cri_con.state_dict()} if self.cri_con is not None else {}

    def load_extra_training_state(self, state: Dict) -> None:
        if self.cri_con is not None and 'contrastive' in state:
            self.cri_con.load_state_dict(state['contrastive'])

    def resume_training(self, resume_state: Dict) -> None:
        super().resume_training(resume_state)
        self.current_iter = resume_state['iter']
