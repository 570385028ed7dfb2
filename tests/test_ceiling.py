"""The ΔtPSNR ceiling: counterfactual futures of one MuJoCo scene, coded by a tokenizer."""

import numpy as np
import torch
from robo_genie.eval.ceiling import delta_t_psnr_ceiling
from robo_genie.sim import tabletop


def test_a_future_replays_the_episode_and_other_actions_give_another_future():
    sim = tabletop.TabletopSim(32)
    ep = sim.episode(5, 6)
    script = ep.labels[:4].tolist()
    first, (replayed, again) = sim.futures(5, [script, script])
    assert np.array_equal(first, ep.frames[0])
    assert np.array_equal(replayed, ep.frames[4]) and np.array_equal(again, replayed)
    opposite = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4}
    _, (other,) = sim.futures(5, [[opposite[p] for p in script]])
    assert np.abs(other.astype(int) - replayed.astype(int)).max() > 30     # the gripper is elsewhere


class _Posterise(torch.nn.Module):
    """A stand-in tokenizer: 8 grey levels per channel, so coding loses detail but keeps the scene."""

    def encode(self, video):
        return torch.round(video * 7)

    def decode(self, tokens):
        return tokens / 7


def test_ceiling_is_what_coding_the_true_future_gains_over_coding_a_random_one():
    r = delta_t_psnr_ceiling(_Posterise(), n_states=4, t=4, resolution=32, seed=0)
    assert r["n_states"] == 4 and r["fraction_of_pixels_the_futures_differ_in"] > 0
    assert r["psnr_true_future"] > r["psnr_random_future"]
    assert np.isclose(r["delta_t_psnr_ceiling"], r["psnr_true_future"] - r["psnr_random_future"], atol=1e-4)
