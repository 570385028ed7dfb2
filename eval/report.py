"""Pictures and pages people open: animated grids (GIF), still grids (PNG), an HTML summary."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from robo_genie.play import World, to_uint8
from robo_genie.safe_write import write_text_atomic


def tile(grid: np.ndarray, pad: int = 2, scale: int = 2) -> np.ndarray:
    """[rows, cols, H, W, 3] uint8 -> one image with white gutters, upscaled by `scale`."""
    rows, cols, h, w, _ = grid.shape
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            out[y:y + h, x:x + w] = grid[r, c]
    return np.kron(out, np.ones((scale, scale, 1), np.uint8)) if scale > 1 else out


def save_gif(frames: list[np.ndarray], path, fps: int = 4) -> None:
    """A looping GIF to a path or an open binary file."""
    imgs = [Image.fromarray(f) for f in frames]
    imgs[0].save(path, format="GIF", save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)


@torch.no_grad()
def action_grid(world: World, prompts: np.ndarray, length: int = 8) -> np.ndarray:
    """Every latent action, repeated `length` times, from every prompt.

    Returns uint8 [length + 1, n_prompts, |A|, H, W, 3] (frame 0 is the prompt).
    """
    n, a = len(prompts), world.num_actions
    first = torch.from_numpy(prompts).float().div(255).repeat_interleave(a, 0)     # [n*a, H, W, 3]
    actions = torch.arange(a).repeat(n)
    world.reset_batch(first)
    frames = [world.decode_latest()] + [world.step_batch(actions) for _ in range(length)]
    video = to_uint8(torch.stack(frames))                                          # [L+1, n*a, ...]
    return video.reshape(length + 1, n, a, *video.shape[2:])


def write_rollouts_gif(world: World, prompts: np.ndarray, path: str | Path, length: int = 8) -> None:
    grid = action_grid(world, prompts, length)
    save_gif([tile(g) for g in grid], path)


def consistency_pictures(videos: np.ndarray, names: list[str], out: Path, still_prompts: int = 4) -> None:
    """videos uint8 [S, P, L+1, H, W, 3] -> out/grid.png (rows: sequences; columns: the first, middle
    and last frame under each of the first `still_prompts` prompts) and out/grid.gif (all prompts)."""
    length = videos.shape[2] - 1
    picks = [0, length // 2, length]
    still = videos[:, :still_prompts][:, :, picks]                          # [S, P', 3, H, W, 3]
    still = still.reshape(still.shape[0], -1, *still.shape[3:])
    Image.fromarray(tile(still, scale=1)).save(out / "grid.png")
    save_gif([tile(videos[:, :, k]) for k in range(length + 1)], out / "grid.gif")
    (out / "grid_rows.txt").write_text("\n".join(names) + "\n")


def write_lab_report(path: str | Path, title: str, lead: str, rows: list[tuple[str, str, str, str]],
                     images: list[tuple[str, str]], raw: dict) -> None:
    """A page that reads like a lab report: one plain sentence, then each figure beside its
    reference (rows: what, measured, reference, what it means), the pictures, and the raw JSON."""
    e = html.escape
    table = "".join(f"<tr><td>{e(a)}</td><td class='n'>{e(b)}</td><td class='n'>{e(c)}</td><td>{e(d)}</td></tr>"
                    for a, b, c, d in rows)
    figs = "".join(f"<figure><img src='{e(src)}'><figcaption>{e(cap)}</figcaption></figure>" for src, cap in images)
    write_text_atomic(path,
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:72em;line-height:1.4}"
        "table{border-collapse:collapse}td,th{padding:4px 12px;border-bottom:1px solid #ddd;text-align:left}"
        "td.n{font-variant-numeric:tabular-nums;white-space:nowrap}img{image-rendering:pixelated;max-width:100%}"
        "figure{margin:1.5em 0}.lead{font-size:1.1em;background:#f3f6f4;padding:.8em 1em;border-radius:6px}</style>"
        f"</head><body><h1>{e(title)}</h1><p class='lead'>{e(lead)}</p>"
        f"<table><tr><th>figure</th><th>measured</th><th>reference</th><th>what it means</th></tr>{table}</table>"
        f"{figs}<details><summary>all figures (JSON)</summary><pre>{e(json.dumps(raw, indent=1))}</pre>"
        "</details></body></html>", "report")


def plot_over_t(dyn: dict, path: str | Path, ceiling_by_t: dict | None = None) -> None:
    """ΔtPSNR over the rollout length (frequency-matched and uniform random actions), against the
    ceiling where it is known, and the inferred-action rollouts against the prompt held still."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = sorted(int(t) for t in dyn["delta_t_psnr_matched_by_t"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(ts, [dyn["delta_t_psnr_matched_by_t"][str(t)] for t in ts], "o-", label="vs random at the LAM's frequencies")
    a.plot(ts, [dyn["delta_t_psnr_by_t"][str(t)] for t in ts], "s--", label="vs uniform random (Genie's)")
    if ceiling_by_t:
        a.plot(ts, [ceiling_by_t[str(t)] for t in ts], "k:", marker="^", label="ceiling: true future's tokens")
    a.axhline(0, color="grey", lw=0.8)
    a.set(xlabel="steps after the prompt (t)", ylabel="ΔtPSNR (dB)", title="controllability", xticks=ts)
    a.legend(fontsize=8)
    b.plot(ts, [dyn["psnr_inferred_by_t"][str(t)] for t in ts], "o-", label="rollout, LAM's actions")
    b.plot(ts, [dyn["psnr_copy_by_t"][str(t)] for t in ts], "k:", marker="x", label="prompt held still")
    b.set(xlabel="steps after the prompt (t)", ylabel="PSNR to the real frame (dB)", title="fidelity", xticks=ts)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def share_of_ceiling(gain: float, ceiling: float | None) -> float | None:
    """gain / ceiling; None where there is no positive ceiling to reach (no ceiling measured, or a
    tokenizer that codes every frame alike)."""
    return gain / ceiling if ceiling is not None and ceiling > 0 else None


def controllability_rows(dyn: dict, ceiling: float | None = None) -> list[tuple[str, str, str, str]]:
    """The ΔtPSNR figures, each beside its reference."""
    t = dyn["t"]
    ref = f"ceiling {ceiling:.2f} dB" if ceiling is not None else "0 dB: actions ignored"
    ratio = share_of_ceiling(dyn["delta_t_psnr_matched"], ceiling)
    share = f" ({ratio:.0%} of the ceiling)" if ratio is not None else ""
    return [
        (f"ΔtPSNR at t={t}, random actions at the LAM's frequencies",
         f"{dyn['delta_t_psnr_matched']:.2f} ± {dyn['delta_t_psnr_matched_sem']:.2f} dB", ref,
         f"how much closer to the real frame the LAM's actions bring the rollout than random ones{share}"),
        (f"ΔtPSNR at t={t}, uniform random actions (Genie's definition)",
         f"{dyn['delta_t_psnr']:.2f} ± {dyn['delta_t_psnr_sem']:.2f} dB", ref,
         "inflated when the LAM leaves codes unused; read the line above"),
        (f"PSNR at t={t}, rollout with the LAM's actions", f"{dyn['psnr_inferred']:.2f} dB",
         f"prompt held still {dyn['psnr_copy']:.2f} dB",
         f"{dyn['inferred_minus_copy']:+.2f} dB: above zero, the rollouts move the scene the right way, "
         f"not only away from random"),
    ]
