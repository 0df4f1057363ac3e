"""Helpers shared by the tests: synthetic sprites, the tiny AE overrides, a subprocess environment."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

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
]


def subprocess_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "POKEMON_DATA"}
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
    "sample.steps=5",
]


def lpips_unavailable(net: str = "alex"):
    """Stands in for autoencoder.train.load_lpips: fails fast, as on a machine without the weights."""
    from plumbing.cli import UserError

    raise UserError("LPIPS weights not available in tests")


@contextlib.contextmanager
def offline_training():
    """The conditions of in-process training in the tests: no POKEMON_DATA from the environment and
    LPIPS weights that are unavailable. A context manager (yielding its MonkeyPatch for more patches),
    so that module- and session-scoped fixtures can use it too."""
    import pytest

    import autoencoder.train as ae_train

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("POKEMON_DATA", raising=False)
        mp.setattr(ae_train, "load_lpips", lpips_unavailable)
        yield mp
