"""The docs' numbers, rendered from committed measurement files.

A table or figure of README.md, docs/*.md or checkpoints/release/MODEL_CARD.md that quotes a
measurement stands between two markers,

    <!-- figure: NAME -->...<!-- /figure -->

and what is between them is FIGURES[NAME] rendered from its files (`python -m reports.docs_tables`
rewrites them; tests/test_doc_figures.py fails when a doc differs from its files). The files:

    docs/measurements/sample_sets.csv   the measures of each 256-sample set (reports.metrics), one row a set
    docs/measurements/runs.json         training runs quoted whose run folders are not committed
    docs/measurements/bench_runs.csv    earlier runs of the benchmark on the Intel Xeon (host-speed spread)
    docs/measurements/timings.json      single figures quoted in prose (notebook, corpus and latent caches)
    docs/measurements/pilot_shape_error.json  the alignment pilot's held-out x0 error along its arms (reports.shape_error)
    docs/measurements/pilot_species_trend.json  the pilot's species hits along its arms (reports.species_trend)
    docs/measurements/long_run_species_trend.json  the aligned long run's species hits along it (reports.species_trend)
    docs/measurements/provenance.json   when the next five were measured (they carry no date)
    checkpoints/release/config.json     the shipped model: its runs' metrics (diffusion.release wrote it)
    benchmarks/results/bench.json       the benchmark (python -m benchmarks)
    benchmarks/results/profile.json     the long run's training step phase by phase (python -m benchmarks --only machine,profile)
    benchmarks/results/profile_bf16.json  the same on a CPU with fast bf16 (bf16 autocast)
    reports/latent_vs_pixel/report.json the latent-against-pixel report (bash scripts/report.sh)

Every row and file names its machine (CPU model, cores) and a date or the commit that recorded it.
`record_sample_set` adds the measures of a reports.metrics run to sample_sets.csv.
"""
from __future__ import annotations

import csv
import datetime
import json
import re
from pathlib import Path
from typing import Callable

from plumbing.cli import UserError
from plumbing.device import machine_name

REPO = Path(__file__).resolve().parent.parent
MEASUREMENTS = Path("docs/measurements")
SAMPLE_SETS = MEASUREMENTS / "sample_sets.csv"
RUNS = MEASUREMENTS / "runs.json"
BENCH_RUNS = MEASUREMENTS / "bench_runs.csv"
TIMINGS = MEASUREMENTS / "timings.json"
PROVENANCE = MEASUREMENTS / "provenance.json"
PILOT = MEASUREMENTS / "pilot_shape_error.json"
PILOT_TREND = MEASUREMENTS / "pilot_species_trend.json"
LONG_TREND = MEASUREMENTS / "long_run_species_trend.json"
RELEASE = Path("checkpoints/release/config.json")
BENCH = Path("benchmarks/results/bench.json")
PROFILE = Path("benchmarks/results/profile.json")
PROFILE_BF16 = Path("benchmarks/results/profile_bf16.json")
LATENT_VS_PIXEL = Path("reports/latent_vs_pixel/report.json")
DOCS = ("README.md", "docs/*.md", "checkpoints/release/MODEL_CARD.md")
MARKER = re.compile(r"<!-- figure: ([\w.%-]+) -->(.*?)<!-- /figure -->", re.S)
FIELDS = ["set", "model", "guidance", "sampler", "n", "species_top5", "species_top1", "recognised", "mean_top_p",
          "frechet", "precision", "recall", "c2st", "swd", "pixel_precision", "pixel_recall", "memorised",
          "sample_seconds", "machine", "date", "provenance"]


class Sources:
    """The measurement files of a checkout, read once."""

    def __init__(self, root: Path = REPO):
        self.root = root
        with open(root / SAMPLE_SETS, newline="") as f:
            self.sets = {row["set"]: row for row in csv.DictReader(f)}
        self.runs = json.loads((root / RUNS).read_text())["runs"]
        self.pilot = json.loads((root / PILOT).read_text())
        self.pilot_trend = json.loads((root / PILOT_TREND).read_text())
        self.long_trend = json.loads((root / LONG_TREND).read_text())
        self.timings = json.loads((root / TIMINGS).read_text())["figures"]
        self.release = json.loads((root / RELEASE).read_text())
        self.bench = json.loads((root / BENCH).read_text())
        self.profile = json.loads((root / PROFILE).read_text())
        self.profile_bf16 = json.loads((root / PROFILE_BF16).read_text())
        self.latent_vs_pixel = json.loads((root / LATENT_VS_PIXEL).read_text())
        with open(root / BENCH_RUNS, newline="") as f:
            self.bench_runs = list(csv.DictReader(f))
        self.provenance = json.loads((root / PROVENANCE).read_text())

    def sample_set(self, name: str) -> dict:
        if name not in self.sets:
            raise UserError(f"sample set {name!r} is not in {SAMPLE_SETS}; record it with "
                            f"python -m reports.docs_tables --record {name} METRICS_JSON")
        return self.sets[name]


# ---- the columns of the sample-set tables: (header, the cell of a row of sample_sets.csv)

