"""The shipped weights: diffusion.release writes a tiny latent run as safetensors files with a JSON
config and a model card, they load in float32 and sample like the source, the fidelity is measured;
diffusion.sample without --ckpt falls back on them, and a fine-tuning run can start from them."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import diffusion.sample as dsample
from diffusion import release
from diffusion.pipeline import load_diffusion
from plumbing.checkpoint import file_sha256, half_precision, load_checkpoint
from plumbing.cli import UserError, run_main
from plumbing.release import image_difference, model_card, release_dir
from plumbing.runs import newest_run_file
from diffusion import trainer as dtrainer
from diffusion.config import DiffusionConfig
from plumbing.config import load_config
from tests.helpers import TINY_DIFFUSION, offline_training


@pytest.fixture(scope="module")
def released(tiny_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("release") / "release"
    card = tmp_path_factory.mktemp("card") / "card.md"
    card.write_text("## Limitations\n\nA tiny test model.\n")
    release.main(["--ldm", str(tiny_runs["ldm"]), "--out", str(out), "--n", "4", "--steps", "3", "--device", "cpu",
                  "--card", str(card)])
    return out


def test_half_precision_converts_floats_only():
    state = {"w": torch.tensor([1.0, 1 / 3]), "n": torch.tensor(7), "e": torch.zeros(0)}
    half = half_precision(state)
    assert half["w"].dtype == torch.float16 and half["n"].dtype == torch.int64 and half["e"].dtype == torch.float16
    assert torch.allclose(half["w"].float(), state["w"], rtol=2 ** -11)
    with pytest.raises(ValueError, match="float16 range"):
        half_precision({"big": torch.tensor([1e6])})


def test_release_is_safetensors_with_its_configs_beside_them(released, tiny_runs):
    ae_src = load_checkpoint(tiny_runs["ae_path"], kind="autoencoder")
    ldm_src = load_checkpoint(tiny_runs["ldm"] / "diffusion.pt", kind="diffusion")
    ae, ldm = load_file(released / "ae.safetensors"), load_file(released / "ldm.safetensors")
    assert all(v.dtype == torch.float16 for v in ldm.values() if v.is_floating_point())
    assert set(ldm) == set(ldm_src["ema"]) and set(ae) == set(ae_src["model"])  # EMA weights only
    for k, v in ldm.items():
        assert torch.allclose(v.float(), ldm_src["ema"][k].float(), rtol=2 ** -10, atol=1e-6)
    meta = json.loads((released / "config.json").read_text())
    assert meta["ldm"]["config"] == ldm_src["config"] and meta["ae"]["config"] == ae_src["config"]
    assert meta["ae"]["latent"] == ae_src["latent"] and meta["ldm"]["shape"] == ldm_src["space"]["shape"]
    assert meta["ldm"]["sha256"] == file_sha256(released / "ldm.safetensors")
    assert meta["ae"]["source_sha256"] == file_sha256(tiny_runs["ae_path"])
    assert meta["sizes"]["total_mb"] == pytest.approx(sum((released / f).stat().st_size for f in
                                                          ("ae.safetensors", "ldm.safetensors")) / 1e6)
    for part in ("ae", "ldm", "both"):
        diff = meta["fidelity"][part]
        assert diff["psnr_db"] is None or diff["psnr_db"] >= 40
        assert 0 <= diff["max_abs_8bit"] <= 255 and 0 <= diff["share_8bit_differ"] <= 1
    card = (released / "MODEL_CARD.md").read_text()
    assert "# Model card" in card and "ldm.safetensors" in card and "A tiny test model." in card


def test_released_model_loads_in_float32_and_samples_like_the_source(released, tiny_runs):
    rel = load_diffusion(released, "cpu")
    assert all(p.dtype == torch.float32 for p in rel.model.parameters())
    assert all(p.dtype == torch.float32 for p in rel.space.vae.parameters())
    src = load_diffusion(tiny_runs["ldm"] / "diffusion.pt", "cpu")
    a, _, _ = rel.generate(3, 1, steps=3, bf16=False)
    b, _, _ = src.generate(3, 1, steps=3, bf16=False)
    assert image_difference(b, a)["max_abs_8bit"] <= 8


def test_sample_without_ckpt_uses_the_release_then_prefers_a_run(released, tiny_runs, tmp_path, capsys):
    shutil.copytree(released, release_dir())  # checkpoints/release under the tests' checkpoint root
    assert newest_run_file("ae.pt") is None and newest_run_file("diffusion.pt") is None  # release is no run
    run_main(dsample.main, ["--n", "2", "--steps", "2", "--out", str(tmp_path / "s"), "--device", "cpu"])
    assert f"sampling {release_dir()}" in capsys.readouterr().out
    assert (tmp_path / "s" / "0001.png").is_file()
    own = release_dir().parent / "pixel-20990101-000000"
    shutil.copytree(tiny_runs["pixel"], own)
    run_main(dsample.main, ["--n", "1", "--steps", "2", "--out", str(tmp_path / "t"), "--device", "cpu"])
    assert f"sampling {own / 'diffusion.pt'}" in capsys.readouterr().out


def test_moved_release_still_loads_and_a_damaged_one_says_so(released, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(released, moved)
    assert load_diffusion(moved, "cpu").space.shape == load_diffusion(released, "cpu").space.shape
    (moved / "ae.safetensors").write_bytes(b"truncated")
    with pytest.raises(UserError, match="ae.safetensors"):
        load_diffusion(moved, "cpu")
    (moved / "ldm.safetensors").unlink()
    with pytest.raises(UserError, match="ldm.safetensors"):
        load_diffusion(moved, "cpu")


def test_fine_tuning_starts_from_the_release(released, tiny_runs, sprite_dir, tmp_path):
    """train.init=RELEASE: the run starts from the release's EMA weights and keeps its AE (by sha256)."""

    src_cfg = json.loads((released / "config.json").read_text())["ldm"]["config"]
    shape = [f"model.channels={src_cfg['model']['channels']}", f"model.blocks={src_cfg['model']['blocks']}",
             f"model.attention_levels={src_cfg['model']['attention_levels']}"]
    cfg = load_config(DiffusionConfig, None, [f"data.root={sprite_dir}", f"data.cache_dir={tmp_path / 'cache'}",
                                              *TINY_DIFFUSION, *shape, "space=latent", "train.epochs=1",
                                              "data.holdout=0.25", f"train.init={released}", "train.lr=1e-12",
                                              "train.ema_decay=0"])
    with offline_training():
        result = dtrainer.train(cfg, str(tmp_path / "ft"))
    ckpt = load_checkpoint(tmp_path / "ft" / "diffusion.pt", kind="diffusion")
    assert ckpt["ae"]["sha256"] == file_sha256(released / "ae.safetensors")
    start = load_file(released / "ldm.safetensors")
    # a learning rate of 1e-12: the weights stay those of the release
    assert all(torch.allclose(ckpt["model"][k], start[k].float(), atol=1e-6) for k in start)
    assert "starting from the EMA weights" in (tmp_path / "ft" / "log.txt").read_text() and result["steps"] > 0
    wrong = load_config(DiffusionConfig, None, [f"data.root={sprite_dir}", f"data.cache_dir={tmp_path / 'cache'}",
                                                *TINY_DIFFUSION, "model.channels=[8,16]", f"train.init={released}"])
    with pytest.raises(UserError, match="model.channels"):
        dtrainer.train(wrong, str(tmp_path / "bad"))


