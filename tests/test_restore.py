"""reports.restore: held-out sprites noised to t0 and run back with DDIM, on the tiny latent and pixel runs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from autoencoder.trainer import psnr
from plumbing.cli import UserError
from reports import restore


def run(tiny_runs, sprite_dir, tmp_path, kind: str, *extra: str):
    out = tmp_path / f"restore-{kind}"
    restore.main(["--ckpt", str(tiny_runs[kind] / "diffusion.pt"), "--data", str(sprite_dir), "--device", "cpu",
                  "--out", str(out), *extra])
    return out


@pytest.mark.parametrize("kind", ["ldm", "pixel"])
def test_restore_writes_one_labelled_row_per_start_step_and_psnr_falls_with_t0(tiny_runs, sprite_dir, tmp_path, kind):
    out = run(tiny_runs, sprite_dir, tmp_path, kind, "--t", "0", "50", "99", "--n", "4", "--steps", "10")
    stats = json.loads((out / "restore.json").read_text())
    assert stats["space"] == ("latent" if kind == "ldm" else "pixel") and stats["n"] == 4
    assert [r["t0"] for r in stats["rows"]] == [0, 50, 99]
    snrs = [r["snr"] for r in stats["rows"]]
    assert snrs[0] > snrs[1] > snrs[2] > 0
    latent = kind == "ldm"
    # against what the space can represent: the VAE's reconstruction (latent), the sprite (pixels)
    psnrs = [r["psnr_vs_reconstruction" if latent else "psnr_vs_sprite"] for r in stats["rows"]]
    assert all(np.isfinite(psnrs))
    if not latent:  # (the tiny VAE decodes every latent to nearly one image: no fall-off to see there)
        # from t0 = 0 (SNR 1e3) the input is nearly clean; from t0 = T-1 the sprite is gone (the tiny
        # model, 3 epochs, is far from returning its input: 12.5 against 10.2 dB when written)
        assert psnrs[0] > psnrs[2] + 1
    assert (stats["reconstruction_psnr"] is not None) == latent  # pixel space: x_0 is the sprite itself
    img = np.asarray(Image.open(out / "restore.png"))
    tile = 2 * 16 + 2  # data.size of the tiny runs at twice the size, plus the grid's padding
    assert img.shape[0] == 2 + (5 if latent else 4) * tile  # sprite, (reconstruction,) 3 restoration rows
    assert img.shape[1] > 2 + 4 * tile  # the label margin on the left


def test_restore_is_deterministic_per_seed(tiny_runs, sprite_dir, tmp_path):
    a = run(tiny_runs, sprite_dir, tmp_path / "a", "pixel", "--t", "60", "--n", "3", "--seed", "5")
    b = run(tiny_runs, sprite_dir, tmp_path / "b", "pixel", "--t", "60", "--n", "3", "--seed", "5")
    c = run(tiny_runs, sprite_dir, tmp_path / "c", "pixel", "--t", "60", "--n", "3", "--seed", "6")
    png = lambda d: np.asarray(Image.open(d / "restore.png"))  # noqa: E731
    assert np.array_equal(png(a), png(b))
    assert not np.array_equal(png(a), png(c))


def test_restore_refuses_a_start_step_outside_the_schedule(tiny_runs, sprite_dir, tmp_path):
    with pytest.raises(UserError, match=r"--t 100: every start step must lie in 0\.\.99"):
        run(tiny_runs, sprite_dir, tmp_path, "pixel", "--t", "50", "100")


def test_mean_psnr_formula():
    a = torch.zeros(1, 3, 4, 4)
    assert float(psnr(a, a + 0.2).mean()) == pytest.approx(10 * np.log10(1 / 0.01))  # [0, 1] error 0.1 -> 20 dB
