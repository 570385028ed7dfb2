"""The play page: its session logic in Python, then the page itself in a real headless browser
(Debian's chromium + chromium-driver, driven by Selenium). CI installs the browser and sets
ROBO_GENIE_REQUIRE_BROWSER, so there the browser test cannot be skipped."""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from robo_genie.cli import compose
from robo_genie.play_ui.app import build_session, create_app, data_url
from robo_genie.play_ui.session import PREVIEW_STEPS


def gif_frames(data: bytes, fps: int = 4) -> int:
    """Frames shown by a GIF written at `fps` (Pillow merges identical neighbours into one longer frame)."""
    gif = Image.open(io.BytesIO(data))
    total = 0
    for i in range(gif.n_frames):
        gif.seek(i)
        total += gif.info["duration"]
    return round(total * fps / 1000)


@pytest.fixture(scope="module")
def session(micro_run, sim_shards):
    cfg = compose("play", ["ui=true", f"bundle={micro_run / 'bundle'}", f"prompts={sim_shards}", "n_prompts=2",
                           "device=cpu"])
    return build_session(cfg)


def test_session_steps_undoes_restarts_and_exports(session, sim_shards):
    assert [p.label for p in session.prompts][-2:] == ["demo scene 0", "demo scene 1"]
    assert len(session.prompts) == 4
    first = session.reset(session.prompts[0].image)
    after_one, _ = session.step(1)
    after_two, record = session.step(2)
    assert record.action == 2 and record.ms > 0
    # undo gives back exactly the frame before, and stepping again from there is deterministic
    assert np.array_equal(session.undo(), after_one)
    again, _ = session.step(2)
    assert np.array_equal(again, after_two)
    assert np.array_equal(session.restart(), first) and session.steps == []
    with pytest.raises(ValueError, match="nothing to undo"):
        session.undo()
    session.step(0)
    assert gif_frames(session.export("gif")) == 2
    assert session.export("mp4")[4:8] == b"ftyp"
    # a looping preview per code, PREVIEW_STEPS steps past its prompt
    assert sorted(session.previews) == list(range(session.world.num_actions))
    assert gif_frames(session.previews[0]) == PREVIEW_STEPS + 1


def test_session_refuses_maskgit_steps_for_the_latent_model(session):
    assert session.maskgit_steps is None
    with pytest.raises(ValueError, match="kind=latent"):
        session.set_maskgit_steps(8)


def _browser_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    if os.environ.get("ROBO_GENIE_REQUIRE_BROWSER"):
        raise RuntimeError("ROBO_GENIE_REQUIRE_BROWSER is set but chromium / chromedriver are missing: "
                           "apt-get install chromium chromium-driver")
    pytest.skip("no chromium + chromedriver here (apt-get install chromium chromium-driver)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(session):
    import uvicorn

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(session), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "the play server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(10)


def test_play_page_in_a_real_browser(server, session, tmp_path):
    browser, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)          # a stuck browser fails the test instead of hanging CI
    driver.set_script_timeout(60)
    wait = WebDriverWait(driver, 30)
    try:
        driver.get(server)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        # one button per latent code, each with its looping preview
        assert len(driver.find_elements(By.CSS_SELECTOR, "button.action img")) == session.world.num_actions

        # upload a picture (a held-out frame saved as a PNG, at 3x the model's size)
        picture = tmp_path / "scene.png"
        Image.fromarray(session.prompts[1].image).resize((96, 96)).save(picture)
        driver.find_element(By.ID, "upload").send_keys(str(picture))
        frame = driver.find_element(By.ID, "frame")
        wait.until(lambda d: frame.get_attribute("data-step") == "0")
        prompt_src = frame.get_attribute("src")

        body = driver.find_element(By.TAG_NAME, "body")
        seen = [prompt_src]
        for step, key in enumerate("231", start=1):
            body.send_keys(key)
            wait.until(lambda d, s=step: frame.get_attribute("data-step") == str(s))
            seen.append(frame.get_attribute("src"))
        assert session.steps[-1].action == 0 and [s.action for s in session.steps] == [1, 2, 0]
        # the page shows the frames the world model made, step by step
        assert seen == [data_url(f) for f in session.frames], "the page's frames are not the world model's"
        assert "ms" in driver.find_element(By.ID, "ms_median").text

        body.send_keys("u")                       # undo the last step
        wait.until(lambda d: frame.get_attribute("data-step") == "2")
        assert frame.get_attribute("src") == seen[2]

        driver.find_element(By.ID, "gif").click()
        gif_path = downloads / "rollout.gif"
        deadline = time.monotonic() + 30
        while not gif_path.is_file():
            assert time.monotonic() < deadline, "the GIF did not download"
            time.sleep(0.1)
        time.sleep(0.3)                           # let chromium finish the rename into place
        assert gif_frames(gif_path.read_bytes()) == 3  # the prompt + the two steps left after the undo
        driver.save_screenshot(str(tmp_path / "play.png"))
        if os.environ.get("ROBO_GENIE_SCREENSHOT"):
            driver.save_screenshot(os.environ["ROBO_GENIE_SCREENSHOT"])
        assert (tmp_path / "play.png").stat().st_size > 10_000
    finally:
        driver.quit()


