"""The demo page (demo/): its functions on the shipped model, the running server through gradio_client
(a real HTTP round trip that gives the command line's images), and the page in headless Chromium,
which picks a species, draws, and shows the samples (a screenshot is kept in tmp/out/)."""
from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from demo.actions import (NO_FUSION, RANDOM, Request, captions, live, morph_labels, request_labels,
                          species_choices, type_choices, write_zip)
from diffusion.pipeline import load_pipeline
from plumbing.cli import UserError
from tests.helpers import REPO, subprocess_env

RELEASE = REPO / "checkpoints" / "release"
ARTEFACTS = Path(os.environ.get("POKEDIFFUSION_TEST_OUT", REPO / "tmp" / "out"))
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(RELEASE, "cpu")


# --- the page's functions, directly --------------------------------------------------------------------

def test_the_species_list_is_every_species_the_model_knows(pipe, tiny_runs):
    names = species_choices(pipe)
    assert names[0] == RANDOM and len(names) == 722 and names[1] == "Bulbasaur" and names[-1] == "Volcanion"
    assert len(type_choices(pipe)) == 19
    plain = load_pipeline(tiny_runs["pixel"], "cpu")  # no labels: nothing to choose
    assert species_choices(plain) == [] and type_choices(plain) == []


def test_a_request_is_checked_as_the_command_line_checks_it(pipe):
    for req, words in [(Request(seed=2 ** 70), "a seed must be an integer from 0 to"),
                       (Request(seed=-1), "a seed must be an integer"),
                       (Request(seed=None), "seed is empty"),
                       (Request(seed=1.5), "enter a whole number"),
                       (Request(guidance=1e30), "at most 20"),
                       (Request(n=100), "1 to 32 samples"),
                       (Request(steps=0), "between 1 and T=1000")]:
        with pytest.raises(UserError, match=words):
            req.checked(pipe)
    assert Request(seed=3.0, n=2.0, steps=5.0).checked(pipe) == Request(seed=3, n=2, steps=5)
    with pytest.raises(UserError, match="did you mean Bulbasaur"):
        request_labels(pipe, Request(species="bulbasuar"))
    with pytest.raises(UserError, match="a fusion needs two named species"):
        request_labels(pipe, Request(fuse_with="Squirtle"))


def test_request_labels_name_species_fusions_and_held_out_ones(pipe):
    labels, rows, warned = request_labels(pipe, Request(species="pikachu", type="Electric", n=3))
    assert rows == ["Pikachu, Electric, artwork"] and warned == []
    assert captions(pipe, labels, 3) == ["Pikachu, Electric, artwork"] * 3
    labels, rows, _ = request_labels(pipe, Request(species="Charmander", fuse_with="Squirtle", fuse_weight=0.25, n=2))
    assert captions(pipe, labels, 2) == ["Charmander x Squirtle (0.25), artwork"] * 2
    _, _, warned = request_labels(pipe, Request(species="Machop", n=1))
    assert len(warned) == 1 and "Machop (No. 66) is held out" in warned[0]


def test_live_streams_steps_and_frames_then_the_samples_and_the_zip(pipe, tmp_path):
    req = Request(species="Gengar", n=2, steps=4, seed=5).checked(pipe)
    labels, _, _ = request_labels(pipe, req)
    events = list(live(pipe, 2, 5, labels, 1.0, "ddim", 4, frames=3))
    assert [e[2] for e in events if e[0] == "step"] == [4] * 4 and [e[1] for e in events if e[0] == "step"] == [1, 2, 3, 4]
    frames = [e for e in events if e[0] == "frame"]
    assert len(frames) == 1 + 3 and frames[0][1] == 1000 and frames[-1][1] == 0 and frames[0][2].dtype == np.uint8
    kind, images, _ = events[-1]
    same, _, _ = pipe.generate(2, 5, labels, steps=4)  # what the Python API and the command line draw
    assert kind == "done" and torch.equal(images, same)
    with zipfile.ZipFile(write_zip(tmp_path / "z", pipe, images, labels, 1.0, 5)) as zf:
        assert sorted(zf.namelist()) == ["0000.png", "0001.png", "labels.csv"]
        rows = list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode())))
        assert [r["species"] for r in rows] == ["Gengar"] * 2 and rows[0]["seed"] == "5"
        assert Image.open(io.BytesIO(zf.read("0000.png"))).size == (64, 64)


