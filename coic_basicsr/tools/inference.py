"""A trained model ready for the tools: options from a file or an experiment folder, safe checkpoint loading, the
representation ``z`` from the key encoder, and (tiled) restoration."""
import argparse
import glob
import os
import re
import sys
from os import path as osp
from typing import Optional, Sequence, Tuple

import coic_basicsr  # noqa: F401  (torchvision shim + registries before basicsr)
import torch
from basicsr.archs import build_network
from torch import Tensor, nn

from coic_basicsr.archs.modulation_core import NO_ENCODER_WARNING, has_trained_modulation
from coic_basicsr.data.transforms import global_view
from coic_basicsr.models.tiling import DEFAULT_OVERLAP, MIN_TILE, SMALL_TILE_REASON, tile_settings, tiled_forward
from coic_basicsr.utils.checkpoint import (check_gate_layout, describe_shape_mismatches, encoder_beside,
                                          load_checkpoint)
from coic_basicsr.utils.options import load_option_file


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags shared by ``basicsr derain`` and ``basicsr analyze``."""
    parser.add_argument('-opt', '--opt', dest='opt', required=True,
                        help='option file, or an experiment folder (experiments/<name>: its .yml and models/)')
    parser.add_argument('--checkpoint', help='network_g file (default: models/net_g_latest.pth of the experiment, '
                        'else path.pretrain_network_g)')
    parser.add_argument('--encoder-checkpoint', help='network_enc file (default: the net_enc_* file next to the '
                        'network_g file, else path.pretrain_network_enc)')
    parser.add_argument('--device', default='auto', help="'auto' (GPU when available), 'cpu', 'cuda', 'cuda:1', ...")
    parser.add_argument('--tile', type=int,
                        help=f'tile size (>= {MIN_TILE}) for large images; 0 = no tiling (default: val.tile)')
    parser.add_argument('--overlap', type=int,
                        help='overlap of neighbouring tiles, with --tile or val.tile (default: val.tile.overlap or '
                        '32, at most --tile / 4)')


def resolve_options(source: str) -> Tuple[dict, Optional[str]]:
    """Options from an option file, or from the ``.yml`` BasicSR copied into an experiment folder (the newest one).

    Returns:
        ``(options, models folder of the experiment or None)``.
    """
    source = osp.expanduser(source)
    if osp.isdir(source):
        ymls = sorted(glob.glob(osp.join(glob.escape(source), '*.y*ml')), key=osp.getmtime)
        if not ymls:
            raise FileNotFoundError(f"-opt: experiment folder '{source}' holds no .yml option file")
        opt, models = load_option_file(ymls[-1]), osp.join(source, 'models')
    else:
        opt, models = load_option_file(source), None
    if not isinstance(opt.get('network_g'), dict):
        raise ValueError(f"-opt: '{source}' has no network_g section")
    return opt, models


def _latest(models_dir: Optional[str], prefix: str) -> Optional[str]:
    """``<prefix>_latest.pth`` in ``models_dir``, else the highest-iteration ``<prefix>_<iter>.pth``."""
    if not models_dir or not osp.isdir(models_dir):
        return None
    latest = osp.join(models_dir, f'{prefix}_latest.pth')
    if osp.isfile(latest):
        return latest
    iters = [int(m.group(1)) for m in (re.fullmatch(rf'{prefix}_(\d+)\.pth', n) for n in os.listdir(models_dir)) if m]
    return osp.join(models_dir, f'{prefix}_{max(iters)}.pth') if iters else None


def _expand(path: Optional[str]) -> Optional[str]:
    """``~`` expanded, as BasicSR does for ``path.pretrain_network_*``."""
    return osp.expanduser(path) if isinstance(path, str) else path


def find_checkpoints(opt: dict, models_dir: Optional[str], checkpoint: Optional[str] = None,
                     encoder_checkpoint: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """Paths of the network_g and (when the options have ``network_enc``) the encoder checkpoint."""
    paths = opt.get('path') or {}
    fallback = osp.join('experiments', str(opt.get('name')), 'models')
    net_g = (_expand(checkpoint) or _latest(models_dir, 'net_g') or _expand(paths.get('pretrain_network_g'))
             or _latest(fallback, 'net_g'))
    if not net_g:
        raise FileNotFoundError('--checkpoint: no network_g checkpoint found (pass --checkpoint, an experiment folder '
                                'as -opt, or set path.pretrain_network_g)')
    if 'network_enc' not in opt:
        return net_g, None
    encoder = (_expand(encoder_checkpoint) or encoder_beside(net_g) or _latest(models_dir, 'net_enc')
               or _expand(paths.get('pretrain_network_enc')))
    if not encoder:
        raise FileNotFoundError(f"--encoder-checkpoint: the options have network_enc but no encoder checkpoint was "
                                f"found next to '{net_g}' (pass --encoder-checkpoint or set path.pretrain_network_enc)")
    return net_g, encoder


def load_weights(net: nn.Module, path: str, keys: Sequence[str], what: str) -> str:
    """Load the first of ``keys`` present in checkpoint ``path`` into ``net`` (strict); return the key used."""
    ckpt = load_checkpoint(path)
    check_gate_layout(net, ckpt, path)
    key = next((k for k in keys if isinstance(ckpt, dict) and k in ckpt), None)
    if key is None:
        found = sorted(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"checkpoint '{path}' has none of the keys {list(keys)} expected for {what} (found {found})")
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in ckpt[key].items()}
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        detail = describe_shape_mismatches(net, state) or next(
            (line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise ValueError(f"checkpoint '{path}' ['{key}'] does not fit {what}: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"checkpoint '{path}' ['{key}'] does not fit {what}: missing {result.missing_keys[:3]}, "
                         f'unexpected {result.unexpected_keys[:3]}')
    return key


def select_device(name: str) -> torch.device:
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: '{name}' is not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"--device: '{name}' requested but CUDA is not available")
    return device


class InferenceModel:
    """network_g and the key encoder, in eval mode.

    network_g's weights: ``path.param_key_g`` when the options set it and the file has it, else ``params_ema`` when
    present, else ``params``. The encoder's: ``params_key`` (the momentum key encoder), else ``params``.

    Attributes:
        opt (dict): The options. net_g (nn.Module). key_encoder (nn.Module | None). device (torch.device).
        global_size (int): Side of the encoder's view (``val.global_size``, default 128).
        tile (int | None), overlap (int): Tiling used by :meth:`restore` by default (``val.tile``).
        checkpoint (str), encoder_checkpoint (str | None), param_key (str): Where the weights came from.
    """

    def __init__(self, opt: dict, checkpoint: str, encoder_checkpoint: Optional[str], device: torch.device) -> None:
        self.opt, self.device = opt, device
        self.checkpoint, self.encoder_checkpoint = checkpoint, encoder_checkpoint
        self.net_g = build_network(dict(opt['network_g']))
        preferred = (opt.get('path') or {}).get('param_key_g')  # BasicSR's key choice, when the options make one
        keys = tuple(dict.fromkeys([k for k in (preferred, 'params_ema', 'params') if k]))
        self.param_key = load_weights(self.net_g, checkpoint, keys,
                                      f"network_g ({opt['network_g'].get('type')})")
        self.net_g.to(device).eval()
        self.key_encoder = None
        if encoder_checkpoint is not None:
            self.key_encoder = build_network(dict(opt['network_enc']))
            load_weights(self.key_encoder, encoder_checkpoint, ('params_key', 'params'),
                         f"network_enc ({opt['network_enc'].get('type')})")
            self.key_encoder.to(device).eval()
        elif has_trained_modulation(self.net_g):
            print(f'warning: {NO_ENCODER_WARNING}', file=sys.stderr, flush=True)
        val = opt.get('val') or {}
        self.global_size = int(val.get('global_size', 128))
        self.tile, self.overlap = tile_settings(val) or (None, DEFAULT_OVERLAP)

    @torch.no_grad()
    def encode(self, views: Tensor) -> Tensor:
        """z (B, context_dim) of images already at the encoder's view size."""
        return self.key_encoder(views.to(self.device))[0]

    @torch.no_grad()
    def representation(self, lq: Tensor) -> Optional[Tensor]:
        """z of whole images (B, C, H, W) from the key encoder, as in testing; None without an encoder."""
        return None if self.key_encoder is None else self.encode(global_view(lq.to(self.device), self.global_size))

    @torch.no_grad()
    def restore(self, lq: Tensor, z: Optional[Tensor] = None, tile: Optional[int] = None,
                overlap: Optional[int] = None) -> Tensor:
        """Restore ``lq`` (B, C, H, W) in [0, 1]; z defaults to :meth:`representation` of the WHOLE image (shared by
        all tiles). ``tile``/``overlap`` default to the model's; tile 0 disables tiling."""
        lq = lq.to(self.device)
        if z is None:
            z = self.representation(lq)

        def run(x: Tensor) -> Tensor:
            out = self.net_g(x, z) if self.key_encoder is not None else self.net_g(x)
            return out[-1] if isinstance(out, (list, tuple)) else out

        tile = self.tile if tile is None else tile
        overlap = self.overlap if overlap is None else overlap
        return tiled_forward(run, lq, tile, overlap) if tile else run(lq)