def test_model_card_says_what_a_fine_tuned_model_started_from(released):
    meta = json.loads((released / "config.json").read_text())
    assert "fine-tuned from" not in model_card(meta, None)
    meta["ldm"]["config"]["train"]["init"] = "checkpoints/long-run"
    assert "fine-tuned from `checkpoints/long-run`" in model_card(meta, None)


def test_no_checkpoint_at_all_is_a_user_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_main(dsample.main, ["--out", str(tmp_path / "s")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "no diffusion checkpoint found" in err and "release" in err


def test_sample_help_states_the_fallback(capsys):
    with pytest.raises(SystemExit):
        dsample.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "checkpoints/release" in text and "newest" in text


def test_auto_keeps_float32_for_a_part_under_the_threshold(tiny_runs, tmp_path, capsys):
    release.main(["--ldm", str(tiny_runs["ldm"]), "--ae", str(tiny_runs["ae"]), "--out", str(tmp_path / "r"),
                  "--n", "2", "--steps", "2", "--min-psnr", "1000", "--device", "cpu"])
    meta = json.loads((tmp_path / "r" / "config.json").read_text())
    assert meta["ae"]["dtype"] == meta["ldm"]["dtype"] == "float32"
    assert meta["fidelity"]["both"]["psnr_db"] is None  # float32 copies are exact
    assert "stored in float32" in capsys.readouterr().out
    assert all(v.dtype == torch.float32 for v in load_file(tmp_path / "r" / "ldm.safetensors").values())


def test_release_user_errors(tiny_runs, tmp_path, capsys):
    def error(args):
        with pytest.raises(SystemExit) as exit_:
            run_main(release.main, args)
        assert exit_.value.code == 2
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1
        return lines[0]

    assert "pixel-space model" in error(["--ldm", str(tiny_runs["pixel"]), "--out", str(tmp_path / "r")])
    assert "no diffusion.pt" in error(["--ldm", str(tmp_path), "--out", str(tmp_path / "r")])
    assert "not the one" in error(["--ldm", str(tiny_runs["ldm"]), "--ae", str(tiny_runs["pixel"] / "diffusion.pt"),
                                   "--out", str(tmp_path / "r")])
    assert "--card" in error(["--ldm", str(tiny_runs["ldm"]), "--card", str(tmp_path / "none.md"), "--out",
                              str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()
