"""Input that used to look like success or like a hang: non-finite and out-of-range numbers, a
diverging run, an empty request through the Python API, and "my own images" mixed with Pokemon."""
from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import autoencoder.train as ae_train
import autoencoder.trainer as ae_trainer
from autoencoder.latents import build_vae, encode_posterior
from autoencoder.config import AEConfig
from diffusion import train as dtrain
from diffusion import trainer as dtrainer
from diffusion.config import DiffusionConfig
from diffusion.pipeline import load_pipeline
from plumbing.cli import UserError
from plumbing import loop
from plumbing.config import load_config
from plumbing.guard import DivergenceGuard, Diverged
from plumbing.resume import state_files
from tests.helpers import REPO, TINY_AE, TINY_DIFFUSION, subprocess_env


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def _sample(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffusion.sample", "--ckpt", "checkpoints/release", "--n", "2",
                           "--steps", "2", "--out", str(tmp_path / "out"), *args], cwd=REPO,
                          env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=300)


# --- numbers ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, words", [("--guidance", "nan", "finite number >= 0"),
                                                ("--guidance", "inf", "finite number >= 0"),
                                                ("--guidance", "-5", "finite number >= 0"),
                                                ("--guidance", "1e30", "at most 20"),  # all-black PNGs once
                                                ("--seed", "1180591620717411303424", "from 0 to 18446744073709551615"),
                                                ("--seed", "-1", "from 0 to"),
                                                ("--n", "100000000000", "at most 1,000,000 samples"),
                                                ("--eta", "nan", "eta must lie in [0, 1]"),
                                                ("--eta", "3", "eta must lie in [0, 1]"),
                                                ("--n", "0", "positive integer"),
                                                ("--steps", "0", "between 1 and T")])
def test_sampling_numbers_are_checked_before_any_work(tmp_path, flag, value, words):
    line = _one_line(_sample(tmp_path, flag, value))
    assert words in line
    assert not (tmp_path / "out").exists()


def test_an_n_that_does_not_fit_on_the_disk_is_refused_before_any_work(tmp_path, monkeypatch):
    import shutil

    from diffusion.pipeline import check_request

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(UserError, match=r"--n 1000: 1,000 PNGs take up to 13 MB and .*folder has 1 MB free"):
        check_request(1000, 1.0, "ddim", 10, 0.0, cli=True, out=tmp_path / "new" / "folder")
    check_request(10, 1.0, "ddim", 10, 0.0, cli=True, out=tmp_path / "new" / "folder")  # 130 KB: room
    assert not (tmp_path / "new").exists()


def test_samples_that_decode_to_non_finite_numbers_are_refused_before_anything_is_written(monkeypatch):
    pipe = load_pipeline(REPO / "checkpoints/release")
    monkeypatch.setattr(pipe.space, "decode", lambda x: torch.full((len(x), 3, 64, 64), float("nan")))
    with pytest.raises(UserError, match="not finite numbers; use a smaller guidance scale"):
        pipe(n=2, steps=1)


def test_a_large_n_is_drawn_in_batches_that_give_the_samples_of_one_call():
    pipe = load_pipeline(REPO / "checkpoints/release")
    labels, _ = pipe.labels(None, None, 5, seed=3)
    whole, _, _ = pipe.generate(5, 3, labels, steps=2)
    parts = list(pipe.batches(5, 3, labels, steps=2, batch=2))
    assert [first for first, _, _ in parts] == [0, 2, 4]
    assert torch.allclose(torch.cat([images for _, images, _ in parts]), whole, atol=2e-3)


@pytest.mark.parametrize("override, words", [("train.lr=nan", "must be a finite number"),
                                             ("train.lr=.inf", "must be a finite number"),
                                             ("train.lr=-1e-3", "train.lr=-0.001 must lie in (0, inf)"),
                                             ("cond.guidance=-1", "cond.guidance=-1 must lie in [0, inf)"),
                                             ("data.mix.artwork=nan", "must be a finite number"),
                                             ("train.max_minutes=-5", "train.max_minutes=-5 must lie in [0, inf)"),
                                             ("train.lr_min_ratio=2", "must lie in [0, 1]"),
                                             ("sample.eta=1.5", "sample.eta=1.5 must lie in [0, 1]")])
