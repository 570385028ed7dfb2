"""The tokenizer's EMA vector quantiser: nearest-code search, k-means start, EMA learning, dead-code
restarts, the commitment loss and rotation-trick gradients, an eval mode that changes nothing, and
loading state dicts (its own and those written when it wrapped vector-quantize-pytorch). Then the
LAM's finite scalar quantiser."""

from __future__ import annotations

import pytest
import torch

from robo_genie.models.quantizer import FSQuantizer, Quantizer, rotate_to

CENTRES = torch.tensor([[4.0, 0, 0], [-4, 0, 0], [0, 4, 0], [0, -4, 0]])


def _clustered(n: int, noise: float = 0.1, shift: torch.Tensor | None = None) -> torch.Tensor:
    """n vectors per centre of CENTRES (+ shift), with Gaussian noise."""
    centres = CENTRES if shift is None else CENTRES + shift
    return (centres[:, None] + noise * torch.randn(4, n, 3)).reshape(-1, 3)


def test_nearest_is_the_euclidean_argmin():
    q = Quantizer(8, 32, 0.25, 0.9, 0.0)
    q.codes.copy_(torch.randn(32, 8))
    z = torch.randn(5, 7, 8)
    expected = torch.cdist(z.reshape(-1, 8), q.codes).argmin(-1).reshape(5, 7)
    assert torch.equal(q.nearest(z), expected)


def test_kmeans_start_then_ema_follows_the_data():
    q = Quantizer(3, 4, 0.25, 0.5, 0.0).train()
    q(_clustered(64))
    assert bool(q.initialised)
    # k-means put one code on each cluster
    assert torch.cdist(CENTRES, q.codes).min(dim=1).values.max() < 0.1
    # the clusters move: with decay 0.5 the codes follow within a few batches
    shift = torch.tensor([0.0, 0.0, 1.0])
    for _ in range(12):
        q(_clustered(64, shift=shift))
    assert torch.cdist(CENTRES + shift, q.codes).min(dim=1).values.max() < 0.1


def test_a_dead_code_is_restarted_on_a_batch_vector():
    q = Quantizer(3, 5, 0.25, 0.5, 1.0).train()
    q(_clustered(16))
    with torch.no_grad():
        q.codes[4] = q.sums[4] = torch.tensor([100.0, 100.0, 100.0])   # far from all data, never picked
        q.usage[4] = 1.5
    batch = _clustered(16)
    q(batch)     # its usage decays to 0.75 < 1: re-seeded from this batch
    assert torch.cdist(q.codes[4:5], batch).min() == 0
    assert q.usage[4] == 1.0


def test_training_output_is_the_code_and_commits_the_encoder():
    q = Quantizer(3, 4, 0.25, 0.9, 0.0).train()
    q(_clustered(8))
    codes = q.codes.clone()
    z = _clustered(8).requires_grad_(True)
    out, idx, commit = q(z)
    assert torch.allclose(out.detach(), codes[idx], atol=1e-5)    # the codes before this batch's update
    assert not torch.equal(q.codes, codes)
    commit.backward()
    assert commit.item() > 0
    assert torch.allclose(z.grad, 2 * 0.25 * (z - codes[idx]).detach() / z.numel(), atol=1e-7)


def test_the_rotation_trick_turns_and_scales_the_gradient():
    z = torch.randn(64, 8, requires_grad=True)
    q = torch.randn(64, 8)
    out = rotate_to(z, q)
    assert torch.allclose(out, q, atol=1e-5)
    g = torch.randn(64, 8)
    out.backward(g)
    # a rotation keeps the gradient's length, the scale |q| / |z| changes it
    scale = q.norm(dim=-1) / z.detach().norm(dim=-1)
    assert torch.allclose(z.grad.norm(dim=-1), scale * g.norm(dim=-1), rtol=1e-4)
    assert not torch.allclose(z.grad, scale[:, None] * g, atol=1e-3)       # and it is turned
    # a code on z's own ray: no turn, only the scale
    z2 = torch.randn(4, 8, requires_grad=True)
    rotate_to(z2, 3 * z2.detach()).backward(g[:4])
    assert torch.allclose(z2.grad, 3 * g[:4], atol=1e-5)


