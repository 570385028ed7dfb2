"""One training loop for all three parts.

A part differs only in how a batch of clips becomes a loss (`StepFn` below): the tokenizer and
the LAM read pixels; the dynamics model reads the frozen tokenizer's tokens and the frozen LAM's
action codes. Everything else (optimiser, schedule, bf16 autocast on CUDA, clipping, logging,
checkpoints that resume bit-identically, interruption) is shared.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from robo_genie import distributed
from robo_genie.config import StageTrainConfig
from robo_genie.datasets.loader import clip_loader, open_clips
from robo_genie.models.lam import infer_actions_windowed
from robo_genie.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from robo_genie.training.optim import lr_at, make_optimizer, set_lr
from robo_genie.training.deferred_init import is_deferred, materialise
from robo_genie.training.parallelize import parallelize
from robo_genie.progress import progress_bar

StepFn = Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict]]   # (model, batch)
_SHOWN = {"loss", "psnr", "mse", "ce", "masked_acc", "codes_used", "perplexity"}   # on the progress bar


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name}: torch sees no CUDA device here (no GPU visible, or a CPU build of torch "
                         f"{torch.__version__}); use device=auto or device=cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device={name}: not a device torch knows ({e}); use auto, cpu, cuda or cuda:N") from None


def frames_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """uint8 frames of a frame-shard batch -> float video in [0, 1]."""
    if "frames" not in batch:
        raise ValueError("this stage trains on pixels: give it frame shards (data.path), not token shards")
    return batch["frames"].float().div_(255)


def pixel_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    return model(frames_of(batch))


def dynamics_inputs_fn(tokenizer: nn.Module, lam: nn.Module, lam_window: int, recorded: bool = False):
    """batch -> (tokens [B, T, S], actions [B, T-1] or [B, T-1, action_dim]). Token shards carry the
    tokens and latent actions (pre-tokenised with this run's tokenizer and LAM); from frame shards
    they come from the frozen tokenizer and LAM on every batch. Either way no gradient reaches them;
    the LAM reads windows of the clip length it was trained on. With `recorded`, the shards' own
    action vectors take the place of the LAM's codes."""
    @torch.no_grad()
    def inputs(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if "tokens" in batch:
            return batch["tokens"].long().flatten(2), batch["latent_actions"][:, :-1].long()
        frames = frames_of(batch)
        tokens = tokenizer.encode(frames).flatten(2)
        if recorded:      # actions[t] is the one taken after frame t
            return tokens, batch["actions"][:, :-1].float()
        return tokens, infer_actions_windowed(lam, frames, lam_window)
    return inputs


def dynamics_step_fn(tokenizer: nn.Module, lam: nn.Module, lam_window: int, recorded: bool = False) -> StepFn:
    inputs = dynamics_inputs_fn(tokenizer, lam, lam_window, recorded)

    def step(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        return model(*inputs(batch))
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


class TrainingFault(ValueError):
    """A NaN/Inf loss or gradient, or a collapsed codebook, under on_fault=stop (or past its retries)."""


def training_step(model: nn.Module, step_fn: StepFn, batches: list[dict[str, torch.Tensor]],
                  optimizer: torch.optim.Optimizer, autocast, grad_clip: float
                  ) -> tuple[torch.Tensor, dict, torch.Tensor, str | None]:
    """One optimiser step over one or more micro-batches (gradient accumulation): forward under
    `autocast` and backward for each, gradient clipping, update. Returns (mean loss, the last
    micro-batch's metrics, gradient norm before clipping, fault). A loss or gradient that is not
    finite is a fault: then nothing changes, neither the weights nor the buffers (the EMA codebooks
    and counts that the forward pass updates), and `fault` says what was not finite."""
    buffers = [b.detach().clone() for b in model.buffers()]
    optimizer.zero_grad(set_to_none=True)
    losses = []
    for i, batch in enumerate(batches):
        if hasattr(model, "set_requires_gradient_sync"):    # FSDP2: reduce-scatter on the last only
            model.set_requires_gradient_sync(i == len(batches) - 1)
        with autocast:
            loss, metrics = step_fn(model, batch)
        # also for a NaN loss: under FSDP every rank must take part in the backward
        (loss / len(batches)).backward()
        losses.append(loss.detach())
    loss = torch.stack(losses).mean()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if hasattr(grad_norm, "full_tensor"):        # a DTensor under FSDP2
        grad_norm = grad_norm.full_tensor()
    fault = None
    if not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):     # one host sync per step
        fault = (f"the loss is {float(loss)}" if not torch.isfinite(loss)
                 else f"the gradient norm is {float(grad_norm)}")
    if distributed.any_rank(fault is not None):  # every rank skips together
        fault = fault or "another rank's loss or gradient is not finite"
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)
        return loss, metrics, grad_norm, fault
    optimizer.step()
    return loss, metrics, grad_norm, None


def collapsed(metrics: dict, min_codes_used: float) -> str | None:
    """A codebook (tokenizer, LAM) using under `min_codes_used` of its codes in this batch."""
    used = metrics.get("codes_used")
    if min_codes_used > 0 and used is not None and float(used) < min_codes_used:
        return f"codebook collapse: {float(used):.1%} of the codes in use (threshold {min_codes_used:.1%})"
    return None


FAULT_HANDLING = ("skip", "rewind", "stop")
MAX_FAULTS = 10          # more than this many faults in one run stops it, whatever on_fault says


def _handle_fault(name: str, cfg: StageTrainConfig, fault: str, faults: int, step: int, ckpt_dir: Path,
                  writer) -> Path | None:
    """Log fault number `faults` and act on it as cfg.on_fault says: raise TrainingFault (stop, too
    many faults, or nothing to rewind to), return the checkpoint to go back to (rewind), or None
    (skip: the batch is already dropped)."""
    writer.add_text(f"{name}/faults", f"step {step}: {fault}", step)
    where = latest_checkpoint(ckpt_dir)
    if cfg.on_fault == "stop" or faults > MAX_FAULTS or (cfg.on_fault == "rewind" and where is None):
        raise TrainingFault(
            f"[{name}] step {step}: {fault} (fault {faults}; {name}.on_fault={cfg.on_fault}). "
            f"The last checkpoint is {'intact: ' + str(where) if where else 'not written yet'}. "
            f"Lower {name}.lr, or set {name}.on_fault=skip or rewind")
    if cfg.on_fault == "rewind":
        print(f"[{name}] {fault}; back to {where}", file=sys.stderr)
        return where
    print(f"[{name}] step {step}: {fault}; batch skipped", file=sys.stderr)
    return None


class _NoWriter:
    """TensorBoard on rank 0 only: the other ranks log nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _log_picture(writer, tag: str, picture: Callable, model: nn.Module, batch: dict, step: int) -> None:
    model.eval()                 # eval mode: no EMA codebook update from drawing a picture
    try:
        with torch.no_grad():
            writer.add_image(tag, picture(model, batch), step, dataformats="HWC")
    finally:
        model.train()


def train(model: nn.Module, step_fn: StepFn, cfg: StageTrainConfig, data_path: str | Path,
          run_dir: str | Path, *, name: str, device: torch.device, seed: int = 0,
          progress: bool = True, num_workers: int = 0, halt_at_step: int | None = None,
          require: tuple[str, ...] = (), picture: Callable | None = None) -> TrainResult:
    """Train `model` for cfg.steps steps, resuming from run_dir/checkpoints/name if present.
    `picture(model, batch)` -> uint8 [H, W, 3] goes to TensorBoard at every checkpoint."""
    if cfg.on_fault not in FAULT_HANDLING:
        raise ValueError(f"{name}.on_fault={cfg.on_fault!r}: choose {', '.join(FAULT_HANDLING)}")
    if cfg.grad_accum_steps < 1:
        raise ValueError(f"{name}.grad_accum_steps={cfg.grad_accum_steps}: must be at least 1")
    accum = cfg.grad_accum_steps
    SummaryWriter = _summary_writer_class()

    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints" / name
    torch.manual_seed(seed)
    deferred = is_deferred(model)                      # no storage yet: it gets its shards' only
    model = model.train() if deferred else model.to(device).train()
    mesh = distributed.init_from_env(device)           # None in one process
    model = parallelize(model, mesh, device, cfg.activation_checkpointing, cfg.compile)
    if deferred:
        materialise(model, device)
        if distributed.is_main():
            print(f"[{name}] built without weights, sharded over {distributed.world_size()} processes, "
                  f"then initialised shard by shard")
    rank, world = distributed.rank(), distributed.world_size()
    main = distributed.is_main()
    if mesh is not None:
        picture = None         # drawing calls the model outside forward(), which FSDP does not unshard
    optimizer = make_optimizer(model, cfg)
    step = 0
    if (ckpt := latest_checkpoint(ckpt_dir)) is not None:
        step = load_checkpoint(ckpt, model, optimizer)
        model.to(device)
        if main:
            print(f"[{name}] resuming from {ckpt} (step {step}/{cfg.steps})")
    dataset = open_clips(data_path, cfg.clip_len, require)

    def batches_from(step: int):      # every optimiser step reads `accum` micro-batches
        return clip_loader(dataset, cfg.batch_size, seed, start_batch=step * accum, num_workers=num_workers,
                           rank=rank, world=world)
    batches = batches_from(step)
    writer = SummaryWriter(str(run_dir / "tensorboard" / name)) if main else _NoWriter()
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    bar = progress_bar(total=cfg.steps, initial=step, desc=name, unit="step", bar=progress, quiet=not main)
    t0, metrics, finished, faults = time.time(), {}, False, 0
    try:
        with StopRequest() as stop:
            while step < cfg.steps:
                if halt_at_step is not None and step >= halt_at_step:
                    save_checkpoint(ckpt_dir, step, model, optimizer)
                    break
                micro = [{k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
                         for _ in range(accum)]
                batch = micro[-1]
                set_lr(optimizer, lr_at(step, cfg))
                loss, metrics, grad_norm, fault = training_step(model, step_fn, micro, optimizer, autocast,
                                                                cfg.grad_clip)
                step += 1
                bar.update()
                # A collapse is judged at log steps (one batch's code use is noisy); under skip it is
                # only reported, as there is no bad batch to drop.
                collapse = collapsed(metrics, cfg.min_codes_used) if step % cfg.log_every == 0 else None
                if fault is not None or (collapse is not None and cfg.on_fault != "skip"):
                    faults += 1
                    where = _handle_fault(name, cfg, fault or collapse, faults, step, ckpt_dir, writer)
                    if where is not None:
                        step = load_checkpoint(where, model, optimizer)
                        model.to(device)
                        batches = batches_from(step)
                        bar.update(step - bar.n)
                        continue
                elif collapse is not None:
                    writer.add_text(f"{name}/faults", f"step {step}: {collapse}", step)
                    print(f"[{name}] step {step}: {collapse} (warning; {name}.on_fault=rewind or stop acts on it)",
                          file=sys.stderr)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    # the global batch's figures: each rank's, averaged (equal shares of the batch)
                    metrics = {k: distributed.mean(float(v)) for k, v in metrics.items()}
                    metrics.update(loss=distributed.mean(float(loss)), grad_norm=float(grad_norm),
                                   lr=lr_at(step - 1, cfg))
                    for k, v in metrics.items():
                        writer.add_scalar(f"{name}/{k}", v, step)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k in _SHOWN})
                stopping = distributed.any_rank(stop.requested)   # a signal to one rank stops them all
                if step % cfg.ckpt_every == 0 or step == cfg.steps or stopping:
                    save_checkpoint(ckpt_dir, step, model, optimizer)
                    if picture is not None:
                        _log_picture(writer, f"{name}/samples", picture, model, batch, step)
                if stopping and step < cfg.steps:
                    print(f"[{name}] stopped at step {step}; checkpoint saved. Run the same command to resume.")
                    raise KeyboardInterrupt
            finished = step >= cfg.steps
            distributed.check_replicated(model)            # codebooks and counts agree across ranks
    finally:
        bar.close()
        writer.close()
    return TrainResult(model.eval(), step, finished, time.time() - t0,
                       {k: float(v) for k, v in metrics.items()})
