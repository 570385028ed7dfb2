"""One interactive rollout behind the play page: prompt, step, undo, export.

Kept apart from the web layer so that it can be driven (and tested) from Python alone. A lock makes
the single world safe under the server's thread pool: the page is one user's local tool.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field

import av
import numpy as np
from PIL import Image

from robo_genie.datasets.transforms import center_crop_resize
from robo_genie.eval.consistency import command_sequences, roll_out
from robo_genie.eval.report import save_gif
from robo_genie.play import World

PREVIEW_STEPS = 6        # as the consistency test holds each code (`eval consistency length=6`)


@dataclass
class Prompt:
    label: str           # shown on the page: where the frame came from
    image: np.ndarray    # uint8 [H, W, 3] at the model's resolution


@dataclass
class StepRecord:
    action: int
    ms: float
    command: list[float] | None = None


@dataclass
class PlaySession:
    world: World
    prompts: list[Prompt]
    adapter: object | None = None          # robo_genie.adapter.Adapter: shows each code's command
    frames: list[np.ndarray] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    previews: dict[int, bytes] = field(default_factory=dict)
    prompt: np.ndarray | None = None       # the image the rollout started from (for restart)
    commands: np.ndarray | None = None     # the adapter's command per code from the latest frame
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def uses_maskgit(self) -> bool:
        return self.world.cfg.dynamics.kind == "maskgit"

    @property
    def maskgit_steps(self) -> int | None:
        """The rounds per frame in use (None for the latent model: one pass per frame)."""
        if not self.uses_maskgit:
            return None
        return self.world.maskgit_steps or self.world.cfg.dynamics.maskgit_steps

    def set_maskgit_steps(self, steps: int) -> None:
        if not self.uses_maskgit:
            raise ValueError("this bundle's dynamics model is kind=latent: one pass per frame, no MaskGIT rounds")
        if not 1 <= steps <= 64:
            raise ValueError(f"maskgit_steps={steps}: choose 1..64")
        self.world.maskgit_steps = steps

    def code_commands(self) -> list[list[float]] | None:
        """What the adapter makes of each code from the current frame (None without an adapter)."""
        return None if self.commands is None else self.commands.tolist()

    def _show(self, frame: np.ndarray) -> np.ndarray:
        """`frame` is now the latest: the adapter's commands are worked out for it once."""
        if self.adapter is not None:
            self.commands = self.adapter.commands(frame)
        return frame

    def make_previews(self, prompt: np.ndarray) -> None:
        """A looping GIF per code: the code held for PREVIEW_STEPS steps from `prompt`, rolled out as
        the consistency test rolls out its held sequences."""
        _, sequences, kinds = command_sequences(self.world.num_actions, PREVIEW_STEPS, n_random=0)
        videos = roll_out(self.world, prompt[None], sequences[kinds == 0])        # [A, 1, L+1, H, W, 3]
        self.previews = {a: gif_bytes(list(videos[a, 0]), fps=4) for a in range(len(videos))}

    def reset(self, image: np.ndarray) -> np.ndarray:
        with self.lock:
            self.prompt = center_crop_resize(image, self.world.image_size)
            frame = self.world.reset(self.prompt)
            self.frames, self.steps = [frame], []
            return self._show(frame)

    def restart(self) -> np.ndarray:
        """Back to the current prompt, every step dropped."""
        if self.prompt is None:
            raise ValueError("pick a prompt first")
        return self.reset(self.prompt)

    def step(self, action: int) -> tuple[np.ndarray, StepRecord]:
        with self.lock:
            if not self.frames:
                raise ValueError("pick a prompt first")
            if not 0 <= action < self.world.num_actions:
                raise ValueError(f"action {action} is outside 0..{self.world.num_actions - 1}")
            # the command for the frame the action starts from
            command = None if self.commands is None else self.commands[action].tolist()
            start = time.perf_counter()
            frame = self.world.step(action)
            record = StepRecord(int(action), (time.perf_counter() - start) * 1000, command)
            self.frames.append(frame)
            self.steps.append(record)
            return self._show(frame), record

    def undo(self) -> np.ndarray:
        with self.lock:
            self.world.undo()
            self.frames.pop()
            self.steps.pop()
            return self._show(self.frames[-1])

    def export(self, fmt: str) -> bytes:
        with self.lock:
            if not self.frames:
                raise ValueError("nothing to export: pick a prompt first")
            frames = list(self.frames)
        return gif_bytes(frames, fps=4) if fmt == "gif" else mp4_bytes(frames, fps=4)


def png_bytes(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def gif_bytes(frames: list[np.ndarray], fps: int) -> bytes:
    buf = io.BytesIO()
    save_gif(frames, buf, fps)
    return buf.getvalue()


def mp4_bytes(frames: list[np.ndarray], fps: int, scale: int = 4) -> bytes:
    """H.264 in MP4, upscaled `scale`x with nearest neighbour (players smooth tiny frames into mush)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        h, w = frames[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = w * scale, h * scale, "yuv420p"
        for f in frames:
            big = np.repeat(np.repeat(f, scale, 0), scale, 1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(big, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()
