"""`robo-genie bench train`: training-step speed of each part, per precision and compile setting.

Each case builds the part at the configured model size, feeds it one fixed synthetic batch (random
frames for the tokenizer and LAM, random tokens and latent actions for the dynamics model: speed
does not depend on the values), and times full steps (forward, backward, gradient clipping, AdamW)
after warm-up steps (which also absorb torch.compile's compilation). Reported: the median step
time, clips/s, tokens/s (frames x patches of the part's own grid), the peak GPU memory, the FLOPs
of a step counted on the real step (training_step_flops: matrix products and attention), the
TFLOP/s they make and, against the device's peak, MFU; and the older 6 x parameters x tokens figure.
"""

from __future__ import annotations

import itertools
import statistics
import time

import torch
from omegaconf import OmegaConf

from robo_genie.config import ModelConfig, StageTrainConfig
from robo_genie.models import PARTS, build_part
from robo_genie.training.loop import dynamics_step_fn, pixel_step, resolve_device, training_step
from robo_genie.training.optim import make_optimizer

PRECISIONS = ("fp32", "bf16")


def synthetic_batch(part: str, model_cfg, batch_size: int, clip_len: int, device: torch.device) -> dict:
    """A batch as the loader gives it: frames, or for the dynamics model token shards' tokens and
    latent actions (one per frame; the last is unused)."""
    g = torch.Generator().manual_seed(0)
    if part == "dynamics":
        grid = model_cfg.image_size // model_cfg.tokenizer.patch
        tokens = torch.randint(0, model_cfg.tokenizer.codebook_size, (batch_size, clip_len, grid * grid), generator=g)
        actions = torch.randint(0, model_cfg.lam.num_actions, (batch_size, clip_len), generator=g)
        return {"tokens": tokens.to(device), "latent_actions": actions.to(device)}
    size = model_cfg.image_size
    frames = torch.randint(0, 256, (batch_size, clip_len, size, size, 3), dtype=torch.uint8, generator=g)
    return {"frames": frames.to(device)}


def tokens_per_clip(part: str, model_cfg, clip_len: int) -> int:
    patch = model_cfg.lam.patch if part == "lam" else model_cfg.tokenizer.patch
    return clip_len * (model_cfg.image_size // patch) ** 2


def step_fn(part: str):
    """The training loop's own batch -> loss function for `part` (the dynamics model reads the
    synthetic batch as token shards, so no tokenizer or LAM is needed)."""
    return dynamics_step_fn(None, None, lam_window=0) if part == "dynamics" else pixel_step


# Dense bf16 / float32 peaks (TFLOP/s) for MFU, by the GPU's name; elsewhere give bench train peak_tflops=.
PEAK_TFLOPS = {"H100": {"bf16": 989.0, "fp32": 67.0}, "H200": {"bf16": 989.0, "fp32": 67.0},
               "A100": {"bf16": 312.0, "fp32": 19.5}}


def training_step_flops(model: torch.nn.Module, loss_of, batch: dict) -> dict:
    """FLOPs of one training step (forward + backward), counted, not estimated:
    - every matrix product, by torch's FlopCounterMode on the real step;
    - attention, per ST block from the shapes it sees ([B, T, S, D]): spatial 4 S^2 D per frame
      (QK^T and AV, 2 FLOPs per multiply-add) and temporal 4 T^2 D per position (the causal mask
      is not discounted), forward; the backward costs twice the forward, so x3 in all.
    (FlopCounterMode's own attention formulas are switched off: on a CPU it does not see the fused
    kernel at all, and on a GPU it would count what is added here.)"""
    from torch.utils.flop_counter import FlopCounterMode

    from robo_genie.models import st_transformer
    from robo_genie.models.st_transformer import STBlock
    attention_ops = [getattr(torch.ops.aten, name) for name in (
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_backward",
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_efficient_attention_backward",
        "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_cudnn_attention_backward")
        if hasattr(torch.ops.aten, name)]
    shapes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda _m, args, _out: shapes.append(tuple(args[0].shape)))
             for m in model.modules() if isinstance(m, STBlock)]
    short_keys, st_transformer.SHORT_KEYS = st_transformer.SHORT_KEYS, 0   # all attention fused: counted once, below
    try:
        with FlopCounterMode(display=False, custom_mapping={op: (lambda *a, **k: 0) for op in attention_ops}) as fc:
            loss, _ = loss_of(model, batch)
            loss.backward()
    finally:
        st_transformer.SHORT_KEYS = short_keys
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
    attention = 3 * sum(b * (t * 4 * s * s * d + s * 4 * t * t * d) for b, t, s, d in shapes)
    matmul = fc.get_total_flops()
    return {"matmul": matmul, "attention": attention, "total": matmul + attention}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training_steps(part: str, model_cfg, *, batch_size: int, clip_len: int, precision: str,
                        compile: bool, device: torch.device, warmup: int, steps: int,
                        peak_tflops: float | None = None) -> dict:
    """One benchmark case; returns its row (step times in seconds)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    torch.manual_seed(0)
    with torch.device(device):      # built in place: a 2.5B-parameter part never passes through host memory
        model = build_part(part, model_cfg).train()
    if part == "lam":     # time the quantised steps, not the continuous warm-up that bypasses the VQ
        model.train_steps.fill_(model_cfg.lam.continuous_warmup_steps)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = make_optimizer(model, StageTrainConfig())
    loss_of = step_fn(part)
    forward = torch.compile(model) if compile else model
    batch = synthetic_batch(part, model_cfg, batch_size, clip_len, device)
    flops = training_step_flops(model, loss_of, batch)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def one_step() -> None:
        training_step(forward, loss_of, [batch], optimizer, autocast, grad_clip=1.0)   # (a fault would only skip)

    t0 = time.perf_counter()
    for _ in range(warmup):
        one_step()
    _sync(device)
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        one_step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    tokens = batch_size * tokens_per_clip(part, model_cfg, clip_len)
    row = {"part": part, "precision": precision, "compile": compile, "params": n_params,
           "batch_size": batch_size, "clip_len": clip_len, "tokens_per_step": tokens,
           "median_step_s": round(sec, 5), "step_s": [round(t, 5) for t in times],
           "warmup_s": round(warmup_s, 2), "clips_per_s": round(batch_size / sec, 2),
           "tokens_per_s": round(tokens / sec, 1),
           "model_tflops_per_s (6ND estimate)": round(6 * n_params * tokens / sec / 1e12, 2),
           "flops_per_step": flops["total"], "attention_flops_per_step": flops["attention"],
           "tflops_per_s": round(flops["total"] / sec / 1e12, 3)}
    if peak_tflops:
        row["mfu"] = round(flops["total"] / sec / (peak_tflops * 1e12), 4)
    if device.type == "cuda":
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def _case(part: str, precision: str, compile: bool, model_cfg, cfg, device: torch.device) -> dict:
    """One case's row; a failing case (a compiler error, out of memory) is a result too."""
    try:
        return time_training_steps(part, model_cfg, batch_size=cfg.batch_size, clip_len=cfg.clip_len,
                                   precision=precision, compile=compile, device=device,
                                   warmup=cfg.warmup_steps, steps=cfg.timed_steps,
                                   peak_tflops=peak_tflops(cfg, device, precision))
    except Exception as e:  # noqa: BLE001 - reported in the row, the other cases still run
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        return {"part": part, "precision": precision, "compile": compile,
                "error": f"{type(e).__name__}: {' '.join(lines[:2])[:300]}"}
    finally:
        if device.type == "cuda":     # the finished case's model and optimizer are garbage now
            torch.cuda.empty_cache()


