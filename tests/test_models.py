import math

import pytest
import torch
from omegaconf import OmegaConf

from robo_genie.config import MODEL_PRESETS, DynamicsConfig
from robo_genie.models import build_part
from tests.conftest import ROUNDING


def _video(b=2, t=4, size=32):
    return torch.rand(b, t, size, size, 3)


def test_tokenizer_encoder_is_causal(micro_cfg):
    tok = build_part("tokenizer", micro_cfg).eval()
    v = _video()
    z = tok.encode_continuous(v)
    v2 = v.clone()
    v2[:, 2] = torch.rand_like(v2[:, 2])
    z2 = tok.encode_continuous(v2)
    assert torch.allclose(z[:, :2], z2[:, :2], atol=ROUNDING)
    assert not torch.allclose(z[:, 2:], z2[:, 2:], atol=1e-4)
    assert torch.equal(tok.encode(v)[:, :2], tok.encode(v2)[:, :2])


def test_tokenizer_decoder_and_pixel_refiner_are_causal(micro_cfg):
    tok = build_part("tokenizer", micro_cfg).eval()
    assert tok.refine is not None                       # tiny (and so micro) decodes through the conv head
    torch.nn.init.normal_(tok.refine.net[-1].weight)    # not the identity it starts as
    codes = torch.randn(2, 4, 64, micro_cfg.tokenizer.code_dim)
    out = tok.decode_codes(codes)
    codes2 = codes.clone()
    codes2[:, 2:] = torch.randn_like(codes2[:, 2:])
    out2 = tok.decode_codes(codes2)
    assert torch.allclose(out[:, :2], out2[:, :2], atol=ROUNDING)
    assert not torch.allclose(out[:, 2:], out2[:, 2:], atol=1e-4)


def test_pixel_refiner_starts_as_the_identity():
    from robo_genie.models.tokenizer import PixelRefiner
    v = torch.rand(2, 3, 16, 16, 3)
    assert torch.equal(PixelRefiner(8)(v), v)


def test_tokenizer_round_trip_shapes_and_range(micro_cfg):
    tok = build_part("tokenizer", micro_cfg).eval()
    idx = tok.encode(_video())
    assert idx.shape == (2, 4, 8, 8) and idx.min() >= 0 and idx.max() < 64
    out = tok.decode(idx)
    assert out.shape == (2, 4, 32, 32, 3) and out.min() >= 0 and out.max() <= 1


def test_lam_encoder_action_t_reads_frame_t_plus_1_only_forward(micro_cfg):
    lam = build_part("lam", micro_cfg).eval()
    v = _video()
    a = lam.encode_continuous(v)                     # [B, 3, code_dim]: a_t for x_t -> x_{t+1}
    v2 = v.clone()
    v2[:, 2] = torch.rand_like(v2[:, 2])             # change x_2 (0-based)
    a2 = lam.encode_continuous(v2)
    assert torch.allclose(a[:, 0], a2[:, 0], atol=ROUNDING)        # a_0 sees x_0, x_1 only
    assert not torch.allclose(a[:, 1], a2[:, 1], atol=1e-4)    # a_1 reads x_2


def test_lam_decoder_is_causal_and_sees_the_future_only_through_actions(micro_cfg):
    lam = build_part("lam", micro_cfg).eval()
    v = _video(t=4)
    actions = torch.randn(2, 3, len(lam.quantizer.levels))
    pred = lam.decode(v[:, :-1], actions)
    # The decoder's inputs are frames x_0..x_2: the target frame x_3 is not an input at all,
    # and changing x_2 leaves the predictions of x_1, x_2 (made from x_0, x_1) unchanged.
    v2 = v.clone()
    v2[:, 2] = torch.rand_like(v2[:, 2])
    pred2 = lam.decode(v2[:, :-1], actions)
    assert torch.allclose(pred[:, :2], pred2[:, :2], atol=ROUNDING)
    assert not torch.allclose(pred[:, 2], pred2[:, 2], atol=1e-4)
    # With the quantiser's output pinned, the whole model's prediction cannot depend on x_{t+1}.
    fixed = torch.zeros(2, 3, len(lam.quantizer.levels))
    lam.quantizer.forward = lambda z: (fixed, torch.zeros(2, 3, dtype=torch.long))
    v3 = v.clone()
    v3[:, 3] = torch.rand_like(v3[:, 3])
    q, _ = lam.quantizer(lam.encode_continuous(v3))
    assert torch.equal(lam.decode(v3[:, :-1], q), lam.decode(v[:, :-1], fixed))
    # ...and the action does change the prediction (it is the channel for the future).
    assert not torch.allclose(lam.decode(v[:, :-1], fixed), lam.decode(v[:, :-1], fixed + 1), atol=1e-4)


