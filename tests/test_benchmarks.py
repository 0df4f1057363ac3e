"""The benchmark command (`python -m benchmarks`): it runs end to end at toy size, writes the JSON it
documents, still runs without diffusers, and configures diffusers' models as the reference."""
from __future__ import annotations

import json
import subprocess
import sys
from importlib.util import find_spec

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.__main__ import main
from benchmarks.harness import Plan, time_step
from benchmarks.jobs import JobError, isolation_available, run_job
from benchmarks.reference import NOT_INSTALLED, diffusers_version
from benchmarks.report import target, targets_table, unet_shortfall
from benchmarks.settings import QUICK_UNET
from benchmarks.step_profile import PHASES
from benchmarks.suite import Job, run_one
from benchmarks.unet_step import diffusers_unet, ours
from diffusion.config import DiffusionConfig
from plumbing.config import load_config
from tests.helpers import REPO, subprocess_env, write_corpus, write_sprites

HAS_DIFFUSERS = find_spec("diffusers") is not None
needs_diffusers = pytest.mark.skipif(not HAS_DIFFUSERS, reason="diffusers is not installed (requirements-bench.txt)")

STEP_KEYS = {"name", "params_M", "best_layout", "median_s", "img_per_s", "gflop_per_step", "gflop_per_s", "layouts",
             "batch", "bf16", "peak_rss_mb"}


def _assert_step(row: dict) -> None:
    """A measured training step: every documented key, positive numbers, both layouts."""
    assert STEP_KEYS <= row.keys(), row.keys()
    for key in ("params_M", "median_s", "img_per_s", "gflop_per_step", "gflop_per_s", "peak_rss_mb"):
        assert row[key] > 0, (key, row[key])
    assert set(row["layouts"]) == {"NCHW", "NHWC"} and row["best_layout"] in row["layouts"]
    assert all(r["median_s"] > 0 and r["repeats"] >= 1 for r in row["layouts"].values())


def _diffusers_rows(tree: dict) -> list[dict]:
    return [tree["ae"]["models"]["diffusers"]] + [e["models"]["diffusers"] for e in tree["unet"]["inputs"].values()]


