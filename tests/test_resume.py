"""Training-state checkpoints and --resume (plumbing/resume.py): a run killed with SIGKILL at an
arbitrary step and resumed ends with weights bitwise identical to an uninterrupted run, for the AE
and the LDM; SIGTERM stops cleanly after a step; NaN losses stop the run and keep the last good
checkpoint; resume refuses foreign folders and overrides that would change the weights.

The kill happens at an exact step through the trainers' test hook (POKEDIFFUSION_TEST_SIGNAL=KILL@8:
SIGKILL right after step 8), in a subprocess; the reference and resumed runs run in-process."""
from __future__ import annotations

import errno
import json
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import autoencoder.train as ae_train
import autoencoder.trainer as ae_trainer
import diffusion.train as dtrain
from plumbing.checkpoint import load_checkpoint
from plumbing.cli import UserError, run_main
from plumbing.resume import Progress, TrainingState, state_files
from tests.helpers import REPO, TINY_AE, TINY_DIFFUSION, offline_training, signal_at_step, subprocess_env
import shutil

# 21 training images, batches of 4: 5 steps per epoch, 10 in all; state checkpoints after steps 3, 6
# and 9 (the newest 2 kept). Killed after step 8, the run resumes from step 6 (epoch 1, batch 1) and
# must redo steps 7 and 8 exactly as the first time. The AE trains with the patch discriminator from
# step 2 (20% of the 10 steps; configs/ae.yaml: 55% of its time budget), so its weights and optimiser
# are resumed too.
RESUME_RUN = ["train.batch_size=4", "train.epochs=2", "train.ckpt_every=3", "train.keep_last=2",
              "train.max_minutes=0"]
KILL_AT = 8


def _ae_args(sprite_dir: Path, cache: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs/ae.yaml"), f"data.root={sprite_dir}", f"data.cache_dir={cache}",
            *TINY_AE, *RESUME_RUN, "loss.disc_weight=0.1", "loss.disc_start=0.2", *extra]


def _ldm_args(sprite_dir: Path, cache: Path, ae_path: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs/ldm.yaml"), f"data.root={sprite_dir}", f"data.cache_dir={cache}",
            f"ae.ckpt={ae_path}", *TINY_DIFFUSION, *RESUME_RUN, *extra]


def _kill_run(module: str, args: list[str], out: Path, tmp_path: Path, at: int = KILL_AT) -> None:
    """Run a trainer in a subprocess that sends itself SIGKILL right after step `at`."""
    proc = subprocess.run([sys.executable, "-m", "tests.signal_at_step", f"KILL@{at}", module, "--out", str(out), *args],
                          cwd=REPO, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])


def _logged_steps(run_dir: Path) -> list[int]:
    return [int(s) for s in re.findall(r"step (\d+)/\d+ loss", (run_dir / "log.txt").read_text())]


def _step_lines(run_dir: Path) -> list[str]:
    """The per-step log lines (epoch, step, losses, learning rate) without their timestamps."""
    return re.findall(r"epoch \d+ step \d+/\d+ .*", (run_dir / "log.txt").read_text())


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _messages(stderr: str) -> list[str]:
    """stderr without the progress bar's lines (tqdm draws on stderr)."""
    return [ln for ln in stderr.replace("\r", "\n").splitlines() if ln.strip() and "step/s" not in ln
            and not ln.startswith(("AE:", "DDPM"))]


