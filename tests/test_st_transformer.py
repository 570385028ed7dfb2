import torch

from robo_genie.models.st_transformer import STTransformer


def _net():
    return STTransformer(dim=32, depth=2, heads=4, num_spatial=9, max_frames=6).eval()


def test_temporal_attention_is_causal():
    net = _net()
    x = torch.randn(2, 5, 9, 32)
    y = net(x)
    x2 = x.clone()
    x2[:, 3] += torch.randn_like(x2[:, 3])          # change frame 3 (0-based)
    y2 = net(x2)
    assert torch.allclose(y[:, :3], y2[:, :3], atol=1e-6)   # earlier frames untouched
    assert not torch.allclose(y[:, 3:], y2[:, 3:], atol=1e-3)  # later frames see the change


def test_spatial_attention_mixes_within_a_frame_only():
    net = _net()
    x = torch.randn(1, 3, 9, 32)
    y = net(x)
    x2 = x.clone()
    x2[:, 1, 0] += torch.randn(32)                   # one token of frame 1
    y2 = net(x2)
    assert not torch.allclose(y[:, 1, 5], y2[:, 1, 5], atol=1e-4)  # other tokens of that frame move
    assert torch.allclose(y[:, 0], y2[:, 0], atol=1e-6)


def test_cached_step_matches_full_forward():
    net = _net()
    x = torch.randn(2, 4, 9, 32)
    full = net(x)[:, -1:]
    kv = []
    net(x[:, :3], kv=kv)
    assert len(kv) == 2
    assert torch.allclose(net.step(x[:, 3:], kv), full, atol=1e-5)


def test_too_many_frames_is_a_clear_error():
    import pytest
    with pytest.raises(ValueError, match="max_frames"):
        _net()(torch.randn(1, 7, 9, 32))
