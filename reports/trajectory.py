"""Where a sample's shape is decided: the network's x0 predictions along one DDIM run, decoded.

    python -m reports.trajectory [--ckpt CKPT] [--n 8] [--rows 8] [--steps 50] [--seed 1] --out DIR

At every DDIM step the network predicts the clean sample, x0_hat = f(x_t, t), and the sampler builds
its next state from it (diffusion/samplers.py):

    eps_hat = (x_t - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t),   x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev) eps_hat

The reverse GIF of `diffusion.sample --gif` shows x_t, which is mostly noise until late. x0_hat shows
what the model expects the finished picture to be at each noise level: under much noise, where many
pictures fit x_t, the MSE-optimal prediction is their blurred average; once the model has chosen, it
is the final picture. The noise level at which the decoded prediction stops changing is where the
sample's layout is decided (docs/design.md, "Where the samples fail"). At the last step (t = 0, ab_prev = 1)
x_prev = x0_hat, so the last row is the sample itself.

DIR/trajectory.png: one row per recorded step (labelled t and SNR(t) = ab_t / (1 - ab_t)), `rows` steps
evenly spaced over the run, the first and the last included; one column per sample. DIR/trajectory.json:
per row t, SNR and the RMS distance, in pixels in [-1, 1], between the decoded prediction and the final
sample (0 in the last row): how much of the picture is still to be decided at that step.
"""
from __future__ import annotations

import argparse
import json

import torch
from PIL import Image

from diffusion.guidance import DEFAULT_GUIDANCE
from diffusion.denoiser import make_denoiser
from diffusion.pipeline import load_pipeline
from diffusion.samplers import x0_trajectory
from plumbing.cli import UserError, run_main
from plumbing.pictures import grid_array, label_rows
from plumbing.runs import writable_dir


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m reports.trajectory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="diffusion checkpoint (default: as python -m diffusion.sample)")
    p.add_argument("--ae", default=None, help="AE checkpoint, if not at the path recorded in the diffusion checkpoint")
    p.add_argument("--n", type=int, default=8, help="samples, one column each (default 8)")
    p.add_argument("--rows", type=int, default=8, help="recorded steps, one row each (default 8)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--seed", type=int, default=1, help="sampling seed (default 1, the seed of the metric sets)")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE,
                   help="guidance scale for a style-conditional model's default style, as diffusion.sample "
                        f"(default {DEFAULT_GUIDANCE:g})")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="trajectory", help="output folder (default: trajectory/)")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.n <= 0:
        raise UserError(f"--n {args.n}: the number of samples must be positive")
    if args.rows < 2:
        raise UserError(f"--rows {args.rows}: at least 2 rows are needed (the first and the last step)")
    pipe = load_pipeline(args.ckpt, args.device, args.ae)
    schedule, space, device = pipe.schedule, pipe.space, pipe.device
    if not 1 <= args.steps <= schedule.T:
        raise UserError(f"--steps {args.steps} must be between 1 and T={schedule.T}")

    labels, _ = pipe.labels(None, None, args.n)  # what diffusion.sample draws without --type / --style
    denoise = make_denoiser(pipe.model, device, False, labels, args.guidance)
    gen = torch.Generator().manual_seed(args.seed)
    with torch.inference_mode():
        _, kept = x0_trajectory(denoise, schedule, (args.n, *space.shape), gen, device, space.clip, args.steps,
                                args.rows)
        pictures = [space.decode(x0_hat).cpu() for _, x0_hat in kept]
    final = pictures[-1]
    stats = {"checkpoint": str(pipe.source), "space": space.name, "n": args.n, "seed": args.seed,
             "steps": args.steps, "rows": []}
    names = []
    for (t, _), picture in zip(kept, pictures):
        snr = float(schedule.snr(torch.tensor(t)))
        names.append(f"t={t} (SNR {snr:.2g})")
        rms = float((picture - final).pow(2).mean().sqrt())
        stats["rows"].append({"t": t, "snr": snr, "rms_to_final": round(rms, 4)})
    out = writable_dir(args.out)
    grid = grid_array(torch.cat(pictures), nrow=args.n, upscale=2)  # twice the size, as reports.restore
    Image.fromarray(label_rows(grid, names, row_height=2 * final.shape[-2])).save(out / "trajectory.png")
    (out / "trajectory.json").write_text(json.dumps(stats, indent=2) + "\n")
    print("RMS distance of the decoded x0 prediction to the sample: "
          + ", ".join(f"t={r['t']}: {r['rms_to_final']:.3f}" for r in stats["rows"]) + f" -> {out}/trajectory.png")


if __name__ == "__main__":
    run_main(main)
