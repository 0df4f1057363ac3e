"""The forward (noising) process in pictures and numbers: the proof that it ends in N(0, I).
`prove(cfg, out)` is what `python -m reports.ends_in_noise` runs; it writes into `out`:
    forward_pixels.gif / .png   a few sprites going from image to noise: the Markov chain
                                x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps, step by step
    forward_latent.gif / .png   the same chain on the normalised latents, each x_t shown through
                                the VAE decoder (when an AE is available)
    hist_rgb.png                densities of the R, G, B values of the data x_0 and of x_T, with the
                                N(0, 1) density overlaid
    hist_latent.png             the same for each latent channel of the normalised latents and z_T
    stats.json                  per channel: mean, std, skewness, excess kurtosis and the
                                Kolmogorov-Smirnov statistic against N(0, 1), for x_0 and x_T

x_T for the statistics is drawn with the closed form x_T = sqrt(ab_T) x_0 + sqrt(1 - ab_T) eps for
every training image; for N(0, 1) data the four moments are (0, 1, 0, 0) and the KS statistic of n
samples is about 0.87 / sqrt(n) (the mean of Kolmogorov's distribution). x_T is not exactly N(0, 1):
`ks_yardstick` adds the shift sqrt(ab_T) * mean(x_0) that the data leave behind.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image

from diffusion.config import DiffusionConfig
from diffusion.denoiser import build_schedule
from diffusion.schedule import LinearSchedule
from diffusion.space import LatentSpace, training_space
from plumbing.cli import UserError
from plumbing.device import pick_device, seed_everything
from plumbing.pictures import grid_array, save_gif
from plumbing.runs import writable_dir, write_json
from sprites.dataset import load_artworks, to_unit_range

N_SHOWN = 6        # sprites in the GIFs and strips
GIF_FRAMES = 50
STRIP_STEPS = 10


def moments_and_ks(values: torch.Tensor) -> dict:
    """Mean, std, skewness, excess kurtosis and the KS statistic sup_x |F_n(x) - Phi(x)|."""
    v = values.double().flatten()
    mean, std = v.mean(), v.std()
    z = (v - mean) / std
    s, _ = torch.sort(v)
    n = len(s)
    cdf = torch.special.ndtr(s)  # Phi(x), the N(0, 1) CDF
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n - cdf
    lower = cdf - torch.arange(0, n, dtype=torch.float64) / n
    return {"mean": float(mean), "std": float(std), "skewness": float(z.pow(3).mean()),
            "excess_kurtosis": float(z.pow(4).mean() - 3.0), "ks_vs_normal": float(torch.maximum(upper, lower).max()),
            "n": n}


# sqrt(n) times the KS statistic of n draws from the distribution itself follows Kolmogorov's
# distribution: mean 0.87, 99% quantile 1.63.
KS_MEAN = 0.87
KS_Q99 = 1.63


def ks_yardstick(mean_x0: float, alpha_bar_T: float, n: int) -> dict:
    """What the KS statistic of n values of x_T against N(0, 1) should be, for data of mean `mean_x0`.

    x_T = sqrt(ab_T) x_0 + sqrt(1 - ab_T) eps keeps a shift: to first order in sqrt(ab_T) its CDF is
    Phi(x) - sqrt(ab_T) mean(x_0) phi(x), at distance shift = sqrt(ab_T) |mean(x_0)| phi(0) from
    N(0, 1) (phi(0) = 1 / sqrt(2 pi)). The statistic of n values is at most that plus the sampling
    term (triangle inequality), which is KS_MEAN / sqrt(n) on average and below KS_Q99 / sqrt(n) in 99
    of 100 draws. Returns {"shift", "expected": shift + KS_MEAN / sqrt(n), "limit": shift + KS_Q99 / sqrt(n)}."""
    shift = math.sqrt(alpha_bar_T) * abs(mean_x0) / math.sqrt(2 * math.pi)
    return {"shift": shift, "expected": shift + KS_MEAN / math.sqrt(n), "limit": shift + KS_Q99 / math.sqrt(n)}


def channel_table(x: torch.Tensor, names: list[str]) -> dict:
    """moments_and_ks per channel of [N, C, H, W] (values subsampled to at most 2M per channel)."""
    out = {}
    for c, name in enumerate(names):
        v = x[:, c].flatten()
        if len(v) > 2_000_000:
            v = v[torch.randperm(len(v), generator=torch.Generator().manual_seed(c))[:2_000_000]]
        out[name] = moments_and_ks(v)
    return out


def forward_chain(schedule: LinearSchedule, x0: torch.Tensor, gen: torch.Generator, keep: list[int]) -> dict[int, torch.Tensor]:
    """Run the Markov chain q(x_t | x_{t-1}) for all T steps; return x_t at the indices in `keep`
    (index -1 is x_0 itself)."""
    out, x = {}, x0
    if -1 in keep:
        out[-1] = x0
    for t in range(schedule.T):
        noise = torch.randn(x.shape, generator=gen)
        x = schedule.q_step(x, torch.full((len(x),), t, dtype=torch.long), noise)
        if t in keep:
            out[t] = x
    return out


def chain_pictures(schedule, x0, decode, gen, out: Path, stem: str, frames: int = GIF_FRAMES, upscale: int = 2) -> None:
    """GIF (`frames` frames, denser at small t) and strip PNG (rows: sprites, columns: STRIP_STEPS + 1
    values of t), tiles enlarged `upscale` times."""
    T = schedule.T
    gif_t = sorted({-1} | {round(T * (i / (frames - 1)) ** 2) - 1 for i in range(1, frames)})
    strip_t = [-1] + [round(T * i / STRIP_STEPS) - 1 for i in range(1, STRIP_STEPS + 1)]
    states = forward_chain(schedule, x0, gen, sorted(set(gif_t) | set(strip_t)))
    gif_frames = [grid_array(decode(states[t]), nrow=len(x0), upscale=upscale) for t in gif_t]
    save_gif(gif_frames, out / f"{stem}.gif", seconds_per_frame=0.1, hold_last=1.0)
    # Strip: one column per t, one row per sprite.
    cols = torch.stack([decode(states[t]) for t in strip_t], dim=1)  # [N, steps, 3, H, W]
    Image.fromarray(grid_array(cols.flatten(0, 1), nrow=len(strip_t), upscale=upscale)).save(out / f"{stem}.png")


def shown_sprites(x0: torch.Tensor, k: int = N_SHOWN) -> torch.Tensor:
    """k training sprites spread evenly over the set: the ones the pictures follow."""
    return x0[torch.linspace(0, len(x0) - 1, k).long()]


def closed_form_xT(schedule: LinearSchedule, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """x_T = sqrt(ab_T) x_0 + sqrt(1 - ab_T) eps for every x_0 (one eps each)."""
    return schedule.q_sample(x0, torch.full((len(x0),), schedule.T - 1), torch.randn(x0.shape, generator=gen))


def pixel_proof(schedule: LinearSchedule, x0: torch.Tensor, gen: torch.Generator, out: Path,
                frames: int = GIF_FRAMES, upscale: int = 2) -> dict:
    """Pixel space: forward_pixels.gif/.png, hist_rgb.png; returns the R, G, B statistics of x_0 and x_T."""
    chain_pictures(schedule, shown_sprites(x0), lambda x: x, gen, out, "forward_pixels", frames, upscale)
    xT = closed_form_xT(schedule, x0, gen)
    rgb = {"before": channel_table(x0, ["R", "G", "B"]), "after": channel_table(xT, ["R", "G", "B"])}
    plot_densities(x0, xT, ["R", "G", "B"], ["tab:red", "tab:green", "tab:blue"],
                   "RGB values, pixel space", out / "hist_rgb.png", rgb)
    return rgb


def latent_proof(schedule: LinearSchedule, space: LatentSpace, x0: torch.Tensor, gen: torch.Generator, out: Path,
                 frames: int = GIF_FRAMES, upscale: int = 2) -> dict:
    """Latent space (`space` prepared on the training images x0): hist_latent.png and
    forward_latent.gif/.png (each x_t seen through the decoder); returns the per-channel statistics
    of the normalised posterior means z_0 and of z_T."""
    z0 = space.all_x0()
    names = [f"z{c}" for c in range(z0.shape[1])]
    zT = closed_form_xT(schedule, z0, gen)
    lat = {"before": channel_table(z0, names), "after": channel_table(zT, names), "norm": "channel"}
    plot_densities(z0, zT, names, ["tab:purple", "tab:orange", "tab:cyan", "tab:olive", "tab:brown",
                                   "tab:pink", "tab:gray", "tab:red"][:len(names)],
                   "latent channels (per-channel normalisation)", out / "hist_latent.png", lat)
    chain_pictures(schedule, space.encode(shown_sprites(x0)).cpu(), lambda z: space.decode(z).cpu(), gen, out,
                   "forward_latent", frames, upscale)
    return lat


def plot_densities(before: torch.Tensor, after: torch.Tensor, names: list[str], colors: list[str], title: str,
                   path: Path, stats: dict) -> None:
    """Two panels: per-channel value densities of x_0 and of x_T, with the N(0, 1) density."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the file-only backend

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=110)
    grid = np.linspace(-4.5, 4.5, 400)
    gauss = np.exp(-grid ** 2 / 2) / math.sqrt(2 * math.pi)
    for ax, x, label in [(axes[0], before, "x_0 (data)"), (axes[1], after, "x_T (after the forward process)")]:
        for c, (name, color) in enumerate(zip(names, colors)):
            v = x[:, c].flatten().numpy()
            dens, edges = np.histogram(v, bins=120, range=(-4.5, 4.5), density=True)
            ax.step(0.5 * (edges[1:] + edges[:-1]), dens, where="mid", color=color, alpha=0.8, label=name)
        ax.plot(grid, gauss, "k--", linewidth=1.4, label="N(0, 1)")
        ax.set_title(label)
        ax.set_xlabel("value")
        ax.set_ylabel("density")
        ax.set_xlim(-4.5, 4.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    worst = max(stats["after"][n]["ks_vs_normal"] for n in names)
    fig.suptitle(f"{title}: max KS distance of x_T to N(0,1) = {worst:.4f}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_table(title: str, stats: dict) -> None:
    print(f"\n{title}")
    print(f"{'':10s} {'channel':8s} {'mean':>8s} {'std':>8s} {'skew':>8s} {'ex.kurt':>8s} {'KS':>8s}")
    for when in ("before", "after"):
        for name, s in stats[when].items():
            print(f"{'x_0' if when == 'before' else 'x_T':10s} {name:8s} {s['mean']:8.3f} {s['std']:8.3f} "
                  f"{s['skewness']:8.3f} {s['excess_kurtosis']:8.3f} {s['ks_vs_normal']:8.4f}")


def prove(cfg: DiffusionConfig, out: Path, device: torch.device | None = None) -> dict:
    """The whole proof for a config (module docstring): pictures and statistics in pixel space, and in
    latent space where the config's AE (ae.ckpt, else the newest) is found. Returns stats.json's content."""
    device = device or pick_device(cfg.device)
    seed_everything(cfg.seed)
    schedule = build_schedule(cfg)
    diag = schedule.check_ends_in_noise(force=cfg.schedule.force)
    data = load_artworks(cfg.data.root, cfg.data.size, cfg.data.cache_dir, cfg.data.holdout, cfg.data.split_seed)
    out = writable_dir(out)

    x0 = to_unit_range(data.train())
    gen = torch.Generator().manual_seed(cfg.seed)
    report = {"schedule": schedule.diagnostics(x0)}

    # Pixel space.
    report["pixels"] = pixel_proof(schedule, x0, gen, out)
    print_table(f"pixel space, {len(x0)} images, T={schedule.T}", report["pixels"])

    # Latent space, when there is an AE.
    try:
        space, _ = training_space(dataclasses.replace(cfg, space="latent"), device)
    except UserError as err:
        if cfg.space == "latent":
            raise
        print(f"\nlatent space skipped: {err}")
        space = None
    if isinstance(space, LatentSpace):
        space.prepare(data.train())
        report["latents"] = latent_proof(schedule, space, x0, gen, out)
        report["schedule_latent"] = schedule.diagnostics(space.all_x0())
        print_table(f"latent space (per-channel normalisation), {len(x0)} images", report["latents"])
    write_json(report, out / "stats.json")
    print(f"\nalpha_bar_T = {diag['alpha_bar_T']:.3g}, SNR_T = {diag['snr_T']:.3g}, "
          f"KL(q(x_T|x_0) || N(0,I)) = {report['schedule']['kl_per_dim']:.3g} nats/dim (pixels)")
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
    return report