def number(key: str, spec: str) -> Callable[[dict], str]:
    return lambda row: "" if row[key] == "" else format(float(row[key]), spec)


def pair(a: str, b: str, spec: str) -> Callable[[dict], str]:
    return lambda row: "" if row[a] == "" else f"{float(row[a]):{spec}} / {float(row[b]):{spec}}"


def species_cell(row: dict) -> str:
    return "" if row["species_top5"] == "" else f"{float(row['species_top5']):.3f} ({float(row['species_top1']):.3f})"


COLUMNS = {
    "species": ("species", number("species_top5", ".3f")),
    "species_top": ("species in top 5 (top 1)", species_cell),
    "recognised": ("recognised", number("recognised", ".3f")),
    "mean_top_p": ("mean top p", number("mean_top_p", ".3f")),
    "frechet": ("Frechet (PokeNet)", number("frechet", ".1f")),
    "pr": ("precision / recall", pair("precision", "recall", ".2f")),
    "c2st": ("C2ST", number("c2st", ".2f")),
    "swd": ("SWD", number("swd", ".1f")),
    "pixel_pr": ("pixel precision / recall", pair("pixel_precision", "pixel_recall", ".2f")),
    "memorised": ("memorised (all sources)", number("memorised", ".0%")),
    "seconds": ("seconds", number("sample_seconds", ".0f")),
}


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def sample_table(src: Sources, header: list[str], columns: list[str], rows: list[tuple], more: str = "") -> str:
    """A table of sample sets and the line naming its sources. `rows`: (label, set name[, extra cells]);
    `header`: the headers of the label and the extra cells, then COLUMNS' of the measures."""
    body = [[label, *(extra[0] if extra else []), *(COLUMNS[c][1](src.sample_set(name)) for c in columns)]
            for label, name, *extra in rows]
    table = markdown_table([*header, *(COLUMNS[c][0] for c in columns)], body)
    names = [r[1] for r in rows]
    return f"\n{table}\n\n*{SAMPLE_SETS}: {', '.join(names)}; measured on {machines(src, names)}.{more}*\n"


def machines(src: Sources, names: list[str]) -> str:
    """Where and when the sets were measured, one clause per machine."""
    seen: dict[str, list[str]] = {}
    for n in names:
        row = src.sample_set(n)
        when = row["date"] or row["provenance"]
        seen.setdefault(row["machine"], [])
        if when not in seen[row["machine"]]:
            seen[row["machine"]].append(when)
    return "; ".join(f"{m} ({', '.join(w)})" for m, w in seen.items())


# ---- the figures

SETS = "samples (256, seed 1, style artwork)"
# The columns of a species model's sample sets: species hits, PokeNet's realism measures, SWD, memorisation.
SPECIES_MEASURES = ["species_top", "recognised", "frechet", "pr", "c2st", "swd", "memorised"]


# The runs the shipped LDM went through before its last fine-tuning (docs/measurements/runs.json), in order,
# in rounds of a run on the mixture and its fine-tuning on the artworks (a release): the long run and its
# fine-tuning, that release continued and fine-tuned, that release continued. The last fine-tuning is
# checkpoints/release/config.json's (release_ldm).
RELEASE_RUNS = ("align-long-30k", "align-ft30k", "align-long2", "align-ft50k", "align-long3")


def release_rounds(src: Sources) -> list[tuple[dict, dict]]:
    """The shipped LDM's training as (mixture, artworks) rounds: RELEASE_RUNS, then its last fine-tuning."""
    runs = [src.runs[k] for k in RELEASE_RUNS] + [release_ldm(src)]
    return list(zip(runs[0::2], runs[1::2]))


def aligned_training(rounds: list[tuple[dict, dict]]) -> str:
    """The minutes of (mixture, artworks) rounds, added up."""
    return (f"VAE 10 min; LDM {sum(m['minutes'] for m, _ in rounds):.0f} min on artworks + corpus with loss.align "
            f"and {sum(a['minutes'] for _, a in rounds):.0f} min on artworks")


def results_at_a_glance(src: Sources) -> str:
    rounds = release_rounds(src)
    mix1, art1 = rounds[0]
    sl, sft = src.runs["species-long"], src.runs["species-ft"]
    long_c, long_a, early = src.runs["long-corpus"], src.runs["long-artworks"], src.runs["earlier-release-ft"]
    rows = [("**the shipped weights** (species, type, style; aligned)", "align-ft70k-g1",
             [f"{aligned_training(rounds)}, in {len(rounds)} rounds"]),
            ("the release before it (two rounds)", "align-ft50k-g1", [aligned_training(rounds[:2])]),
            ("the first aligned release (one round)", "align-ft30k-g1",
             [f"VAE 10 min; LDM {mix1['minutes']} min on artworks + corpus with loss.align, then {art1['minutes']} min "
              f"on artworks"]),
            ("the species release (no alignment)", "species-ft-g1",
             [f"VAE 10 min; LDM {sl['minutes']} min on artworks + corpus, then {sft['minutes']} min on artworks"]),
            ("the earlier release (type and style)", "earlier-release-g1",
             [f"VAE 10 min; LDM {long_c['minutes']:.0f} min on artworks + corpus, then {early['minutes']} min on artworks"]),
            ("the long corpus run (type, style)", "long-corpus-g1",
             [f"VAE 10 min; LDM {long_c['minutes']:.0f} min on artworks + corpus ({long_c['steps']:,} steps)"]),
            ("the same 100 min on the artworks alone", "long-artworks",
             [f"VAE 10 min; LDM {long_a['minutes']:.0f} min on artworks ({long_a['steps']:,} steps)"]),
            ("the quick start (`run_all.sh`)", "quick-start", ["VAE 10 min on artworks + corpus; LDM 15 min on artworks"]),
            ("held-out artworks (real)", "real-artworks", [""])]
    return sample_table(src, ["model", "training"], ["species", "recognised", "frechet", "pr", "c2st", "memorised"], rows)