def test_quick_run_end_to_end(tmp_path):
    out = tmp_path / "bench" / "x.json"
    art, corpus = tmp_path / "art", write_corpus(tmp_path / "corpus")
    write_sprites(art)
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out), "--data-root", str(art),
                           "--corpus", str(corpus)], cwd=tmp_path,
                          env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "### Targets" in proc.stdout and "Elapsed:" in proc.stdout
    results = json.loads(out.read_text())
    assert {"command", "quick", "sections", "settings", "memory", "import_rss_mb", "baseline_rss_mb", "results",
            "targets", "elapsed_s"} <= results.keys()
    assert results["quick"] is True and results["elapsed_s"] > 0 and results["baseline_rss_mb"] > 0
    tree = results["results"]

    machine = tree["machine"]
    assert machine["threads"] == 1 and machine["cpu"] and isinstance(machine["bf16_native"], bool)
    assert isinstance(machine["bf16_used"], bool) and (machine["bf16_native"] or not machine["bf16_used"])
    assert machine["matmul"]["fp32"]["gflop_per_s"] > 0 and machine["matmul"]["bf16"]["gflop_per_s"] > 0

    _assert_step(tree["ae"]["models"]["pokediffusion"])
    assert set(tree["unet"]["inputs"]) == {"latent", "pixel", "pixel_half"}
    for entry in tree["unet"]["inputs"].values():
        _assert_step(entry["models"]["pokediffusion"])
    shapes = {key: entry["shape"] for key, entry in tree["unet"]["inputs"].items()}
    assert shapes == {"latent": [4, 8, 8], "pixel": [3, 16, 16], "pixel_half": [3, 8, 8]}  # --quick: 16x16 images, f=2
    assert tree["unet"]["ldm_vs_pixel"] > 0
    assert "excludes the AE" in tree["unet"]["note"]

    # the long run's step phase by phase: every phase and every operator class of the toy U-Net is found
    # (the classes match the operator names this torch emits), the phases add up to the step
    profile = tree["profile"]
    assert profile["config"] == "configs/ldm_species.yaml" and "loss.align=0.5" in profile["overrides"]
    assert list(profile["phases"]) == list(PHASES) and all(p["median_s"] > 0 for p in profile["phases"].values())
    assert sum(p["share"] for p in profile["phases"].values()) == pytest.approx(1.0)
    assert all(share > 0 for share in profile["operators"].values()), profile["operators"]
    assert sum(profile["operators"].values()) == pytest.approx(1.0)
    assert profile["gflop_per_s"] > 0 and "### Where the training step's time goes" in proc.stdout
    assert profile["layout"] == ("NCHW" if profile["bf16"] else "NHWC")  # diffusion/denoiser.py, network_layout
    assert set(profile["layouts"]) == {"NCHW", "NHWC"} and profile["layouts"][profile["layout"]]["median_s"] == profile["median_s"]
    # the same weights on the same batch in both layouts: one loss curve twice, up to rounding
    assert all(len(r["losses"]) == profile["steps"] for r in profile["layouts"].values())
    assert 0 <= profile["loss_max_rel_diff"] < 1e-3, profile["layouts"]

    sampling = tree["sampling"]
    assert sampling["n"] == 2 and sampling["ddim"]["seconds"] > 0 and sampling["peak_rss_mb"] > 0
    assert set(sampling["ddim_layouts"]) == {"NCHW", "NHWC"} and all(s > 0 for s in sampling["ddim_layouts"].values())
    assert sampling["ddim_layouts"][sampling["layout"]] == sampling["ddim"]["seconds"]
    assert sampling["ddpm"]["steps"] == 50 and sampling["ddpm"]["seconds"] > 0  # all T steps (T = 50 in --quick)

    data = tree["data"]
    assert data["images"] > 0 and data["decode_s"] > 0 and data["cache_mb"] > 0 and data["warm_load_s"] >= 0
    assert data["per_source"]["sprite_front"] > 0 and data["per_source"]["artwork"] == 0  # artworks: data.root
    assert data["pixel_batches"]["img_per_s"] > 0 and data["latent_batches"]["latent"] == [4, 4, 4]
    assert data["pixel_vs_ae_step"] > 0 and data["latent_vs_unet_step"] > 0
    assert "### Data" in proc.stdout

    assert len(results["targets"]) == 12
    ceiling = next(t for t in results["targets"] if "matmul ceiling" in t["target"])
    assert 0 < ceiling["measured"] < 100 and ceiling["threshold"] == 60
    unmeasured = [t["target"] for t in results["targets"] if t["measured"] is None]
    assert len(unmeasured) == (0 if HAS_DIFFUSERS else 4), unmeasured
    if HAS_DIFFUSERS:
        for row in _diffusers_rows(tree):
            _assert_step(row)
        assert tree["ae"]["speedup"] > 0
        assert all(e["speedup"] > 0 for e in tree["unet"]["inputs"].values())
    else:
        assert all(row["note"] == NOT_INSTALLED for row in _diffusers_rows(tree))


def test_without_diffusers_the_rows_say_so_and_the_rest_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now raises ImportError
    assert diffusers_version() is None
    out = tmp_path / "x.json"
    results = main(["--quick", "--only", "ae,unet", "--in-process", "--out", str(out)])
    assert json.loads(out.read_text())["results"]["diffusers"] == NOT_INSTALLED
    tree = results["results"]
    assert all(row == {"name": row["name"], "note": NOT_INSTALLED} for row in _diffusers_rows(tree))
    _assert_step(tree["ae"]["models"]["pokediffusion"])
    assert tree["ae"]["speedup"] is None and tree["unet"]["ldm_vs_pixel"] > 0
    versus = [t for t in results["targets"] if "vs diffusers" in t["target"]]
    assert len(versus) == 4 and all(t["met"] is None for t in versus)
    printed = capsys.readouterr().out
    assert NOT_INSTALLED in printed and "not measured" in printed
    assert "cumulative" in results["memory"]


def _forward_flops(model: torch.nn.Module, *inputs) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*inputs)
    return counter.get_total_flops()


