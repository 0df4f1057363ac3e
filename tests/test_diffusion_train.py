"""Stage 2 end to end: training the DDPM in pixel and latent space, the sampling CLI, its errors,
and determinism. Tiny models on the synthetic sprites; each is trained once per module."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import autoencoder.trainer as ae_trainer
import diffusion.sample as dsample
from autoencoder.config import AEConfig
from diffusion import trainer as dtrainer
from diffusion.config import DiffusionConfig
from diffusion.denoiser import make_denoiser
from diffusion.pipeline import load_diffusion
from diffusion.samplers import ddim_sample, ddpm_sample
from plumbing.checkpoint import file_sha256, load_checkpoint, save_atomic
from plumbing.cli import UserError, run_main
from plumbing.config import load_config
from tests.helpers import REPO, TINY_AE, TINY_DIFFUSION, offline_training, subprocess_env
from sprites.dataset import load_artworks, to_unit_range

RUN_FILES = ["config.yaml", "log.txt", "loss.png", "samples.png", "metrics.json", "diffusion.pt"]


def _diffusion_config(sprite_dir: Path, cache: Path, *overrides: str) -> DiffusionConfig:
    base = [f"data.root={sprite_dir}", f"data.cache_dir={cache}", "space=pixel"] + TINY_DIFFUSION
    return load_config(DiffusionConfig, None, base + list(overrides))


def _train(cfg, out: Path) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("POKEMON_DATA", raising=False)
        return dtrainer.train(cfg, str(out))


def _logged_losses(run_dir: Path) -> list[float]:
    return [float(v) for v in re.findall(r"step \d+/\d+ loss ([0-9.]+)", (run_dir / "log.txt").read_text())]


def _run(args: list[str], tmp_path: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=subprocess_env(tmp_path), capture_output=True,
                          text=True, timeout=timeout)


def _assert_one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def _loaded(path: Path):
    """(EMA model, schedule, space, config) of a trained checkpoint, loaded on the CPU as sampling loads it."""
    pipe = load_diffusion(path, "cpu")
    return pipe.model, pipe.schedule, pipe.space, pipe.cfg


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


# --- module fixtures: one pixel run, one AE + latent run ------------------------------------------

@pytest.fixture(scope="module")
def pixel_run(sprite_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pixel")
    cfg = _diffusion_config(sprite_dir, root / "cache")
    result = _train(cfg, root / "run")
    return {"cfg": cfg, "result": result, "run_dir": Path(result["run_dir"]), "root": root}


@pytest.fixture(scope="module")
def latent_run(sprite_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("latent")
    with offline_training():
        ae_cfg = load_config(AEConfig, None, [f"data.root={sprite_dir}", f"data.cache_dir={root / 'cache'}"] + TINY_AE)
        ae_result = ae_trainer.train(ae_cfg, str(root / "ae"))
    ae_path = Path(ae_result["run_dir"]) / "ae.pt"
    assert ae_path.is_file()
    cfg = _diffusion_config(sprite_dir, root / "cache", "space=latent", f"ae.ckpt={ae_path}", "train.epochs=10",
                            "model.channels=[16,32]")
    result = _train(cfg, root / "ldm")
    return {"cfg": cfg, "result": result, "run_dir": Path(result["run_dir"]), "ae_path": ae_path, "root": root}


# --- (a) pixel space --------------------------------------------------------------------------------

def test_pixel_run_writes_every_file(pixel_run):
    run = pixel_run["run_dir"]
    for name in RUN_FILES:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert not list(run.glob("samples_epoch*.png"))  # sample_every=0: only the final grid
    grid = Image.open(run / "samples.png")
    assert grid.format == "PNG" and grid.mode == "RGB"
    # 4 samples of 16 px in one row (nrow 8, padding 2): 18 + 2 high, at least 2 + 4 * 18 wide
    assert grid.size[1] == 2 + 18 and grid.size[0] >= 2 + 4 * 18
    assert Image.open(run / "loss.png").size[0] > 100


def test_pixel_loss_falls(pixel_run):
    losses = _logged_losses(pixel_run["run_dir"])
    steps = pixel_run["result"]["steps"]
    assert steps == 30 * (21 // 8) and len(losses) == steps  # 21 training images, log_every=1
    assert all(np.isfinite(losses))
    early, late = np.mean(losses[:5]), np.mean(losses[-20:])
    assert late < 0.5 * early, (early, late)


def test_pixel_metrics_and_checkpoint(pixel_run):
    run, result = pixel_run["run_dir"], pixel_run["result"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["space"] == "pixel" and metrics["steps"] == result["steps"] == 60
    assert metrics["final_loss"] == pytest.approx(_logged_losses(run)[-1], abs=1e-4)
    assert metrics["schedule"]["T"] == 100 and metrics["schedule"]["alpha_bar_T"] < 1e-4
    assert metrics["schedule"]["beta_end"] == pytest.approx(0.2)
    ckpt = load_checkpoint(run / "diffusion.pt", kind="diffusion")
    assert ckpt["space"] == {"name": "pixel", "shape": [3, 16, 16]}
    assert ckpt["ae"] is None
    assert ckpt["config"]["schedule"]["T"] == 100 and ckpt["config"]["space"] == "pixel"
    assert set(ckpt["model"]) == set(ckpt["ema"])
    # EMA weights are a different (smoothed) copy of the trained weights
    assert any(not torch.equal(ckpt["model"][k], ckpt["ema"][k]) for k in ckpt["model"])
    cfg_yaml = (run / "config.yaml").read_text()
    assert "space: pixel" in cfg_yaml and "T: 100" in cfg_yaml


def test_pixel_samples_finite_and_in_range(pixel_run):
    model, schedule, space, cfg = _loaded(pixel_run["run_dir"] / "diffusion.pt")
    assert not model.training and schedule.T == 100 and space.clip
    assert all(not p.requires_grad for p in model.parameters())
    den = make_denoiser(model, torch.device("cpu"), False)
    for x in (ddim_sample(den, schedule, (4, *space.shape), torch.Generator().manual_seed(0), "cpu", True, steps=5)[0],
              ddpm_sample(den, schedule, (2, *space.shape), torch.Generator().manual_seed(0), "cpu", True)[0]):
        assert torch.isfinite(x).all()
        img = space.decode(x)
        assert img.min() >= -1 and img.max() <= 1


# --- (b) latent space -------------------------------------------------------------------------------

def test_latent_run_records_the_ae(latent_run):
    run, ae_path = latent_run["run_dir"], latent_run["ae_path"]
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    ckpt = load_checkpoint(run / "diffusion.pt", kind="diffusion")
    digest = hashlib.sha256(ae_path.read_bytes()).hexdigest()
    assert ckpt["ae"] == {"path": str(ae_path), "sha256": digest}
    ae = load_checkpoint(ae_path, kind="autoencoder")
    factor = 2 ** (len(ae["config"]["model"]["channels"]) - 1)
    assert ckpt["space"] == {"name": "latent", "shape": [4, 16 // factor, 16 // factor]}
    assert f"sha256 {digest[:12]}" in (run / "log.txt").read_text()
    losses = _logged_losses(run)
    assert len(losses) == latent_run["result"]["steps"] == 20 and all(np.isfinite(losses))
    assert latent_run["result"]["space"] == "latent"
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_latent_samples_decode_to_finite_pixels(latent_run):
    model, schedule, space, cfg = _loaded(latent_run["run_dir"] / "diffusion.pt")
    assert not space.clip and space.shape == tuple(load_checkpoint(latent_run["run_dir"] / "diffusion.pt")["space"]["shape"])
    den = make_denoiser(model, torch.device("cpu"), False)
    x, _ = ddim_sample(den, schedule, (3, *space.shape), torch.Generator().manual_seed(0), "cpu", False, steps=5)
    img = space.decode(x)
    assert img.shape == (3, 3, 16, 16) and torch.isfinite(img).all()


def test_latent_space_channel_normalisation(latent_run):
    """Training latents z ~ q(z|x) are standardised per channel."""

    _, _, space, cfg = _loaded(latent_run["run_dir"] / "diffusion.pt")
    data = load_artworks(cfg.data.root, cfg.data.size, cfg.data.cache_dir, cfg.data.holdout, cfg.data.split_seed)
    images = data.train()
    space.prepare(images)
    x0 = space.all_x0()  # the normalised posterior means of the training images
    assert x0.shape[1:] == space.shape
    assert x0.mean(dim=(0, 2, 3)).abs().max() < 0.15
    # the statistics are those of posterior samples: the means lack the posterior's own spread (law of
    # total variance), so their per-channel std is at most 1
    std = x0.std(dim=(0, 2, 3))
    assert (std < 1.05).all() and (std > 0.1).all()
    z = torch.randn(3, *space.shape)
    assert torch.allclose(space.denormalise(space.normalise(z)), z, atol=1e-5)
    # encode(pixels) is the normalised posterior mean, the unflipped training latents of all_x0
    pix = to_unit_range(images[:4])
    assert torch.allclose(space.encode(pix), space.all_x0()[:4], atol=1e-5)
    # a batch of unflipped images is their normalised means; flipped ones are the means of the mirror images
    idx, flip = torch.arange(4), torch.zeros(4, dtype=torch.bool)
    assert torch.equal(space.batch(idx, flip), space.all_x0()[:4])
    assert torch.allclose(space.batch(idx, ~flip), space.encode(pix.flip(-1)), atol=1e-5)


def test_latent_size_mismatch_is_a_user_error(latent_run, sprite_dir, tmp_path):
    cfg = _diffusion_config(sprite_dir, tmp_path / "cache", "space=latent", f"ae.ckpt={latent_run['ae_path']}",
                            "data.size=32")
    with pytest.raises(UserError, match="data.size=32.*16"):
        _train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --- (c) the sampling CLI ---------------------------------------------------------------------------

def _sample_args(ckpt: Path, out: Path, *extra: str, n: int = 4, sampler: str = "ddim", seed: int = 0) -> list[str]:
    return ["--ckpt", str(ckpt), "--n", str(n), "--sampler", sampler, "--steps", "5", "--seed", str(seed),
            "--out", str(out), "--device", "cpu", *extra]


def _sample_in_process(args: list[str]) -> None:
    run_main(dsample.main, args)


@pytest.fixture(scope="module")
def cli_samples(pixel_run):
    """`python -m diffusion.sample ... --gif` once, as a real subprocess."""
    root = pixel_run["root"]
    out = root / "cli"
    proc = _run(["-m", "diffusion.sample", *_sample_args(pixel_run["run_dir"] / "diffusion.pt", out, "--gif")], root)
    return proc, out


def test_cli_writes_grid_pngs_and_gif(cli_samples):
    proc, out = cli_samples
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["0000.png", "0001.png", "0002.png", "0003.png", "grid.png", "labels.csv", "reverse.gif"]
    for i in range(4):
        img = Image.open(out / f"{i:04d}.png")
        assert img.size == (16, 16) and img.mode == "RGB"
    grid = _png(out / "grid.png")
    assert grid.shape[0] == 20
    for i in range(4):  # the grid shows the same four samples, left to right, with 2 px padding
        x = 2 + 18 * i
        assert np.array_equal(grid[2:18, x:x + 16], _png(out / f"{i:04d}.png")), i
    gif = Image.open(out / "reverse.gif")
    assert gif.format == "GIF"
    # x_T and then one frame per DDIM step (5 steps < 40 frames)
    assert gif.n_frames == 6
    assert "reverse process (6 frames)" in proc.stdout
    assert "4 samples (ddim, 5 steps, seed 0)" in proc.stdout


def test_cli_pngs_are_the_seeded_sampler_output(cli_samples, pixel_run):
    """0000.png... are exactly the DDIM samples of the EMA model from torch.Generator().manual_seed(seed)."""
    _, out = cli_samples
    model, schedule, space, cfg = _loaded(pixel_run["run_dir"] / "diffusion.pt")
    den = make_denoiser(model, torch.device("cpu"), False)
    x, _ = ddim_sample(den, schedule, (4, *space.shape), torch.Generator().manual_seed(0), "cpu", True, steps=5)
    imgs = space.decode(x)
    assert torch.isfinite(imgs).all() and imgs.min() >= -1 and imgs.max() <= 1
    for i in range(4):
        want = ((imgs[i].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        got = _png(out / f"{i:04d}.png")
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, i


def test_cli_same_seed_same_bytes_other_seed_differs(cli_samples, pixel_run, tmp_path):
    _, out = cli_samples
    ckpt = pixel_run["run_dir"] / "diffusion.pt"
    _sample_in_process(_sample_args(ckpt, tmp_path / "again"))
    _sample_in_process(_sample_args(ckpt, tmp_path / "seed1", seed=1))
    for name in ["grid.png", "0000.png", "0001.png", "0002.png", "0003.png"]:
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name
    different = [not np.array_equal(_png(tmp_path / "seed1" / f"{i:04d}.png"), _png(out / f"{i:04d}.png"))
                 for i in range(4)]
    assert all(different)


def test_cli_ddpm_sampler(pixel_run, tmp_path, capsys):
    ckpt = pixel_run["run_dir"] / "diffusion.pt"
    _sample_in_process(_sample_args(ckpt, tmp_path / "a", sampler="ddpm", n=3))
    assert "3 samples (ddpm, 100 steps, seed 0)" in capsys.readouterr().out
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["0000.png", "0001.png", "0002.png", "grid.png", "labels.csv"]
    _sample_in_process(_sample_args(ckpt, tmp_path / "b", sampler="ddpm", n=3))
    assert (tmp_path / "a" / "0001.png").read_bytes() == (tmp_path / "b" / "0001.png").read_bytes()
    # ancestral samples are not the DDIM ones for the same seed
    _sample_in_process(_sample_args(ckpt, tmp_path / "c", n=3))
    assert not np.array_equal(_png(tmp_path / "a" / "0000.png"), _png(tmp_path / "c" / "0000.png"))


def test_cli_latent_checkpoint(latent_run, tmp_path):
    out = tmp_path / "latent"
    proc = _run(["-m", "diffusion.sample", *_sample_args(latent_run["run_dir"] / "diffusion.pt", out, n=2)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["0000.png", "0001.png", "grid.png", "labels.csv"]
    assert Image.open(out / "0000.png").size == (16, 16)


# --- (d) errors: one line on stderr, exit status 2 --------------------------------------------------

def test_cli_n_zero(pixel_run, tmp_path):
    proc = _run(["-m", "diffusion.sample", *_sample_args(pixel_run["run_dir"] / "diffusion.pt", tmp_path / "o", n=0)],
                tmp_path)
    line = _assert_one_line_error(proc)
    assert "--n 0" in line
    assert not (tmp_path / "o").exists()


def test_cli_steps_larger_than_T(pixel_run, tmp_path):
    args = _sample_args(pixel_run["run_dir"] / "diffusion.pt", tmp_path / "o")
    args[args.index("--steps") + 1] = "101"
    line = _assert_one_line_error(_run(["-m", "diffusion.sample", *args], tmp_path))
    assert "--steps 101" in line and "T=100" in line
    assert not (tmp_path / "o").exists()


def test_cli_autoencoder_checkpoint_is_refused(latent_run, tmp_path):
    line = _assert_one_line_error(_run(["-m", "diffusion.sample", *_sample_args(latent_run["ae_path"], tmp_path / "o")],
                                       tmp_path))
    assert "autoencoder" in line and "diffusion" in line
    assert not (tmp_path / "o").exists()


def test_cli_mismatched_ae_is_refused(latent_run, tmp_path):
    other = tmp_path / "other_ae.pt"
    ae = load_checkpoint(latent_run["ae_path"], kind="autoencoder")
    first = next(iter(ae["model"]))
    ae["model"][first] = ae["model"][first] + 0.01
    save_atomic(ae, other)
    assert file_sha256(other) != file_sha256(latent_run["ae_path"])
    args = _sample_args(latent_run["run_dir"] / "diffusion.pt", tmp_path / "o", "--ae", str(other))
    line = _assert_one_line_error(_run(["-m", "diffusion.sample", *args], tmp_path))
    assert str(other) in line and "not the one" in line and "--ae" in line
    assert not (tmp_path / "o").exists()


def test_cli_deleted_ae_is_reported_and_ae_flag_rescues(latent_run, tmp_path, capsys):
    # a copy of the latent checkpoint whose recorded AE (a copy of the real one) is then deleted
    moved = tmp_path / "moved" / "ae.pt"
    moved.parent.mkdir()
    shutil.copy(latent_run["ae_path"], moved)
    ckpt = load_checkpoint(latent_run["run_dir"] / "diffusion.pt", kind="diffusion")
    ckpt["ae"]["path"] = str(moved)
    save_atomic(ckpt, tmp_path / "ldm.pt")
    moved.unlink()
    line = _assert_one_line_error(_run(["-m", "diffusion.sample", *_sample_args(tmp_path / "ldm.pt", tmp_path / "o")],
                                       tmp_path))
    assert str(moved) in line and "missing" in line and "--ae" in line
    assert not (tmp_path / "o").exists()
    # the same AE (same sha256) found elsewhere is accepted
    _sample_in_process(_sample_args(tmp_path / "ldm.pt", tmp_path / "ok", "--ae", str(latent_run["ae_path"]), n=2))
    assert (tmp_path / "ok" / "0001.png").is_file()


def test_train_refuses_unscaled_short_schedule(sprite_dir, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    proc = _run(["-m", "diffusion.train", "--out", str(out), "schedule.T=100", "schedule.scale_to_T=false",
                 "device=cpu", f"data.root={sprite_dir}", f"data.cache_dir={cache}", "space=pixel"], tmp_path)
    line = _assert_one_line_error(proc)
    assert "alpha_bar_T" in line and "schedule.scale_to_T=true" in line
    assert not out.exists() and not cache.exists()  # refused before loading data or creating the run folder


def test_train_unscaled_short_schedule_can_be_forced(sprite_dir, tmp_path):
    cfg = _diffusion_config(sprite_dir, tmp_path / "cache", "schedule.scale_to_T=false", "schedule.force=true",
                            "train.epochs=1")
    result = _train(cfg, tmp_path / "run")
    assert result["schedule"]["alpha_bar_T"] == pytest.approx(0.3636, abs=2e-3)
    assert (tmp_path / "run" / "diffusion.pt").is_file()


# --- (e) determinism --------------------------------------------------------------------------------

def test_same_seed_gives_bitwise_identical_weights(sprite_dir, tmp_path):
    def run(name, *overrides):
        cfg = _diffusion_config(sprite_dir, tmp_path / "cache", "train.epochs=3", *overrides)
        return load_checkpoint(Path(_train(cfg, tmp_path / name)["run_dir"]) / "diffusion.pt")

    a, b = run("a"), run("b")
    # intermediate sample grids use their own generator: they must not change the training
    with_grids = run("grids", "train.sample_every=1")
    other_seed = run("c", "seed=1")
    for part in ("model", "ema"):
        assert set(a[part]) == set(b[part]) == set(with_grids[part])
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
            assert torch.equal(a[part][k], with_grids[part][k]), (part, k)
        assert any(not torch.equal(a[part][k], other_seed[part][k]) for k in a[part])
    assert (tmp_path / "a" / "samples.png").read_bytes() == (tmp_path / "b" / "samples.png").read_bytes()
    # sample_every=1 over 3 epochs: grids after epochs 1 and 2, the last epoch gives samples.png
    assert sorted(p.name for p in (tmp_path / "grids").glob("samples_epoch*.png")) == \
        ["samples_epoch0001.png", "samples_epoch0002.png"]


# --- further user errors ----------------------------------------------------------------------------

def test_batch_size_larger_than_train_set_fails_before_creating_the_run_folder(sprite_dir, tmp_path):
    cfg = _diffusion_config(sprite_dir, tmp_path / "cache", "train.batch_size=64")
    with pytest.raises(UserError, match="train.batch_size=64"):
        _train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("gif_n", ["0", "-2"])
def test_cli_bad_gif_n_is_a_user_error(pixel_run, tmp_path, capsys, gif_n):
    args = _sample_args(pixel_run["run_dir"] / "diffusion.pt", tmp_path / "o", "--gif", "--gif-n", gif_n, n=2)
    with pytest.raises(SystemExit) as exit_:
        _sample_in_process(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--gif-n" in err[0]


def test_a_step_budget_stops_the_run_and_spans_the_schedule(sprite_dir, tmp_path):
    cfg = _diffusion_config(sprite_dir, tmp_path / "cache", "train.epochs=50", "train.max_steps=7")
    result = _train(cfg, tmp_path / "run")
    assert result["steps"] == 7 and len(_logged_losses(Path(result["run_dir"]))) == 7
    assert "step budget of 7 reached after 7 steps" in (Path(result["run_dir"]) / "log.txt").read_text()
    with pytest.raises(UserError, match="max_steps"):
        _diffusion_config(sprite_dir, tmp_path / "cache", "train.max_steps=-1")


def test_fine_tuning_starts_from_a_stopped_run(sprite_dir, tmp_path):
    """train.init=RUN where RUN stopped before its diffusion.pt: the EMA weights of its newest training
    state; a folder with neither is a one-line error."""
    cache = tmp_path / "cache"
    _train(_diffusion_config(sprite_dir, cache, "train.epochs=1", "train.ckpt_every=2"), tmp_path / "first")
    (tmp_path / "first" / "diffusion.pt").unlink()  # as if stopped after its last state checkpoint
    newest = sorted((tmp_path / "first").glob("state-*.pt"))[-1]
    start = load_checkpoint(newest)["ema"]["shadow"]
    cfg = _diffusion_config(sprite_dir, cache, "train.epochs=1", f"train.init={tmp_path / 'first'}",
                            "train.lr=1e-12", "train.ema_decay=0")
    _train(cfg, tmp_path / "ft")
    tuned = load_checkpoint(tmp_path / "ft" / "diffusion.pt", kind="diffusion")["model"]
    assert all(torch.allclose(tuned[k], start[k], atol=1e-6) for k in start)
    assert any(not torch.allclose(start[k], torch.zeros_like(start[k])) for k in start)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither diffusion.pt nor a training state"):
        _train(_diffusion_config(sprite_dir, cache, f"train.init={tmp_path / 'empty'}"), tmp_path / "bad")
