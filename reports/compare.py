"""Latent against pixel diffusion: one Markdown report with its figures, readable on GitHub.

    python -m reports.compare --ldm RUN --pixel RUN [--pixel-total RUN] --out DIR [--n 64] [--steps 50]
                              [--seed 0] [--verdict FILE] [--notes FILE] [--hue DIR] [--data DIR] [--device auto]

RUN is the folder of a finished diffusion.train run (or its diffusion.pt): --ldm one in latent
space (scripts/train_ldm.sh), --pixel one in pixel space (scripts/train_pixel.sh) trained for the
LDM's minutes, and optionally --pixel-total one in pixel space trained for the AE's and the LDM's
minutes together (equal total compute). Writes into DIR report.md, report.json (every number of
the report) and the figures it shows:

    samples_<run>_{ddim,ddpm}.png     --n samples of each model, DDIM with --steps steps and ancestral DDPM
    reverse_<run>.gif                 the reverse process of 16 of them (20 frames, tiles at native size)
    forward_{pixels,latent}.gif/.png  the forward process of 6 training sprites (reports/noising.py)
    hist_rgb.png, hist_latent.png     x_0 and x_T against N(0, 1) (reports/noising.py)
    loss_<run>.png                    the runs' own loss curves, copied
    types_latent.png                  one row per Pokemon type (a type-conditional LDM only)

Where the numbers come from:
  * Equal compute: train.max_minutes, training wall time, steps, img/s, device and machine of each
    run, from its metrics.json (or the checkpoint's copy); the AE's (stage 1) time too. When wall
    times differ by more than 10%, or budgets or machines differ, the report says so.
  * Cost (benchmarks/model_cost.py): parameters, FLOPs per training image and per sample, and the
    time and peak memory of --n samples, each model in a fresh Python process.
  * Quality: the creature measures of reports/creature.py with the shipped PokeNet (recognisability,
    Frechet distance in PokeNet features, precision/recall, the two-sample test), then the pixel
    measures of reports/measures.py, each with its reference rows (sets of known quality).
  * Forward process: reports.noising's statistics of x_0 and x_T for RGB values and latents.
  * Verdict and discussion: the Markdown of --verdict FILE (shown under the title) and --notes FILE,
    verbatim. This command never writes judgement; without them the report says they are not written.
  * Per type (a type-conditional LDM): one row of samples per type; with --hue DIR, reports.hue's table.

The same seed is given to every model; x_T has another shape in each space, so they share the seed,
not the noise. The figures stay small (budget FIGURE_BUDGET_MB); GIFs are thinned to fit.
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path


from benchmarks.model_cost import in_fresh_process, measure_cost, sampling_job
from diffusion.pipeline import load_diffusion
from plumbing.cli import UserError, run_main, user_path
from plumbing.device import machine_summary, pick_device
from plumbing.pictures import fit_budget
from plumbing.runs import writable_dir
from reports.comparison import (FIGURE_BUDGET_MB, creature_quality, equal_compute, forward_figures, load_run,
                                pixel_quality, section_compute, section_cost, section_discussion, section_forward,
                                section_quality, section_samples, section_title, section_types, sprites_of,
                                total_compute_sentence, type_grid, write_figures)
from reports.measures import K_NEIGHBOURS
from sprites.dataset import artworks_root




def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m reports.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ldm", required=True, help="latent-space run folder (or its diffusion.pt)")
    p.add_argument("--pixel", required=True, help="pixel-space run folder (or its diffusion.pt)")
    p.add_argument("--pixel-total", default=None,
                   help="pixel-space run trained for the AE's and the LDM's minutes together (equal total compute)")
    p.add_argument("--out", required=True, help="report folder (report.md, report.json, figures)")
    p.add_argument("--n", type=int, default=64, help="samples per model and sampler (default 64)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verdict", default=None, help="Markdown file with the verdict, shown under the title")
    p.add_argument("--notes", default=None, help="Markdown file with the discussion, included verbatim")
    p.add_argument("--hue", default=None, help="folder with reports.hue's hue.json (type-conditional LDM)")
    p.add_argument("--data", default=None,
                   help="the artworks for the measures (default: $POKEMON_DATA, else each run's data.root)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    for name in ("ldm", "pixel", "pixel_total", "out", "verdict", "notes", "hue", "data"):
        value = getattr(args, name)  # meant from where the user ran the command
        setattr(args, name, str(user_path(value)) if value else value)
    return args


def read_text(path: str | None, flag: str) -> str | None:
    """The text of a Markdown file given with `flag` (None without it; UserError when unreadable)."""
    if not path:
        return None
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{flag} {path} cannot be read ({getattr(err, 'strerror', None) or err}); "
                        "pass a Markdown file")


def read_inputs(args) -> dict | None:
    """Check that --verdict and --notes can be read (they are read again when the report is assembled)
    and return the content of --hue DIR/hue.json (UserError when any is unreadable)."""
    read_text(args.verdict, "--verdict")
    read_text(args.notes, "--notes")
    hue = None
    if args.hue:
        path = Path(args.hue) / "hue.json"
        if not path.is_file():
            raise UserError(f"--hue {args.hue}: no hue.json there; write it with python -m reports.hue --out {args.hue}")
        hue = json.loads(path.read_text())
    return hue


def figure_names(report: str) -> list[str]:
    """The image files a Markdown report shows, in order, each once."""
    return list(dict.fromkeys(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)))


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.n <= K_NEIGHBOURS:
        raise UserError(f"--n {args.n}: the metrics need more than {K_NEIGHBOURS} samples (64 give usable numbers)")
    runs = [load_run(args.ldm, "latent", "--ldm"), load_run(args.pixel, "pixel", "--pixel")]
    if args.pixel_total:
        runs.append(load_run(args.pixel_total, "pixel_total", "--pixel-total"))
    latent, pixel = runs[0], runs[1]
    for run in runs:
        if not 1 <= args.steps <= run.cfg.schedule.T:
            raise UserError(f"--steps {args.steps} must be between 1 and T={run.cfg.schedule.T}")
    hue = read_inputs(args)  # checked now, so that a bad --notes or --hue fails before the slow part
    out = writable_dir(args.out)
    device = pick_device(args.device)
    start = time.time()
    cache = {}
    roots = {run.space: artworks_root(args.data, run.cfg.data.root) for run in runs}
    sprites = {run.space: sprites_of(run, roots[run.space], cache) for run in runs}  # before anything slow

    print(f"sampling: {args.n} samples with DDIM and with DDPM per model, each model in a fresh process")
    sampled = {run.space: in_fresh_process(sampling_job, ckpt=str(run.ckpt_path), n=args.n, steps=args.steps,
                                           seed=args.seed, device=args.device) for run in runs}
    pipes = {run.space: load_diffusion(run.ckpt_path, device) for run in runs}
    print("cost, figures, measures")
    cost = {run.space: measure_cost(pipes[run.space], sampled[run.space], args.steps) for run in runs}
    has_loss = {run.space: write_figures(run, pipes[run.space], sampled[run.space], args.steps, args.seed, out)
                for run in runs}
    quality = pixel_quality(runs, sampled, sprites, args.seed)
    creature = creature_quality(runs, sampled, sprites, roots["latent"], args.seed)
    print("forward process")
    stats = forward_figures(pipes["pixel"], pipes["latent"], sprites["pixel"], sprites["latent"], args.seed, out)
    types = None
    if pipes["latent"].conditional["type"]:
        types = type_grid(pipes["latent"], args.steps, args.seed, out / "types_latent.png")

    machine_now = machine_summary(device)
    facts = equal_compute(latent, pixel)
    extra = [total_compute_sentence(latent, runs[2])] if len(runs) > 2 else []
    sections = [section_compute(runs, facts, extra), section_samples(runs, args.n, args.steps, args.seed, has_loss),
                section_cost(runs, cost, args.n, machine_now), section_quality(runs, quality, creature, args.steps),
                section_forward(stats), section_types(types, hue, latent),
                section_discussion(read_text(args.notes, "--notes"))]
    names = figure_names("\n".join(sections))
    size_mb, thinned = fit_budget(out, names, FIGURE_BUDGET_MB)
    title = section_title(runs, time.time() - start, len(names), size_mb, thinned, read_text(args.verdict, "--verdict"))
    report = "\n\n".join(s for s in [title, *sections] if s) + "\n"
    (out / "report.md").write_text(report)
    numbers = {"runs": {r.space: {"ckpt": str(r.ckpt_path), "metrics": r.metrics, "ae": r.ae or None} for r in runs},
               "equal_compute": {k: v for k, v in facts.items() if k != "sentences"}, "total_compute": extra,
               "cost": cost, "quality": quality, "creature": creature, "forward": stats, "types": types,
               "machine": machine_now, "figures": {"files": names, "mb": size_mb, "thinned_gifs": thinned},
               "settings": {"n": args.n, "steps": args.steps, "seed": args.seed}}
    (out / "report.json").write_text(json.dumps(numbers, indent=1, default=str) + "\n")
    print(f"figures: {len(names)} files, {size_mb:.2f} MB (budget {FIGURE_BUDGET_MB:g} MB"
          + (f"; GIFs thinned to fit: {thinned}" if thinned else "") + ")"
          + ("" if size_mb <= FIGURE_BUDGET_MB else " - still over the budget: do not commit them as they are"))
    print(f"-> {out / 'report.md'}")


if __name__ == "__main__":
    run_main(main)
