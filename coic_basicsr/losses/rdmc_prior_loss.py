"""Contrastive prior of RDMC: pull the restored image towards the clean one and away from the rainy input."""
from os import path as osp
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from coic_basicsr.losses.loss_util import bad_loss_option, check_loss_flag, check_loss_number, check_loss_weights
from coic_basicsr.archs.coic_encoder_arch import CoICEncoder
from coic_basicsr.utils.checkpoint import load_checkpoint
from basicsr.archs.vgg_arch import NAMES
from basicsr.utils.registry import LOSS_REGISTRY

# DRNet reads VGG19 after features[0, 2, 4, 8, 12]; its in-place ReLUs turn the two conv outputs into ReLU outputs.
DRNET_LAYERS = ('relu1_1', 'relu1_2', 'pool1', 'relu2_2', 'relu3_2')
DRNET_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
_VGG19_WIDTHS = (64, 128, 256, 512, 512)  # conv channels of blocks 1..5
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_NAME = 'RDMCContrastivePriorLoss'


class VGG19Features(nn.Module):
    """VGG19 ``features`` truncated after the deepest requested layer (torchvision indices and key names)."""

    def __init__(self, layers: Sequence[str], weights_path: str, use_input_norm: bool) -> None:
        super().__init__()
        names = NAMES['vgg19']
        if not isinstance(layers, (list, tuple)) or not all(isinstance(name, str) for name in layers):
            raise bad_loss_option(_NAME, 'layers', 'a list of VGG19 layer names', layers)
        if not layers:
            raise bad_loss_option(_NAME, 'layers', f'at least one VGG19 layer (default: {list(DRNET_LAYERS)})', layers)
        repeated = [name for i, name in enumerate(layers) if name in layers[:i] and name not in layers[i + 1:]]
        if repeated:
            raise ValueError(f'layers: lists {repeated} more than once for {_NAME}; give each layer once with the sum '
                             'of its weights in layer_weights')
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise ValueError(f'layers: {unknown} are not VGG19 layers for {_NAME} (known: {names})')
        self.indices = [names.index(name) for name in layers]  # in the order of ``layers``, not network order
        modules, channels = [], 3
        for name in names[:max(self.indices) + 1]:
            if name.startswith('conv'):
                width = _VGG19_WIDTHS[int(name[4]) - 1]
                modules.append(nn.Conv2d(channels, width, 3, 1, 1))
                channels = width
            else:  # not in place: an earlier conv output may have been recorded
                modules.append(nn.ReLU() if name.startswith('relu') else nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*modules)
        self._load(weights_path)
        self.use_input_norm = use_input_norm
        self.register_buffer('mean', torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _load(self, path: str) -> None:
        state = load_checkpoint(path)
        state = {k[len('features.'):] if k.startswith('features.') else k: v for k, v in state.items()}
        own = self.features.state_dict()
        for key, value in own.items():
            if key not in state:
                raise ValueError(f"vgg_weights: '{path}' lacks 'features.{key}' ({_NAME} expects a torchvision "
                                 'VGG19 state dict such as vgg19-dcbb9e9d.pth)')
            if state[key].shape != value.shape:
                raise ValueError(f"vgg_weights: '{path}': 'features.{key}' has shape {tuple(state[key].shape)}, the "
                                 f'VGG19 of {_NAME} needs {tuple(value.shape)}')
        self.features.load_state_dict({key: state[key] for key in own})

    def forward(self, x: Tensor) -> List[Tensor]:
        """Features of the layers in ``layers``, in that order (not in network order)."""
        if x.shape[1] != 3:
            raise ValueError(f'{_NAME}: expected 3-channel images for VGG19 features, got {x.shape[1]} channels')
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        recorded, wanted = {}, set(self.indices)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                recorded[i] = x
        return [recorded[i] for i in self.indices]  # in the order of ``layers``, so each weight meets its layer


class EncoderFeatures(nn.Module):
    """Feature stages of a trained :class:`CoICEncoder` (after ``conv_first`` and after every block).

    The encoder's shape (in_channels, base_channels, num_blocks, context_dim) is read from the checkpoint.
    """

    def __init__(self, weights_path: str, param_key: str) -> None:
        super().__init__()
        checkpoint = load_checkpoint(weights_path)
        state = checkpoint.get(param_key) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"encoder_weights: '{weights_path}' has no '{param_key}' ({_NAME} expects a "
                             'net_enc_*.pth saved by CoICModel)')
        try:
            first = state['conv_first.weight']
            self.encoder = CoICEncoder(in_channels=first.shape[1], context_dim=state['mlp.2.weight'].shape[0],
                                       base_channels=first.shape[0],
                                       num_blocks=len({k.split('.')[1] for k in state if k.startswith('blocks.')}))
            self.encoder.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError) as err:
            reason = str(err).strip().splitlines()[0]
            raise ValueError(f"encoder_weights: '{weights_path}' ['{param_key}'] is not a CoICEncoder state dict "
                             f'for {_NAME} ({reason})') from None
        self.num_stages = 1 + len(self.encoder.blocks)

    def forward(self, x: Tensor) -> List[Tensor]:
        x = self.encoder.conv_first(x)
        feats = [x]
        for block in self.encoder.blocks:
            x = block(x)
            feats.append(x)
        return feats


