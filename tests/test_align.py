"""The hidden-state terms (diffusion/align.py) and the alignment teacher (diffusion/teacher.py): the
losses against their formulas, the stages found in the U-Net, training with each term on a tiny
pixel-space run (nothing of them in the trained model; a stopped run resumes to the same weights),
the teacher's feature cache, and the one-line refusals of a missing or mismatched teacher."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import diffusion.train as dtrain
import diffusion.trainer as dtrainer
from diffusion.align import (HiddenTerms, align_loss, resized, spatially_normalised, stage_channels,
                             stage_module)
from diffusion.config import DiffusionConfig, LossConfig
from diffusion.teacher import COMMAND, TeacherConfig, features_cache, load_teacher
from diffusion.teacher import train as train_teacher
from diffusion.unet import UNet
from plumbing.checkpoint import file_sha256, load_checkpoint
from plumbing.cli import UserError, run_main
from plumbing.config import load_config
from sprites.config import DataConfig, SourceShares
from tests.helpers import TINY_DIFFUSION, signal_at_step

TERMS_RUN = ["train.epochs=3", "train.ckpt_every=2", "train.keep_last=5"]


# --- the formulas -----------------------------------------------------------------------------------

def test_alignment_target_is_normalised_over_positions_and_the_loss_is_minus_the_cosine():
    y = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1)) + 5.0  # a large shared component
    n = spatially_normalised(y)
    assert n.flatten(2).mean(-1).abs().max() < 1e-5
    assert n.flatten(2).std(-1).sub(1).abs().max() < 1e-4
    assert spatially_normalised(y + 7.0).sub(n).abs().max() < 1e-4  # what all positions share is gone
    assert align_loss(n, y).item() == pytest.approx(-1.0, abs=1e-5)
    assert align_loss(-n, y).item() == pytest.approx(1.0, abs=1e-5)
    assert resized(y, (1, 1)).flatten().tolist() == pytest.approx(y.mean(dim=(2, 3)).flatten().tolist())
    assert resized(y, (6, 6)).shape[-2:] == (6, 6)


def test_stages_are_found_at_their_level():
    model = UNet(4, [16, 32, 64], 2, [1, 2])
    seen = {}
    for stage in ("enc0", "enc1", "enc2", "mid", "dec2", "dec1", "dec0"):
        stage_module(model, stage).register_forward_hook(lambda m, i, o, s=stage: seen.__setitem__(s, o.shape))
    model(torch.randn(2, 4, 16, 16), torch.tensor([1, 2]))
    assert seen == {"enc0": (2, 16, 16, 16), "enc1": (2, 32, 8, 8), "enc2": (2, 64, 4, 4), "mid": (2, 64, 4, 4),
                    "dec2": (2, 64, 4, 4), "dec1": (2, 32, 8, 8), "dec0": (2, 16, 16, 16)}
    assert [stage_channels(model, s) for s in ("enc0", "mid", "dec1")] == [16, 64, 32]


def test_the_switch_off_step():
    model = UNet(4, [16, 32], 1, [1])
    features = type("F", (), {"dim": 8})()
    terms = HiddenTerms(LossConfig(align=1.0, align_until=10), model, features)
    assert terms.aligning(9) and not terms.aligning(10)
    assert HiddenTerms(LossConfig(align=1.0), model, features).aligning(10 ** 6)
    assert not HiddenTerms(LossConfig(), model)
    assert HiddenTerms(LossConfig(align=1.0), model, features).names() == ["align"]


@pytest.mark.parametrize("key, value", [("loss.align", "-1"), ("loss.align_stage", "enc5"), ("loss.align_stage", "middle"),
                                        ("loss.align_until", "-3"), ("loss.disperse", "0.5")])
def test_bad_term_settings_fail_before_any_work(key, value):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        load_config(DiffusionConfig, None, [f"{key}={value}"])


# --- the teacher and the runs ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def teacher(sprite_dir, tmp_path_factory) -> Path:
    """A teacher trained a few steps on the synthetic sprites at 16 px."""
    root = tmp_path_factory.mktemp("teacher")
    cfg = load_config(TeacherConfig, None, [f"data.root={sprite_dir}", f"data.cache_dir={root / 'cache'}", "data.size=16",
                                            "data.holdout=0.1", "data.mix.artwork=1", "data.mix.dream_world=0",
                                            "data.mix.sprite_front=0", "data.mix.sprite_back=0", "device=cpu",
                                            "train.steps=4", "train.batch_size=8", "train.warmup_steps=1",
                                            "model.widths=[8,16]", "model.features=8"])
    result = train_teacher(cfg, str(root / "run"))
    return Path(result["run_dir"]) / "teacher.pt"


def _config(sprite_dir: Path, cache: Path, *overrides: str) -> DiffusionConfig:
    base = [f"data.root={sprite_dir}", f"data.cache_dir={cache}", "space=pixel"] + TINY_DIFFUSION + TERMS_RUN
    return load_config(DiffusionConfig, None, base + list(overrides))


def _train(cfg, out: Path) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("POKEMON_DATA", raising=False)
        return dtrainer.train(cfg, str(out))


def test_teacher_features_map_and_its_record(teacher):
    ckpt = load_checkpoint(teacher, kind="teacher")
    assert ckpt["data"]["size"] == 16 and ckpt["data"]["sources"] == ["artwork"] and ckpt["config"]["seed"] == 1
    model, _ = load_teacher(teacher, DataConfig(size=16, holdout=0.1))
    assert model.features(torch.zeros(3, 3, 16, 16)).shape == (3, 8, 4, 4)


def test_training_with_alignment_keeps_it_out_of_the_model(sprite_dir, teacher, tmp_path):
    cfg = _config(sprite_dir, tmp_path / "cache", "loss.align=0.5", f"loss.teacher={teacher}", "loss.align_stage=enc1",
                  "loss.align_until=4")
    result = _train(cfg, tmp_path / "run")
    run = Path(result["run_dir"])
    state = load_checkpoint(sorted(run.glob("state-*.pt"))[-1])
    assert state["projection"].keys() == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    history = state["progress"]["history"]
    assert len(history["align"]) == 4 < len(history["loss"])  # align off from step 4
    ckpt = load_checkpoint(run / "diffusion.pt", kind="diffusion")
    assert ckpt["model"].keys() == ckpt["ema"].keys()
    assert not any(k.startswith("projection") or "net." in k for k in ckpt["ema"])
    metrics = result
    assert math.isfinite(metrics["final_align_mean_last_epoch"])
    # the features were cached under the teacher's sha256 and these images, and are reused as they are
    cache = list((tmp_path / "cache").glob(f"teacher_{file_sha256(teacher)[:16]}_*.pt"))
    assert len(cache) == 1
    stamp = cache[0].stat().st_mtime_ns
    _train(cfg, tmp_path / "again")
    assert cache[0].stat().st_mtime_ns == stamp


def test_terms_off_leave_the_run_as_it_was(sprite_dir, tmp_path):
    """loss.align=0 (the default): the same weights whatever the term's other settings."""
    a = _train(_config(sprite_dir, tmp_path / "cache"), tmp_path / "a")
    b = _train(_config(sprite_dir, tmp_path / "cache", "loss.align_stage=enc0", "loss.teacher=nowhere.pt"), tmp_path / "b")
    wa, wb = (load_checkpoint(Path(r["run_dir"]) / "diffusion.pt", kind="diffusion")["model"] for r in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_stopped_aligned_run_resumes_to_the_same_weights(sprite_dir, teacher, tmp_path, monkeypatch):
    overrides = ["loss.align=0.5", f"loss.teacher={teacher}", "train.max_steps=6"]
    args = [f"data.root={sprite_dir}", f"data.cache_dir={tmp_path / 'cache'}", "space=pixel", *TINY_DIFFUSION,
            *TERMS_RUN, *overrides]
    monkeypatch.delenv("POKEMON_DATA", raising=False)
    dtrain.main(["--out", str(tmp_path / "ref"), *args])
    with pytest.MonkeyPatch.context() as mp:
        signal_at_step(mp, "TERM@3")
        with pytest.raises(SystemExit):
            run_main(dtrain.main, ["--out", str(tmp_path / "run"), *args])
    assert not (tmp_path / "run" / "diffusion.pt").exists()
    dtrain.main(["--resume", str(tmp_path / "run")])
    a, b = (load_checkpoint(p / "diffusion.pt", kind="diffusion") for p in (tmp_path / "ref", tmp_path / "run"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])


def test_align_without_a_teacher_names_the_command(sprite_dir, tmp_path):
    cfg = _config(sprite_dir, tmp_path / "cache", "loss.align=0.5", f"loss.teacher={tmp_path / 'none.pt'}")
    with pytest.raises(UserError, match=COMMAND.replace(".", r"\.")):
        _train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_teacher_of_another_size_or_other_sources_is_refused(sprite_dir, teacher, tmp_path):
    with pytest.raises(UserError, match=r"data\.size=16.*data\.size=32"):
        _train(_config(sprite_dir, tmp_path / "cache", "loss.align=0.5", f"loss.teacher={teacher}", "data.size=32"),
               tmp_path / "run")
    with pytest.raises(UserError, match="sources"):
        load_teacher(teacher, DataConfig(size=16, holdout=0.1, mix=SourceShares(1.0, 0.5, 0.0, 0.0)))
    assert features_cache(None, "a" * 64, "b" * 64) is None


def test_shape_error_follows_a_run_with_the_same_noise_at_every_state(sprite_dir, tmp_path, monkeypatch):
    import reports.shape_error as shape_error

    result = _train(_config(sprite_dir, tmp_path / "cache", "train.epochs=10", "train.ckpt_every=5"), tmp_path / "run")
    run = Path(result["run_dir"])
    monkeypatch.delenv("POKEMON_DATA", raising=False)
    shape_error.main([str(run), "--n", "8", "--levels", "3", "--out", str(tmp_path / "a")])
    shape_error.main([str(run), "--n", "8", "--levels", "3", "--out", str(tmp_path / "b")])
    a, b = (json.loads((tmp_path / d / "shape_error.json").read_text()) for d in "ab")
    assert a == b  # the same images and noise: the same numbers
    points = a["runs"][0]["points"]
    assert [p["step"] for p in points] == [5, 10, 15, 20]
    assert a["snr_levels"][0] == pytest.approx(0.04, rel=1e-3) and a["snr_levels"][-1] == pytest.approx(0.18, rel=1e-3)
    assert all(math.isfinite(p["error"]) and len(p["per_level"]) == 3 for p in points)
    assert points[-1]["error"] < points[0]["error"]  # training lowers the held-out error in the band
    assert (tmp_path / "a" / "shape_error.png").stat().st_size > 1000
    with pytest.raises(UserError, match="no state"):
        shape_error.main([str(tmp_path), "--out", str(tmp_path / "c")])