def test_eval_mode_returns_codes_and_leaves_the_codebook_alone():
    q = Quantizer(3, 4, 0.25, 0.5, 1.0).train()
    q(_clustered(16))
    q.eval()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    z = torch.randn(2, 9, 3)
    out, idx, loss = q(z)
    assert torch.equal(out, q.lookup(idx)) and idx.shape == (2, 9) and loss == 0
    assert all(torch.equal(v, q.state_dict()[k]) for k, v in before.items())


def test_a_reloaded_quantiser_keeps_its_codebook():
    q = Quantizer(3, 4, 0.25, 0.5, 1.0).train()
    q(_clustered(16))
    fresh = Quantizer(3, 4, 0.25, 0.5, 1.0).train()
    fresh.load_state_dict(q.state_dict())
    batch = _clustered(16)
    torch.manual_seed(3)
    a = q(batch)
    torch.manual_seed(3)
    b = fresh(batch)                # no second k-means start: the same update as the original
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert torch.equal(q.codes, fresh.codes)


def test_a_state_dict_from_the_vector_quantize_pytorch_days_loads():
    q = Quantizer(3, 4, 0.25, 0.5, 1.0).train()
    q(_clustered(16))
    legacy = {"vq._codebook.initted": q.initialised.clone(), "vq._codebook.embed": q.codes[None].clone(),
              "vq._codebook.cluster_size": q.usage[None].clone(), "vq._codebook.embed_avg": q.sums[None].clone()}
    fresh = Quantizer(3, 4, 0.25, 0.5, 1.0)
    fresh.load_state_dict(legacy)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in q.state_dict().items())


# -- FSQ (the LAM's actions) ----------------------------------------------------------------
@pytest.mark.parametrize("levels", [[8, 8, 8, 4], [5, 3], [2, 2, 2]])
def test_every_code_is_reachable_and_indices_round_trip(levels):
    fsq = FSQuantizer(levels)
    assert fsq.codebook.shape == (fsq.codebook_size, len(levels))
    # each code's own vector quantises to that code, and its index names it
    q, idx = fsq(torch.atanh(fsq.codebook.clamp(-0.999, 0.999)))
    assert torch.equal(idx, torch.arange(fsq.codebook_size))
    assert torch.allclose(q, fsq.codebook, atol=1e-6)
    assert torch.equal(fsq.nearest(q), idx)
    # any input lands on a code vector, within [-1, 1]
    q, idx = fsq(torch.randn(500, len(levels)) * 3)
    assert torch.equal(fsq.lookup(idx), q) and q.abs().max() <= 1


def test_levels_are_evenly_spaced_and_ordered_per_channel():
    fsq = FSQuantizer([5])
    z = torch.linspace(-4, 4, 200)[:, None]
    q, idx = fsq(z)
    assert torch.equal(idx, torch.sort(idx).values)              # monotone in the input
    assert torch.allclose(torch.unique(q), torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))


def test_rounding_passes_the_gradient_straight_through():
    fsq = FSQuantizer([8, 8])
    z = torch.randn(64, 2, requires_grad=True)
    q, _ = fsq(z)
    (q * torch.tensor([1.0, -2.0])).sum().backward()
    bound = 1 - torch.tanh(z.detach()) ** 2             # the gradient of tanh, the rounding skipped
    assert torch.allclose(z.grad, bound * torch.tensor([1.0, -2.0]), atol=1e-5)


def test_bad_levels_are_refused():
    with pytest.raises(ValueError, match="levels"):
        FSQuantizer([8, 1])


@pytest.mark.parametrize("num_actions", [2, 4, 6, 7, 8, 12, 16])
def test_the_lam_has_exactly_its_number_of_actions(num_actions, micro_cfg):
    import math

    from robo_genie.config import action_levels
    from robo_genie.models import build_part
    levels = action_levels(num_actions)
    assert math.prod(levels) == num_actions and all(l >= 2 for l in levels)
    cfg = micro_cfg.copy()
    cfg.lam.num_actions = num_actions
    lam = build_part("lam", cfg).eval()
    assert lam.quantizer.codebook_size == num_actions
    codes = lam.infer_actions(torch.rand(3, 2, 32, 32, 3))
    assert codes.min() >= 0 and codes.max() < num_actions