def long_runs(src: Sources) -> str:
    rows = [("the quick start: 15 min from scratch on the artworks (unconditional)", "quick-start"),
            ("the long corpus run, guidance 1", "long-corpus-g1"),
            ("the long corpus run, guidance 3", "long-corpus-g3"),
            ("the earlier release: the long corpus run + 15 min on the artworks", "earlier-release-g1"),
            ("the long artwork-only run", "long-artworks"),
            ("held-out artworks (real)", "real-artworks")]
    return sample_table(src, [SETS], ["recognised", "mean_top_p", "frechet", "pr", "c2st", "swd", "memorised"], rows)


def vae_ldms(src: Sources) -> str:
    """The corpus VAE (the release's) against the artwork VAE, and the 15-minute LDM on each."""
    art, art_ldm, ae = src.runs["artwork-vae"], src.runs["quick-start-artwork-vae"], src.release["ae"]
    quick = src.latent_vs_pixel["runs"]["latent"]["metrics"]
    rows = [("artworks only", "quick-start-artwork-vae",
             [f"{art['steps']:,} ({art['img_per_s']})", f"{art['psnr_db']:.2f} dB", f"{art['latent_scale']:.3f}",
              f"{art_ldm['steps']:,}"]),
            ("mixture (the default)", "quick-start",
             [f"{ae['metrics']['steps']:,} ({ae['metrics']['train_img_per_s']})", f"{ae['metrics']['psnr_db']:.2f} dB",
              f"{ae['latent']['scale']:.3f}", f"{quick['steps']:,}"]),
            ("held-out artworks (real)", "real-artworks", ["", "", "", ""])]
    return sample_table(src, ["VAE", "VAE steps (img/s)", "held-out artwork PSNR", "latent scale", "LDM steps"],
                        ["recognised", "frechet", "pr", "c2st", "swd", "pixel_pr"], rows,
                        f" The VAEs and LDM steps: {RUNS}, {RELEASE} (the mixture VAE is the release's), "
                        f"{LATENT_VS_PIXEL} (the quick start's LDM).")


def collapse(src: Sources) -> str:
    rows = [("long corpus run, collapsed", "long-corpus-collapsed"),
            ("fine-tuned from it, 3,600 steps", "collapsed-finetuned"),
            ("held-out artworks, blurred (reference)", "blurred-artworks")]
    return sample_table(src, [SETS], ["recognised", "mean_top_p", "frechet", "pr", "c2st", "swd", "memorised"], rows)


def species_guidance(src: Sources) -> str:
    rows = [("species, 100 min", f"species-long-g{g}", [f"{g}{' (unconditional)' if g == 0 else ''}"])
            for g in (0, 1, 2, 3, 5)]
    rows += [("species, + 15 min on the artworks (the species release)", "species-ft-g1", ["1"]),
             ("species, + 15 min on the artworks (the species release)", "species-ft-g2", ["2"])]
    rows += [("type and style (the earlier release)", f"earlier-release-g{g}", [str(g)]) for g in (0, 1, 2, 3, 5)]
    rows += [("the long corpus run (type and style, 100 min)", "long-corpus-g1", ["1"]),
             ("held-out artworks (real)", "real-artworks", [""])]
    return sample_table(src, ["model", "guidance"], ["species_top", "recognised", "frechet", "pr", "c2st", "swd"], rows)


def samplers(src: Sources) -> str:
    rows = [("DDIM-50, eta 0 (the default)", "species-ft-g1"), ("DDIM-100, eta 1", "species-ft-ddim100-eta1"),
            ("DDPM-1000 (ancestral)", "species-ft-ddpm1000")]
    return sample_table(src, ["sampler"], ["seconds", "species_top", "recognised", "frechet", "pr", "c2st", "swd"], rows)


def card_quality(src: Sources) -> str:
    rows = [("these samples, guidance 1 (the default)", "align-ft70k-g1"), ("these samples, guidance 2", "align-ft70k-g2"),
            ("the release before it (two rounds), guidance 1", "align-ft50k-g1"),
            ("the first aligned release (one round), guidance 1", "align-ft30k-g1"),
            ("the species release (no alignment), guidance 1", "species-ft-g1"),
            ("the earlier release (type and style, no species), guidance 1", "earlier-release-g1"),
            ("held-out artworks (real)", "real-artworks")]
    return sample_table(src, ["set"], SPECIES_MEASURES, rows)


