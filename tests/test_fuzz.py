"""Property-based fuzzing (hypothesis) of what a lab feeds robo_genie: broken video and image files,
corrupt LeRobot parquet and video, odd image shapes, empty episodes, mixed frame rates, and wrong
configs. Every case must end in a clean ingest, a recorded skip, or a one-line error; never a hang,
a traceback or a shard that disagrees with its manifest. Each test prints how its cases ended
(`pytest -s tests/test_fuzz.py`). The draws are derandomised, so CI runs the same cases every time."""

from __future__ import annotations

import io
import shutil
import signal
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from robo_genie.cli import main
from robo_genie.datasets.shards import MANIFEST, FrameShards
from tests.test_ingest import _write_mp4

FIXTURE = Path(__file__).parent / "fixtures" / "lerobot_v30_tiny"
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
CASE_TIMEOUT_S = 30


@contextmanager
def time_limit(seconds: int):
    """A case that runs past this is a hang, and fails."""
    def fail(*_):
        raise TimeoutError(f"a fuzz case ran past {seconds} s")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# -- byte mutations ----------------------------------------------------------------------------
mutations = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 0.99)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(0, 255)), min_size=1,
                                        max_size=40)),
    st.tuples(st.just("garbage"), st.binary(min_size=0, max_size=2000)),
    st.tuples(st.just("empty"), st.none()),
)


def mutate(data: bytes, mutation) -> bytes:
    kind, arg = mutation
    if kind == "truncate":
        return data[:int(len(data) * arg)]
    if kind == "flip":
        out = bytearray(data)
        for where, value in arg:
            out[int(where * len(out))] = value
        return bytes(out)
    return arg if kind == "garbage" else b""


def ingest_outcome(args: list[str], out: Path, names: list[str]) -> str:
    """Run one ingest; check what it left. -> "ingested" | "skipped" | "refused"."""
    try:
        with time_limit(CASE_TIMEOUT_S):
            main(["ingest", *args, f"out={out}", "resolution=32", "progress=false"])
    except SystemExit as e:
        message = str(e.code)
        assert message.startswith("robo-genie ingest: ") and "Traceback" not in message, message
        assert "\n" not in message.strip(), f"not one line: {message}"
        # a refusal names what it refused, and whatever was written before is still valid
        assert any(n in message for n in names) or "no videos" in message or "frames" in message, message
        if (out / MANIFEST).is_file():
            check_shards(out)
        return "refused"
    manifest = check_shards(out)
    return "skipped" if manifest["skipped"] else "ingested"


def check_shards(out: Path) -> dict:
    """Every episode the manifest lists reads back whole, at the promised shape."""
    from robo_genie.datasets.shards import read_manifest
    try:
        manifest = read_manifest(out)
    except Exception as e:          # a manifest with no episodes is refused on read: fine here
        if "lists no episodes" in str(e):
            return {"skipped": [1]}
        raise
    shards = FrameShards(out)
    for i, ep in enumerate(shards.episodes):
        frames = shards.read(i, 0, ep["length"])
        assert frames.dtype == np.uint8 and frames.shape == (ep["length"], 32, 32, 3) and ep["length"] >= 1
    for s in manifest["skipped"]:
        assert s["name"] and s["reason"]
    return manifest


