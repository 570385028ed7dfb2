"""Play a world model: prompt it with one image, then step it with latent actions.

    world = World.from_bundle("run/bundle")
    world.reset(image)          # any HxWx3 uint8 image (centre-cropped, resized)
    frame = world.step(3)       # -> uint8 [H, W, 3], the model's next frame under action 3

The prompt is tokenised; each step appends the action, lets the dynamics model predict the next
frame's tokens (one pass for `kind=latent`, MaskGIT rounds for `kind=maskgit`), and decodes them
with the tokenizer. Each frame attends to the most recent frames, as many as the dynamics model saw
in training; the dynamics model and the decoder keep those frames' temporal keys/values in rolling
caches (models/st_transformer.py), so a step costs the same however long the rollout has run.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from robo_genie import bundle as bundle_io
from robo_genie.datasets.transforms import center_crop_resize
from robo_genie.models.lam import infer_actions_windowed
from robo_genie.models.st_transformer import TemporalCache
from robo_genie.training.loop import resolve_device


def to_uint8(video: torch.Tensor) -> np.ndarray:
    return (video.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


class World:
    def __init__(self, model_cfg, parts: dict, window: int, lam_window: int, device: torch.device,
                 seed: int = 0):
        """`window`, `lam_window`: the clip lengths the dynamics model and the LAM were trained on."""
        self.cfg = model_cfg
        self.tokenizer, self.lam, self.dynamics = parts["tokenizer"], parts["lam"], parts["dynamics"]
        self.window, self.lam_window, self.device = window, lam_window, device
        self.num_actions = model_cfg.lam.num_actions
        # a dynamics model trained on the shards' recorded action vectors, not on LAM codes
        self.recorded = model_cfg.dynamics.actions == "recorded"
        self.image_size = model_cfg.image_size
        # The LAM's code frequencies on the dynamics model's training data (for frequency-matched
        # random actions in eval); None for a bundle trained before they were counted.
        counts = getattr(self.dynamics, "action_counts", None)
        self.action_frequencies = (None if counts is None or counts.sum() == 0
                                   else (counts.float() / counts.sum()).tolist())
        self.maskgit_steps: int | None = None
        self.temperature: float | None = None
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self._tokens: torch.Tensor | None = None     # [B, t, S], the whole rollout (for undo)
        self._actions: torch.Tensor | None = None    # [B, t-1]
        self._cache: TemporalCache | None = None     # the dynamics model's
        self._decode_cache: TemporalCache | None = None
        self._decoded, self._latest_frame = 0, None  # frames decoded so far, and the last of them
        self.bundle_path: Path | None = None         # where it was loaded from (adapters check it)

    @classmethod
    def from_bundle(cls, path: str | Path, device: str = "auto", seed: int = 0) -> World:
        device = resolve_device(device)
        cfg, parts = bundle_io.load_bundle(path, device)
        meta = bundle_io.read_meta(path)
        world = cls(cfg, parts, int(meta["parts"]["dynamics"]["clip_len"]), int(meta["parts"]["lam"]["clip_len"]),
                    device, seed)
        world.bundle_path = Path(path)
        return world

    # -- batched core (B prompts at once; used by eval) -------------------------------------------
    @torch.no_grad()
    def reset_batch(self, images: torch.Tensor) -> None:
        """images: [B, H, W, 3] float in [0, 1] at the model's resolution."""
        self._tokens = self.tokenizer.encode(images[:, None].to(self.device)).flatten(2)
        shape = (len(images), 0, self.cfg.dynamics.action_dim) if self.recorded else (len(images), 0)
        self._actions = torch.zeros(shape, dtype=torch.float if self.recorded else torch.long, device=self.device)
        self._restart()

    def _restart(self) -> None:
        """The caches from the rollout so far (after a reset or an undo): one full pass; the decoder
        catches up when a frame is next asked for."""
        window = self.dynamics.attention_window(self.window)
        self._cache = self.dynamics.begin(self._tokens, self._actions, window)
        self._decode_cache, self._decoded = TemporalCache(self.window), 0

    @torch.no_grad()
    def step_batch(self, actions: torch.Tensor, decode: bool = True) -> torch.Tensor | None:
        """actions: [B] ints (LAM codes), or [B, action_dim] recorded action vectors -> next frames
        [B, H, W, 3] float in [0, 1] (None with decode=False: a planner reads `latest_codes()`)."""
        if self._tokens is None:
            raise RuntimeError("call reset() with a prompt image before step()")
        action = actions.to(self.device, self._actions.dtype)
        nxt = self.dynamics.advance(self._cache, self._tokens[:, -1], action, self.maskgit_steps, self.temperature,
                                    self.generator)
        self._tokens = torch.cat([self._tokens, nxt[:, None]], 1)
        self._actions = torch.cat([self._actions, action[:, None]], 1)
        return self.decode_latest() if decode else None

    @torch.no_grad()
    def latest_codes(self) -> torch.Tensor:
        """The tokenizer code vectors of every rollout's latest frame, [B, S, code_dim]."""
        return self.tokenizer.quantizer.lookup(self._tokens[:, -1])

    @torch.no_grad()
    def decode_latest(self) -> torch.Tensor:
        """The latest frame of every rollout, [B, H, W, 3] in [0, 1], decoded with its causal
        context (the tokenizer's decoder is causal in time, as in training): the frames not yet
        decoded go through the decoder's cache, all at once after a reset or an undo."""
        if self._decoded == 0:
            codes = self.tokenizer.quantizer.lookup(self._tokens)
            self._latest_frame = self.tokenizer.decode_codes(codes, self.window, self._decode_cache)[:, -1].clamp(0, 1)
        else:
            for t in range(self._decoded, self._tokens.shape[1]):
                self._latest_frame = self.tokenizer.decode_step(self._tokens[:, t], self._decode_cache)
        self._decoded = self._tokens.shape[1]
        return self._latest_frame

    def snapshot(self) -> tuple:
        """The rollout as it stands, to return to with `restore` (cheap: the history and the caches'
        tensors are never written in place, only replaced)."""
        return (self._tokens, self._actions, copy.copy(self._cache), copy.copy(self._decode_cache), self._decoded,
                self._latest_frame)

    def restore(self, state: tuple) -> None:
        self._tokens, self._actions, cache, decode_cache, self._decoded, self._latest_frame = state
        self._cache, self._decode_cache = copy.copy(cache), copy.copy(decode_cache)

    # -- single-prompt convenience API ------------------------------------------------------------
    def reset(self, image: np.ndarray) -> np.ndarray:
        """Start from one image (uint8 HxWx3, any size). Returns the prompt as the model sees it."""
        img = center_crop_resize(image, self.image_size)
        self.reset_batch(torch.from_numpy(img).float()[None] / 255)
        return to_uint8(self.decode_latest()[0])

    def step(self, action: int) -> np.ndarray:
        if self.recorded:
            raise ValueError("this bundle's dynamics model takes recorded action vectors, not latent codes: "
                             "step it with World.step_batch(torch.tensor([[...]]))")
        if not 0 <= int(action) < self.num_actions:
            raise ValueError(f"action {action} is outside [0, {self.num_actions}) for this model")
        return to_uint8(self.step_batch(torch.tensor([int(action)]))[0])

    def undo(self) -> None:
        """Drop the latest frame and the action that made it (the prompt always stays)."""
        if self._tokens is None or self._tokens.shape[1] < 2:
            raise ValueError("nothing to undo: the world is at its prompt")
        self._tokens, self._actions = self._tokens[:, :-1], self._actions[:, :-1]
        self._restart()

    def infer_actions(self, video: np.ndarray) -> list[int]:
        """The LAM's actions for a clip (uint8 [T, H, W, 3] at the model's resolution)."""
        v = torch.from_numpy(video).float().div(255).to(self.device)
        return infer_actions_windowed(self.lam, v, self.lam_window).tolist()

    def regenerate(self, video: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """Re-create a clip from its first frame and its LAM-inferred actions."""
        actions = self.infer_actions(video)
        frames = [self.reset(video[0])]
        frames += [self.step(a) for a in actions]
        return np.stack(frames), actions