def release_ldm(src: Sources) -> dict:
    """The shipped LDM's fine-tuning as its run recorded it (checkpoints/release/config.json)."""
    m = src.release["ldm"]["metrics"]
    return {"minutes": m["train_seconds"] / 60, "img_per_s": m["train_img_per_s"], "steps": m["steps"],
            "sample_seconds": m["sample_seconds_64_ddim50"], "machine": f"{m['machine']['cpu']}, {m['machine']['cores']} cores"}


def release_training(src: Sources) -> str:
    def run(r: dict) -> str:
        return f"{r['steps']:,} steps in {r['minutes']:.1f} min at {r['img_per_s']} img/s"

    rounds = [f"{run(mix)}{' (cores shared)' if i == 0 else ''}, then {run(art)} on an {art['machine']}"
              for i, (mix, art) in enumerate(release_rounds(src))]
    return f"{'; '.join(rounds)} ({RUNS}, {RELEASE})"


def release_sampling(src: Sources) -> str:
    ft = release_ldm(src)
    return (f"{ft['sample_seconds']} s on an {ft['machine']} (measured by its fine-tuning run at its end, "
            f"{src.provenance[str(RELEASE)]}; {RELEASE}, `ldm.metrics.sample_seconds_64_ddim50`)")


def bench_machine(src: Sources) -> str:
    m = src.bench["results"]["machine"]
    return f"{m['cpu']}, {m['cores']} cores, fp32 matmul {m['matmul']['fp32']['gflop_per_s']:.0f} GFLOP/s"


def vae_speedup(src: Sources) -> str:
    ae = src.bench["results"]["ae"]
    return f"{ae['speedup']:.2f}x ({bench_machine(src)}; {BENCH}, {src.provenance[str(BENCH)]})"


def vae_bench(src: Sources) -> str:
    ae = src.bench["results"]["ae"]["models"]
    rows = []
    for m in ae.values():
        lay = m["layouts"]
        rows.append([m["name"], f"{m['params_M']:.2f}M", f"{lay['NCHW']['img_per_s']:.1f}", f"{lay['NHWC']['img_per_s']:.1f}",
                     f"{m['gflop_per_step']:.1f}", f"{m['gflop_per_s']:.0f}", f"{m['peak_rss_mb']:.0f} MB"])
    table = markdown_table(["model", "params", "img/s NCHW", "img/s NHWC", "GFLOP per step", "achieved GFLOP/s",
                            "peak RSS"], rows)
    return f"\n{table}\n\n*{BENCH} ({bench_machine(src)}; {src.provenance[str(BENCH)]}).*\n"


def bench_sampling(src: Sources) -> str:
    s = src.bench["results"]["sampling"]
    return (f"{s['ddim']['seconds']:.2f} s for DDIM-50 and {s['ddpm']['seconds']:.0f} s for DDPM-1000 "
            f"({bench_machine(src)}; {BENCH}, {src.provenance[str(BENCH)]})")


def bench_runs(src: Sources) -> list[dict]:
    """Every benchmark run on the Intel Xeon: the earlier ones (bench_runs.csv), then bench.json's."""
    r = src.bench["results"]
    ours, theirs = r["ae"]["models"]["pokediffusion"], r["ae"]["models"]["diffusers"]
    fp32 = r["machine"]["matmul"]["fp32"]["gflop_per_s"]
    latest = {"run": f"{fp32:.0f} GFLOP/s", "fp32_gflops": fp32,
              "bf16_ratio": r["machine"]["matmul"]["bf16"]["gflop_per_s"] / fp32, "bench_minutes": src.bench["elapsed_s"] / 60,
              "vae_img_s": ours["img_per_s"], "vae_diffusers_img_s": theirs["img_per_s"], "vae_gflops": ours["gflop_per_s"],
              "vae_diffusers_gflops": theirs["gflop_per_s"], "vae_speedup": r["ae"]["speedup"],
              "vae_peak_rss_mb": ours["peak_rss_mb"],
              "unet_latent_img_s": r["unet"]["inputs"]["latent"]["models"]["pokediffusion"]["img_per_s"],
              "ddim50_s": r["sampling"]["ddim"]["seconds"], "ddpm_s": r["sampling"]["ddpm"]["seconds"],
              "machine": f"{r['machine']['cpu']}, {r['machine']['cores']} cores",
              "provenance": f"{BENCH}, {src.provenance[str(BENCH)]}"}
    return [*src.bench_runs, latest]


def bench_cell(row: dict, key: str, spec: str, suffix: str = "") -> str:
    return "" if row[key] in ("", None) else format(float(row[key]), spec) + suffix


def bench_footer(rows: list[dict]) -> str:
    return "\n*" + "; ".join(f"{r['run']}: {r['machine']}, {r['provenance']}" for r in rows) + f"; {BENCH_RUNS}.*\n"


