"""The play page: a FastAPI app over one PlaySession, served by uvicorn on 127.0.0.1 by default.

    robo-genie play ui=true bundle=B [prompts=HELD_OUT_SHARDS] [adapter=A] [port=8000] [host=127.0.0.1]

The page (page.html) is static; every action is a small JSON call that returns the new frame as a
PNG data URL, so a frame shows as soon as the world model has made it.
"""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import numpy as np
from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel

from robo_genie.play_ui.session import PlaySession, Prompt, StepRecord, png_bytes

PAGE = Path(__file__).with_name("page.html")
MAX_UPLOAD_BYTES = 20 << 20                 # an uploaded prompt picture; the model sees 64 px of it
MAX_PIXELS = 40_000_000                     # decoded size: refuses decompression bombs
IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"}


class StepRequest(BaseModel):
    action: int


class SettingsRequest(BaseModel):
    maskgit_steps: int


def data_url(frame: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(frame)).decode()


def create_app(session: PlaySession) -> FastAPI:
    app = FastAPI(title="robo_genie play")
    world = session.world

    def state(frame: np.ndarray, record: StepRecord | None = None) -> dict:
        return {"frame": data_url(frame), "step": len(session.steps),
                "actions": [s.action for s in session.steps],
                "ms": None if record is None else round(record.ms, 1),
                "command": None if record is None else record.command,
                "code_commands": session.code_commands()}

    # Whatever the session refuses (no prompt yet, nothing to undo, a bad action or setting) is a
    # ValueError; one handler makes each a 400 with its message.
    @app.exception_handler(ValueError)
    def refused(_request, e: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=400)

    def prompt(index: int) -> Prompt:
        if not 0 <= index < len(session.prompts):
            raise HTTPException(404, f"no prompt {index}")
        return session.prompts[index]

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/api/info")
    def info() -> dict:
        return {"bundle": str(world.bundle_path), "num_actions": world.num_actions,
                "image_size": world.image_size, "dynamics_kind": world.cfg.dynamics.kind,
                "maskgit_steps": session.maskgit_steps,
                "prompts": [p.label for p in session.prompts],
                "previews": sorted(session.previews),
                "command_names": None if session.adapter is None else list(session.adapter.names)}

    @app.get("/api/prompt/{index}.png")
    def prompt_image(index: int) -> Response:
        return Response(png_bytes(prompt(index).image), media_type="image/png")

    @app.get("/api/preview/{code}.gif")
    def preview(code: int) -> Response:
        if code not in session.previews:
            raise HTTPException(404, f"no preview for code {code}")
        return Response(session.previews[code], media_type="image/gif")

    @app.post("/api/reset/{index}")
    def reset_to_prompt(index: int) -> dict:
        return state(session.reset(prompt(index).image))

    @app.post("/api/upload")
    def upload(file: UploadFile = File(...)) -> dict:
        data = file.file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"{file.filename}: over {MAX_UPLOAD_BYTES >> 20} MiB; upload a smaller picture")
        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.format not in IMAGE_FORMATS:
                    raise ValueError(f"a {img.format} file")
                if img.width * img.height > MAX_PIXELS:
                    raise ValueError(f"{img.width}x{img.height} pixels, over {MAX_PIXELS // 10**6} megapixels")
                image = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"{file.filename}: not an image this page takes ({e}); upload a PNG, JPEG, "
                             f"WebP or BMP picture") from e
        return state(session.reset(image))

    @app.post("/api/step")
    def step(req: StepRequest) -> dict:
        return state(*session.step(req.action))

    @app.post("/api/restart")
    def restart() -> dict:
        return state(session.restart())

    @app.post("/api/undo")
    def undo() -> dict:
        return state(session.undo())

    @app.post("/api/settings")
    def settings(req: SettingsRequest) -> dict:
        session.set_maskgit_steps(req.maskgit_steps)
        return {"maskgit_steps": session.maskgit_steps}

    @app.get("/api/rollout.{fmt}")
    def rollout(fmt: str) -> Response:
        if fmt not in ("gif", "mp4"):
            raise HTTPException(404, "rollouts download as .gif or .mp4")
        return Response(session.export(fmt), media_type=f"{'image' if fmt == 'gif' else 'video'}/{fmt}",
                        headers={"Content-Disposition": f'attachment; filename="rollout.{fmt}"'})

    return app


def held_out_prompts(path: str, n: int, size: int) -> list[Prompt]:
    from robo_genie.eval.consistency import load_prompts
    return [Prompt(f"{Path(path).name} #{i}", img) for i, img in enumerate(load_prompts(path, n, size))]


def demo_prompts(n: int, size: int) -> list[Prompt]:
    """First frames of MuJoCo tabletop episodes that `sim generate` never records (seeds >= 10^6)."""
    from robo_genie.sim.tabletop import TabletopSim
    try:
        sim = TabletopSim(resolution=size)
    except Exception as e:      # no offscreen OpenGL here: the page still takes uploads and shards
        print(f"robo-genie play: no MuJoCo demo frames ({e}); set MUJOCO_GL=egl or osmesa", file=sys.stderr)
        return []
    return [Prompt(f"demo scene {i}", sim.reset(1_000_000 + i)) for i in range(n)]


def build_session(cfg) -> PlaySession:
    from robo_genie.play import World

    world = World.from_bundle(cfg.bundle, cfg.device, cfg.seed)
    world.maskgit_steps, world.temperature = cfg.maskgit_steps, cfg.temperature
    if world.recorded:
        raise ValueError(f"{cfg.bundle}: this dynamics model takes recorded action vectors, not latent "
                         f"codes; the play page steps latent codes. Play a bundle trained on LAM codes")
    prompts = held_out_prompts(cfg.prompts, cfg.n_prompts, world.image_size) if cfg.prompts else []
    prompts += demo_prompts(cfg.n_prompts, world.image_size)
    adapter = None
    if cfg.adapter:
        from robo_genie.adapter import Adapter
        adapter = Adapter.load(cfg.adapter, world=world)
    session = PlaySession(world, prompts, adapter)
    if prompts:
        session.make_previews(prompts[0].image)
    return session


def serve(cfg) -> None:
    import uvicorn

    session = build_session(cfg)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"robo-genie play: serving on {cfg.host}, reachable from other machines", file=sys.stderr)
    print(f"robo-genie play: open http://{cfg.host}:{cfg.port}/ (Ctrl-C stops)")
    uvicorn.run(create_app(session), host=cfg.host, port=cfg.port, log_level="warning")
