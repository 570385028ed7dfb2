"""Frame shards -> token shards, so that dynamics training does not run the tokenizer every step.

Each frame is encoded as the last frame of a window of the tokenizer's training clip length (the
context it was trained with), and each transition gets the LAM's code when the bundle has a LAM.
The token shards record digests of the tokenizer and LAM weights they came from; training refuses
token shards made by another tokenizer (their token ids would mean nothing to it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from robo_genie.datasets.shards import MANIFEST, FrameShards, ShardError, ShardWriter

from robo_genie import bundle as bundle_io
from robo_genie.models.lam import infer_actions_windowed
from robo_genie.progress import progress_bar


def part_digest(bundle: str | Path, part: str) -> str:
    """A short sha256 of one part's weights file."""
    return bundle_io.file_sha256(Path(bundle) / f"{part}.safetensors")[:16]


@torch.no_grad()
def encode_windowed(tokenizer: torch.nn.Module, video: torch.Tensor, window: int, batch: int = 64) -> torch.Tensor:
    """Video [T, H, W, 3] in [0, 1] -> tokens [T, h, w]; frame t is encoded after frames t-window+1..t."""
    out = [tokenizer.encode(video[None, :t + 1])[0, -1] for t in range(min(window - 1, len(video)))]
    starts = list(range(len(video) - window + 1))
    for i in range(0, len(starts), batch):
        clips = torch.stack([video[s:s + window] for s in starts[i:i + batch]])
        out.extend(tokenizer.encode(clips)[:, -1])
    return torch.stack(out)


def pretokenize(frames: str | Path, bundle: str | Path, out: str | Path, *, device: str | torch.device = "cpu",
                shard_frames: int = 16384, progress: bool = True) -> dict:
    """Write token shards for every episode of `frames` with the bundle's tokenizer (and LAM)."""
    from robo_genie.training.loop import resolve_device
    device = resolve_device(device) if isinstance(device, str) else device
    meta = bundle_io.read_meta(bundle)
    if "tokenizer" not in meta["parts"]:
        raise bundle_io.BundleError(f"{bundle} has no trained tokenizer to pre-tokenise with")
    cfg = bundle_io.load_model_config(bundle)
    tokenizer = bundle_io.load_part(bundle, "tokenizer", device, cfg)
    lam = bundle_io.load_part(bundle, "lam", device, cfg) if "lam" in meta["parts"] else None
    digests = {p: part_digest(bundle, p) for p in ("tokenizer", "lam") if p in meta["parts"]}
    src = FrameShards(frames)
    if src.kind != "frames":
        raise ShardError(f"{frames}: pre-tokenisation reads frame shards, this is a {src.kind} shard directory")
    if src.manifest["image_size"] != cfg.image_size:
        raise ShardError(f"{frames}: frames are {src.manifest['image_size']} px, the bundle's model takes "
                         f"{cfg.image_size} px; ingest again with resolution={cfg.image_size}")
    tok_window = meta["parts"]["tokenizer"]["clip_len"]
    lam_window = meta["parts"]["lam"]["clip_len"] if lam is not None else 0
    writer = ShardWriter(out, kind="tokens", source=f"pretokenize:{src.manifest['source']}",
                         fps=src.manifest["fps"], image_size=cfg.image_size, shard_frames=shard_frames,
                         action_names=src.manifest.get("action_names"), label_names=src.manifest.get("label_names"),
                         extra={"frames": str(Path(frames).resolve()), "bundle": str(Path(bundle).resolve()),
                                "digests": digests, "codebook_size": cfg.tokenizer.codebook_size})
    extra_keys = [k for k in ("actions", "labels") if src.has(k)]
    for e, ep in enumerate(progress_bar(src.episodes, desc="pre-tokenise", unit="ep", bar=progress)):
        video = torch.from_numpy(src.read(e)).to(device).float().div_(255)
        arrays = {"tokens": encode_windowed(tokenizer, video, tok_window).cpu().numpy().astype(np.int16)}
        if lam is not None:
            codes = np.full(len(video), -1, dtype=np.int64)           # row t: the action after frame t
            if len(video) > 1:
                codes[:-1] = infer_actions_windowed(lam, video, lam_window).cpu().numpy()
            arrays["latent_actions"] = codes
        arrays.update({k: src.read(e, key=k) for k in extra_keys})
        writer.add_arrays(ep["name"], arrays)
    return writer.close()


def check_token_shards(path: str | Path, bundle: str | Path) -> None:
    """Token shards must come from this bundle's tokenizer and LAM; raise ShardError otherwise."""
    manifest = FrameShards(path).manifest
    made_with = manifest["extra"].get("digests", {})
    for part in ("tokenizer", "lam"):
        if made_with.get(part) != part_digest(bundle, part):
            raise ShardError(f"{Path(path) / MANIFEST}: these tokens were made with another {part} than "
                             f"the one in {bundle}. Pre-tokenise again: `robo-genie ingest source=shards "
                             f"path={manifest['extra'].get('frames', 'FRAMES')} tokenize_with={bundle} out=...`")