def bench_vae_runs(src: Sources) -> str:
    rows = bench_runs(src)
    body = [[r["run"], bench_cell(r, "vae_img_s", ".1f"), bench_cell(r, "vae_diffusers_img_s", ".1f"),
             f"{bench_cell(r, 'vae_gflops', '.0f')} / {bench_cell(r, 'vae_diffusers_gflops', '.0f')}".strip(" /"),
             bench_cell(r, "vae_speedup", ".2f", "x"), bench_cell(r, "vae_peak_rss_mb", ".0f", " MB")] for r in rows]
    return "\n" + markdown_table(["run (fp32 matmul)", "ours img/s", "diffusers img/s", "ours / diffusers GFLOP/s",
                                   "speed-up", "peak memory, AE training"], body) + "\n" + bench_footer(rows)


def bench_sampling_runs(src: Sources) -> str:
    rows = bench_runs(src)
    ft = release_ldm(src)
    body = [[f"{ft['machine']}: the release's fine-tuning run at its end ({RELEASE})", f"{ft['sample_seconds']:.2f} s", ""]]
    body += [[f"{r['machine']}, {r['run']} run", bench_cell(r, "ddim50_s", ".2f", " s"), bench_cell(r, "ddpm_s", ".1f", " s")]
             for r in rows]
    return "\n" + markdown_table(["CPU", "DDIM-50", "DDPM, 1000 steps"], body) + "\n" + bench_footer(rows)


def bench_steadiness(src: Sources) -> str:
    rows = bench_runs(src)
    body = [[r["run"], bench_cell(r, "bf16_ratio", ".2f", "x fp32"), bench_cell(r, "bench_minutes", ".1f", " min"),
             bench_cell(r, "vae_img_s", ".1f", " img/s"), bench_cell(r, "unet_latent_img_s", ".1f", " img/s"),
             bench_cell(r, "ddim50_s", ".2f", " s")] for r in rows]
    return "\n" + markdown_table(["run (fp32 matmul)", "bf16 matmul", "whole benchmark", "VAE step, ours",
                                   "U-Net step on 16x16x4, ours", "64 DDIM-50 samples"], body) + "\n" + bench_footer(rows)


def profile_tables(src: Sources, path: Path, measured: dict) -> str:
    """The long run's training step phase by phase, its share of the matmul ceiling, the training step
    and sampling in each memory layout, and the step's operator classes (python -m benchmarks --only
    machine,profile,sampling --out PATH)."""
    results = measured["results"]
    p, m, sampling = results["profile"], results["machine"], results["sampling"]
    precision = "bf16" if p["bf16"] else "fp32"
    ceiling = m["matmul"][precision]["gflop_per_s"]
    phases = [[name, f"{ph['median_s'] * 1000:.0f}", f"{ph['share']:.1%}"] for name, ph in p["phases"].items()]
    phases.append(["whole step", f"{p['median_s'] * 1000:.0f}",
                   f"{p['img_per_s']:.1f} img/s, {p['gflop_per_s']:.0f} GFLOP/s = {p['gflop_per_s'] / ceiling:.0%} "
                   f"of the {precision} matmul ceiling ({ceiling:.0f})"])
    own = p["layout"]
    other = next(name for name in p["layouts"] if name != own)
    step = {name: r["img_per_s"] for name, r in p["layouts"].items()}
    ddim = sampling["ddim_layouts"]
    n, steps = sampling["n"], sampling["ddim"]["steps"]
    layouts = [[f"training step (img/s, batch {p['batch']})", f"{step[own]:.1f}", f"{step[other]:.1f}",
                f"{step[own] / step[other]:.2f}x"],
               [f"{n} DDIM-{steps} samples + decode (s)", f"{ddim[own]:.2f}", f"{ddim[other]:.2f}",
                f"{ddim[other] / ddim[own]:.2f}x"]]
    ops = [[name, f"{share:.1%}"] for name, share in sorted(p["operators"].items(), key=lambda kv: -kv[1])]
    header = [f"phase of one step (batch {p['batch']}, {precision}, {own})", "ms (median)", "share"]
    return (f"\n{markdown_table(header, phases)}\n\n"
            f"{markdown_table(['the same work', f'{own} (the network layout)', other, 'speed-up'], layouts)}\n\n"
            f"{markdown_table(['operator class (profiled CPU time)', 'share'], ops)}\n\n"
            f"*{p['config']} {' '.join(p['overrides'])} on {'x'.join(map(str, p['shape'][1:]))}x{p['shape'][0]} "
            f"latents, {p['steps']} timed rounds of both layouts (the same weights on the same batch: their losses "
            f"differ by at most {p['loss_max_rel_diff']:.1e} of the loss); sampling: the untrained U-Net and VAE "
            f"of configs/ldm.yaml and configs/ae.yaml; {m['cpu']}, {m['cores']} cores, {m['threads']} threads; {path}, "
            f"{src.provenance[str(path)]}.*\n")


def bench_profile(src: Sources) -> str:
    return profile_tables(src, PROFILE, src.profile)


def bench_profile_bf16(src: Sources) -> str:
    return profile_tables(src, PROFILE_BF16, src.profile_bf16)


