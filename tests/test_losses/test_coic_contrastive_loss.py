"""CoICContrastiveLoss: logits/loss values, view construction, rain archive (resume, distributed), toy training."""
import copy
import math

import pytest
import torch
from torch.nn import functional as F
from torchvision.transforms.functional import gaussian_blur

from basicsr.losses import build_loss

from coic_basicsr.archs.coic_encoder_arch import CoICEncoder, momentum_update
from coic_basicsr.losses.coic_contrastive_loss import CoICContrastiveLoss
from coic_basicsr.models.loss_sections import build_contrastive_loss, check_loss_sections
from coic_basicsr.utils.option_values import COIC_DEFAULTS, check_coic_section



def _flips(x: torch.Tensor) -> list:
    return [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]


def _is_a_flip(candidate: torch.Tensor, reference: torch.Tensor, atol: float = 0.0) -> bool:
    return any(torch.allclose(candidate, f, atol=atol, rtol=0) for f in _flips(reference))


def test_logits_and_loss_value_on_hand_built_features():
    torch.manual_seed(0)
    b, n, c, h, w = 2, 3, 4, 3, 2
    anchor = torch.randn(b, c, h, w, requires_grad=True)
    positive = 3.0 * anchor.detach() + 0.05 * torch.randn(b, c, h, w)  # same direction: the closest key
    negatives = torch.randn(b, 1 + n, c, h, w, requires_grad=True)
    criterion = build_loss({'type': 'CoICContrastiveLoss', 'loss_weight': 0.2, 'temperature': 0.5,
                            'num_detail_negatives': n})
    loss, logits = criterion(anchor, positive, negatives)
    assert logits.shape == (b, 2 + n)

    expected_logits = torch.empty(b, 2 + n)
    for i in range(b):
        keys = [positive[i]] + list(negatives[i].detach())
        for j, key in enumerate(keys):
            expected_logits[i, j] = F.cosine_similarity(anchor[i].detach(), key, dim=0).mean() / 0.5
    expected_loss = 0.2 * sum(
        -expected_logits[i, 0] + math.log(sum(math.exp(v) for v in expected_logits[i].tolist()))
        for i in range(b)) / b
    torch.testing.assert_close(logits.detach(), expected_logits)
    torch.testing.assert_close(loss.detach(), torch.tensor(float(expected_loss)))
    assert bool((logits.argmax(dim=1) == 0).all())
    loss.backward()
    assert anchor.grad.abs().sum() > 0 and negatives.grad is None  # keys are constants (MoCo)


def test_forward_rejects_bad_shapes():
    criterion = CoICContrastiveLoss()
    with pytest.raises(ValueError, match='negatives'):
        criterion(torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3))