def _one_line_error(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        run_main(main, argv)
    assert exit_.value.code == 2
    err = _messages(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# --- the AE -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ae_reference(sprite_dir, tmp_path_factory):
    """The uninterrupted run of RESUME_RUN, in-process."""
    root = tmp_path_factory.mktemp("ae_ref")
    with offline_training():
        ae_train.main(["--out", str(root / "run"), *_ae_args(sprite_dir, root / "cache")])
    return root / "run"


def test_ae_killed_and_resumed_is_bitwise_identical(ae_reference, sprite_dir, tmp_path, no_lpips):
    run = tmp_path / "run"
    _kill_run("autoencoder.train", _ae_args(sprite_dir, tmp_path / "cache"), run, tmp_path)
    assert not (run / "ae.pt").exists()
    # keep_last=2: the states after steps 3 and 6; the write after step 9 never happened
    assert [p.name for p in state_files(run)] == ["state-00000003.pt", "state-00000006.pt"]
    assert not list(run.glob(".*.tmp"))
    assert _logged_steps(run) == list(range(1, KILL_AT + 1))

    ae_train.main(["--resume", str(run)])
    log = (run / "log.txt").read_text()
    assert "resumed from" in log and "state-00000006.pt at step 6 (epoch 1, batch 1)" in log
    # the resumed process trained steps 7-10 only, with the data, noise and learning rate of the first time
    assert _logged_steps(run) == list(range(1, KILL_AT + 1)) + list(range(7, 11))
    # identical losses and learning rates, to the printed digit
    assert _step_lines(run)[KILL_AT:] == _step_lines(ae_reference)[6:]

    ref, got = (load_checkpoint(r / "ae.pt", kind="autoencoder") for r in (ae_reference, run))
    _assert_same_weights(ref["model"], got["model"])
    assert ref["latent"] == got["latent"]
    ref_m, got_m = (json.loads((r / "metrics.json").read_text()) for r in (ae_reference, run))
    for key in ("steps", "final_loss", "final_l1", "psnr_db", "l1", "epochs_completed"):
        assert ref_m[key] == got_m[key], key
    assert (run / "loss.png").is_file() and (run / "reconstructions.png").is_file()


def test_sigterm_stops_after_the_step_and_says_how_to_resume(ae_reference, sprite_dir, tmp_path, no_lpips,
                                                             monkeypatch, capsys):
    run = tmp_path / "run"
    undo = pytest.MonkeyPatch()
    signal_at_step(undo, "TERM@4")
    handler_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_:
        run_main(ae_train.main, ["--out", str(run), *_ae_args(sprite_dir, tmp_path / "cache")])
    assert exit_.value.code == 128 + signal.SIGTERM
    err = _messages(capsys.readouterr().err)
    assert len(err) == 1 and "stopped by SIGTERM after step 4" in err[0]
    assert f"continue with: python -m autoencoder.train --resume {run}" in err[0]
    assert signal.getsignal(signal.SIGTERM) is handler_before  # the handlers are put back
    assert [p.name for p in state_files(run)] == ["state-00000003.pt", "state-00000004.pt"]
    assert not (run / "ae.pt").exists()
    state = load_checkpoint(run / "state-00000004.pt", kind="autoencoder-state")
    assert state["progress"]["step"] == 4 and (state["progress"]["epoch"], state["progress"]["batch"]) == (0, 4)

    undo.undo()
    ae_train.main(["--resume", str(run)])
    _assert_same_weights(load_checkpoint(ae_reference / "ae.pt")["model"], load_checkpoint(run / "ae.pt")["model"])


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_state(sprite_dir, tmp_path, no_lpips, capsys,
                                                                      monkeypatch):
    """A loss that turns NaN at the 5th step: the run stops there, the state after step 4 stays."""
    real_build = ae_trainer.build_vae

    def poisoned_vae(cfg):
        vae = real_build(cfg)
        calls = {"n": 0}
        forward = vae.forward

        def nan_from_step_5(x, eps=None):
            calls["n"] += 1
            x_hat, mean, logvar = forward(x, eps)
            return (x_hat * float("nan") if calls["n"] >= 5 else x_hat), mean, logvar
        vae.forward = nan_from_step_5
        return vae

    monkeypatch.setattr(ae_trainer, "build_vae", poisoned_vae)
    run = tmp_path / "run"
    argv = ["--out", str(run), f"data.root={sprite_dir}", f"data.cache_dir={tmp_path / 'cache'}",
            *TINY_AE, *RESUME_RUN, "train.ckpt_every=2"]
    line = _one_line_error(capsys, ae_train.main, argv)
    assert "the loss became nan at step 5" in line and "state-00000004.pt" in line
    assert [p.name for p in state_files(run)] == ["state-00000002.pt", "state-00000004.pt"]
    state = load_checkpoint(run / "state-00000004.pt", kind="autoencoder-state")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.dtype.is_floating_point)
    assert not (run / "ae.pt").exists()


def test_huge_learning_rate_is_stopped_before_a_bad_checkpoint(sprite_dir, tmp_path, no_lpips, capsys):
    """lr = 1e30: the weights overflow; the run stops with one line naming the step, and every state
    checkpoint left behind holds finite weights."""
    run = tmp_path / "run"
    argv = ["--out", str(run), f"data.root={sprite_dir}", f"data.cache_dir={tmp_path / 'cache'}",
            *TINY_AE, *RESUME_RUN, "train.ckpt_every=1", "train.lr=1e30", "train.warmup_steps=0", "train.grad_clip=0"]
    line = _one_line_error(capsys, ae_train.main, argv)
    assert re.search(r"(the loss became (nan|inf) at step \d+|are not finite after step \d+)", line), line
    for path in state_files(run):
        state = load_checkpoint(path)
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.dtype.is_floating_point), path
    assert not (run / "ae.pt").exists()


# --- TrainingState on its own -------------------------------------------------------------------------

@dataclass
class _Cfg:
    lr: float = 1e-3


def _state(run_dir: Path, model: torch.nn.Module, keep_last: int = 2) -> TrainingState:
    opt = torch.optim.AdamW(model.parameters())
    return TrainingState(run_dir, "test-state", "python -m test", _Cfg(), {"model": model, "optimizer": opt},
                         {"noise": torch.Generator().manual_seed(0)}, torch.device("cpu"), every=1, keep_last=keep_last)


def test_non_finite_weights_are_never_written(tmp_path):
    model = torch.nn.Linear(2, 2)
    state = _state(tmp_path, model)
    good = state.save(Progress(step=1))
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(UserError, match=r"not finite after step 2.*state-00000001.pt"):
        state.save(Progress(step=2))
    assert state_files(tmp_path) == [good]