def latent_vs_pixel_cost(src: Sources) -> str:
    """The latent model's cost against the pixel model's, as the latent-against-pixel report measured it."""
    runs, cost = src.latent_vs_pixel["runs"], src.latent_vs_pixel["cost"]
    lat, pix, tot = (runs[k]["metrics"] for k in ("latent", "pixel", "pixel_total"))
    ddim, ddpm = (cost["pixel"][f"{k}_seconds"] / cost["latent"][f"{k}_seconds"] for k in ("ddim", "ddpm"))
    low, high = sorted((ddim, ddpm))
    m = lat["machine"]
    return (f"{lat['train_img_per_s'] / pix['train_img_per_s']:.1f} times the pixel model's training throughput "
            f"({lat['train_img_per_s']} against {pix['train_img_per_s']} img/s: {lat['steps']:,} optimiser steps against "
            f"{pix['steps']:,} in {lat['train_seconds'] / 60:.0f} minutes on an {m['cpu']}, {m['cores']} cores) and "
            f"{low:.0f}-{high:.0f} times faster sampling, and even a pixel model given the VAE's 10 minutes as well "
            f"({tot['steps']:,} steps, equal total compute)")


def forward_table(src: Sources) -> str:
    """x_0 and x_T = the forward process's end against N(0, 1), per channel (reports.ends_in_noise's stats,
    as the latent-against-pixel report measured them)."""
    f = src.latent_vs_pixel["forward"]
    rows = []
    for space, name in (("pixels", "pixels"), ("latents", "latents")):
        for ch, before in f[space]["before"].items():
            after = f[space]["after"][ch]
            rows.append([name, ch, f"{before['mean']:.3f}", f"{before['std']:.3f}", f"{before['ks_vs_normal']:.3f}",
                         f"{after['mean']:.3f}", f"{after['std']:.3f}", f"{after['skewness']:.3f}",
                         f"{after['excess_kurtosis']:.3f}", f"{after['ks_vs_normal']:.4f}"])
    sp, sl = f["schedule_pixels"], f["schedule_latents"]
    table = markdown_table(["space", "channel", "x_0 mean", "x_0 std", "x_0 KS to N(0,1)", "x_T mean", "x_T std",
                            "x_T skew", "x_T ex. kurtosis", "x_T KS"], rows)
    return (f"\nT = {sp['T']}, beta {sp['beta_start']:g} to {sp['beta_end']:g}: alpha_bar_T = {sp['alpha_bar_T']:.1e}, "
            f"SNR_T = {sp['snr_T']:.1e}, KL(q(x_T|x_0) || N(0, I)) = {sp['kl_per_dim']:.1e} nats per dimension for the "
            f"pixels and {sl['kl_per_dim']:.1e} for the latents, over the {f['n_pixels']} training sprites:\n\n{table}\n\n"
            f"*{LATENT_VS_PIXEL} (the latents: the corpus VAE, the release's; {src.provenance[str(LATENT_VS_PIXEL)]}).*\n")


def along_arms(p: dict, cell: Callable[[dict], str], step_every: int = 1) -> str:
    """A table of one value per state along a pilot's arms (a measurement file with "runs" of "points"
    and "names"): a row per step (multiples of `step_every`), a column per arm, empty where an arm has no state."""
    arms = {r["run"]: {pt["step"]: pt for pt in r["points"]} for r in p["runs"]}
    steps = sorted({step for points in arms.values() for step in points if step % step_every == 0})
    rows = [[f"{step:,}", *(cell(points[step]) if step in points else "" for points in arms.values())]
            for step in steps]
    return markdown_table(["step", *(p["names"][run] for run in arms)], rows)


def pilot_shape_error(src: Sources) -> str:
    """The pilot's arms at equal steps: the held-out x0 error at SNR 0.04-0.18 of each state (lower is better)."""
    p = src.pilot
    table = along_arms(p, lambda pt: f"{pt['error']:.4f}", step_every=2500)
    return (f"\n{table}\n\n*{PILOT}: {p['n']} held-out images, {len(p['snr_levels'])} noise levels from SNR "
            f"{p['snr_levels'][0]} to {p['snr_levels'][-1]}, the same noise for every state; {p['machine']}, {p['date']}.*\n")


PILOT_ARMS = (("baseline", "pilot-base"), ("+ loss.align=0.5", "pilot-align"), ("+ loss.disperse=0.5", "pilot-disperse"))


def pilot_species(src: Sources) -> str:
    """The pilot's arms at their end (15,000 steps): 512 random-species samples at guidance 1 and 3."""
    rows = [(arm, f"{name}-g{g}", [str(g)]) for g in (1, 3) for arm, name in PILOT_ARMS]
    rows.append(("held-out artworks (real)", "real-artworks", [""]))
    return sample_table(src, ["arm", "guidance"], SPECIES_MEASURES, rows)


