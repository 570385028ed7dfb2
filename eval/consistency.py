"""The latent-action consistency test: does one latent-action sequence give the same behaviour
from different prompt images?

Every command sequence (each code held for `length` steps, plus random sequences) is rolled out
from every prompt. Three measurements of the result:
1. re-identification: the LAM, run on each generated transition, should read back the code that
   was commanded (chance = 1/|A|);
2. motion agreement: the motion signature (eval/motion.py) of a rollout should resemble that of
   the same sequence from another prompt more than that of another sequence; a stratified
   permutation test (sequence labels shuffled within each prompt) gives the p-value;
3. against real actions, where the prompts' data has them: how much the LAM's codes on real video
   say about the real action's direction (NMI, a probe's accuracy), and whether the direction a
   probe reads from generated frames agrees across prompts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from robo_genie.datasets.shards import MANIFEST, FrameShards
from robo_genie.datasets.transforms import load_image
from robo_genie.eval.metrics import normalized_mutual_info
from robo_genie.eval.motion import flow_signature, signature_similarity

from robo_genie.models.lam import infer_actions_windowed
from robo_genie.play import to_uint8

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def load_prompts(path: str | Path, n: int, size: int) -> np.ndarray:
    """Prompt images, uint8 [P, size, size, 3]: the first frames of n episodes spread over a
    frame-shard directory, or the first n images (sorted by name) of a folder."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        shards = FrameShards(path)
        picks = np.unique(np.linspace(0, len(shards.episodes) - 1, n).round().astype(int))
        frames = np.stack([shards.read(int(e), 0, 1)[0] for e in picks])
        if frames.shape[1] != size:
            raise ValueError(f"{path}: frames are {frames.shape[1]} px, the model takes {size} px; "
                             f"ingest again with resolution={size}, or pass a folder of images")
        return frames
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:n]
        if not files:
            raise ValueError(f"{path}: no frame shards (no {MANIFEST}) and no images "
                             f"({', '.join(IMAGE_SUFFIXES)}) to use as prompts")
        return np.stack([load_image(f, size) for f in files])
    raise ValueError(f"prompts={path}: not found; give a frame-shard directory or a folder of images")