def _maskgit(micro_cfg):
    cfg = micro_cfg.copy()
    cfg.dynamics.kind = "maskgit"
    return build_part("dynamics", cfg)


def test_maskgit_dynamics_is_causal_in_tokens_and_actions(micro_cfg):
    dyn = _maskgit(micro_cfg).eval()
    tokens = torch.randint(0, 64, (2, 4, 64))
    actions = torch.randint(0, 4, (2, 3))
    logits = dyn.logits(tokens, actions)
    t2 = tokens.clone()
    t2[:, 3] = torch.randint(0, 64, (2, 64))
    a2 = actions.clone()
    a2[:, 2] = (a2[:, 2] + 1) % 4                    # the action leading into frame 3
    logits2 = dyn.logits(t2, a2)
    assert torch.allclose(logits[:, :3], logits2[:, :3], atol=1e-5)
    a3 = actions.clone()
    a3[:, 2] = (a3[:, 2] + 1) % 4
    assert not torch.allclose(dyn.logits(tokens, a3)[:, 3], logits[:, 3], atol=1e-4)


def test_dynamics_training_loss_only_on_masked_tokens(micro_cfg):
    dyn = _maskgit(micro_cfg)
    tokens = torch.randint(0, 64, (4, 4, 64))
    loss, m = dyn(tokens, torch.randint(0, 4, (4, 3)))
    assert torch.isfinite(loss) and loss.requires_grad
    assert 0.0 <= float(m["masked_acc"]) <= 1.0


def test_maskgit_sampling_fills_every_token_and_is_seeded(micro_cfg):
    dyn = _maskgit(micro_cfg).eval()
    ctx = torch.randint(0, 64, (2, 2, 64))
    acts = torch.randint(0, 4, (2, 2))
    a = dyn.sample_next(ctx, acts, steps=5, generator=torch.Generator().manual_seed(1))
    b = dyn.sample_next(ctx, acts, steps=5, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 64) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() < 64            # no [MASK] left


def test_calibrated_sampling_gives_the_last_frames_token_back_what_the_change_weight_took():
    """A model trained with change weight w scores every changed code log(1 + w) too high. Here a
    code 7 beats the last frame's token 3 by less than that: sampling keeps 3; with no change
    weight, the same logits pick 7."""
    from robo_genie.models.dynamics import DynamicsModel

    cfg = OmegaConf.structured(DynamicsConfig(kind="maskgit", change_weight=20.0))
    dyn = DynamicsModel(cfg, codebook_size=16, num_actions=2, num_spatial=4).eval()
    with torch.no_grad():
        dyn.head.weight.zero_()
        dyn.head.bias.zero_()
        dyn.head.bias[7] = math.log(21.0) - 0.5
    ctx, acts = torch.full((1, 1, 4), 3), torch.zeros(1, 1, dtype=torch.long)
    assert torch.equal(dyn.sample_next(ctx, acts, steps=2), torch.full((1, 4), 3))
    cfg.change_weight = 0.0
    assert torch.equal(dyn.sample_next(ctx, acts, steps=2), torch.full((1, 4), 7))


