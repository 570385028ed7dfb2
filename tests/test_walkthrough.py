"""The README's walkthrough (a lab's first hour), run command by command as written, at a tiny size:
each command gets the overrides that shrink it (32 px frames, a few steps), nothing else changes.
The play page is started as its own process and asked for its state, then stopped."""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from robo_genie.cli import main
from tests.conftest import MICRO, MICRO_TRAIN
from tests.test_ingest import _write_mp4

README = Path(__file__).parents[1] / "README.md"
FIXTURE = Path(__file__).parent / "fixtures" / "lerobot_v30_tiny"


def walkthrough_commands() -> list[list[str]]:
    text = README.read_text()
    block = re.search(r"<!-- walkthrough -->\n```bash\n(.*?)```\n<!-- /walkthrough -->", text, re.S)
    assert block, "README.md has no walkthrough block"
    return [shlex.split(line) for line in block.group(1).splitlines() if line.startswith("robo-genie ")]


def shrink(args: list[str]) -> list[str]:
    """The README's command with the test's tiny settings in place of (or beside) its own."""
    command = args[1:3] if args[1] in ("eval", "adapter") else args[1:2]
    extra = {"ingest": ["resolution=32"],
             "train": MICRO + MICRO_TRAIN + ["steps=3", "progress=false"],
             "eval": ["n_prompts=2", "length=2", "n_random=1", "n_permutations=10", "n_clips=2", "ts=[1,2]"],
             "adapter": ["fractions=[0.5,1.0]"] if command[-1] == "eval" else [],
             "play": [], "info": []}[command[0]]
    keys = {a.split("=")[0] for a in extra}
    return [a for a in args[1:] if a.split("=")[0] not in keys] + extra


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_ask(args: list[str]) -> dict:
    import json
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "robo_genie.cli", *args, f"port={port}", "n_prompts=2"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=2) as r:
                    return json.loads(r.read())
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "the play page did not come up"
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_readme_walkthrough_runs_as_written(tmp_path, monkeypatch):
    commands = walkthrough_commands()
    assert [c[1] for c in commands] == ["ingest", "train", "eval", "play", "ingest", "ingest", "adapter", "adapter",
                                        "train", "info"]
    monkeypatch.chdir(tmp_path)
    Path("my_videos").mkdir()
    for i in range(4):                                   # a lab's own videos: 4 short clips
        _write_mp4(Path("my_videos") / f"take_{i}.mp4", n=12, fps=10)
    shutil.copytree(FIXTURE, "my_teleop_lerobot")        # and two teleop datasets with logged actions
    shutil.copytree(FIXTURE, "my_teleop_heldout")
    for args in commands:
        shrunk = shrink(args)
        if shrunk[0] == "play":
            info = serve_and_ask(shrunk)
            assert info["num_actions"] == 4 and info["prompts"]
            continue
        main(shrunk)
    assert Path("runs/mine/consistency/report.html").is_file()
    assert Path("runs/mine/adapter_eval/adapter_eval.json").is_file()
    assert Path("runs/ft/bundle/meta.json").is_file()
    import json
    evaluations = json.loads(Path("runs/mine/bundle/evaluations.json").read_text())
    assert {"consistency", "adapter"} <= evaluations.keys()
    assert np.isfinite(evaluations["adapter"]["direction_cosine"])