def test_config_numbers_must_be_finite_and_in_range(override, words):
    with pytest.raises(UserError) as err:
        load_config(DiffusionConfig, "configs/ldm.yaml", [override])
    assert words in str(err.value)


def test_ae_config_checks_its_loss_weights_and_schedule():
    for override in ("loss.kl_weight=-1", "train.grad_clip=-1", "train.warmup_steps=-3", "train.lr_min_ratio=nan"):
        with pytest.raises(UserError):
            load_config(AEConfig, "configs/ae.yaml", [override])


def test_the_python_api_raises_value_errors_with_the_cli_message():
    pipe = load_pipeline(REPO / "checkpoints/release")
    for kwargs, words in [({"n": 0}, "positive integer"), ({"n": 2, "guidance": float("nan")}, "finite"),
                          ({"n": 2, "steps": 0}, "between 1 and T=1000"), ({"n": 2, "style": "oil"}, "unknown style"),
                          ({"n": 2, "sampler": "euler"}, "'ddim' or 'ddpm'")]:
        with pytest.raises(ValueError, match=words):
            pipe(**kwargs)


# --- the divergence guard ---------------------------------------------------------------------------------

def _healthy(n: int, seed: int = 0) -> list[float]:
    """A falling, noisy loss like the trainers' (per-batch losses scatter by a factor of ~2)."""
    g = torch.Generator().manual_seed(seed)
    level = 0.2 + 0.6 * torch.exp(-torch.arange(n) / 300.0)
    return (level * torch.exp(0.35 * torch.randn(n, generator=g))).tolist()


def test_the_guard_lets_a_healthy_run_be_and_catches_a_jump_and_a_nan():
    assert DivergenceGuard().replay(_healthy(8000)) is None
    losses = _healthy(8000)
    jumped = losses[:5050] + [3.5 * x for x in losses[5050:]]  # the lr 2e-3 collapse: 0.25 -> 0.89
    guard = DivergenceGuard()
    fired = next(i + 1 for i, loss in enumerate(jumped) if guard.step(loss))
    assert 5050 + 100 <= fired <= 5050 + 200
    assert DivergenceGuard().replay(losses[:700] + [float("nan")]) == 701
    # a short spike (fewer steps than the patience) is not a divergence
    assert DivergenceGuard().replay(losses[:3000] + [5.0] * 20 + losses[3020:]) is None


SMALL_GUARD = functools.partial(DivergenceGuard, fast=2, slow=20, warmup=6, patience=3)


def _poisoned(monkeypatch, start: int, fault):
    """predict_x0 of the diffusion trainer, with `fault` applied to its output from training step `start` on."""
    real = dtrainer.predict_x0
    calls = {"n": 0}

    def predict(model, xt, t, use_bf16, labels=None):
        out = real(model, xt, t, use_bf16, labels)
        if model.training:
            calls["n"] += 1
            if calls["n"] >= start:
                return fault(out)
        return out

    monkeypatch.setattr(dtrainer, "predict_x0", predict)


@pytest.mark.parametrize("fault, words", [(lambda x: x + 10.0, "the loss diverged from step 13 on"),
                                          (lambda x: x * float("nan"), "the loss became nan at step 13")])