@pytest.mark.parametrize("kind", ["maskgit", "latent"])
def test_cached_rollout_equals_recomputing_every_frame_from_scratch(micro_cfg, kind):
    """Play steps the dynamics model with a rolling cache of the last frames' keys/values. The same
    seed must give the same frames as recomputing the whole rollout at every step, from a one-frame
    prompt (as play starts), through the window filling up, to well past it (the oldest frames
    dropped from the cache, not recomputed)."""
    micro_cfg.dynamics.kind = kind
    dyn = build_part("dynamics", micro_cfg).eval()
    if kind == "latent":
        dyn.set_codebook(torch.randn(64, micro_cfg.tokenizer.code_dim))
    window, steps = 3, 7
    tokens = torch.randint(0, 64, (2, 1, 64))
    actions = torch.randint(0, 4, (2, steps))
    cache = dyn.begin(tokens, actions[:, :0], window)
    cached = []
    for i in range(steps):
        nxt = dyn.advance(cache, tokens[:, -1] if not cached else cached[-1], actions[:, i], steps=3,
                          generator=torch.Generator().manual_seed(i))
        cached.append(nxt)
    rollout = torch.cat([tokens, torch.stack(cached, 1)], 1)
    for i in range(steps):       # the reference: a fresh full pass over everything so far, every step
        fresh = dyn.begin(rollout[:, :i + 1], actions[:, :i], window)
        again = dyn.advance(fresh, rollout[:, i], actions[:, i], steps=3, generator=torch.Generator().manual_seed(i))
        assert torch.equal(again, cached[i]), f"frame {i + 1} differs"
    assert cache.layers[0][0].shape[2] == window - 1      # the cache never grows past the window
    assert cache.frames == steps + (kind == "maskgit")    # MaskGIT commits the prompt; latent each frame it leaves


def test_decoding_frame_by_frame_with_a_cache_equals_decoding_the_whole_video(micro_cfg):
    from robo_genie.models.st_transformer import TemporalCache
    tok = build_part("tokenizer", micro_cfg).eval()
    tokens = torch.randint(0, 64, (2, 6, 8, 8))
    with torch.no_grad():
        whole = tok.decode_codes(tok.quantizer.lookup(tokens.flatten(2)), window=2).clamp(0, 1)
        cache = TemporalCache(2)
        tok.decode_codes(tok.quantizer.lookup(tokens[:, :1].flatten(2)), 2, cache)
        frames = [tok.decode_step(tokens[:, t].flatten(1), cache) for t in range(1, 6)]
    assert torch.allclose(torch.stack(frames, 1), whole[:, 1:], atol=1e-5)


def _count(cfg, part):
    with torch.device("meta"):
        return sum(p.numel() for p in build_part(part, OmegaConf.structured(cfg)).parameters())


@pytest.mark.parametrize("part,target", [("dynamics", 2.5e9), ("tokenizer", 200e6), ("lam", 300e6)])
def test_robo_2p5b_matches_genie_robotics_scale(part, target):
    n = _count(MODEL_PRESETS["robo_2p5b"], part)
    assert abs(n - target) / target < 0.10, f"{part}: {n / 1e6:.0f}M parameters, target {target / 1e6:.0f}M"


@pytest.mark.parametrize("name,target", [("dyn_40m", 40e6), ("dyn_150m", 150e6), ("dyn_500m", 500e6),
                                         ("dyn_1b", 1e9), ("robo_2p5b", 2.5e9)])
def test_the_dynamics_ladder_has_the_sizes_it_is_named_for(name, target):
    n = _count(MODEL_PRESETS[name], "dynamics")
    assert abs(n - target) / target < 0.10, f"{name}: {n / 1e6:.0f}M parameters"


def test_small_is_the_coinrun_case_study():
    small = MODEL_PRESETS["small"]
    assert (small.tokenizer.encoder.depth, small.tokenizer.encoder.dim) == (8, 512)
    assert (small.lam.encoder.depth, small.lam.encoder.dim) == (8, 512)
    assert (small.dynamics.net.depth, small.dynamics.net.dim) == (12, 512)
    # 12 ST blocks of width 512: 16 d^2 weights each, ~50M, plus embeddings and head.
    assert 45e6 < _count(small, "dynamics") < 60e6