def command_sequences(num_actions: int, length: int, n_random: int, seed: int = 0
                      ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each code held for `length` steps, then `n_random` uniformly random sequences
    -> names, sequences [S, L], kinds [S] (0 held, 1 random)."""
    rng = np.random.default_rng(seed)
    held = np.repeat(np.arange(num_actions)[:, None], length, axis=1)
    random = rng.integers(0, num_actions, (n_random, length))
    names = [f"hold {a}" for a in range(num_actions)] + [f"random {i}" for i in range(n_random)]
    kinds = np.array([0] * num_actions + [1] * n_random)
    return names, np.concatenate([held, random]).astype(np.int64), kinds


@torch.no_grad()
def roll_out(world, prompts: np.ndarray, sequences: np.ndarray, batch: int = 64) -> np.ndarray:
    """Every sequence from every prompt -> uint8 [S, P, L+1, H, W, 3] (frame 0: the prompt as coded)."""
    s, p, length = len(sequences), len(prompts), sequences.shape[1]
    first = torch.from_numpy(prompts).float().div(255)
    firsts = first.repeat(s, 1, 1, 1)                                   # rollout i: prompt i % P
    commands = torch.from_numpy(sequences).repeat_interleave(p, 0)      # rollout i: sequence i // P
    out = []
    for i in range(0, s * p, batch):
        world.reset_batch(firsts[i:i + batch])
        frames = [world.decode_latest()] + [world.step_batch(commands[i:i + batch, k]) for k in range(length)]
        out.append(to_uint8(torch.stack(frames, 1)))
    return np.concatenate(out).reshape(s, p, length + 1, *out[0].shape[2:])


@torch.no_grad()
def reidentify(lam, lam_window: int, videos: np.ndarray, sequences: np.ndarray, num_actions: int,
               device) -> dict:
    """The LAM's reading of every generated transition against the commanded code."""
    s, p = videos.shape[:2]
    flat = torch.from_numpy(videos.reshape(s * p, *videos.shape[2:])).float().div(255).to(device)
    read = infer_actions_windowed(lam, flat, lam_window).cpu().numpy().reshape(s, p, -1)   # [S, P, L]
    commanded = np.broadcast_to(sequences[:, None], read.shape)
    hit = read == commanded
    per_code = [float(hit[commanded == a].mean()) if (commanded == a).any() else None for a in range(num_actions)]
    return {"reid_accuracy": float(hit.mean()), "reid_accuracy_per_code": per_code,
            "reid_chance": 1.0 / num_actions, "lam_readings": read.tolist()}


@torch.no_grad()
def reidentification_ceiling(world, data_path: str | Path, max_episodes: int = 64) -> dict:
    """The re-identification a perfect dynamics model would reach with this tokenizer and LAM: real
    held-out video, redrawn by the tokenizer as generated frames are drawn, read by the LAM, against
    its reading of the real frames. Averaged over codes as re-identification commands them (each
    code alike); a code the LAM never reads on the real video has no figure."""
    from robo_genie.datasets.pretokenize import encode_windowed
    shards = FrameShards(data_path)
    tok, real, redrawn = world.tokenizer, [], []
    for e in range(min(len(shards.episodes), max_episodes)):
        video = torch.from_numpy(shards.read(e)).float().div(255).to(world.device)
        codes = tok.quantizer.lookup(encode_windowed(tok, video, world.window).flatten(1))
        drawn = tok.decode_codes(codes[None], world.window)[0].clamp(0, 1)
        real.append(infer_actions_windowed(world.lam, video, world.lam_window).cpu().numpy())
        redrawn.append(infer_actions_windowed(world.lam, drawn, world.lam_window).cpu().numpy())
    real, redrawn = np.concatenate(real), np.concatenate(redrawn)
    per_code = [float((redrawn[real == a] == a).mean()) if (real == a).any() else None
                for a in range(world.num_actions)]
    known = [x for x in per_code if x is not None]
    return {"reid_ceiling": float(np.mean(known)), "reid_ceiling_per_code": per_code,
            "reid_ceiling_transitions_per_code": np.bincount(real, minlength=world.num_actions).tolist()}


def motion_agreement(signatures: np.ndarray, groups: np.ndarray, n_permutations: int = 1000,
                     seed: int = 0) -> dict:
    """signatures [S, P, T, 2], groups [S] (the kind of each sequence: held code or random) ->
    mean similarity of rollouts from different prompts under the same sequence and under different
    sequences of the same kind, their margin, and a permutation p-value for the margin.

    Pairs are only formed within a kind: a held code and a random sequence differ in temporal
    structure whatever the model does, which would make the margin positive for any model."""
    s, p = signatures.shape[:2]
    flat = signatures.reshape(s * p, *signatures.shape[2:])
    sim = signature_similarity(flat[:, None], flat[None, :])            # [N, N]
    prompt, kind = np.tile(np.arange(p), s), np.repeat(groups, p)
    valid = (prompt[:, None] != prompt[None, :]) & (kind[:, None] == kind[None, :])

    def means(seq: np.ndarray) -> tuple[float, float]:
        same = seq[:, None] == seq[None, :]
        return float(sim[valid & same].mean()), float(sim[valid & ~same].mean())

    labels = np.arange(s)
    same, different = means(np.repeat(labels, p))
    rng = np.random.default_rng(seed)
    by_kind = [labels[groups == g] for g in np.unique(groups)]
    null = []
    for _ in range(n_permutations):
        # Under "motion does not depend on the sequence", the labels of one prompt's rollouts are
        # exchangeable among sequences of the same kind: shuffle them there.
        shuffled = np.empty((s, p), dtype=int)
        for j in range(p):
            for members in by_kind:
                shuffled[members, j] = rng.permutation(members)
        a, b = means(shuffled.reshape(-1))
        null.append(a - b)
    observed = same - different
    p_value = (1 + int((np.array(null) >= observed).sum())) / (1 + n_permutations)
    return {"motion_same": same, "motion_different": different, "motion_margin": observed,
            "p_value": p_value, "n_permutations": n_permutations}


# -- against real actions --------------------------------------------------------------------------
DIRECTIONS = ["still", "+x", "-x", "+y", "-y", "+z", "-z"]


def action_directions(actions: np.ndarray, still_fraction: float = 0.1) -> np.ndarray:
    """Real actions [N, A] (the first three entries: the end-effector's xyz delta, as in RT-1 and
    the MuJoCo scenes) -> the dominant direction of motion, an index into DIRECTIONS. Moves shorter
    than `still_fraction` of the median move count as still."""
    xyz = np.asarray(actions, np.float64)[:, :3]
    norm = np.linalg.norm(xyz, axis=1)
    moving = norm > 0
    cutoff = still_fraction * (np.median(norm[moving]) if moving.any() else 0.0)
    axis = np.abs(xyz).argmax(axis=1)
    sign = xyz[np.arange(len(xyz)), axis] < 0
    return np.where(norm > cutoff, 1 + 2 * axis + sign, 0)


class CentroidProbe:
    """A nearest-centroid classifier (linear decision boundaries): features -> class."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> CentroidProbe:
        self.classes = np.unique(y)
        self.centroids = np.stack([x[y == c].mean(axis=0) for c in self.classes])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        d = ((x[:, None] - self.centroids[None]) ** 2).sum(-1)
        return self.classes[d.argmin(axis=1)]


@torch.no_grad()
def real_action_agreement(lam, lam_window: int, data_path: str | Path, device, max_episodes: int = 64
                          ) -> tuple[dict, CentroidProbe | None]:
    """LAM codes and flow signatures of real transitions against their real actions' directions.

    Episodes are split in halves: probes are fitted on the first half and scored on the second.
    Returns (measurements, the flow probe fitted on all episodes, for reading generated frames)."""
    shards = FrameShards(data_path)
    if not shards.has("actions"):
        return {"note": f"{data_path} has no recorded actions"}, None
    episodes = range(min(len(shards.episodes), max_episodes))
    codes, flows, dirs, half = [], [], [], []
    for e in episodes:
        video = shards.read(e)
        codes.append(infer_actions_windowed(lam, torch.from_numpy(video).float().div(255).to(device),
                                            lam_window).cpu().numpy())
        flows.append(flow_signature(video))
        dirs.append(action_directions(shards.read(e, key="actions")[:len(video) - 1]))
        half.append(np.full(len(video) - 1, e >= len(episodes) / 2))
    codes, flows, dirs, test = (np.concatenate(x) for x in (codes, flows, dirs, half))
    train = ~test
    if not train.any() or not test.any():
        return {"note": "real-action agreement needs at least two episodes"}, None
    # With a one-hot code as input, the best linear probe predicts each code's most frequent
    # direction (on the training half).
    majority = {c: np.bincount(dirs[train & (codes == c)]).argmax() for c in np.unique(codes[train])}
    fallback = np.bincount(dirs[train]).argmax()
    code_pred = np.array([majority.get(c, fallback) for c in codes[test]])
    flow_probe = CentroidProbe().fit(flows[train], dirs[train])
    counts = np.bincount(dirs, minlength=len(DIRECTIONS))
    return {
        "nmi": normalized_mutual_info(codes, dirs),
        "code_probe_accuracy": float((code_pred == dirs[test]).mean()),
        "flow_probe_accuracy": float((flow_probe.predict(flows[test]) == dirs[test]).mean()),
        "probe_chance": float((dirs[test] == np.bincount(dirs[train]).argmax()).mean()),
        "direction_counts": dict(zip(DIRECTIONS, counts.tolist())),
        "n_transitions": len(dirs),
    }, CentroidProbe().fit(flows, dirs)


def direction_agreement(probe: CentroidProbe, signatures: np.ndarray) -> dict:
    """For each sequence, the real direction the probe reads from each prompt's rollout (its most
    frequent per-step reading), and how often two prompts' readings agree. Chance: the agreement
    of two rollouts drawn at random from all of them, whatever their sequence; a reader that
    sees the same direction everywhere (e.g. nothing moves) scores high on both."""
    s, p, t = signatures.shape[:3]
    read = probe.predict(signatures.reshape(-1, 2)).reshape(s, p, t)
    per_rollout = np.array([[np.bincount(read[i, j]).argmax() for j in range(p)] for i in range(s)])
    pairs = ~np.eye(p, dtype=bool)
    agree = [float((row[:, None] == row[None, :])[pairs].mean()) for row in per_rollout]
    pooled = np.bincount(per_rollout.ravel(), minlength=len(DIRECTIONS)) / per_rollout.size
    return {"direction_agreement": float(np.mean(agree)),
            "direction_agreement_chance": float((pooled ** 2).sum()),
            "direction_agreement_per_sequence": agree,
            "directions_read": [[DIRECTIONS[d] for d in row] for row in per_rollout]}


def verdict(reid: float, chance: float, margin: float, p_value: float) -> str:
    clear_reid, clear_motion = reid >= 2 * chance, margin > 0 and p_value < 0.01
    numbers = (f"re-identification {reid:.0%} (chance {chance:.0%}), motion margin {margin:.3f} "
               f"(p = {p_value:.3g})")
    if clear_reid and clear_motion:
        return f"Consistent: the same latent actions give the same behaviour across prompts; {numbers}."
    if clear_reid or clear_motion:
        return f"Partly consistent: only one of the two tests passes; {numbers}."
    return f"Not consistent: latent actions do not behave the same across prompts; {numbers}."
