import pytest
import torch

from robo_genie.models.st_transformer import STTransformer, TemporalCache
from tests.conftest import ROUNDING


def _net():
    return STTransformer(dim=32, depth=2, heads=4, num_spatial=9).eval()


def test_temporal_attention_is_causal():
    net = _net()
    x = torch.randn(2, 5, 9, 32)
    y = net(x)
    x2 = x.clone()
    x2[:, 3] += torch.randn_like(x2[:, 3])          # change frame 3 (0-based)
    y2 = net(x2)
    assert torch.allclose(y[:, :3], y2[:, :3], atol=ROUNDING)   # earlier frames untouched
    assert not torch.allclose(y[:, 3:], y2[:, 3:], atol=1e-3)  # later frames see the change


def test_spatial_attention_mixes_within_a_frame_only():
    net = _net()
    x = torch.randn(1, 3, 9, 32)
    y = net(x)
    x2 = x.clone()
    x2[:, 1, 0] += torch.randn(32)                   # one token of frame 1
    y2 = net(x2)
    assert not torch.allclose(y[:, 1, 5], y2[:, 1, 5], atol=1e-4)  # other tokens of that frame move
    assert torch.allclose(y[:, 0], y2[:, 0], atol=ROUNDING)


@pytest.mark.parametrize("window", [1, 3, None])
def test_stepping_with_a_rolling_cache_equals_the_full_windowed_pass(window):
    """Frame by frame with a TemporalCache (the oldest frame dropped once the window is full) gives
    what one pass over all frames gives, each frame attending to the `window` frames up to itself."""
    net = _net()
    x = torch.randn(2, 7, 9, 32)
    full = net(x, window)
    cache = TemporalCache(window or 7)
    first = net(x[:, :1], window, cache)
    steps = [net.step(x[:, t:t + 1], cache) for t in range(1, 7)]
    assert torch.allclose(torch.cat([first, *steps], 1), full, atol=1e-5)
    assert cache.layers[0][0].shape[2] == (window or 7) - 1


def test_a_window_limits_what_a_frame_sees():
    net = _net()
    x = torch.randn(1, 6, 9, 32)
    x2 = x.clone()
    x2[:, 1] += torch.randn_like(x2[:, 1])          # frame 1 is 3 frames before frame 4
    y, y2 = net(x, window=3), net(x2, window=3)
    # frame 2 and 3 see frame 1 directly; frame 4 only through them, one layer down
    assert not torch.allclose(y[:, 2], y2[:, 2], atol=1e-3)
    one_layer = STTransformer(dim=32, depth=1, heads=4, num_spatial=9).eval()
    assert torch.allclose(one_layer(x, window=3)[:, 4:], one_layer(x2, window=3)[:, 4:], atol=ROUNDING)


def test_time_positions_are_relative():
    """Rotary time positions: the same frames give the same outputs wherever the clip starts, which is
    what lets a cache drop its oldest frame and keep the rest."""
    net = _net()
    x = torch.randn(1, 4, 9, 32)
    early, late = TemporalCache(4), TemporalCache(4)
    late.frames = 100                                # as if 100 frames had come and gone
    net(x[:, :3], 4, early)                          # frames at positions 0..2
    for t in range(3):                               # the same frames at positions 100..102
        net.step(x[:, t:t + 1], late)
    assert torch.allclose(net.step(x[:, 3:], early), net.step(x[:, 3:], late), atol=1e-5)


def test_learned_frame_positions_read_whole_windows_only():
    """The tokenizer's encoder and the LAM keep a learned embedding per frame: a window longer than
    their table, or a frame-by-frame step, is refused with a message."""
    net = STTransformer(dim=32, depth=1, heads=4, num_spatial=9, learned_frames=3).eval()
    assert net(torch.randn(1, 3, 9, 32)).shape == (1, 3, 9, 32)
    with pytest.raises(ValueError, match="exceed the 3"):
        net(torch.randn(1, 4, 9, 32))
    with pytest.raises(ValueError, match="no frame-by-frame step"):
        net.step(torch.randn(1, 1, 9, 32), TemporalCache(3))


@pytest.mark.parametrize("keys", [1, 2, 3, 4])
@pytest.mark.parametrize("how", ["plain", "causal", "banded"])
def test_short_attention_equals_the_fused_kernel(keys, how):
    """Attention over a few keys is written out for speed; it must compute what sdpa computes,
    forwards and backwards, with each kind of mask the ST blocks use."""
    from torch.nn import functional as F

    from robo_genie.models.st_transformer import _short_attention, banded_causal_mask
    g = torch.Generator().manual_seed(keys)
    q, k, v = (torch.randn(6, 4, keys, 8, generator=g, requires_grad=True) for _ in range(3))
    mask = banded_causal_mask(keys, 2, "cpu") if how == "banded" else None
    causal = how != "plain"
    ours = _short_attention(q, k, v, causal, mask)
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
    assert torch.allclose(ours, fused, atol=1e-5)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    fused_grads = torch.autograd.grad(fused.square().sum(), (q, k, v))
    for a, b in zip(grads, fused_grads):
        assert torch.allclose(a, b, atol=1e-4)