def peak_tflops(cfg, device: torch.device, precision: str) -> float | None:
    """The device's dense peak for MFU: bench train peak_tflops=, else a known GPU's; None on a CPU."""
    if cfg.peak_tflops:
        return float(cfg.peak_tflops)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for gpu, peaks in PEAK_TFLOPS.items():
            if gpu in name:
                return peaks[precision]
    return None


def _describe(row: dict) -> str:
    name = f"{row['part']} {row['precision']}{' compiled' if row['compile'] else ''}"
    if "error" in row:
        return f"{name}: FAILED {row['error']}"
    peak = f", peak {row['peak_memory_gib']} GiB" if "peak_memory_gib" in row else ""
    mfu = f", MFU {row['mfu']:.1%}" if "mfu" in row else ""
    return (f"{name}: {row['median_step_s'] * 1e3:.1f} ms/step, {row['tokens_per_s']:.0f} tokens/s, "
            f"{row['tflops_per_s']} TFLOP/s counted{mfu}{peak}")


def bench_train(cfg) -> dict:
    model_cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), cfg.model)
    device = resolve_device(cfg.device)
    unknown = [p for p in cfg.parts if p not in PARTS]
    if unknown:
        raise ValueError(f"parts={list(cfg.parts)}: unknown {unknown}; expected some of {', '.join(PARTS)}")
    rows = []
    for part, precision, compile in itertools.product(cfg.parts, cfg.precisions, cfg.compile):
        rows.append(_case(part, precision, compile, model_cfg, cfg, device))
        print(_describe(rows[-1]))
    timed = [r for r in rows if "error" not in r]
    for r in timed:     # speed-up over the same part in fp32 eager
        base = next((b for b in timed if b["part"] == r["part"] and b["precision"] == "fp32" and not b["compile"]), None)
        r["speedup_vs_fp32_eager"] = None if base is None else round(base["median_step_s"] / r["median_step_s"], 2)
    return {"benchmark": "train", "model": model_cfg.name, "device": str(device), "warmup_steps": cfg.warmup_steps,
            "timed_steps": cfg.timed_steps, "note": "synthetic batches; step = forward + backward + clip + AdamW",
            "results": rows}