def test_a_morph_goes_from_one_species_to_the_other_from_one_x_T(pipe, monkeypatch):
    # float32: on a CPU where bf16 autocast pays, its kernels differ with the batch size (up to 7 of 255
    # levels between a batch of 4 and one of 1 on an AMD EPYC), which is not what this test is about
    monkeypatch.setattr("diffusion.pipeline.bf16_pays", lambda device: False)
    req = Request(species="Charmander", fuse_with="Squirtle", seed=7, steps=3).checked(pipe, n=4)
    labels, x_T, _ = morph_labels(pipe, req, 4)
    assert torch.equal(x_T[0], x_T[3]) and captions(pipe, labels, 4)[1] == "Charmander x Squirtle (0.33), artwork"
    row = pipe.morph("Charmander", "Squirtle", 4, seed=7, steps=3)
    ends = pipe(n=1, seed=7, species="Charmander", steps=3) + pipe(n=1, seed=7, species="Squirtle", steps=3)
    for got, want in zip((row[0], row[-1]), ends):  # the same x_T and label, in a batch of another size
        assert np.abs(np.asarray(got, np.int16) - np.asarray(want, np.int16)).max() <= 2
    assert np.abs(np.asarray(row[0], np.int16) - np.asarray(row[-1], np.int16)).mean() > 1  # the label changes it
    with pytest.raises(UserError, match="pick both species"):
        morph_labels(pipe, Request(species="Charmander", fuse_with=NO_FUSION, seed=7), 4)
    with pytest.raises(UserError, match="between 2 and"):
        pipe.morph("Charmander", "Squirtle", 1)


def test_the_page_hides_what_the_model_was_not_trained_with(pipe, tiny_runs):
    pytest.importorskip("gradio", reason="the page needs gradio: pip install -r requirements-demo.txt")
    from demo.page import build_page

    def visible(page) -> dict[str, bool]:
        return {b.elem_id: b.visible for b in page.blocks.values() if getattr(b, "elem_id", None)}

    assert visible(build_page(pipe))["species"] is True
    assert visible(build_page(load_pipeline(tiny_runs["pixel"], "cpu")))["species"] is False