def test_a_diverging_diffusion_run_stops_itself_naming_the_last_good_state(sprite_dir, tmp_path, monkeypatch, fault,
                                                                           words, capsys):
    monkeypatch.setattr(loop, "DivergenceGuard", SMALL_GUARD)
    _poisoned(monkeypatch, 13, fault)
    run = tmp_path / "run"
    argv = ["--out", str(run), f"data.root={sprite_dir}", f"data.cache_dir={tmp_path / 'cache'}", "space=pixel",
            *TINY_DIFFUSION, "train.ckpt_every=5", "train.keep_last=5"]
    with pytest.raises(Diverged) as err:
        dtrainer.train(*dtrain.parse_args(argv))
    line = str(err.value)
    assert words in line and "\n" not in line
    assert f"last good state checkpoint: {run / 'state-00000010.pt'}" in line
    assert f"train.init={run / 'state-00000010.pt'}" in line  # a way on from it at a lower rate
    assert not (run / "diffusion.pt").exists()
    assert "stopped: " in (run / "log.txt").read_text()
    assert [p.name for p in state_files(run)][-1] in ("state-00000010.pt", "state-00000015.pt")


def test_a_stopped_diverged_run_can_be_fine_tuned_from_its_last_good_state(sprite_dir, tmp_path, monkeypatch):
    """train.init takes a state file: the EMA weights of the last good state."""
    monkeypatch.setattr(loop, "DivergenceGuard", SMALL_GUARD)
    _poisoned(monkeypatch, 13, lambda x: x + 10.0)
    run = tmp_path / "run"
    common = [f"data.root={sprite_dir}", f"data.cache_dir={tmp_path / 'cache'}", "space=pixel", *TINY_DIFFUSION]
    with pytest.raises(Diverged):
        dtrainer.train(*dtrain.parse_args(["--out", str(run), *common, "train.ckpt_every=5"]))
    monkeypatch.undo()
    done = dtrainer.train(*dtrain.parse_args(["--out", str(tmp_path / "ft"), *common, "train.epochs=1",
                                            f"train.init={run / 'state-00000010.pt'}", "train.lr=1e-3"]))
    assert Path(done["run_dir"], "diffusion.pt").is_file()


def test_the_guard_stands_where_it_stood_after_a_resume():
    losses = _healthy(3000)
    whole = DivergenceGuard()
    whole.replay(losses)
    resumed = DivergenceGuard()
    resumed.replay(losses[:1700])
    again = DivergenceGuard()
    again.replay(losses[:1700])
    for loss in losses[1700:]:
        again.step(loss)
    assert (again.fast, again.slow, again.steps) == (whole.fast, whole.slow, whole.steps)


# --- progress of long phases -----------------------------------------------------------------------------

def test_encoding_advances_a_progress_bar_by_the_images(make_ae_config):
    vae = build_vae(make_ae_config()).eval()
    counted = []

    class Bar:
        def update(self, n):
            counted.append(n)

    encode_posterior(vae, torch.zeros(10, 3, 16, 16, dtype=torch.uint8), batch_size=4, progress=Bar())
    assert counted == [4, 4, 2]


# --- my own images ------------------------------------------------------------------------------------------

def test_images_flag_trains_on_that_folder_alone(sprite_dir, tmp_path, no_lpips):
    cfg, _, _ = ae_train.parse_args(["--images", str(sprite_dir)])
    assert cfg.data.root == str(sprite_dir) and list(cfg.data.mix.shares()) == ["artwork"]
    cfg, _, _ = dtrain.parse_args(["--images", str(sprite_dir), "--config", "configs/ldm_species.yaml"])
    assert not cfg.data.uses_corpus() and cfg.cond.labels == "none" and not cfg.cond.style and not cfg.cond.species
    with pytest.raises(UserError, match="trains on that folder alone"):
        ae_train.parse_args(["--images", str(sprite_dir), "data.mix.sprite_front=0.3"])
    with pytest.raises(UserError, match="--images"):
        ae_train.parse_args(["--resume", str(tmp_path), "--images", str(sprite_dir)])
    result = ae_trainer.train(*ae_train.parse_args(["--images", str(sprite_dir), "--out", str(tmp_path / "ae"),
                                                  f"data.cache_dir={tmp_path / 'cache'}", *TINY_AE]))
    log = Path(result["run_dir"], "log.txt").read_text()
    assert f"data {sprite_dir}: 22 train / 2 held-out" in log and "sources" not in log