def species_trend_table(p: dict, path: Path) -> str:
    """Species hits along runs (a reports.species_trend measurement file): top-5 (top-1) at each state."""
    table = along_arms(p, lambda pt: f"{pt['top5']:.3f} ({pt['top1']:.3f})")
    return (f"\n{table}\n\n*{path}: species in PokeNet's top 5 (top 1) of {p['n']} random-species samples "
            f"(DDIM-50, guidance {p['guidance']:g}, seed {p['seed']}, the same species and noise at every state); "
            f"{p['machine']}, {p['date']}.*\n")


def pilot_species_trend(src: Sources) -> str:
    """The species hits along the pilot's arms."""
    return species_trend_table(src.pilot_trend, PILOT_TREND)


def long_run_species_trend(src: Sources) -> str:
    """The species hits along the aligned long run."""
    return species_trend_table(src.long_trend, LONG_TREND)


def long_run_finetuned(src: Sources) -> str:
    """The aligned long run's state at step 30,000 fine-tuned on the artworks as the species release was,
    against that release: 256 random-species samples at guidance 1 and 2."""
    rows = [(name, f"{key}-g{g}", [str(g)]) for name, key in
            (("the aligned long run: 30,000 steps + 3,576 on the artworks", "align-ft30k"),
             ("the species release: 25,342 steps + 3,576 on the artworks", "species-ft")) for g in (1, 2)]
    rows.append(("held-out artworks (real)", "real-artworks", [""]))
    return sample_table(src, ["model", "guidance"], SPECIES_MEASURES, rows)


def long_run_continued(src: Sources) -> str:
    """The release continued on the mixture and fine-tuned again, against it: the same seeds, a second
    seed for the set-to-set spread, and the release sampled on both CPUs."""
    cont, before = "continued: 33,576 + 16,000 steps + 3,576 on the artworks", "the release before: 30,000 + 3,576"
    epyc, xeon = "AMD EPYC (bf16)", "Intel Xeon (fp32)"
    rows = [(cont, "align-ft50k-g1", ["1", "1", epyc]), (cont, "align-ft50k-g1-seed2", ["1", "2", epyc]),
            (cont, "align-ft50k-g2", ["2", "1", epyc]), (before, "align-ft30k-g1", ["1", "1", xeon]),
            (before, "align-ft30k-g1-epyc", ["1", "1", epyc]), (before, "align-ft30k-g2", ["2", "1", xeon]),
            ("held-out artworks (real)", "real-artworks", ["", "", ""])]
    return sample_table(src, ["model", "guidance", "seed", "sampled on"], SPECIES_MEASURES, rows)


def long_run_continued_twice(src: Sources) -> str:
    """The second continuation, fine-tuned, against the release it continues: two seeds each at guidance 1
    (the set-to-set spread), guidance 2, all sampled on one CPU."""
    new, before = "continued twice: 53,152 + 20,000 steps + 3,576", "the release before: 33,576 + 16,000 + 3,576"
    rows = [(name, f"{key}-{suffix}", [g, seed]) for name, key in ((new, "align-ft70k"), (before, "align-ft50k"))
            for suffix, g, seed in (("g1", "1", "1"), ("g1-seed2", "1", "2"), ("g2", "2", "1"))]
    rows.append(("held-out artworks (real)", "real-artworks", ["", ""]))
    return sample_table(src, ["model", "guidance", "seed"], SPECIES_MEASURES, rows)


FIGURES: dict[str, Callable[[Sources], str]] = {
    "results-at-a-glance": results_at_a_glance, "long-runs": long_runs, "vae-ldms": vae_ldms, "collapse": collapse,
    "species-guidance": species_guidance, "samplers": samplers, "card-quality": card_quality,
    "release-training": release_training, "release-sampling": release_sampling, "vae-speedup": vae_speedup,
    "vae-bench": vae_bench, "bench-sampling": bench_sampling, "bench-vae-runs": bench_vae_runs,
    "bench-sampling-runs": bench_sampling_runs, "bench-steadiness": bench_steadiness, "forward": forward_table,
    "latent-vs-pixel-cost": latent_vs_pixel_cost, "pilot-shape-error": pilot_shape_error,
    "pilot-species": pilot_species, "pilot-species-trend": pilot_species_trend, "bench-profile": bench_profile,
    "bench-profile-bf16": bench_profile_bf16,
    "long-run-species-trend": long_run_species_trend, "long-run-finetuned": long_run_finetuned,
    "long-run-continued": long_run_continued, "long-run-continued-twice": long_run_continued_twice,
}


# ---- the docs

def doc_files(root: Path = REPO) -> list[Path]:
    return sorted({p for pattern in DOCS for p in root.glob(pattern)})


VALUE_SPEC = {"frechet": ".1f", "swd": ".1f", "precision": ".2f", "recall": ".2f", "c2st": ".2f",
              "pixel_precision": ".2f", "pixel_recall": ".2f"}  # the rest: 3 decimals


def sample_value(src: Sources, name: str) -> str:
    """One measure of a sample set quoted in prose: `SET.COLUMN` as in sample_sets.csv, `SET.COLUMN.%`
    as a percentage (0.105 -> 10.5%)."""
    set_name, column, *percent = name.split(".")
    value = src.sample_set(set_name).get(column)
    if value in (None, ""):
        raise UserError(f"{SAMPLE_SETS} has no {column!r} for {set_name!r}; fix the figure {name!r}")
    return format(float(value), ".1%" if percent else VALUE_SPEC.get(column, ".3f"))


