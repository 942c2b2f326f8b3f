"""Tiled inference: windows placed at the network's output scale."""
import pytest
import torch
from torch.nn import functional as F

from coic_basicsr.models.tiling import tile_settings, tiled_forward


def test_restoration_and_super_resolution_tiles_equal_the_whole_image_result():
    x = torch.rand(2, 3, 20, 27)
    restore = lambda t: t * 2  # noqa: E731  (pixel-wise: tiling cannot change it)
    upscale = lambda t: F.interpolate(t, scale_factor=3, mode='nearest')  # noqa: E731
    assert torch.allclose(tiled_forward(restore, x, tile=8, overlap=2), restore(x))
    assert torch.allclose(tiled_forward(upscale, x, tile=8, overlap=2), upscale(x))  # was a size-mismatch crash
    with pytest.raises(ValueError, match='tiling needs the same size or a whole multiple'):
        tiled_forward(lambda t: t[..., :-1, :], x, tile=8, overlap=2)


def test_windows_step_by_tile_minus_overlap_and_the_last_one_ends_at_the_edge():
    x = torch.zeros(1, 2, 20, 27)
    x[:, 0], x[:, 1] = torch.arange(20.)[:, None], torch.arange(27.)  # each pixel holds its row and column
    corners = []

    def record(window):
        corners.append((int(window[0, 0, 0, 0]), int(window[0, 1, 0, 0])))
        return window

    tiled_forward(record, x, tile=8, overlap=2)
    assert sorted({top for top, _ in corners}) == [0, 6, 12]  # 20 - 8 = 12: the last window is flush
    assert sorted({left for _, left in corners}) == [0, 6, 12, 18, 19]
    assert len(corners) == 3 * 5


def test_val_tile_runs_a_super_resolution_network_in_windows(tmp_path):
    from coic_basicsr.models.portable import build_model
    from helpers.coic import in_memory, tiny_coic_options
    opt = in_memory(tiny_coic_options(coic=False), tmp_path)
    opt.update(is_train=False, scale=2, val={'tile': {'size': 16, 'overlap': 4}})
    del opt['train']
    opt.pop('network_enc', None)
    opt['network_g'] = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                        'upscale': 2}
    model = build_model(opt)
    lq = torch.rand(1, 3, 20, 27)
    model.feed_data({'lq': lq})
    model.test()
    net = model.get_bare_model(model.net_g).eval()
    with torch.no_grad():
        whole, tiled = net(lq), tiled_forward(net, lq, tile=16, overlap=4)
    assert model.output.shape == (1, 3, 40, 54)  # the windows were placed at the output scale
    torch.testing.assert_close(model.output, tiled)
    assert not torch.allclose(model.output, whole)  # it did run in windows


def test_val_tile_size_below_16_is_refused_naming_the_key():
    # tiles of a few pixels ran for minutes and gave garbage; tiled_forward itself still takes any size
    assert tile_settings({'tile': {'size': 16, 'overlap': 4}}) == (16, 4)
    with pytest.raises(ValueError) as err:
        tile_settings({'tile': {'size': 8, 'overlap': 2}})
    assert str(err.value) == ('val.tile.size: expected an integer >= 16 (smaller tiles leave the network too little '
                              'context), got 8')


def test_val_tile_bounds_are_inclusive():
    # the smallest size and overlap are accepted, one less is not
    assert tile_settings({'tile': {'size': 16, 'overlap': 0}}) == (16, 0)  # tiles side by side, no blending
    for tile, message in (({'size': 15, 'overlap': 0}, 'val.tile.size: expected an integer >= 16 (smaller tiles '
                                                       'leave the network too little context), got 15'),
                          ({'size': 16, 'overlap': -1}, 'val.tile.overlap: expected an integer >= 0, got -1')):
        with pytest.raises(ValueError) as err:
            tile_settings({'tile': tile})
        assert str(err.value) == message