# --- the running server ------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m demo` on the release, one thread, on a free port of 127.0.0.1: its address."""
    pytest.importorskip("gradio", reason="the demo server needs gradio: pip install -r requirements-demo.txt")
    tmp = tmp_path_factory.mktemp("server")
    port = _free_port()
    env = {**subprocess_env(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio")}
    proc = subprocess.Popen([sys.executable, "-m", "demo", "--ckpt", str(RELEASE), "--port", str(port),
                             "--threads", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    if proc.poll() is not None or time.time() >= deadline:
        proc.kill()
        pytest.fail(f"the demo server did not start: {proc.stdout.read()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _zip_files(path: str) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_the_server_draws_the_command_lines_images_and_survives_bad_input(server, tmp_path):
    from gradio_client import Client

    client = Client(server, verbose=False)
    args = dict(species="Charmander", fuse_with="Squirtle", fuse_weight=0.3, style="dream_world", type_="any",
                guidance=1.0, seed=11, n=2, sampler="ddim", steps=3)
    frame, gallery, status, zipped = client.predict(*args.values(), api_name="/draw")
    assert len(gallery) == 2 and gallery[0]["caption"] == "Charmander x Squirtle (0.30), dream_world"
    assert "2 samples" in status and Image.open(frame).size[0] > 64
    cli = subprocess.run([sys.executable, "-m", "diffusion.sample", "--ckpt", str(RELEASE), "--fuse", "Charmander",
                          "Squirtle", "--fuse-weight", "0.3", "--style", "dream_world", "--seed", "11", "--n", "2",
                          "--steps", "3", "--out", str(tmp_path / "cli")], cwd=REPO, env=subprocess_env(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    page = _zip_files(zipped)
    for name in ("0000.png", "0001.png", "labels.csv"):
        assert page[name] == (tmp_path / "cli" / name).read_bytes(), name
    from gradio_client.exceptions import AppError

    for bad, words in [({"species": "bulbasuar", "fuse_with": "none"}, "did you mean Bulbasaur?"),
                       ({"seed": 1180591620717411303424}, "a seed must be an integer from 0 to"),
                       ({"guidance": 1e30}, "greater than maximum value 20|at most 20")]:
        with pytest.raises(AppError, match=words) as err:
            client.predict(*{**args, **bad}.values(), api_name="/draw")
        assert "Traceback" not in str(err.value) and len(str(err.value).splitlines()) == 1
    _, row, status, _ = client.predict("Charmander", "Squirtle", "artwork", "any", 1.0, 11, 3, 3, api_name="/morph")
    assert [g["caption"] for g in row] == ["Charmander, artwork", "Charmander x Squirtle (0.50), artwork",
                                           "Squirtle, artwork"]  # still serving after the errors


# --- the page in a real browser ------------------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-quic", "--window-size=1400,1800"]


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium: "
                                                                  "pip install -r requirements-demo.txt")
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("the browser test needs Debian's chromium and chromium-driver: apt-get install -y chromium "
                    "chromium-driver (scripts/setup_browser_tests.sh)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager downloads nothing
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_the_page_in_chromium_picks_a_species_draws_and_shows_the_samples(server, browser):
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    def number(elem_id: str, value: int) -> None:
        box = browser.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(str(value), Keys.TAB)

    browser.get(server)
    wait = WebDriverWait(browser, 120, poll_frequency=0.5)
    species = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#species input"))
    species.click()
    species.send_keys(Keys.CONTROL, "a")
    species.send_keys("Pikach")  # the dropdown filters its 722 entries as one types
    option = wait.until(lambda d: next((li for li in d.find_elements(By.CSS_SELECTOR, "ul[role=listbox] li")
                                        if li.text.strip() == "Pikachu"), None))
    option.click()
    number("n", 4)
    number("steps", 4)
    browser.find_element(By.ID, "draw").click()

    def shown(d) -> bool:
        images = d.find_elements(By.CSS_SELECTOR, "#samples img")
        return len(images) == 4 and all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                                         im) for im in images)

    wait.until(shown)
    status = browser.find_element(By.CSS_SELECTOR, "#status textarea").get_attribute("value")
    assert status.startswith("4 samples, Pikachu, artwork (DDIM 4 steps"), status
    assert browser.find_elements(By.CSS_SELECTOR, "#reverse img")  # the last x_t of the reverse process
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTEFACTS / "demo_page.png"))

    species.click()
    species.send_keys(Keys.CONTROL, "a")
    species.send_keys("bulbasuar", Keys.ENTER)  # typed by hand, not in the list: one line on the page
    browser.find_element(By.ID, "draw").click()
    wait.until(lambda d: "did you mean Bulbasaur?" in d.find_element(By.TAG_NAME, "body").text)
    assert "Traceback" not in browser.find_element(By.TAG_NAME, "body").text

    requested = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
    urls = {m["params"]["request"]["url"] for m in requested if m["method"] == "Network.requestWillBeSent"}
    here = (server, server.replace("http://", "ws://"))  # the browser's own chrome:// pages aside
    elsewhere = sorted(u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:")) and not u.startswith(here))
    assert not elsewhere, f"the page fetched from elsewhere: {elsewhere[:5]}"
