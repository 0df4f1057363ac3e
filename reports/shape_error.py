"""What moves before the samples do: the held-out x0 error at the noise levels where shapes are chosen,
along one or more training runs (docs/results.md: a sample's shape is decided between SNR 0.04 and 0.18).

    python -m reports.shape_error RUN_DIR [RUN_DIR ...] [--n 256] [--levels 6] [--snr 0.04 0.18] [--out DIR]

For every training state (state-<step>.pt, its EMA weights) and final diffusion.pt of each run:

    E = mean over images x_0 and levels t of || f(x_t, t) - x_0 ||^2 / D,   x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps

over n held-out images (every image of a held-out species, any source the run trains on; a seeded
draw of n of them), mapped into the run's space, at `levels` noise levels spaced evenly in log SNR
over the band, with the same noise eps for every state and run, and no labels (the model's
unconditional prediction: held-out species have no trained label). Lower is better: the network
predicts more of an unseen creature's shape from a noisy start. Writes DIR/shape_error.json and
DIR/shape_error.png (E against the step, one line per run).
"""
from __future__ import annotations

import argparse
import datetime
import math
from pathlib import Path

import matplotlib
import torch
from tqdm import tqdm

from diffusion.denoiser import predict_x0
from diffusion.pipeline import load_diffusion
from plumbing.cli import UserError, run_main, user_path
from plumbing.device import machine_name
from plumbing.resume import run_points
from plumbing.runs import writable_dir, write_json
from sprites.config import DataConfig
from sprites.dataset import to_unit_range
from sprites.mixture import load_data

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402


def held_out_images(data_cfg: DataConfig, n: int, seed: int) -> torch.Tensor:
    """n uint8 images of held-out species (a seeded draw; all of them when there are fewer)."""
    data = load_data(data_cfg)
    idx = data.heldout_species_idx
    if len(idx) > n:
        idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))[:n]]
    return data.images[idx]


@torch.no_grad()
def band_error(pipe, x0: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor, batch_size: int = 128) -> list[float]:
    """E at each noise level t (one value per level), x0 [N, C, H, W] in the model's space."""
    pipe.model.eval()
    errors = []
    for k, t in enumerate(levels.tolist()):
        total = 0.0
        for i in range(0, len(x0), batch_size):
            x, eps = x0[i:i + batch_size], noise[k, i:i + batch_size]
            tt = torch.full((len(x),), t, dtype=torch.long)
            xt = pipe.schedule.q_sample(x, tt, eps)
            pred = predict_x0(pipe.model, xt.to(pipe.device), tt.to(pipe.device), False).cpu()
            total += float((pred - x).pow(2).flatten(1).mean(1).sum())
        errors.append(total / len(x0))
    return errors


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m reports.shape_error", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders of latent or pixel DDPMs (their states: train.keep_last)")
    p.add_argument("--n", type=int, default=256, help="held-out images (default 256)")
    p.add_argument("--levels", type=int, default=6, help="noise levels in the band (default 6)")
    p.add_argument("--snr", type=float, nargs=2, default=(0.04, 0.18), metavar=("LOW", "HIGH"),
                   help="the SNR band (default 0.04 0.18)")
    p.add_argument("--seed", type=int, default=0, help="seed of the images drawn and the noise (default 0)")
    p.add_argument("--out", default=None, help="output folder (default: the first run's shape_error/)")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    low, high = args.snr
    if args.n <= 0 or args.levels <= 0 or not 0 < low <= high:
        raise UserError("--n and --levels must be positive and --snr LOW HIGH must satisfy 0 < LOW <= HIGH")
    runs = [user_path(r) for r in args.runs]
    points = {run: run_points(run) for run in runs}
    for run, found in points.items():
        if not found:
            raise UserError(f"{run} holds no state-*.pt and no diffusion.pt; train with train.keep_last=N to keep the states")
    out = writable_dir(user_path(args.out) if args.out else runs[0] / "shape_error")
    log_snrs = torch.linspace(math.log(low), math.log(high), args.levels, dtype=torch.float64)
    results, cache = [], {}
    for run in runs:
        rows = []
        for step, path in tqdm(points[run], desc=run.name, unit="state"):
            pipe = load_diffusion(path, "cpu")
            key = (repr(pipe.cfg.data), pipe.space.name, str(getattr(pipe.space, "shift", None)))
            if key not in cache:  # the held-out images in this space, and the noise: the same for every state
                x0 = pipe.space.encode(to_unit_range(held_out_images(pipe.cfg.data, args.n, args.seed))).cpu()
                gen = torch.Generator().manual_seed(args.seed)
                cache[key] = (x0, torch.randn((args.levels, *x0.shape), generator=gen))
            x0, noise = cache[key]
            levels = pipe.schedule.t_from_log_snr(log_snrs)
            per_level = band_error(pipe, x0, levels, noise)
            rows.append({"step": step, "file": path.name, "error": sum(per_level) / len(per_level),
                         "per_level": per_level})
            tqdm.write(f"{run.name} step {step}: held-out x0 error {rows[-1]['error']:.4f}")
        results.append({"run": str(run), "points": rows})
    snr_levels = [round(math.exp(v), 4) for v in log_snrs.tolist()]
    write_json({"n": args.n, "seed": args.seed, "snr_levels": snr_levels, "machine": machine_name(),
                "date": datetime.date.today().isoformat(), "runs": results}, out / "shape_error.json")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in results:
        ax.plot([p["step"] for p in r["points"]], [p["error"] for p in r["points"]], "o-", label=Path(r["run"]).name)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out x0 MSE")
    ax.set_title(f"x0 error of held-out species at SNR {low:g}-{high:g} ({args.n} images, {args.levels} levels)",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "shape_error.png", dpi=120)
    plt.close(fig)
    print(f"-> {out}/shape_error.json, {out}/shape_error.png")


if __name__ == "__main__":
    run_main(main)