def test_local_resample_moves_content_by_the_kernel_offset():
    from robo_genie.models.lam import local_resample
    frames = torch.rand(1, 2, 16, 16, 3)

    def kernels(dy, dx, k=5):                        # one-hot separable kernel: shift by (dy, dx)
        kern = torch.zeros(1, 2, 4, 2 * k)
        kern[..., k // 2 + dy] = 1
        kern[..., k + k // 2 + dx] = 1
        return kern
    assert torch.allclose(local_resample(frames, kernels(0, 0), 5, 8), frames, atol=1e-6)
    right = local_resample(frames, kernels(0, 2), 5, 8)        # out(y, x) = in(y, x + 2)
    assert torch.allclose(right[:, :, :, :-2], frames[:, :, :, 2:], atol=1e-6)
    down = local_resample(frames, kernels(-1, 0), 5, 8)        # out(y, x) = in(y - 1, x)
    assert torch.allclose(down[:, :, 1:], frames[:, :, :-1], atol=1e-6)


def test_lam_warm_up_bypasses_the_quantiser_then_quantises(micro_cfg):
    cfg = micro_cfg.copy()
    cfg.lam.continuous_warmup_steps = 2
    lam = build_part("lam", cfg).train()
    calls = []
    real = lam.quantizer.forward
    lam.quantizer.forward = lambda z: calls.append(1) or real(z)
    for _ in range(3):
        lam(_video())
    assert len(calls) == 1 and int(lam.train_steps) == 3       # only the third step quantised
    assert "train_steps" in lam.state_dict()                    # so a resumed run continues it


def test_windowed_action_inference_labels_every_transition_once(micro_cfg):
    from robo_genie.models.lam import infer_actions_windowed
    lam = build_part("lam", micro_cfg).eval()
    video = torch.rand(2, 7, 32, 32, 3)
    pairs = infer_actions_windowed(lam, video, 2)
    assert pairs.shape == (2, 6)
    for t in range(6):
        assert torch.equal(pairs[:, t], lam.infer_actions(video[:, t:t + 2])[:, 0])
    video = torch.rand(2, 8, 32, 32, 3)                 # windows of 4: [0:4], [3:7], and a short [6:8]
    expected = torch.cat([lam.infer_actions(video[:, 0:4]), lam.infer_actions(video[:, 3:7]),
                          lam.infer_actions(video[:, 6:8])], dim=1)
    assert torch.equal(infer_actions_windowed(lam, video, 4), expected)
    assert torch.equal(infer_actions_windowed(lam, video[1], 4), expected[1])
    short = video[:, :3]                                # shorter than one window
    assert torch.equal(infer_actions_windowed(lam, short, 4), lam.infer_actions(short))


def test_lam_balance_term_pushes_a_one_sided_channel_back_to_both_values(micro_cfg):
    cfg = micro_cfg.copy()
    cfg.lam.continuous_warmup_steps = 0
    video = _video()
    grads, losses = [], []
    for weight in (0.01, 0.0):
        cfg.lam.balance_weight = weight
        torch.manual_seed(0)
        lam = build_part("lam", cfg).train()
        with torch.no_grad():       # every transition's first channel leans positive: one value only
            lam.to_action[1].bias[0] = 1.0
        loss, metrics = lam(video)
        loss.backward()
        grads.append(float(lam.to_action[1].bias.grad[0]))
        losses.append(loss.detach())
    assert float(metrics["balance"]) > 0.3                               # about tanh(1)^2 for that channel
    assert torch.isclose(losses[0] - losses[1], 0.01 * metrics["balance"], rtol=1e-3)
    assert grads[0] - grads[1] > 1e-3                                    # descent lowers the bias