def test_a_failed_write_keeps_the_previous_states(tmp_path, monkeypatch):
    state = _state(tmp_path, torch.nn.Linear(2, 2), keep_last=1)
    before = state.save(Progress(step=1))
    blob = before.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match="disk full"):
        state.save(Progress(step=2))
    assert state_files(tmp_path) == [before] and before.read_bytes() == blob  # not rotated away, not touched
    assert sorted(p.name for p in tmp_path.iterdir()) == [before.name]


# --- the LDM ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_ae(sprite_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume_ae")
    with offline_training():
        ae_train.main(["--out", str(root / "ae"), f"data.root={sprite_dir}", f"data.cache_dir={root / 'cache'}",
                       *TINY_AE])
    return root / "ae" / "ae.pt"


def test_ldm_killed_and_resumed_is_bitwise_identical(tiny_ae, sprite_dir, tmp_path):
    """Latent space with style labels: data order, label dropout, t, eps, EMA and AdamW all continue
    exactly."""
    args = _ldm_args(sprite_dir, tmp_path / "cache", tiny_ae, "cond.style=true")
    ref = tmp_path / "ref"
    dtrain.main(["--out", str(ref), *args])
    run = tmp_path / "run"
    _kill_run("diffusion.train", args, run, tmp_path)
    assert [p.name for p in state_files(run)] == ["state-00000003.pt", "state-00000006.pt"]
    assert not (run / "diffusion.pt").exists()

    dtrain.main(["--resume", str(run), "train.log_every=1"])  # a harmless override is accepted
    assert _logged_steps(run) == list(range(1, KILL_AT + 1)) + list(range(7, 11))
    a, b = (load_checkpoint(r / "diffusion.pt", kind="diffusion") for r in (ref, run))
    _assert_same_weights(a["model"], b["model"])
    _assert_same_weights(a["ema"], b["ema"])
    assert a["ae"] == b["ae"] and a["metrics"]["final_loss"] == b["metrics"]["final_loss"]
    assert (run / "samples.png").read_bytes() == (ref / "samples.png").read_bytes()


# --- what resume refuses ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stopped_ae_run(sprite_dir, tmp_path_factory):
    """An AE run stopped by SIGTERM after step 3 (in-process), for the refusal tests."""
    root = tmp_path_factory.mktemp("stopped")
    with offline_training() as mp:
        signal_at_step(mp, "TERM@3")
        with pytest.raises(SystemExit):
            run_main(ae_train.main, ["--out", str(root / "run"), *_ae_args(sprite_dir, root / "cache")])
    return root / "run"


@pytest.mark.parametrize("override, key", [("train.lr=0.1", "train.lr"), ("train.epochs=3", "train.epochs"),
                                           ("seed=1", "seed"), ("train.max_minutes=5", "train.max_minutes")])
def test_resume_refuses_overrides_that_change_the_weights(stopped_ae_run, capsys, override, key):
    line = _one_line_error(capsys, ae_train.main, ["--resume", str(stopped_ae_run), override])
    assert f"{key} was" in line and "drop the override or start a new run" in line
    assert "train.log_every" in line  # says what may change


def test_resume_refuses_config_and_out(stopped_ae_run, capsys, tmp_path):
    line = _one_line_error(capsys, ae_train.main, ["--resume", str(stopped_ae_run), "--config", "configs/ae.yaml"])
    assert "drop --config, --out and --images" in line
    line = _one_line_error(capsys, ae_train.main, ["--resume", str(stopped_ae_run), "--out", str(tmp_path)])
    assert "drop --config, --out and --images" in line


def test_resume_of_a_missing_or_foreign_folder(stopped_ae_run, tmp_path, capsys):
    line = _one_line_error(capsys, ae_train.main, ["--resume", str(tmp_path / "nope")])
    assert "does not exist" in line and "--resume" in line
    (tmp_path / "empty").mkdir()
    line = _one_line_error(capsys, ae_train.main, ["--resume", str(tmp_path / "empty")])
    assert "no training-state checkpoint" in line and "start a new run" in line
    line = _one_line_error(capsys, dtrain.main, ["--resume", str(stopped_ae_run)])
    assert "run folder of python -m autoencoder.train, not of python -m diffusion.train" in line
    assert f"python -m autoencoder.train --resume {stopped_ae_run}" in line


def test_resume_of_a_finished_run(ae_reference, capsys):
    line = _one_line_error(capsys, ae_train.main, ["--resume", str(ae_reference)])
    assert "has finished" in line and "ae.pt" in line


def test_resume_with_other_data_is_refused(stopped_ae_run, sprite_dir, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(sprite_dir, other)
    sorted(other.glob("*.png"))[0].unlink()
    line = _one_line_error(capsys, ae_train.main, ["--resume", str(stopped_ae_run), f"data.root={other}"])
    assert "are not the ones run" in line and "data.root" in line
