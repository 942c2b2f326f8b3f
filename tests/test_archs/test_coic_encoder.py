"""CoICEncoder layout/normalisation and the MoCo momentum update."""
import copy

import pytest
import torch
from torch import nn

from basicsr.archs import build_network

from coic_basicsr.archs.coic_encoder_arch import CoICEncoder, momentum_update



def test_default_layout_follows_coic():
    encoder = build_network({'type': 'CoICEncoder'})
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 32), (32, 64), (64, 64), (64, 128), (128, 128),
                                                                 (128, 256), (256, 256)]
    assert [c.stride for c in convs[1::2]] == [(2, 2)] * 3
    linears = [m for m in encoder.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(256, 128), (128, 128)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in encoder.modules()) == 9
    acts = [m for m in encoder.modules() if isinstance(m, nn.LeakyReLU)]
    assert acts and all(m.negative_slope == 0.1 for m in acts)


def test_outputs_are_unit_norm_with_expected_shapes():
    torch.manual_seed(0)
    encoder = CoICEncoder(context_dim=16, base_channels=4, num_blocks=3)
    z, feat = encoder(torch.rand(3, 3, 32, 40))
    assert z.shape == (3, 16) and feat.shape == (3, 32, 4, 5)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(feat.norm(dim=1), torch.ones(3, 4, 5))
    encoder.eval()
    z2, _ = encoder(torch.rand(3, 3, 32, 40))
    assert not torch.allclose(z, z2)
    with pytest.raises(ValueError, match='num_blocks'):
        CoICEncoder(num_blocks=0)


def test_momentum_update_params_and_buffers():
    torch.manual_seed(1)
    query = CoICEncoder(context_dim=8, base_channels=4, num_blocks=2)
    key = copy.deepcopy(query)
    query(torch.rand(4, 3, 16, 16))  # train-mode forward: running stats and num_batches_tracked change
    for p in query.parameters():
        p.data.add_(torch.randn_like(p))
    before_key = {k: v.clone() for k, v in key.state_dict().items()}
    momentum_update(key, query, 0.9)
    query_state = query.state_dict()
    for name, value in key.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.9 * before_key[name] + 0.1 * query_state[name])
        else:
            assert torch.equal(value, query_state[name]), name
    assert any(not torch.equal(before_key[k], key.state_dict()[k]) for k in before_key if 'running_mean' in k)


def test_momentum_update_rejects_mismatch():
    with pytest.raises(ValueError, match='differ'):
        momentum_update(CoICEncoder(base_channels=4, num_blocks=2), CoICEncoder(base_channels=4, num_blocks=3), 0.9)
    encoder = CoICEncoder(base_channels=4, num_blocks=1)
    with pytest.raises(ValueError, match='momentum'):
        momentum_update(encoder, encoder, 1.5)


def test_the_code_is_the_normalised_mlp_of_average_pooled_last_features():
    # CoIC's encoder pools by the global average (not the maximum) before its MLP
    torch.manual_seed(0)
    enc = CoICEncoder(context_dim=8, base_channels=4, num_blocks=2).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        z, _ = enc(x)
        ref = nn.functional.normalize(enc.mlp(enc.blocks(enc.conv_first(x)).mean(dim=(2, 3))), dim=1)
    assert torch.allclose(z, ref, atol=1e-6)