def test_the_server_refuses_bad_requests_and_keeps_serving(server, session):
    """A bounded burst of malformed requests: each is refused with a 4xx, none takes the server down."""
    import json
    import urllib.error
    import urllib.request

    def request(path, body=None, content_type=None, method="POST"):
        req = urllib.request.Request(server + path.lstrip("/"), data=body, method=method,
                                     headers={"Content-Type": content_type} if content_type else {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def upload(payload: bytes, name="x.png"):
        boundary = "robogenie"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
        return request("/api/upload", body, f"multipart/form-data; boundary={boundary}")

    bomb = io.BytesIO()
    Image.new("L", (8000, 6000)).save(bomb, format="PNG")            # 48 megapixels in a small file
    pdf = b"%PDF-1.4 not an image"
    bad = [
        lambda: request("/api/step", b"{not json", "application/json"),
        lambda: request("/api/step", json.dumps({"action": "left"}).encode(), "application/json"),
        lambda: request("/api/step", json.dumps({"action": 10**9}).encode(), "application/json"),
        lambda: request("/api/step", json.dumps({"action": -1}).encode(), "application/json"),
        lambda: request("/api/settings", json.dumps({"maskgit_steps": 3}).encode(), "application/json"),
        lambda: request("/api/reset/999"),
        lambda: request("/api/prompt/-5.png", method="GET"),
        lambda: request("/api/preview/77.gif", method="GET"),
        lambda: request("/api/rollout.exe", method="GET"),
        lambda: request("/api/upload", b"garbage", "multipart/form-data; boundary=zzz"),
        lambda: upload(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8),
        lambda: upload(pdf, "x.pdf"),
        lambda: upload(bomb.getvalue(), "bomb.png"),
        lambda: upload(b"0" * (21 << 20), "huge.png"),
    ]
    for attempt in range(2):                     # the burst, twice
        codes = [send() for send in bad]
        assert all(400 <= c < 500 for c in codes), codes
    assert request("/api/reset/0") == 200 and request("/api/step", b'{"action": 1}', "application/json") == 200
    assert request("/api/info", method="GET") == 200


def test_a_maskgit_bundle_shows_and_sets_its_steps(micro_run, sim_shards, tmp_path):
    from robo_genie.training.jobs import run_train_job
    from tests.conftest import train_job
    run_train_job(train_job(tmp_path, sim_shards, "dynamics", f"init_from={micro_run / 'bundle'}",
                            "model.dynamics.kind=maskgit"))
    maskgit = build_session(compose("play", ["ui=true", f"bundle={tmp_path / 'bundle'}", "n_prompts=1",
                                             "device=cpu"]))
    assert maskgit.maskgit_steps == 4                      # the bundle's default (tests' micro config)
    maskgit.set_maskgit_steps(2)
    assert maskgit.maskgit_steps == 2 and maskgit.world.maskgit_steps == 2
    maskgit.reset(maskgit.prompts[0].image)
    assert maskgit.step(1)[0].shape == (32, 32, 3)
    with pytest.raises(ValueError, match="choose 1..64"):
        maskgit.set_maskgit_steps(0)