def _check_options(vgg_weights: Optional[str], encoder_weights: Optional[str], encoder_param_key: str,
                   layers: Sequence[str], layer_weights: Optional[Sequence[float]], use_input_norm: bool) -> None:
    """One extractor, options of the right type, and none that the chosen extractor would silently ignore."""
    if (vgg_weights is None) == (encoder_weights is None):
        raise ValueError(f'expected exactly one of vgg_weights (VGG19 .pth) and encoder_weights (net_enc_*.pth) for '
                         f'{_NAME}, got vgg_weights={vgg_weights!r}, encoder_weights={encoder_weights!r}')
    for key, value in (('vgg_weights', vgg_weights), ('encoder_weights', encoder_weights),
                       ('encoder_param_key', encoder_param_key)):
        if value is not None and not isinstance(value, str):
            raise bad_loss_option(_NAME, key, 'a string', value)
    check_loss_flag(_NAME, 'use_input_norm', use_input_norm)
    check_loss_weights(_NAME, 'layer_weights', layer_weights, 'feature stage')
    if encoder_weights is not None:
        # VGG19-only options: an encoder's stages are fixed (conv_first + every block) and it sees raw images
        if not (isinstance(layers, (list, tuple)) and list(layers) == list(DRNET_LAYERS)):
            raise ValueError(f'layers: {layers!r} names VGG19 layers and encoder_weights has none for {_NAME} (its '
                             'stages are conv_first and every block): remove layers')
        if use_input_norm:
            raise ValueError(f'use_input_norm: true normalises VGG19 inputs and encoder_weights has no VGG19 for '
                             f'{_NAME} (the encoder sees the images as in training): remove use_input_norm')
    elif encoder_param_key != 'params':
        raise ValueError(f'encoder_param_key: {encoder_param_key!r} picks the encoder in an encoder_weights file and '
                         f'vgg_weights has none for {_NAME}: remove encoder_param_key')


