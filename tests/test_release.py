"""The shipped weights: diffusion.release writes fp16 copies of a tiny latent run that load through the
safe loader, keep their configs and latent statistics, point the LDM at the released AE by hash and
report a measured fidelity; diffusion.sample without --ckpt falls back on them."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import diffusion.sample as dsample
from diffusion import release
from plumbing.checkpoint import file_sha256, half_precision, load_checkpoint
from plumbing.cli import UserError, run_main
from plumbing.runs import newest_run_file, release_dir


@pytest.fixture(scope="module")
def released(tiny_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("release") / "release"
    release.main(["--ldm", str(tiny_runs["ldm"]), "--out", str(out), "--n", "4", "--steps", "3", "--device", "cpu"])
    return out


def test_half_precision_converts_floats_only():
    state = {"w": torch.tensor([1.0, 1 / 3]), "n": torch.tensor(7), "e": torch.zeros(0)}
    half = half_precision(state)
    assert half["w"].dtype == torch.float16 and half["n"].dtype == torch.int64 and half["e"].dtype == torch.float16
    assert torch.allclose(half["w"].float(), state["w"], rtol=2 ** -11)
    with pytest.raises(ValueError, match="float16 range"):
        half_precision({"big": torch.tensor([1e6])})


def test_release_files_are_fp16_checkpoints_with_everything_kept(released, tiny_runs):
    ae_src = load_checkpoint(tiny_runs["ae_path"], kind="autoencoder")
    ldm_src = load_checkpoint(tiny_runs["ldm"] / "diffusion.pt", kind="diffusion")
    ae = load_checkpoint(released / "ae.pt", kind="autoencoder")      # the safe loader (weights_only)
    ldm = load_checkpoint(released / "ldm.pt", kind="diffusion")
    assert all(v.dtype == torch.float16 for v in ae["model"].values() if v.is_floating_point())
    assert all(v.dtype == torch.float16 for v in ldm["ema"].values())
    assert "model" not in ldm  # only the EMA weights, which sampling uses
    assert ae["config"] == ae_src["config"] and ae["latent"] == ae_src["latent"]
    assert ae["data_fingerprint"] == ae_src["data_fingerprint"]
    assert ldm["config"] == ldm_src["config"] and ldm["space"] == ldm_src["space"]
    assert ldm["ae"] == {"path": str(released / "ae.pt"), "sha256": file_sha256(released / "ae.pt")}
    assert ldm["release"]["source_ae_sha256"] == ldm_src["ae"]["sha256"] != ldm["ae"]["sha256"]
    for k, v in ldm_src["ema"].items():
        assert torch.allclose(ldm["ema"][k].float(), v, rtol=2 ** -10, atol=1e-7), k
    assert (released / "ldm.pt").stat().st_size < 0.4 * (tiny_runs["ldm"] / "diffusion.pt").stat().st_size


def test_release_json_reports_sizes_and_a_measured_fidelity(released):
    record = json.loads((released / "release.json").read_text())
    assert record["ae"]["dtype"] == record["ldm"]["dtype"] == "float16"  # the tiny run passes the 40 dB check
    assert record["sizes"]["total_mb"] == pytest.approx(
        ((released / "ae.pt").stat().st_size + (released / "ldm.pt").stat().st_size) / 1e6)
    assert record["ldm"]["sha256"] == file_sha256(released / "ldm.pt")
    for part in ("ae", "ldm", "both"):
        diff = record["fidelity"][part]
        assert diff["psnr_db"] is None or diff["psnr_db"] >= 40
        assert 0 <= diff["max_abs_8bit"] <= 255 and 0 <= diff["share_8bit_differ"] <= 1


def test_released_model_loads_in_float32_and_samples_like_the_source(released, tiny_runs):
    cpu = torch.device("cpu")
    model, schedule, space, cfg = dsample.load_diffusion(released / "ldm.pt", cpu)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in space.vae.parameters())
    src = dsample.load_diffusion(tiny_runs["ldm"] / "diffusion.pt", cpu)
    a, _, _ = dsample.generate(model, schedule, space, cfg, cpu, 3, steps=3, seed=1, bf16=False)
    b, _, _ = dsample.generate(*src, cpu, 3, steps=3, seed=1, bf16=False)
    assert release.image_difference(b, a)["max_abs_8bit"] <= 8


def test_sample_without_ckpt_uses_the_release_then_prefers_a_run(released, tiny_runs, tmp_path, capsys):
    shutil.copytree(released, release_dir())  # checkpoints/release under the tests' checkpoint root
    assert newest_run_file("ae.pt") is None and newest_run_file("diffusion.pt") is None  # release is no run
    run_main(dsample.main, ["--n", "2", "--steps", "2", "--out", str(tmp_path / "s"), "--device", "cpu"])
    assert f"no --ckpt: sampling {release_dir() / 'ldm.pt'}" in capsys.readouterr().out
    assert (tmp_path / "s" / "0001.png").is_file()
    own = release_dir().parent / "pixel-20990101-000000"
    shutil.copytree(tiny_runs["pixel"], own)
    run_main(dsample.main, ["--n", "1", "--steps", "2", "--out", str(tmp_path / "t"), "--device", "cpu"])
    assert f"no --ckpt: sampling {own / 'diffusion.pt'}" in capsys.readouterr().out


def test_moved_release_finds_its_ae_beside_it(released, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(released, moved)
    record = dict(load_checkpoint(moved / "ldm.pt", kind="diffusion")["ae"], path=str(tmp_path / "gone" / "ae.pt"))
    assert dsample.find_ae(record, moved / "ldm.pt") == moved / "ae.pt"  # the recorded path no longer exists
    (moved / "ae.pt").unlink()
    with pytest.raises(UserError, match="is missing"):
        dsample.find_ae(record, moved / "ldm.pt")


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
    assert "checkpoints/release/ldm.pt" in text and "newest" in text


def test_auto_keeps_float32_for_a_part_under_the_threshold(tiny_runs, tmp_path, capsys):
    release.main(["--ldm", str(tiny_runs["ldm"]), "--ae", str(tiny_runs["ae"]), "--out", str(tmp_path / "r"),
                  "--n", "2", "--steps", "2", "--min-psnr", "1000", "--device", "cpu"])
    record = json.loads((tmp_path / "r" / "release.json").read_text())
    assert record["ae"]["dtype"] == record["ldm"]["dtype"] == "float32"
    assert record["fidelity"]["both"]["psnr_db"] is None  # float32 copies are exact
    assert "stored in float32" in capsys.readouterr().out
    ldm = load_checkpoint(tmp_path / "r" / "ldm.pt", kind="diffusion")
    assert ldm["ae"]["sha256"] == file_sha256(tmp_path / "r" / "ae.pt")


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
    assert "overwrite a source" in error(["--ldm", str(tiny_runs["ldm"]), "--ae", str(tiny_runs["ae"]),
                                          "--out", str(tiny_runs["ae"])])
    assert "not the one" in error(["--ldm", str(tiny_runs["ldm"]), "--ae", str(tiny_runs["pixel"] / "diffusion.pt"),
                                   "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()
