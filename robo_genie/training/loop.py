"""One training loop for all three parts.

A part differs only in how a batch of clips becomes a loss (`StepFn` below): the tokenizer and
the LAM read pixels; the dynamics model reads the frozen tokenizer's tokens and the frozen LAM's
action codes. Everything else (optimiser, schedule, bf16 autocast on CUDA, clipping, logging,
checkpoints that resume bit-identically, interruption) is shared.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from robo_genie.config import StageTrainConfig
from robo_genie.datasets.loader import clip_loader, open_clips
from robo_genie.models.lam import infer_actions_windowed
from robo_genie.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from robo_genie.training.optim import lr_at, make_optimizer, set_lr

StepFn = Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict]]   # (model, batch)
_SHOWN = {"loss", "psnr", "mse", "ce", "masked_acc", "codes_used", "perplexity"}   # on the progress bar


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for but torch sees no CUDA device; use device=cpu")
    return torch.device(name)


def frames_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """uint8 frames of a frame-shard batch -> float video in [0, 1]."""
    if "frames" not in batch:
        raise ValueError("this stage trains on pixels: give it frame shards (data.path), not token shards")
    return batch["frames"].float().div_(255)


def pixel_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    return model(frames_of(batch))


def dynamics_step_fn(tokenizer: nn.Module, lam: nn.Module, lam_window: int, recorded: bool = False) -> StepFn:
    """Token shards carry the tokens and latent actions (pre-tokenised with this run's tokenizer and
    LAM); from frame shards they come from the frozen tokenizer and LAM on every batch. Either way
    no gradient reaches them; the LAM reads windows of the clip length it was trained on. With
    `recorded`, the shards' own action vectors take the place of the LAM's codes."""
    def step(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        if "tokens" in batch:
            return model(batch["tokens"].long().flatten(2), batch["latent_actions"][:, :-1].long())
        with torch.no_grad():
            frames = frames_of(batch)
            tokens = tokenizer.encode(frames).flatten(2)
            if recorded:      # actions[t] is the one taken after frame t
                actions = batch["actions"][:, :-1].float()
            else:
                actions = infer_actions_windowed(lam, frames, lam_window)
        return model(tokens, actions)
    return step


@dataclass
class TrainResult:
    model: nn.Module
    step: int
    finished: bool          # False when halted or interrupted before the last step
    seconds: float
    last_metrics: dict


class StopRequest:
    """Ctrl-C or SIGTERM (a cluster's pre-emption) asks the loop to stop at the next step boundary,
    so a checkpoint never holds a half-applied optimizer update. A second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: stopping after this step (Ctrl-C again to stop now)")

    def __enter__(self) -> StopRequest:  # noqa: PYI034
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:       # not in the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _summary_writer_class():
    """torch's SummaryWriter, kept off TensorFlow. TensorBoard imports TensorFlow when it is installed
    (the [rlds] extra installs it), and loading TensorFlow into a training process that already holds
    torch, PyAV and pyarrow segfaulted here. Scalars need none of it: the module below is TensorBoard's
    own switch for its built-in TensorFlow stub (tensorboard/compat/__init__.py)."""
    import sys
    import types

    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter


def training_step(model: nn.Module, step_fn: StepFn, batch: dict[str, torch.Tensor],
                  optimizer: torch.optim.Optimizer, autocast, grad_clip: float
                  ) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """One optimiser step: forward under `autocast`, backward, gradient clipping, update.
    Returns (loss, metrics, gradient norm before clipping)."""
    with autocast:
        loss, metrics = step_fn(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss, metrics, grad_norm


def train(model: nn.Module, step_fn: StepFn, cfg: StageTrainConfig, data_path: str | Path,
          run_dir: str | Path, *, name: str, device: torch.device, seed: int = 0,
          progress: bool = True, num_workers: int = 0, halt_at_step: int | None = None,
          require: tuple[str, ...] = ()) -> TrainResult:
    """Train `model` for cfg.steps steps, resuming from run_dir/checkpoints/name if present."""
    SummaryWriter = _summary_writer_class()

    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints" / name
    torch.manual_seed(seed)
    model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    step = 0
    if (ckpt := latest_checkpoint(ckpt_dir)) is not None:
        step = load_checkpoint(ckpt, model, optimizer)
        model.to(device)
        print(f"[{name}] resuming from {ckpt} (step {step}/{cfg.steps})")
    dataset = open_clips(data_path, cfg.clip_len, require)
    batches = clip_loader(dataset, cfg.batch_size, seed, start_batch=step, num_workers=num_workers)
    writer = SummaryWriter(str(run_dir / "tensorboard" / name))
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    bar = tqdm(total=cfg.steps, initial=step, desc=name, unit="step", disable=not progress, smoothing=0.1)
    t0, metrics, finished = time.time(), {}, False
    try:
        with StopRequest() as stop:
            while step < cfg.steps:
                if halt_at_step is not None and step >= halt_at_step:
                    save_checkpoint(ckpt_dir, step, model, optimizer)
                    break
                batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
                set_lr(optimizer, lr_at(step, cfg))
                loss, metrics, grad_norm = training_step(model, step_fn, batch, optimizer, autocast, cfg.grad_clip)
                step += 1
                bar.update()
                if step % cfg.log_every == 0 or step == cfg.steps:
                    metrics = {k: float(v) for k, v in metrics.items()}
                    metrics.update(loss=float(loss.detach()), grad_norm=float(grad_norm), lr=lr_at(step - 1, cfg))
                    for k, v in metrics.items():
                        writer.add_scalar(f"{name}/{k}", v, step)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k in _SHOWN})
                if step % cfg.ckpt_every == 0 or step == cfg.steps or stop.requested:
                    save_checkpoint(ckpt_dir, step, model, optimizer)
                if stop.requested and step < cfg.steps:
                    print(f"[{name}] stopped at step {step}; checkpoint saved. Run the same command to resume.")
                    raise KeyboardInterrupt
            finished = step >= cfg.steps
    finally:
        bar.close()
        writer.close()
    return TrainResult(model.eval(), step, finished, time.time() - t0,
                       {k: float(v) for k, v in metrics.items()})