def _report(name: str, outcomes: Counter) -> None:
    print(f"\nfuzz {name}: {sum(outcomes.values())} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))


# -- the sources -------------------------------------------------------------------------------
def test_fuzz_video_and_image_folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz_video")
    good = base / "good.mp4"
    _write_mp4(good, n=12, fps=10, w=48, h=40)
    png = io.BytesIO()
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(png, format="PNG")
    jpg = io.BytesIO()
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(jpg, format="JPEG")
    originals = {"mp4": good.read_bytes(), "png": png.getvalue(), "jpg": jpg.getvalue()}
    outcomes, counter = Counter(), {"n": 0}

    @settings(max_examples=60, **SETTINGS)
    @given(target=st.sampled_from(["mp4", "png", "jpg"]), mutation=mutations, on_error=st.sampled_from(["fail", "skip"]))
    def case(target, mutation, on_error):
        counter["n"] += 1
        root = base / f"case_{counter['n']}"
        videos = root / "videos"
        videos.mkdir(parents=True)
        shutil.copy(good, videos / "a_good.mp4")
        if target == "mp4":
            bad, name = videos / "b_bad.mp4", "b_bad.mp4"
        else:
            (videos / "b_frames").mkdir()
            for t in range(3):
                (videos / "b_frames" / f"{t:03d}.{target}").write_bytes(originals[target])
            bad, name = videos / "b_frames" / f"001.{target}", "b_frames"
        bad.write_bytes(mutate(originals[target], mutation))
        outcome = ingest_outcome(["source=video_folder", f"path={videos}", f"on_error={on_error}"],
                                 root / "out", [name, "a_good.mp4"])
        if outcome != "refused":
            listed = [e["name"] for e in FrameShards(root / "out").episodes]
            assert "a_good.mp4" in listed and listed.count("a_good.mp4") == 1
        outcomes[f"{target} {outcome}"] += 1
        shutil.rmtree(root)

    case()
    _report("video/image folders", outcomes)
    assert sum(outcomes.values()) == counter["n"] > 0


def test_fuzz_odd_shapes_empty_episodes_and_mixed_rates(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz_shapes")
    outcomes, counter = Counter(), {"n": 0}
    image = st.tuples(st.integers(1, 70), st.integers(1, 70), st.sampled_from(["RGB", "L", "RGBA", "I;16", "P"]))

    @settings(max_examples=40, **SETTINGS)
    @given(frames=st.lists(image, min_size=0, max_size=4), fps=st.lists(st.sampled_from([1, 3, 10, 30]), min_size=1,
                                                                          max_size=3),
           resample=st.sampled_from([None, 2.0, 5.0]))
    def case(frames, fps, resample):
        counter["n"] += 1
        root = base / f"case_{counter['n']}"
        videos = root / "videos"
        (videos / "images").mkdir(parents=True)          # one image episode: odd sizes and modes, maybe empty
        for t, (w, h, mode) in enumerate(frames):
            Image.new(mode, (w, h), color=t * 40 if mode != "RGBA" else (t * 40, 0, 0, 128)).save(
                videos / "images" / f"{t:03d}.png")
        for i, rate in enumerate(fps):                   # videos at mixed frame rates
            _write_mp4(videos / f"v{i}.mp4", n=6, fps=rate, w=32 + 16 * i, h=24)
        args = ["source=video_folder", f"path={videos}", "on_error=skip"] + ([f"fps={resample}"] if resample else [])
        outcome = ingest_outcome(args, root / "out", ["images"] + [f"v{i}.mp4" for i in range(len(fps))])
        if outcome != "refused":
            listed = {e["name"] for e in FrameShards(root / "out").episodes}
            assert {f"v{i}.mp4" for i in range(len(fps))} <= listed      # the videos are never lost
        outcomes[outcome] += 1
        shutil.rmtree(root)

    case()
    _report("shapes, empty episodes, frame rates", outcomes)
    assert sum(outcomes.values()) == counter["n"] > 0


def test_fuzz_lerobot_parquet_and_video(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz_lerobot")
    files = sorted(p.relative_to(FIXTURE) for p in FIXTURE.rglob("*") if p.suffix in (".parquet", ".mp4", ".json"))
    outcomes, counter = Counter(), {"n": 0}

    @settings(max_examples=40, **SETTINGS)
    @given(target=st.sampled_from(files), mutation=mutations, on_error=st.sampled_from(["fail", "skip"]))
    def case(target, mutation, on_error):
        counter["n"] += 1
        root = base / f"case_{counter['n']}"
        shutil.copytree(FIXTURE, root / "data")
        file = root / "data" / target
        file.write_bytes(mutate(file.read_bytes(), mutation))
        outcome = ingest_outcome(["source=lerobot", f"path={root / 'data'}", f"on_error={on_error}"], root / "out",
                                 [target.name, str(target), "info.json", "episode"])
        outcomes[f"{target.suffix} {outcome}"] += 1
        shutil.rmtree(root)

    case()
    _report("LeRobot", outcomes)
    assert sum(outcomes.values()) == counter["n"] > 0


# -- configs -------------------------------------------------------------------------------------
KEYS = ["steps", "tokenizer.lr", "lam.batch_size", "dynamics.clip_len", "model.image_size", "model.lam.num_actions",
        "model.tokenizer.patch", "model.dynamics.kind", "stage", "device", "init_from", "seed", "nonsense_key",
        "tokenizer.on_fault", "model.tokenizer.encoder.heads"]
values = st.one_of(st.integers(-5, 10**6).map(str), st.floats(allow_nan=True).map(str),
                   st.text(alphabet="abcxyz_/.-[]{},:'\" ", max_size=12), st.sampled_from(["", "null", "[]", "{}"]))


def test_fuzz_train_configs(tmp_path):
    outcomes = Counter()

    @settings(max_examples=80, **SETTINGS)
    @given(overrides=st.lists(st.tuples(st.sampled_from(KEYS), values), min_size=1, max_size=4))
    def case(overrides):
        args = ["train", f"data.path={tmp_path / 'no_shards_here'}", f"out={tmp_path / 'run'}"]
        args += [f"{k}={v}" for k, v in overrides]
        with pytest.raises(SystemExit) as e, time_limit(CASE_TIMEOUT_S):
            main(args)
        message = str(e.value.code)
        assert message.startswith("robo-genie"), message
        outcomes["bad setting" if "bad setting" in message else "unknown command" if "unknown command" in message
                 else "refused at run"] += 1

    case()
    _report("train configs", outcomes)


def test_fuzz_model_sizes():
    """Impossible model sizes are refused with a message naming the setting, never a torch traceback."""
    from omegaconf import OmegaConf

    from robo_genie.config import ModelConfig
    from robo_genie.models import build_part
    from tests.conftest import MICRO
    outcomes = Counter()

    @settings(max_examples=60, **SETTINGS)
    @given(part=st.sampled_from(["tokenizer", "lam", "dynamics"]), image_size=st.integers(0, 70),
           patch=st.integers(0, 20), dim=st.integers(0, 70), heads=st.integers(0, 9), depth=st.integers(0, 3),
           codes=st.integers(0, 70))
    def case(part, image_size, patch, dim, heads, depth, codes):
        from robo_genie.cli import compose
        job = compose("train", MICRO + ["out=x", "data.path=x"])
        cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), job.model)
        cfg.image_size = image_size
        for p in ("tokenizer", "lam"):
            cfg[p].patch = patch
        cfg.tokenizer.codebook_size, cfg.lam.num_actions = codes, max(codes // 8, 0)
        for net in (cfg.tokenizer.encoder, cfg.tokenizer.decoder, cfg.lam.encoder, cfg.lam.decoder, cfg.dynamics.net):
            net.dim, net.heads, net.depth = dim, heads, depth
        try:
            build_part(part, cfg)
            outcomes["built"] += 1
        except ValueError as e:
            assert str(e) and "\n" not in str(e)
            outcomes["refused"] += 1

    case()
    _report("model sizes", outcomes)