@needs_diffusers
def test_diffusers_unet_mirrors_ours():
    """Same widths, depth and attention placement: the two U-Nets do the same arithmetic."""

    cfg = load_config(DiffusionConfig, REPO / "configs" / "ldm.yaml", list(QUICK_UNET) + ["model.blocks=2"])
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([3, 40])
    ours_model, _ = ours(cfg, 4, 8)
    theirs, forward = diffusers_unet(cfg, 4, 8)
    assert forward(x, t).shape == x.shape
    assert _forward_flops(ours_model, x, t) == _forward_flops(theirs, x, t)
    kinds = [type(b).__name__ for b in theirs.down_blocks] + [type(b).__name__ for b in theirs.up_blocks]
    assert kinds == ["DownBlock2D", "AttnDownBlock2D", "AttnUpBlock2D", "UpBlock2D"]


def test_time_step_counts_flops_warms_up_and_stops_on_its_budget():
    a = torch.randn(32, 32)
    calls = []

    def step():
        calls.append(1)
        a @ a

    r = time_step(step, batch=4, plan=Plan(warmup=2, repeats=50, min_repeats=3, budget_s=0.0))
    assert len(calls) == 2 + 3 and r["repeats"] == 3  # FLOP-counted warm-up, one more, 3 timed
    assert r["gflop_per_step"] == 2 * 32 ** 3 / 1e9 and r["img_per_s"] == 4 / r["median_s"]


def test_flop_counter_counts_cpu_attention():
    """(importing benchmarks.harness registers the CPU attention formulas)"""
    q = torch.randn(1, 2, 16, 8)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == 2 * 2 * (1 * 2 * 16 * 16 * 8)  # QK^T and AV


def test_isolated_job_reports_its_peak_and_its_errors():
    if not isolation_available():
        pytest.skip("forked jobs need Linux")
    result = run_job(lambda n: {"sum": float(torch.ones(n).sum())}, {"n": 1000}, isolate=True)
    assert result["sum"] == 1000.0 and result["peak_rss_mb"] > 0

    def broken():
        raise ValueError("no such layout")
    with pytest.raises(JobError, match="ValueError: no such layout"):
        run_job(broken, {}, isolate=True)


def test_a_failing_reference_becomes_an_error_row_but_our_failures_stop_the_run():
    def broken():
        raise TypeError("unexpected keyword argument 'head_dim'")

    row = run_one(Job(("ae", "models", "diffusers"), "AE step", "diffusers AutoencoderKL", broken, reference=True),
                  isolate=False, have_diffusers=True)
    assert row == {"name": "diffusers AutoencoderKL", "error": "TypeError: unexpected keyword argument 'head_dim'"}
    with pytest.raises(JobError):
        run_one(Job(("ae", "models", "pokediffusion"), "AE step", "pokediffusion VAE", broken), isolate=False,
                have_diffusers=True)


def _unet_entry(ours_rate: float, theirs_rate: float, bf16: bool = False) -> dict:
    models = {"pokediffusion": {"gflop_per_step": 27.4, "gflop_per_s": ours_rate, "bf16": bf16},
              "diffusers": {"gflop_per_step": 27.4, "gflop_per_s": theirs_rate, "bf16": False}}
    return {"label": "16x16x4", "models": models, "speedup": ours_rate / theirs_rate}


def test_a_missed_unet_target_carries_its_measured_reason():
    machine = {"matmul": {"fp32": {"gflop_per_s": 300.0}, "bf16": {"gflop_per_s": 150.0}}}
    missed = _unet_entry(150.0, 125.0)  # 1.2x
    why = unet_shortfall(missed, machine, 1.3)
    assert why == ("bf16 off: bf16 matmul 150 GFLOP/s = 0.50x fp32 here; in fp32 both do 27.4 GFLOP/step, ours at "
                   "150 GFLOP/s (50% of the fp32 matmul ceiling 300), diffusers at 125; 1.3x needs 162 (54%)")
    row = target("U-Net", missed["speedup"], 1.3, True, "x", why)
    assert row["met"] is False and row["why_not"] == why and why in targets_table([row])
    met = target("U-Net", 1.4, 1.3, True, "x", why)  # a reason is dropped once the target is met
    assert met["met"] is True and met["why_not"] is None
    assert unet_shortfall(_unet_entry(150.0, 125.0, bf16=True), machine, 1.3) is None  # bf16 used: no such reason
    assert unet_shortfall(missed, None, 1.3) is None  # machine not measured