@LOSS_REGISTRY.register()
class RDMCContrastivePriorLoss(nn.Module):
    """``loss_weight * D(gt, pred) / (D(lq, pred) + eps)``: anchor = restored, positive = clean, negative = rainy.

    ``D(a, b) = sum_l w_l * mean|phi_l(a) - phi_l(b)|`` over the stages of a frozen feature extractor: VGG19 from a
    local torchvision weights file (``vgg_weights``; nothing is downloaded) or a trained CoIC encoder checkpoint
    (``encoder_weights``). Exactly one of the two must be given. Gradients reach ``pred`` only; the extractor stays
    in eval mode with ``requires_grad=False``. Called by CoICModel as ``loss(pred, gt, lq)`` (``takes_input``).

    YAML keys (``train.prior_opt``):
        loss_weight (float): Weight of the ratio. Default: 0.1.
        vgg_weights (str | None): torchvision VGG19 state dict (e.g. vgg19-dcbb9e9d.pth); only the ``features``
            entries up to the deepest layer in ``layers`` are needed. Default: None.
        encoder_weights (str | None): A ``net_enc_*.pth`` written by CoICModel (a CoICEncoder state dict under
            ``encoder_param_key``); used instead of VGG19. Default: None.
        encoder_param_key (str): Key of the encoder weights in that file ('params' = query, 'params_key' = momentum
            encoder); encoder only. Default: 'params'.
        layers (list[str]): VGG19 layer names (BasicSR naming: conv1_1, relu1_1, pool1, ...), any order, each at
            most once, not empty; VGG only. Default: [relu1_1, relu1_2, pool1, relu2_2, relu3_2] (what DRNet computes).
        layer_weights (list[float] | None): Weight (>= 0) per feature stage: the i-th for the i-th entry of
            ``layers`` (VGG19), or for the i-th encoder stage (conv_first, then each block: 4 for the default
            CoICEncoder); None gives DRNet's [1/32, 1/16, 1/8, 1/4, 1] (its last n entries for n < 5 stages).
            Default: None.
        use_input_norm (bool): Normalise images with the ImageNet mean/std before VGG19 (DRNet does not); VGG only.
            Default: False.
        eps (float): Added to the negative distance so the ratio stays finite when pred equals lq (write 1.0e-6 or
            !!float 1e-6: YAML reads 1e-6 as text). Default: 1e-6.

    An option of the other extractor set to anything but its default (``layers`` or ``use_input_norm`` with
    ``encoder_weights``, ``encoder_param_key`` with ``vgg_weights``) is refused rather than ignored.
    """

    takes_input = True

    def __init__(self, loss_weight: float = 0.1, vgg_weights: Optional[str] = None,
                 encoder_weights: Optional[str] = None, encoder_param_key: str = 'params',
                 layers: Sequence[str] = DRNET_LAYERS, layer_weights: Optional[Sequence[float]] = None,
                 use_input_norm: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        _check_options(vgg_weights, encoder_weights, encoder_param_key, layers, layer_weights, use_input_norm)
        check_loss_number(_NAME, 'loss_weight', loss_weight, 'a number >= 0', lambda v: v >= 0)
        check_loss_number(_NAME, 'eps', eps, 'a positive number', lambda v: v > 0)
        for key, path in (('vgg_weights', vgg_weights), ('encoder_weights', encoder_weights)):
            if path is not None and not osp.isfile(path):
                raise FileNotFoundError(f"{key}: '{path}' does not exist ({_NAME} never downloads weights at run "
                                        'time; put the file there or fix the path)')
        if vgg_weights is not None:
            self.extractor = VGG19Features(layers, vgg_weights, use_input_norm)
            num_stages = len(self.extractor.indices)
        else:
            self.extractor = EncoderFeatures(encoder_weights, encoder_param_key)
            num_stages = self.extractor.num_stages
        if layer_weights is None:
            if num_stages > len(DRNET_LAYER_WEIGHTS):
                raise bad_loss_option(_NAME, 'layer_weights', f'a list of {num_stages} weights (one per feature '
                                      f'stage; the default has {len(DRNET_LAYER_WEIGHTS)})', layer_weights)
            layer_weights = DRNET_LAYER_WEIGHTS[len(DRNET_LAYER_WEIGHTS) - num_stages:]
        if len(layer_weights) != num_stages:
            which = '' if vgg_weights is not None else f": the encoder's conv_first and {num_stages - 1} blocks"
            weights = f"{num_stages} weight{'s' if num_stages != 1 else ''}"
            raise bad_loss_option(_NAME, 'layer_weights', f'{weights} (one per stage the feature extractor gives{which})',
                                  layer_weights)
        self.layer_weights = [float(w) for w in layer_weights]
        self.loss_weight = float(loss_weight)
        self.eps = float(eps)
        for p in self.extractor.parameters():
            p.requires_grad_(False)
        self.extractor.eval()

    def train(self, mode: bool = True) -> 'RDMCContrastivePriorLoss':
        super().train(mode)
        self.extractor.eval()  # frozen: BatchNorm statistics of an encoder must not move
        return self

    def distance(self, feats_a: List[Tensor], feats_b: List[Tensor]) -> Tensor:
        """Weighted L1 distance between two lists of feature stages (float32)."""
        return sum(w * F.l1_loss(a.float(), b.float()) for w, a, b in zip(self.layer_weights, feats_a, feats_b))

    def forward(self, pred: Tensor, target: Tensor, lq: Tensor) -> Tensor:
        """Scalar loss for the restored ``pred``, clean ``target`` and rainy ``lq`` (B, C, H, W)."""
        if not pred.shape == target.shape == lq.shape:
            raise ValueError(f'{_NAME}: expected pred, gt and lq of one shape, got '
                             f'{tuple(pred.shape)}, {tuple(target.shape)}, {tuple(lq.shape)}')
        b = pred.shape[0]
        with torch.no_grad():
            refs = self.extractor(torch.cat([target, lq]).detach())
        feats = self.extractor(pred)
        positive = self.distance(feats, [r[:b] for r in refs])
        negative = self.distance(feats, [r[b:] for r in refs])
        return self.loss_weight * positive / (negative + self.eps)
