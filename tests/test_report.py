"""reports.compare: the latent-against-pixel report, end to end on tiny runs over the synthetic
sprites (report.md, its figures, its tables), the equal-compute sentences, and its user errors."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from plumbing.cli import run_main
from plumbing.pictures import fit_budget
from reports import compare, comparison
from PIL import Image
from diffusion.config import DiffusionConfig
from plumbing.pictures import save_gif
import numpy as np

NOTES = "We tried *tiny* models.\n\n- what works: the plumbing\n- next: real runs\n"
VERDICT = "Tiny models: the *plumbing* works end to end."


@pytest.fixture(scope="module")
def report(tiny_runs, tmp_path_factory):
    """`python -m reports.compare` once, in process (its two sampling jobs run in fresh processes)."""
    out = tmp_path_factory.mktemp("report") / "rep"
    notes = out.parent / "notes.md"
    notes.write_text(NOTES)
    verdict = out.parent / "verdict.md"
    verdict.write_text(VERDICT)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("POKEMON_DATA", raising=False)
        mp.setenv("TORCH_HOME", str(out.parent / "torch_home"))  # no Inception weights: FID not computed
        mp.setattr(comparison, "SWD_PATCHES", 1024)  # 8192 by default; fewer keep the test fast
        compare.main(["--ldm", str(tiny_runs["ldm"]), "--pixel", str(tiny_runs["pixel"]), "--out", str(out),
                      "--n", "6", "--steps", "3", "--notes", str(notes), "--verdict", str(verdict), "--device", "cpu"])
    return {"out": out, "md": (out / "report.md").read_text(), "json": json.loads((out / "report.json").read_text())}


def test_every_figure_of_the_report_exists(report):
    out, md = report["out"], report["md"]
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(linked) >= 14
    for name in linked:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ["samples_latent_ddim.png", "samples_pixel_ddim.png", "samples_latent_ddpm.png",
                 "samples_pixel_ddpm.png", "reverse_latent.gif", "reverse_pixel.gif", "forward_pixels.gif",
                 "forward_latent.gif", "hist_rgb.png", "hist_latent.png", "loss_latent.png", "loss_pixel.png"]:
        assert name in linked, name

    gif = Image.open(out / "reverse_latent.gif")
    assert gif.n_frames == 4  # x_T and one frame per DDIM step (3 steps < 20 frames)
    assert gif.size[0] <= 4 * (16 + 2) + 2  # 4 tiles of 16 px a row, native size


def test_metric_table_has_every_metric_and_its_reference_rows(report):
    md, numbers = report["md"], report["json"]
    for name in ["SWD", "precision", "recall", "memorised", "NN-train", "diversity", "FID", "KID"]:
        assert name in md, name
    for row in ["latent (LDM), DDIM 3", "latent (LDM), DDPM", "pixel, DDIM 3", "pixel, DDPM",
                "held-out real sprites", "blurred", "uniform noise"]:
        assert row in md, row
    latent = numbers["quality"]["samples"]["latent"]["ddim"]
    line = next(ln for ln in md.splitlines() if ln.startswith("| latent (LDM), DDIM 3 |"))
    assert f"| {latent['swd']['mean']:.1f} | {latent['precision']:.2f} | {latent['recall']:.2f} |" in line
    assert latent["n"] == 6 and f"| {latent['diversity']:.3f} |" in line
    assert latent["fid"] is None and "not computed" in line
    assert "not computed: weights unavailable" in md
    holdout = numbers["quality"]["reference"]["16"]["holdout"]
    assert holdout["n"] == 6  # 24 sprites, a quarter held out


def test_cost_table_and_equal_compute_read_the_runs(report, tiny_runs):
    md, numbers = report["md"], report["json"]
    cost = numbers["cost"]
    for space in ("latent", "pixel"):
        c = cost[space]
        assert c["unet_parameters"] > 0 and c["train_flops"] > 0 and c["peak_rss_mb"] > 100
        assert c["sample_flops"]["ddpm"] > c["sample_flops"]["ddim"] > 0
        assert c["ddim_seconds"] > 0 and c["ddpm_seconds"] > 0
        assert f"{c['unet_parameters'] / 1e6:.2f}M" in md
    assert cost["latent"]["sample_flops"]["decode"] > 0 and cost["pixel"]["sample_flops"]["decode"] == 0
    # T = 100 DDPM steps against 3 DDIM steps, each one network evaluation
    step = cost["pixel"]["sample_flops"]["network_evaluation"]
    assert cost["pixel"]["sample_flops"]["ddpm"] == 100 * step and cost["pixel"]["sample_flops"]["ddim"] == 3 * step
    for line in ["GFLOPs per training image", "sampling time, 6 samples, DDIM 3 steps", "peak memory",
                 "training img/s"]:
        assert line in md, line
    latent_s = json.loads((tiny_runs["ldm"] / "metrics.json").read_text())["train_seconds"]
    pixel_s = json.loads((tiny_runs["pixel"] / "metrics.json").read_text())["train_seconds"]
    gap = abs(latent_s - pixel_s) / min(latent_s, pixel_s)
    assert numbers["equal_compute"]["gap"] == pytest.approx(gap)
    assert ("Not an equal-compute comparison" in md) == (gap > 0.10)
    assert "same kind of machine" in md  # both runs record this machine
    assert "Neither run had a time budget" in md
    assert "## The forward process ends in N(0, I)" in md and "| latents | z0 |" in md and "| pixels | R |" in md


def test_notes_and_verdict_are_included_verbatim(report):
    assert "## Discussion\n\n" + NOTES in report["md"]
    title, _, rest = report["md"].partition("\n## ")
    assert VERDICT in title and VERDICT not in rest
    assert "not written" not in report["md"]


def test_without_notes_the_discussion_says_so():
    text = comparison.section_discussion(None)
    assert "Discussion: not written" in text and "--notes" in text


def _run(space: str, metrics: dict, max_minutes: float = 15.0) -> comparison.Run:
    cfg = DiffusionConfig()
    cfg.train.max_minutes = max_minutes
    return comparison.Run(space, Path(f"{space}.pt"), Path(space), cfg, metrics, None)


@pytest.mark.parametrize("latent_s, pixel_s, equal", [(900.0, 950.0, True), (900.0, 1000.0, False)])
def test_equal_compute_sentences(latent_s, pixel_s, equal):
    machine = {"cpu": "X", "cores": 2, "threads": 2, "torch": "2"}
    facts = comparison.equal_compute(_run("latent", {"train_seconds": latent_s, "machine": machine}),
                                  _run("pixel", {"train_seconds": pixel_s, "machine": dict(machine)}))
    text = "\n".join(facts["sentences"])
    assert facts["equal"] is equal
    assert ("Not an equal-compute comparison" in text) is (not equal)
    assert "same budget, train.max_minutes = 15" in text and "same kind of machine: X, 2 cores" in text


def test_equal_compute_names_other_machines_budgets_and_missing_records():
    other = comparison.equal_compute(_run("latent", {"train_seconds": 900.0, "machine": {"cpu": "A"}}, 15.0),
                                  _run("pixel", {"train_seconds": 900.0, "machine": {"cpu": "B"}}, 10.0))
    text = "\n".join(other["sentences"])
    assert "different machines" in text and "budgets differ" in text and not other["equal"]
    missing = "\n".join(comparison.equal_compute(_run("latent", {}), _run("pixel", {}))["sentences"])
    assert "cannot be checked" in missing and "do not both record their machine" in missing


def test_hue_table_and_type_grid_section(tiny_runs):
    rows = [{"type": "Fire", "set": "samples, guidance 3", "warm": 0.5, "green": 0.1, "blue": 0.2,
             "tv_to_type": 0.25, "tv_to_other": 0.5}]
    ldm = comparison.Run("latent", tiny_runs["ldm"] / "diffusion.pt", tiny_runs["ldm"], None, {}, None)
    text = comparison.section_types({"types": ["Bug", "Dark"], "per_type": 8, "guidance": 3.0},
                                 {"checkpoint": "elsewhere.pt", "n": 32, "seed": 0, "rows": rows}, ldm)
    assert "![one row of samples per Pokemon type](types_latent.png)" in text
    assert "| Fire | samples, guidance 3 | 0.50 | 0.10 | 0.20 | 0.250 | 0.500 |" in text
    assert "not this report's LDM" in text
    assert comparison.section_types(None, None, ldm) == ""


# --- user errors: one line, exit status 2, before any work -------------------------------------------

def _error(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        run_main(compare.main, args)
    assert exit_.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_missing_run_folder(tiny_runs, tmp_path, capsys):
    line = _error(["--ldm", str(tmp_path / "nope"), "--pixel", str(tiny_runs["pixel"]), "--out", str(tmp_path / "o")],
                  capsys)
    assert "--ldm" in line and "nope" in line
    assert not (tmp_path / "o").exists()


def test_run_of_the_wrong_space(tiny_runs, tmp_path, capsys):
    line = _error(["--ldm", str(tiny_runs["pixel"]), "--pixel", str(tiny_runs["pixel"]), "--out", str(tmp_path / "o")],
                  capsys)
    assert "pixel-space run" in line and "--ldm takes a latent-space run" in line
    line = _error(["--ldm", str(tiny_runs["ldm"]), "--pixel", str(tiny_runs["ldm"]), "--out", str(tmp_path / "o")],
                  capsys)
    assert "latent-space run" in line and "--pixel" in line


def test_folder_without_checkpoint_and_missing_notes(tiny_runs, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _error(["--ldm", str(empty), "--pixel", str(tiny_runs["pixel"]), "--out", str(tmp_path / "o")], capsys)
    assert "no diffusion.pt" in line
    line = _error(["--ldm", str(tiny_runs["ldm"]), "--pixel", str(tiny_runs["pixel"]), "--out", str(tmp_path / "o"),
                   "--notes", str(tmp_path / "notes.md")], capsys)
    assert "--notes" in line
    line = _error(["--ldm", str(tiny_runs["ldm"]), "--pixel", str(tiny_runs["pixel"]), "--out", str(tmp_path / "o"),
                   "--hue", str(tmp_path)], capsys)
    assert "hue.json" in line


def test_unwritable_out(tiny_runs, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    line = _error(["--ldm", str(tiny_runs["ldm"]), "--pixel", str(tiny_runs["pixel"]), "--out", str(blocker / "rep")],
                  capsys)
    assert "cannot write to folder" in line and "--out" in line


def test_too_few_samples(tiny_runs, tmp_path, capsys):
    line = _error(["--ldm", str(tiny_runs["ldm"]), "--pixel", str(tiny_runs["pixel"]), "--out", str(tmp_path / "o"),
                   "--n", "3"], capsys)
    assert "--n 3" in line


def test_moved_run_folder_still_finds_its_files(tiny_runs, tmp_path):
    """A copied run folder without metrics.json falls back on the checkpoint's copy of the metrics."""
    moved = tmp_path / "ldm"
    shutil.copytree(tiny_runs["ldm"], moved)
    (moved / "metrics.json").unlink()
    run = comparison.load_run(str(moved), "latent", "--ldm")
    # Compare with the files the runs wrote (a tiny run can round to 0.0 s, so no "> 0" here).
    ldm_metrics = json.loads((tiny_runs["ldm"] / "metrics.json").read_text())
    ae_metrics = json.loads((tiny_runs["ae"] / "metrics.json").read_text())
    assert run.metrics["train_seconds"] == ldm_metrics["train_seconds"]
    assert run.metrics["steps"] == ldm_metrics["steps"] > 0
    assert run.ae["metrics"]["train_seconds"] == ae_metrics["train_seconds"]
    assert run.ae["metrics"]["steps"] == ae_metrics["steps"] > 0


def test_gifs_are_thinned_until_the_figures_fit(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a.gif", "b.gif"):
        save_gif([rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(20)], tmp_path / name)
    (tmp_path / "c.png").write_bytes(b"x" * 1000)
    names = ["a.gif", "b.gif", "c.png"]
    full = sum((tmp_path / n).stat().st_size for n in names) / 1e6
    size, thinned = fit_budget(tmp_path, names, full)  # already within the budget
    assert thinned == {} and size == pytest.approx(full)
    size, thinned = fit_budget(tmp_path, names, 0.8 * full)
    assert size <= 0.8 * full and list(thinned.values()) == [11]  # frames 0, 2, ..., 18 and the last, 19
    assert Image.open(tmp_path / next(iter(thinned))).n_frames == 11
    size, thinned = fit_budget(tmp_path, names, 0.0)  # cannot fit: 20 -> 11 -> 6 -> 4 frames, then stops
    assert all(Image.open(tmp_path / n).n_frames == 4 for n in ("a.gif", "b.gif")) and size > 0