def _constant_rain_batch(levels, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    gt = 0.2 + 0.4 * torch.rand(len(levels), 3, size, size, generator=g)
    rain = torch.tensor(levels, dtype=torch.float32).view(-1, 1, 1, 1).expand_as(gt)
    return gt + rain, gt


def test_rain_aware_negative_uses_most_different_layer_from_batch_and_archive():
    torch.manual_seed(1)
    criterion = CoICContrastiveLoss(num_detail_negatives=2, archive_size=4)
    lq, gt = _constant_rain_batch([0.05, 0.1, 0.3])
    positive, negatives = criterion.build_views(lq, gt)
    assert positive.shape == lq.shape and negatives.shape == (3, 3, 3, 8, 8)
    picked = {0: 0.3, 1: 0.3, 2: 0.05}
    for i, level in picked.items():
        torch.testing.assert_close(negatives[i, 0], (gt[i] + level).clamp(0, 1))
        assert _is_a_flip(positive[i], lq[i])
    assert criterion.rain_archive.shape == (3, 3, 8, 8)

    lq2, gt2 = _constant_rain_batch([0.12, 0.7], seed=1)  # 0.12 -> 0.7 (current), 0.7 -> 0.05 (archived)
    _, negatives2 = criterion.build_views(lq2, gt2)
    torch.testing.assert_close(negatives2[0, 0], (gt2[0] + 0.7).clamp(0, 1))
    torch.testing.assert_close(negatives2[1, 0], (gt2[1] + 0.05).clamp(0, 1))
    levels = criterion.rain_archive.mean(dim=(1, 2, 3))
    torch.testing.assert_close(levels, torch.tensor([0.1, 0.3, 0.12, 0.7]))  # capped at archive_size, newest last

    batch_only = CoICContrastiveLoss(num_detail_negatives=0, archive_size=0)  # the CoIC authors' choice
    batch_only.build_views(*_constant_rain_batch([0.05, 0.1, 0.3]))
    _, negatives4 = batch_only.build_views(lq2, gt2)  # 0.7 -> 0.12: the archived 0.05 is not a candidate
    torch.testing.assert_close(negatives4[1, 0], (gt2[1] + 0.12).clamp(0, 1))
    assert batch_only.rain_archive.numel() == 0
    check_coic_section({'train': {'coic': {'archive_size': 0}}, 'network_enc': {'type': 'CoICEncoder'}})

    lone = CoICContrastiveLoss(num_detail_negatives=0)
    lq3, gt3 = _constant_rain_batch([0.2])
    _, negatives3 = lone.build_views(lq3, gt3)  # nothing but its own layer: falls back to the clean image
    assert negatives3.shape == (1, 1, 3, 8, 8) and torch.equal(negatives3[0, 0], gt3[0])


def test_detail_negatives_are_flipped_gaussian_blurs():
    torch.manual_seed(2)
    criterion = CoICContrastiveLoss(num_detail_negatives=4, blur_sigma=(0.8, 0.8))
    gt = torch.rand(2, 3, 16, 16)
    _, negatives = criterion.build_views(gt + 0.1, gt)
    for i in range(2):
        reference = gaussian_blur(gt[i], [11, 11], [0.8, 0.8])
        assert all(_is_a_flip(negatives[i, 1 + j], reference, atol=1e-5) for j in range(4))
    varied = CoICContrastiveLoss(num_detail_negatives=6)
    _, negatives = varied.build_views(gt + 0.1, gt)
    energies = [(d - F.avg_pool2d(d, 3, 1, 1)).abs().mean().item() for d in negatives[0, 1:]]
    assert max(energies) - min(energies) > 1e-3  # sigma drawn per negative
    assert max(energies) < (gt[0] - F.avg_pool2d(gt[0], 3, 1, 1)).abs().mean().item()


def test_the_positive_view_takes_each_of_the_four_flips_about_equally_often():
    torch.manual_seed(0)
    image = torch.arange(48.).view(3, 4, 4) / 48  # no flip of it equals another
    lq = image.expand(400, 3, 4, 4).contiguous()
    positive, _ = CoICContrastiveLoss(num_detail_negatives=0, archive_size=0).build_views(lq, lq * 0.5)
    counts = [sum(torch.equal(view, flip) for view in positive) for flip in _flips(image)]
    assert sum(counts) == 400 and all(60 < count < 140 for count in counts), counts  # independent p = 0.5 flips


def test_archive_round_trips_through_state_dict():
    source = CoICContrastiveLoss(archive_size=5)
    lq, gt = _constant_rain_batch([0.1, 0.2, 0.3])
    source.build_views(lq, gt)
    state = source.state_dict()
    assert set(state) == {'rain_archive'} and state['rain_archive'].shape == (3, 3, 8, 8)
    resumed = CoICContrastiveLoss(archive_size=5)
    resumed.load_state_dict(copy.deepcopy(state), strict=True)
    assert torch.equal(resumed.rain_archive, source.rain_archive)
    torch.manual_seed(3)
    _, expected = source.build_views(*_constant_rain_batch([0.4], seed=2))
    torch.manual_seed(3)
    _, got = resumed.build_views(*_constant_rain_batch([0.4], seed=2))
    assert torch.equal(got, expected) and torch.equal(resumed.rain_archive, source.rain_archive)
    with pytest.raises(ValueError, match='fixed size'):
        resumed.build_views(*_constant_rain_batch([0.4], size=6))


class _FakeWorld:
    """Stands in for torch.distributed as rank 1 of 2; rank 0 holds ``other`` (a different batch size)."""

    def __init__(self, other: torch.Tensor) -> None:
        self.other = other

    def all_gather(self, outputs: list, tensor: torch.Tensor) -> None:
        if tensor.dtype == torch.long:  # batch sizes
            outputs[0].fill_(self.other.shape[0])
        else:  # padded rain layers
            outputs[0].zero_()[:self.other.shape[0]] = self.other
        outputs[1].copy_(tensor)


def test_distributed_archive_gathers_all_ranks(monkeypatch):
    import torch.distributed as dist
    rank0_lq, rank0_gt = _constant_rain_batch([0.1, 0.15, 0.2], seed=3)
    world = _FakeWorld(rank0_lq - rank0_gt)
    for name, value in (('is_available', lambda: True), ('is_initialized', lambda: True),
                        ('get_world_size', lambda: 2), ('get_rank', lambda: 1), ('all_gather', world.all_gather)):
        monkeypatch.setattr(dist, name, value)
    criterion = CoICContrastiveLoss(num_detail_negatives=1)
    lq, gt = _constant_rain_batch([0.5, 0.12], seed=4)
    _, negatives = criterion.build_views(lq, gt)
    torch.testing.assert_close(criterion.rain_archive.mean(dim=(1, 2, 3)), torch.tensor([0.1, 0.15, 0.2, 0.5, 0.12]))
    torch.testing.assert_close(negatives[0, 0], (gt[0] + 0.1).clamp(0, 1))  # from rank 0
    torch.testing.assert_close(negatives[1, 0], (gt[1] + 0.5).clamp(0, 1))  # own batch, not itself


def _toy_batch(g: torch.Generator, per_type: int = 4, size: int = 32):
    clean = F.interpolate(torch.rand(2 * per_type, 3, 4, 4, generator=g), size=size, mode='bilinear',
                          align_corners=False) * 0.6
    streaks = (torch.rand(per_type, 1, 1, size, generator=g) < 0.2).float().expand(-1, 3, size, -1) * 0.4
    drops = F.max_pool2d((torch.rand(per_type, 1, size, size, generator=g) < 0.03).float(), 3, 1, 1)
    rain = torch.cat([streaks, drops.expand(-1, 3, -1, -1) * 0.4])
    return (clean + rain).clamp(0, 1), clean


def test_loss_decreases_when_training_a_tiny_encoder():
    torch.manual_seed(4)
    g = torch.Generator().manual_seed(4)
    query = CoICEncoder(context_dim=8, base_channels=4, num_blocks=2)
    key = copy.deepcopy(query).requires_grad_(False)
    criterion = CoICContrastiveLoss(loss_weight=1.0, archive_size=16)
    optimizer = torch.optim.Adam(query.parameters(), lr=1e-2)

    def step(lq, gt):
        positive, negatives = criterion.build_views(lq, gt)
        with torch.no_grad():
            _, keys = key(torch.cat([positive, negatives.flatten(0, 1)]))
        _, anchor = query(lq)
        return criterion(anchor, keys[:lq.shape[0]], keys[lq.shape[0]:].view(*negatives.shape[:2], *keys.shape[1:]))

    losses = []
    for _ in range(30):
        loss, _ = step(*_toy_batch(g))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        momentum_update(key, query, 0.99)
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.05, (first, last)


def test_the_blur_of_the_detail_negatives_is_set_through_train_coic():
    # documented keys of the loss that train.coic refused as unknown, and CoICModel did not pass
    coic = {'blur_kernel_size': 5, 'blur_sigma': [0.5, 0.9]}
    check_coic_section({'train': {'coic': coic}, 'network_enc': {'type': 'CoICEncoder'}})
    loss = build_contrastive_loss({**COIC_DEFAULTS, **coic}, torch.device('cpu'))
    assert (loss.blur_kernel_size, loss.blur_sigma, loss.loss_weight) == (5, (0.5, 0.9), 0.2)
    default = build_contrastive_loss(COIC_DEFAULTS, torch.device('cpu'))
    assert (default.blur_kernel_size, default.blur_sigma) == (11, (0.3, 1.5))  # the loss's own defaults
    for key, value, expected in (('blur_kernel_size', 4, 'a positive odd integer'),
                                 ('blur_sigma', [0.9, 0.5], r'a list \[low, high\] of numbers with 0 < low <= high'),
                                 ('blur_sigma', 0.5, r'a list \[low, high\]')):
        with pytest.raises(ValueError, match=rf'^train\.coic\.{key}: expected {expected}'):
            check_coic_section({'train': {'coic': {key: value}}, 'network_enc': {'type': 'CoICEncoder'}})


def test_a_loss_section_of_the_contrastive_loss_is_refused():
    # train.con_opt: {type: CoICContrastiveLoss} passed the checks and failed at iteration 1 (missing 'negatives')
    with pytest.raises(ValueError) as err:
        check_loss_sections({'pixel_opt': {'type': 'L1Loss'}, 'con_opt': {'type': 'CoICContrastiveLoss'}})
    assert str(err.value) == ('train.con_opt: CoICContrastiveLoss is not a loss section; it is configured through '
                              'train.coic (contrastive_weight, temperature, ...), which CoICModel builds it from')
    check_loss_sections({'pixel_opt': {'type': 'L1Loss'}, 'coic': {'stage1_iter': 2}})


def test_contrastive_weight_of_train_coic_sets_the_loss_weight():
    loss = build_contrastive_loss(dict(COIC_DEFAULTS, contrastive_weight=0.05), torch.device('cpu'))
    assert loss.loss_weight == 0.05