def load_model(source: str, checkpoint: Optional[str] = None, encoder_checkpoint: Optional[str] = None,
               device: str = 'auto') -> InferenceModel:
    """Build and load the model of an option file or experiment folder (see :func:`find_checkpoints`)."""
    opt, models_dir = resolve_options(source)
    net_g, encoder = find_checkpoints(opt, models_dir, checkpoint, encoder_checkpoint)
    return InferenceModel(opt, net_g, encoder, select_device(device))


def model_from_args(args: argparse.Namespace) -> InferenceModel:
    """:func:`load_model` from :func:`add_model_arguments` flags; ``--tile``/``--overlap`` override ``val.tile``."""
    if args.tile is not None and (args.tile < 0 or 0 < args.tile < MIN_TILE):
        raise ValueError(f'--tile: expected 0 (no tiling) or an integer >= {MIN_TILE} ({SMALL_TILE_REASON}), '
                         f'got {args.tile}')
    if args.overlap is not None and args.overlap < 0:
        raise ValueError(f'--overlap: expected an integer >= 0, got {args.overlap}')
    model = load_model(args.opt, args.checkpoint, args.encoder_checkpoint, args.device)
    if args.overlap is not None and args.tile is None and not model.tile:
        raise ValueError(f'--overlap: {args.overlap} needs tiling: add --tile N (or set val.tile in the option file)')
    if args.overlap and args.tile == 0:
        raise ValueError(f'--overlap: {args.overlap} needs tiling, which --tile 0 turns off')
    if args.tile is not None:
        model.tile = args.tile or None
        if args.overlap is None and model.tile:  # the option file's overlap may not fit a smaller --tile
            model.overlap = min(model.overlap, model.tile // 4)
    if args.overlap is not None:
        model.overlap = args.overlap
    if model.tile and not 0 <= model.overlap < model.tile:
        raise ValueError(f'--overlap: expected an integer in [0, tile size {model.tile}), got {model.overlap}')
    return model