def timing(src: Sources, name: str) -> str:
    """A single figure of timings.json with its machine and when: `timing.NAME` in a doc."""
    if name not in src.timings:
        raise UserError(f"{TIMINGS} has no figure {name!r}; the figures are {', '.join(sorted(src.timings))}")
    t = src.timings[name]
    return f"{t['text']} ({t['machine']}, {t.get('date') or t['provenance']})"


def render(text: str, src: Sources, where: str = "") -> str:
    """`text` with every figure between markers rendered from its files."""
    def one(match: re.Match) -> str:
        name = match.group(1)
        if name.startswith("timing."):
            return f"<!-- figure: {name} -->{timing(src, name.split('.', 1)[1])}<!-- /figure -->"
        if "." in name:
            return f"<!-- figure: {name} -->{sample_value(src, name)}<!-- /figure -->"
        if name not in FIGURES:
            raise UserError(f"{where}: unknown figure {name!r}; the figures are {', '.join(sorted(FIGURES))} "
                            "or SET.COLUMN of a sample set")
        return f"<!-- figure: {name} -->{FIGURES[name](src)}<!-- /figure -->"
    rendered, n = MARKER.subn(one, text)
    if n != text.count("<!-- figure:") or n != text.count("<!-- /figure -->"):
        raise UserError(f"{where}: a figure marker without its pair (each `<!-- figure: NAME -->` needs its "
                        "`<!-- /figure -->`, and no figure may hold another); fix the markers")
    return rendered


def stale_docs(root: Path = REPO) -> dict[Path, str]:
    """{doc: its text rendered} for every doc whose figures differ from their files."""
    src = Sources(root)
    out = {}
    for path in doc_files(root):
        text = path.read_text()
        new = render(text, src, str(path.relative_to(root)))
        if new != text:
            out[path] = new
    return out


# ---- recording a sample set

def record_sample_set(name: str, metrics_path: Path, model: str, sampler: str, root: Path = REPO,
                      reference: str | None = None) -> dict:
    """Add (or replace) the row `name` of sample_sets.csv with the measures of a reports.metrics run
    (its metrics.json), measured on this machine today; with `reference`, also its held-out artworks'
    row under that name (present when reports.metrics ran without --no-reference)."""
    try:
        m = json.loads(Path(metrics_path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{metrics_path} is not a readable metrics.json ({err}); write it with python -m reports.metrics")
    if not m.get("creature"):
        raise UserError(f"{metrics_path} has no creature measures; run python -m reports.metrics without --no-pokenet")
    today, machine = datetime.date.today().isoformat(), machine_name()
    samples = m["samples"]
    species = (m.get("species") or {}).get("hits") or {}
    memorised = samples.get("memorisation_all_sources", samples["memorisation"])["rate"]
    labels = read_labels(Path(m["settings"]["samples"]))
    rows = {name: _row(name, model, sampler, m["creature"]["samples"], samples, species, memorised, labels, machine,
                       today)}
    if reference:
        if "holdout" not in m["reference"]:
            raise UserError(f"{metrics_path} has no reference rows; run python -m reports.metrics without --no-reference")
        real = (m.get("species") or {}).get("real_artworks") or {}
        rows[reference] = _row(reference, "held-out artworks (real)", "", m["creature"]["held-out artworks"],
                               m["reference"]["holdout"], real, None, {}, machine, today)
    path = root / SAMPLE_SETS
    with open(path, newline="") as f:
        table = {row["set"]: row for row in csv.DictReader(f)}
    table.update(rows)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table.values())
    return rows


def read_labels(folder: Path) -> dict:
    """The guidance and the number of samples of a samples folder, from its labels.csv (diffusion.sample wrote it)."""
    path = folder / "labels.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {"guidance": rows[0].get("guidance", ""), "n": len(rows)} if rows else {}


def _row(name, model, sampler, creature, pixels, species, memorised, labels, machine, date) -> dict:
    def f(x, spec):
        return "" if x is None else format(x, spec)
    return {"set": name, "model": model, "guidance": labels.get("guidance", ""), "sampler": sampler,
            "n": creature["n"], "species_top5": f(species.get("top5"), ".4f"), "species_top1": f(species.get("top1"), ".4f"),
            "recognised": f(creature["recognised"], ".4f"), "mean_top_p": f(creature["mean_top_probability"], ".4f"),
            "frechet": f(creature["frechet_pokenet"], ".2f"), "precision": f(creature["precision"], ".3f"),
            "recall": f(creature["recall"], ".3f"), "c2st": f(creature.get("c2st"), ".3f"),
            "swd": f(pixels["swd"]["mean"], ".2f"), "pixel_precision": f(pixels["precision"], ".3f"),
            "pixel_recall": f(pixels["recall"], ".3f"), "memorised": f(memorised, ".4f"), "sample_seconds": "",
            "machine": machine,
            "date": date, "provenance": "python -m reports.docs_tables --record"}
