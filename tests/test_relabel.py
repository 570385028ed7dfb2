"""Relabelling by a draft dynamics model (training/relabel.py): on a toy world whose labels have
the LAM's error (a share of moves given the opposite direction's code), the draft's relabels
recover the true directions; the relabelled token shards keep everything but the codes."""

import numpy as np
import torch

from robo_genie.datasets.shards import FrameShards, ShardWriter
from robo_genie.training.relabel import best_codes, relabel_token_shards
from tests.test_latent_dynamics import _toy_batch, train_toy

OPPOSITE = torch.tensor([1, 0, 3, 2])      # right <-> left, down <-> up


def _draft(micro_cfg, flip: float):
    """A toy dynamics model trained on labels of which `flip` are the opposite direction's."""
    def noisy_batch(g, gen):
        tokens, acts = _toy_batch(g, 32, False, gen)
        return tokens, torch.where(torch.rand(acts.shape, generator=gen) < flip, OPPOSITE[acts], acts)
    return train_toy(micro_cfg, noisy_batch)


def _episode(g: int, length: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The bright cell wandering `length` frames (never leaving the grid): tokens [T, g*g], actions [T-1]."""
    moves = torch.tensor([[0, 1], [0, -1], [1, 0], [-1, 0]])
    pos, frames, actions = torch.tensor([g // 2, g // 2]), [], []
    for _ in range(length):
        frame = torch.zeros(g, g, dtype=torch.long)
        frame[pos[0], pos[1]] = 1
        frames.append(frame.flatten())
        inside = [a for a in range(4) if ((pos + moves[a]) >= 0).all() and ((pos + moves[a]) < g).all()]
        a = inside[int(torch.randint(len(inside), (1,), generator=gen))]
        actions.append(a)
        pos = pos + moves[a]
    return torch.stack(frames), torch.tensor(actions[:-1])


def test_a_draft_trained_on_noisy_labels_relabels_the_true_directions(micro_cfg):
    flip = 0.3
    dyn, g = _draft(micro_cfg, flip)
    gen = torch.Generator().manual_seed(3)
    true, noisy, relabelled = [], [], []
    for _ in range(8):
        tokens, actions = _episode(g, 24, gen)
        true.append(actions)
        noisy.append(torch.where(torch.rand(actions.shape, generator=gen) < flip, OPPOSITE[actions], actions))
        relabelled.append(best_codes(dyn, tokens, chunk=5))       # chunks smaller than the episode
    true, noisy, relabelled = torch.cat(true), torch.cat(noisy), torch.cat(relabelled)
    noisy_acc = float((noisy == true).float().mean())
    relabel_acc = float((relabelled == true).float().mean())
    assert noisy_acc < 0.8 and relabel_acc > 0.95, (noisy_acc, relabel_acc)


def test_relabelled_shards_change_only_the_codes(micro_cfg, tmp_path):
    dyn, g = _draft(micro_cfg, 0.3)
    gen = torch.Generator().manual_seed(4)
    writer = ShardWriter(tmp_path / "tokens", kind="tokens", source="toy", fps=10.0, image_size=32,
                         label_names=["right", "left", "down", "up"], extra={"digests": {}})
    episodes = []
    for e in range(3):
        tokens, actions = _episode(g, 10 + e, gen)
        codes = np.append(OPPOSITE[actions].numpy(), -1)           # every label wrong; the last row has none
        arrays = {"tokens": tokens.reshape(-1, g, g).numpy().astype(np.int16), "latent_actions": codes,
                  "labels": np.append(actions.numpy(), -1)}
        writer.add_arrays(f"ep{e}", arrays)
        episodes.append((tokens, actions))
    writer.close()
    changed = relabel_token_shards(dyn, tmp_path / "tokens", tmp_path / "relabelled", device="cpu", progress=False)
    assert not (tmp_path / "relabelled.tmp").exists()
    src, out = FrameShards(tmp_path / "tokens"), FrameShards(tmp_path / "relabelled")
    assert out.kind == "tokens" and len(out.episodes) == 3 and changed > 0.9
    for e, (tokens, actions) in enumerate(episodes):
        assert np.array_equal(out.read(e, key="tokens"), src.read(e, key="tokens"))
        assert np.array_equal(out.read(e, key="labels"), src.read(e, key="labels"))
        codes = out.read(e, key="latent_actions")
        assert np.array_equal(codes[:-1], best_codes(dyn, tokens).numpy()) and codes[-1] == -1


def test_the_final_model_is_the_draft_continued_on_its_relabels(micro_run, sim_shards, tmp_path):
    """With the learning rate at 0 the continuation leaves the draft's weights as they were, so
    the final model must start from them; its code counts are only its own training's."""
    import shutil

    from safetensors.torch import load_file

    from robo_genie.training.jobs import run_train_job
    from tests.conftest import train_job
    shutil.copytree(micro_run / "bundle", tmp_path / "bundle")       # its tokenizer and LAM
    (tmp_path / "bundle" / "dynamics.safetensors").unlink()
    run_train_job(train_job(tmp_path, sim_shards, "dynamics", "dynamics.lr=0.0", "dynamics.weight_decay=0.0"))
    final = load_file(str(tmp_path / "bundle" / "dynamics.safetensors"))
    draft = load_file(str(tmp_path / "checkpoints" / "dynamics_draft" / "step_0000004" / "model.safetensors"))
    assert final.keys() == draft.keys()
    for k in final:
        if k != "action_counts":
            assert torch.equal(final[k], draft[k]), k
    # 2 steps x batch 2 x 3 transitions per 4-frame clip
    assert int(final["action_counts"].sum()) == 12 and int(draft["action_counts"].sum()) == 24
