"""Latent against pixel diffusion: one Markdown report with its figures, readable on GitHub.

    python -m reports.compare --ldm RUN --pixel RUN --out DIR [--n 64] [--steps 50] [--seed 0]
                              [--notes FILE] [--hue DIR] [--data DIR] [--device auto]

RUN is the folder of a finished diffusion.train run (or its diffusion.pt): --ldm one in latent
space (scripts/train_ldm.sh), --pixel one in pixel space (scripts/train_pixel.sh). Writes into DIR
report.md, report.json (every number of the report) and the figures it shows:

    samples_{latent,pixel}_ddim.png   --n samples of each model, DDIM with --steps steps, seed --seed
    samples_{latent,pixel}_ddpm.png   the same with ancestral DDPM over all T steps
    reverse_{latent,pixel}.gif        the reverse process of 16 of them (20 frames, tiles at native size)
    forward_{pixels,latent}.gif/.png  the forward process of 6 training sprites (diffusion.forward)
    hist_rgb.png, hist_latent.png     x_0 and x_T against N(0, 1) (diffusion.forward)
    loss_{latent,pixel}.png           the runs' own loss curves, copied
    types_latent.png                  one row per Pokemon type (a type-conditional LDM only)

Where the numbers come from:
  * Equal compute: train.max_minutes, training wall time, steps, img/s, device and machine of each
    run, from its metrics.json (or the checkpoint's copy of it); the AE's (stage 1) time is stated
    separately. When the two DDPMs' wall times differ by more than 10%, or their budgets or machines
    differ, the report says so.
  * Cost: parameters; FLOPs per training image (U-Net forward and backward, batch 1) and per sample
    (steps x one U-Net evaluation + decoding), counted by torch.utils.flop_counter.FlopCounterMode
    (matrix products, convolutions, attention; norms and activations are not counted); the time and
    peak memory of --n samples with DDIM and with DDPM, measured in a fresh Python process per model
    (its peak resident memory includes Python and torch).
  * Quality: reports.metrics.evaluate of each sample set against the training sprites and
    reports.metrics.reference_rows (held-out real sprites: the best achievable; blurred sprites and
    noise: the bad end). FID/KID only where torch-fidelity's Inception weights are on disk.
  * Forward process: diffusion.forward's statistics of x_0 and x_T for RGB values and latents.
  * Discussion: the Markdown of --notes FILE, verbatim. This command never writes judgement;
    without notes the report says that the discussion is not written. The file is checked at the
    start and read when the report is assembled, so it can be written while the samples are drawn.
  * Per type (a type-conditional LDM): one row of samples per type at the run's guidance scale;
    with --hue DIR, the table of reports.hue's DIR/hue.json.

The same seed is given to both models; x_T has another shape in each space, so they share the seed,
not the noise. The figures stay small (the repository's budget for them is 5 MB); the command
prints their total size.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import copy
import json
import multiprocessing
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import benchmarks.harness  # noqa: F401  (teaches the FLOP counter torch's CPU attention kernel)
from benchmarks.jobs import peak_rss_mb
from diffusion.config import DiffusionConfig
from diffusion.labels import Labels
from diffusion.model import make_denoiser, num_styles, num_types, predict_x0
from diffusion.pipeline import load_diffusion
from diffusion.sampling import ddim_timesteps
from diffusion.space import find_ae
from plumbing.checkpoint import load_checkpoint
from plumbing.cli import UserError, run_main
from plumbing.config import from_dict
from plumbing.device import machine_summary, pick_device
from plumbing.pictures import save_gif, save_grid
from plumbing.runs import writable_dir
from reports.metrics import K_NEIGHBOURS, evaluate, reference_rows
from sprites.dataset import load_sprites, sprites_root, to_uint8, to_unit_range
from sprites.labels import TYPES

GIF_SAMPLES = 16
GIF_FRAMES = 20
TYPE_ROW = 8                 # samples per type in the per-type grid
WALL_TIME_TOLERANCE = 0.10   # wall times further apart than this are not "equal compute"
FIGURE_BUDGET_MB = 5.0
SWD_PATCHES = 8192           # patches per pyramid level and set in the sliced Wasserstein distance (its default)
LABELS = {"latent": "latent (LDM)", "pixel": "pixel"}


@dataclass
class Run:
    """One trained diffusion model as the report sees it."""
    space: str                     # "latent" or "pixel"
    ckpt_path: Path
    run_dir: Path
    cfg: DiffusionConfig
    metrics: dict                  # metrics.json, else the checkpoint's copy ({} when neither)
    data_fingerprint: str | None
    ae: dict = field(default_factory=dict)   # latent runs: the AE's {"path", "metrics"}


# --- the runs -------------------------------------------------------------------------------------

def read_metrics(run_dir: Path, ckpt: dict) -> dict:
    """A run's metrics.json, or the copy its checkpoint carries."""
    path = run_dir / "metrics.json"
    if path.is_file():
        return json.loads(path.read_text())
    return dict(ckpt.get("metrics") or {})


def load_run(arg: str, space: str, flag: str) -> Run:
    """The run behind --ldm / --pixel: a run folder (or its diffusion.pt) of a model in `space`."""
    path = Path(arg)
    if not path.exists():
        raise UserError(f"{flag} {arg}: no such run folder; pass a folder written by diffusion.train "
                        "(checkpoints/<name>-<time>/)")
    ckpt_path = path / "diffusion.pt" if path.is_dir() else path
    if not ckpt_path.is_file():
        raise UserError(f"{flag} {arg} holds no diffusion.pt; pass the folder of a finished diffusion.train run")
    ckpt = load_checkpoint(ckpt_path, kind="diffusion")
    if ckpt["config"]["space"] != space:
        raise UserError(f"{flag} {arg} is a {ckpt['config']['space']}-space run; --ldm takes a latent-space run "
                        "(scripts/train_ldm.sh), --pixel a pixel-space run (scripts/train_pixel.sh)")
    run = Run(space, ckpt_path, ckpt_path.parent, from_dict(DiffusionConfig, ckpt["config"]),
              read_metrics(ckpt_path.parent, ckpt), ckpt.get("data_fingerprint"))
    if space == "latent":
        ae_path = find_ae(ckpt["ae"], ckpt_path)
        ae_ckpt = load_checkpoint(ae_path, kind="autoencoder")
        run.ae = {"path": str(ae_path), "metrics": read_metrics(ae_path.parent, ae_ckpt)}
    return run


# --- sampling, timed in a fresh process ------------------------------------------------------------

def sampling_job(ckpt: str, n: int, steps: int, seed: int, device: str) -> dict:
    """Load a model and draw n samples with DDIM (`steps`) and with DDPM (all T), after a warm-up run.

    Meant for a fresh process (`in_fresh_process`): its peak resident memory is then this job's
    own, Python and torch included. Returns the samples as uint8, the seconds of each sampler
    (decoding included), and the peak memory.
    """
    dev = pick_device(device)
    start_mb = peak_rss_mb()
    pipe = load_diffusion(ckpt, dev)
    pipe.generate(2, seed, steps=2)  # warm-up
    result = {"start_rss_mb": start_mb}
    for sampler in ("ddim", "ddpm"):
        images, _, seconds = pipe.generate(n, seed, sampler=sampler, steps=steps)
        result[sampler] = {"images": to_uint8(images), "seconds": seconds,
                           "steps": len(ddim_timesteps(pipe.schedule.T, steps)) if sampler == "ddim" else pipe.schedule.T}
    result["peak_rss_mb"] = peak_rss_mb()
    if dev.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 20
    return result


def in_fresh_process(fn, **kwargs):
    """fn(**kwargs) in a newly started Python process (multiprocessing "spawn"); its exceptions,
    user errors included, are raised here."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, **kwargs).result()


# --- FLOPs ----------------------------------------------------------------------------------------

def counted_flops(fn) -> int:
    """FLOPs of fn() as torch.utils.flop_counter counts them."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def training_flops_per_image(model, schedule, shape: tuple, cfg: DiffusionConfig) -> int:
    """One training image through diffusion.train's step: x0_hat = f(x_t, t), the x0-MSE, backward."""
    net = copy.deepcopy(model).train().requires_grad_(True)
    dev = next(net.parameters()).device
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, *shape, generator=gen)
    t = torch.full((1,), schedule.T // 2)
    xt = schedule.q_sample(x0, t, torch.randn(x0.shape, generator=gen)).to(dev)
    zero = torch.zeros(1, dtype=torch.long, device=dev)
    y = Labels(zero if num_types(cfg) else None, zero if num_styles(cfg) else None)

    def step():
        loss = (predict_x0(net, xt, t.to(dev), False, y) - x0.to(dev)).pow(2).mean()
        loss.backward()
    return counted_flops(step)


def sampling_flops(model, schedule, space, cfg: DiffusionConfig, steps: int) -> dict:
    """FLOPs of one sample: one network evaluation per step, then decoding to pixels."""
    dev = next(model.parameters()).device
    denoise = make_denoiser(model, dev, False)
    x = torch.randn(1, *space.shape, generator=torch.Generator().manual_seed(0)).to(dev)
    t = torch.full((1,), schedule.T - 1, device=dev)
    with torch.inference_mode():
        step = counted_flops(lambda: denoise(x, t))
        decode = counted_flops(lambda: space.decode(x))
    ddim_steps = len(ddim_timesteps(schedule.T, steps))
    return {"network_evaluation": step, "decode": decode, "ddim": ddim_steps * step + decode,
            "ddpm": schedule.T * step + decode}


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- data and metrics -----------------------------------------------------------------------------

def sprites_of(run: Run, root: str, cache: dict):
    """The sprites (sprites.dataset.SpriteSet) at the run's size and held-out split, loaded once per setting."""
    d = run.cfg.data
    key = (root, d.size, d.holdout, d.split_seed)
    if key not in cache:
        sprites = load_sprites(root, d.size, d.cache_dir, d.holdout, d.split_seed)
        need = K_NEIGHBOURS + 1
        if len(sprites.holdout_idx) < need or len(sprites.train_idx) < need:
            raise UserError(f"{len(sprites.train_idx)} training and {len(sprites.holdout_idx)} held-out sprites in "
                            f"{root}; the metrics need at least {need} of each: use more sprites")
        cache[key] = sprites
    return cache[key]


def quality_of(runs: list[Run], sampled: dict, sprites: dict, seed: int) -> dict:
    """reports.metrics.evaluate of every sample set, and reference_rows once per image size."""
    quality = {"samples": {}, "reference": {}, "notes": []}
    for run in runs:
        train, holdout = to_unit_range(sprites[run.space].train()), to_unit_range(sprites[run.space].holdout())
        quality["samples"][run.space] = {
            sampler: evaluate(to_unit_range(sampled[run.space][sampler]["images"]), train, holdout, seed,
                              swd_patches=SWD_PATCHES)
            for sampler in ("ddim", "ddpm")}
        if run.cfg.data.size not in quality["reference"]:
            quality["reference"][run.cfg.data.size] = reference_rows(train, holdout, seed, swd_patches=SWD_PATCHES)
        if run.data_fingerprint and run.data_fingerprint != sprites[run.space].fingerprint:
            quality["notes"].append(f"Note: the {run.space} model was trained on another set of sprites than the "
                                    "one evaluated here.")
    return quality


# --- figures --------------------------------------------------------------------------------------

def forward_figures(pixel_model, latent_model, pixel_sprites, latent_sprites, seed: int, out: Path) -> dict:
    """diffusion.forward's proof for both spaces, each with its run's schedule and small GIFs; returns
    the statistics of x_0 and x_T."""
    from diffusion.forward import latent_proof, pixel_proof

    pixel_schedule = pixel_model.schedule
    latent_schedule, latent_space = latent_model.schedule, latent_model.space
    gen = torch.Generator().manual_seed(seed)
    x0 = to_unit_range(pixel_sprites.train())
    stats = {"pixels": pixel_proof(pixel_schedule, x0, gen, out, frames=GIF_FRAMES, upscale=1),
             "schedule_pixels": pixel_schedule.diagnostics(x0), "n_pixels": len(x0)}
    latent_space.prepare(latent_sprites.train())
    stats["latents"] = latent_proof(latent_schedule, latent_space, to_unit_range(latent_sprites.train()), gen, out,
                                    frames=GIF_FRAMES, upscale=1)
    stats["schedule_latents"] = latent_schedule.diagnostics(latent_space.all_x0())
    stats["n_latents"] = len(latent_sprites.train_idx)
    return stats


def reverse_process_gif(loaded, steps: int, seed: int, path: Path, device) -> int:
    """The reverse process (DDIM) of the first GIF_SAMPLES samples of `seed`; returns the frame count."""
    frames = loaded.reverse_process(GIF_SAMPLES, seed, frames=GIF_FRAMES, steps=steps)
    save_gif(frames, path)
    return len(frames)


def type_grid(loaded, steps: int, seed: int, path: Path, device) -> dict:
    """One row of TYPE_ROW samples per Pokemon type (as diffusion.sample --type all) at the run's
    guidance scale cond.guidance."""
    cfg = loaded.cfg
    labels, _ = loaded.labels(["all"], None, TYPE_ROW)
    images, _, _ = loaded.generate(len(labels), seed, labels, cfg.cond.guidance, steps=steps)
    save_grid(images, path, nrow=TYPE_ROW)
    return {"types": list(TYPES), "per_type": TYPE_ROW, "guidance": cfg.cond.guidance}


def copy_loss_curve(run: Run, path: Path) -> bool:
    source = run.run_dir / "loss.png"
    if source.is_file():
        shutil.copyfile(source, path)
        return True
    return False


# --- Markdown -------------------------------------------------------------------------------------

def fmt(value, spec: str = ".3f", missing: str = "not recorded") -> str:
    return missing if value is None else format(value, spec)


def minutes(seconds) -> str:
    return "not recorded" if seconds is None else f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_text(machine: dict | None) -> str:
    if not machine:
        return "not recorded"
    text = f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, torch {machine.get('torch', '?')}"
    return text + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")


def equal_compute(latent: Run, pixel: Run) -> dict:
    """The facts of the equal-compute comparison and the plain sentences that state them."""
    a, b = latent.metrics.get("train_seconds"), pixel.metrics.get("train_seconds")
    gap = abs(a - b) / min(a, b) if a and b else None
    ma, mb = latent.cfg.train.max_minutes, pixel.cfg.train.max_minutes
    machine_a, machine_b = latent.metrics.get("machine"), pixel.metrics.get("machine")
    ae_seconds = latent.ae.get("metrics", {}).get("train_seconds")
    lines = []
    if gap is None:
        lines.append("**Equal compute cannot be checked**: a run does not record its training wall time.")
    elif gap > WALL_TIME_TOLERANCE:
        lines.append(f"**Not an equal-compute comparison**: the latent DDPM trained for {minutes(a)} and the pixel "
                     f"DDPM for {minutes(b)} of wall-clock time, {gap:.0%} apart (more than "
                     f"{WALL_TIME_TOLERANCE:.0%}).")
    else:
        lines.append(f"Both DDPMs trained for the same wall-clock time within {WALL_TIME_TOLERANCE:.0%}: "
                     f"{minutes(a)} (latent) and {minutes(b)} (pixel), {gap:.1%} apart.")
    if ma != mb:
        lines.append(f"**The time budgets differ**: train.max_minutes = {ma:g} (latent) and {mb:g} (pixel).")
    elif ma > 0:
        lines.append(f"Both ran under the same budget, train.max_minutes = {ma:g}.")
    else:
        lines.append("Neither run had a time budget (train.max_minutes = 0): each stopped after its epochs.")
    if machine_a and machine_b and machine_a == machine_b:
        lines.append(f"Both trained on the same kind of machine: {machine_text(machine_a)}.")
    elif machine_a and machine_b:
        lines.append(f"**The runs trained on different machines**: {machine_text(machine_a)} (latent) and "
                     f"{machine_text(machine_b)} (pixel).")
    else:
        lines.append("The runs do not both record their machine (runs made before metrics.json had a `machine` "
                     "entry): whether they shared a machine cannot be checked here.")
    if latent.metrics.get("device") != pixel.metrics.get("device") or \
            latent.metrics.get("bf16") != pixel.metrics.get("bf16"):
        lines.append(f"**Device or precision differ**: {latent.metrics.get('device')}, bf16 "
                     f"{latent.metrics.get('bf16')} (latent) against {pixel.metrics.get('device')}, bf16 "
                     f"{pixel.metrics.get('bf16')} (pixel).")
    if ae_seconds is not None and a is not None:
        lines.append(f"The latent model also needs its AE (stage 1), trained for {minutes(ae_seconds)} "
                     f"(`{latent.ae['path']}`), so the latent pipeline trained for {minutes(a + ae_seconds)} in all; "
                     "the comparison above leaves the AE's time out.")
    return {"latent_seconds": a, "pixel_seconds": b, "gap": gap, "equal": gap is not None and
            gap <= WALL_TIME_TOLERANCE and ma == mb, "max_minutes": [ma, mb], "ae_seconds": ae_seconds,
            "machines": [machine_a, machine_b], "sentences": lines}


def section_compute(latent: Run, pixel: Run, facts: dict) -> str:
    rows = []
    for name, key, spec in [("training wall time", "train_seconds", None), ("steps", "steps", "d"),
                            ("epochs", "epochs_completed", ".1f"), ("training img/s", "train_img_per_s", ".1f"),
                            ("device", "device", "s"), ("bf16 autocast", "bf16", None)]:
        cells = []
        for run in (latent, pixel):
            v = run.metrics.get(key)
            cells.append(minutes(v) if key == "train_seconds" else fmt(v, spec) if spec else str(v))
        rows.append([name, *cells])
    rows.insert(0, ["train.max_minutes", *(f"{r.cfg.train.max_minutes:g}" for r in (latent, pixel))])
    rows.append(["machine", *(machine_text(r.metrics.get("machine")) for r in (latent, pixel))])
    rows.append(["run", *(f"`{r.run_dir}`" for r in (latent, pixel))])
    return "## Equal compute\n\n" + "\n".join(f"- {line}" for line in facts["sentences"]) + "\n\n" + \
        table(["", LABELS["latent"], LABELS["pixel"]], rows)


def section_samples(n: int, steps: int, seed: int, has_loss: dict) -> str:
    text = [f"## Samples\n\n{n} samples of each model from seed {seed} (the same seed; x_T has a different shape "
            "in each space, so the two share the seed, not the noise)."]
    for sampler, what in (("ddim", f"DDIM, {steps} steps"), ("ddpm", "ancestral DDPM, all T steps")):
        text.append(f"**{what}**\n\n" + table(
            [LABELS["latent"], LABELS["pixel"]],
            [[f"![latent, {what}](samples_latent_{sampler}.png)", f"![pixel, {what}](samples_pixel_{sampler}.png)"]]))
    text.append(f"**The reverse process** (DDIM, the first {GIF_SAMPLES} samples, x_t decoded to pixels)\n\n" + table(
        [LABELS["latent"], LABELS["pixel"]], [["![latent reverse process](reverse_latent.gif)",
                                               "![pixel reverse process](reverse_pixel.gif)"]]))
    curves = [f"![{s} loss](loss_{s}.png)" if has_loss[s] else "not recorded" for s in ("latent", "pixel")]
    text.append("**Training loss**\n\n" + table([LABELS["latent"], LABELS["pixel"]], [curves]))
    return "\n\n".join(text)


def gflops(v) -> str:
    return fmt(None if v is None else v / 1e9, ".3g")


def section_cost(cost: dict, n: int, machine_now: dict, latent: Run, pixel: Run) -> str:
    lc, pc = cost["latent"], cost["pixel"]
    rows = [
        ["diffusion space x_0", "x".join(map(str, lc["shape"])), "x".join(map(str, pc["shape"]))],
        ["U-Net parameters", f"{lc['unet_parameters'] / 1e6:.2f}M", f"{pc['unet_parameters'] / 1e6:.2f}M"],
        ["AE parameters (decoder, used in sampling)",
         f"{lc['ae_parameters'] / 1e6:.2f}M ({lc['decoder_parameters'] / 1e6:.2f}M)", "none"],
        ["GFLOPs per training image (U-Net forward + backward)", gflops(lc["train_flops"]), gflops(pc["train_flops"])],
        [f"GFLOPs per sample, DDIM {lc['ddim_steps']} steps (decoding included)",
         gflops(lc["sample_flops"]["ddim"]), gflops(pc["sample_flops"]["ddim"])],
        [f"GFLOPs per sample, DDPM (T = {lc['T']} / {pc['T']})", gflops(lc["sample_flops"]["ddpm"]),
         gflops(pc["sample_flops"]["ddpm"])],
        ["training wall time", minutes(latent.metrics.get("train_seconds")), minutes(pixel.metrics.get("train_seconds"))],
        ["training img/s", fmt(latent.metrics.get("train_img_per_s"), ".1f"),
         fmt(pixel.metrics.get("train_img_per_s"), ".1f")],
        [f"sampling time, {n} samples, DDIM {lc['ddim_steps']} steps", f"{lc['ddim_seconds']:.1f} s",
         f"{pc['ddim_seconds']:.1f} s"],
        [f"sampling time, {n} samples, DDPM all T steps", f"{lc['ddpm_seconds']:.1f} s", f"{pc['ddpm_seconds']:.1f} s"],
        ["peak memory of the sampling process (RSS, DDIM and DDPM runs)", f"{lc['peak_rss_mb']:.0f} MB", f"{pc['peak_rss_mb']:.0f} MB"],
    ]
    if "peak_cuda_mb" in lc:
        rows.append(["peak GPU memory allocated", f"{lc['peak_cuda_mb']:.0f} MB", f"{pc['peak_cuda_mb']:.0f} MB"])
    notes = (f"FLOPs are those torch.utils.flop_counter counts (matrix products, convolutions, attention; "
             f"norms and activations are not counted), at batch 1; the latent model's training images are "
             f"encoded once before training ({gflops(lc['encode_flops'])} GFLOPs per image and per mirror "
             f"image, not in the row above). Training time and img/s are the runs' own (metrics.json). Sampling "
             f"time (decoding included, after a warm-up run) and peak memory were measured by this command, "
             f"each model in a fresh Python process (its resident memory includes Python and torch: "
             f"{lc['start_rss_mb']:.0f} MB before loading anything), on {machine_text(machine_now)}.")
    return "## Cost\n\n" + table(["", LABELS["latent"], LABELS["pixel"]], rows) + "\n\n" + notes


def metric_row(name: str, r: dict) -> list[str]:
    levels = [k for k in r["swd"] if k != "mean"]
    return [name, str(r["n"]), " / ".join(f"{r['swd'][k]:.1f}" for k in levels) + f" ({', '.join(levels)})",
            f"{r['swd']['mean']:.1f}", f"{r['precision']:.2f}", f"{r['recall']:.2f}",
            f"{r['memorisation']['rate']:.1%}", f"{r['memorisation']['median_nn_distance']:.3f}",
            f"{r['diversity']:.3f}", fmt(r["fid"], ".1f", "not computed"), fmt(r["kid"], ".4f", "not computed")]


def section_quality(quality: dict, steps: int) -> str:
    header = ["set", "n", "SWD x1e3 per level", "SWD mean", "precision", "recall", "memorised", "NN-train",
              "diversity", "FID", "KID"]
    rows = []
    for space in ("latent", "pixel"):
        for sampler, what in (("ddim", f"DDIM {steps}"), ("ddpm", "DDPM")):
            rows.append(metric_row(f"{LABELS[space]}, {what}", quality["samples"][space][sampler]))
    for size, ref in quality["reference"].items():
        suffix = f" ({size}px)" if len(quality["reference"]) > 1 else ""
        rows.append(metric_row(f"reference: held-out real sprites{suffix} (best achievable)", ref["holdout"]))
        rows.append(metric_row(f"reference: held-out sprites blurred{suffix} (bad end)", ref["holdout_blurred"]))
        rows.append(metric_row(f"reference: uniform noise{suffix} (bad end)", ref["noise"]))
    first = quality["samples"]["latent"]["ddim"]
    note = first["fid_kid_note"]
    if first["fid"] is None:
        note = "not computed: weights unavailable (" + note.removeprefix("not computed: ") + ")"
    fid_line = f"**FID / KID**: {note}"
    text = [
        "## Quality\n",
        "Every sample set against the training sprites, with `reports.metrics.evaluate`; the reference rows are "
        "`reports.metrics.reference_rows`, the same metrics for sets of known quality. SWD: sliced Wasserstein "
        "distance of Laplacian-pyramid patches (lower is better); precision / recall: k-NN manifolds in 16x16 "
        "pixel features (higher is better); memorised: share of samples much closer to a training sprite than "
        "new real sprites are; NN-train: median distance to the nearest training sprite; diversity: mean "
        f"pairwise distance (the training sprites: {first['diversity_real']:.3f}); distances are RMS over 16x16 "
        "pixels in [-1, 1]. The metrics depend on the set sizes: compare rows of similar n.\n",
        table(header, rows), "", fid_line,
    ]
    for note in quality["notes"]:
        text.append(f"\n{note}")
    return "\n".join(text)


def stats_rows(space: str, stats: dict) -> list[list[str]]:
    rows = []
    for name, before in stats["before"].items():
        after = stats["after"][name]
        rows.append([space, name, f"{before['mean']:.3f}", f"{before['std']:.3f}", f"{before['ks_vs_normal']:.3f}",
                     f"{after['mean']:.3f}", f"{after['std']:.3f}", f"{after['skewness']:.3f}",
                     f"{after['excess_kurtosis']:.3f}", f"{after['ks_vs_normal']:.4f}"])
    return rows


def section_forward(stats: dict) -> str:
    header = ["space", "channel", "x_0 mean", "x_0 std", "x_0 KS to N(0,1)", "x_T mean", "x_T std", "x_T skew",
              "x_T ex. kurtosis", "x_T KS"]
    sp, sl = stats["schedule_pixels"], stats["schedule_latents"]
    return "\n".join([
        "## The forward process ends in N(0, I)\n",
        f"`diffusion.forward`'s proof on the training sprites ({stats['n_pixels']} images at the pixel model's "
        f"size, {stats['n_latents']} at the latent model's), each space with its own run's schedule: pixels T = {sp['T']}, "
        f"alpha_bar_T = {sp['alpha_bar_T']:.2e}, KL(q(x_T|x_0) || N(0, I)) = {sp['kl_per_dim']:.2e} nats/dim; "
        f"latents T = {sl['T']}, alpha_bar_T = {sl['alpha_bar_T']:.2e}, KL = {sl['kl_per_dim']:.2e} nats/dim. "
        f"x_T is drawn in closed form; the latents are the normalised posterior means "
        f"({stats['latents']['norm']} normalisation).\n",
        table(header, stats_rows("pixels", stats["pixels"]) + stats_rows("latents", stats["latents"])), "",
        "![RGB densities before and after the forward process](hist_rgb.png)",
        "![latent-channel densities before and after the forward process](hist_latent.png)", "",
        "The forward chain at t = 0, T/10, ..., T (strips) and as an animation:", "",
        table(["space", "strip", "animation"],
              [["pixels", "![forward process, pixels](forward_pixels.png)", "![](forward_pixels.gif)"],
               ["latents (decoded)", "![forward process, latents](forward_latent.png)", "![](forward_latent.gif)"]]),
    ])


def section_types(types: dict | None, hue: dict | None, ldm: Run) -> str:
    if types is None:
        return ""
    text = ["## Per type\n",
            f"The latent model is type-conditional: one row of {types['per_type']} samples per type, top to bottom "
            f"{', '.join(types['types'])}, classifier-free guidance {types['guidance']:g}. (The sample grids and "
            "metrics above are the unconditional model, the \"no label\" class.)\n",
            "![one row of samples per Pokemon type](types_latent.png)"]
    if hue is not None:
        from reports.hue import markdown_table

        same = Path(hue.get("checkpoint", "")).resolve() == ldm.ckpt_path.resolve()
        source = "" if same else f" (from the checkpoint `{hue.get('checkpoint')}`, not this report's LDM)"
        text += ["", f"Hue statistics of `reports.hue`{source}, {hue.get('n')} samples per row, seed "
                 f"{hue.get('seed')}: total variation distances of hue histograms to the real sprites of the type "
                 "and of the other types (lower is closer).\n", markdown_table(hue["rows"])]
    return "\n".join(text)


def section_title(latent: Run, pixel: Run, seconds: float, n_figures: int, size_mb: float, thinned: dict) -> str:
    fitted = ""
    if thinned:
        fitted = " To stay within that budget the GIFs " + ", ".join(
            f"{name} ({frames} frames)" for name, frames in thinned.items()) + " were thinned."
    return (f"# Latent against pixel diffusion\n\nLatent model `{latent.ckpt_path}` (AE `{latent.ae['path']}`), "
            f"pixel model `{pixel.ckpt_path}`; written by `python -m reports.compare` in {seconds / 60:.1f} min. "
            "Every number below is measured or read from the runs' files. The "
            f"{n_figures} figures take {size_mb:.2f} MB (budget {FIGURE_BUDGET_MB:g} MB).{fitted}")


def section_discussion(notes: str | None) -> str:
    if notes is None:
        return ("## Discussion\n\n**Discussion: not written.** This command measures and never judges; pass "
                "`--notes FILE` with a Markdown discussion (what works, what does not, what to try next) to "
                "include it here.")
    return "## Discussion\n\n" + notes.rstrip() + "\n"


# --- the command ----------------------------------------------------------------------------------

def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m reports.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ldm", required=True, help="latent-space run folder (or its diffusion.pt)")
    p.add_argument("--pixel", required=True, help="pixel-space run folder (or its diffusion.pt)")
    p.add_argument("--out", required=True, help="report folder (report.md, report.json, figures)")
    p.add_argument("--n", type=int, default=64, help="samples per model and sampler (default 64)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--notes", default=None, help="Markdown file with the discussion, included verbatim")
    p.add_argument("--hue", default=None, help="folder with reports.hue's hue.json (type-conditional LDM)")
    p.add_argument("--data", default=None,
                   help="real sprites for the metrics (default: $POKEMON_DATA, else each run's data.root)")
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def read_notes(path: str | None) -> str | None:
    """The text of --notes (None without it; UserError when unreadable)."""
    if not path:
        return None
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"--notes {path} cannot be read ({getattr(err, 'strerror', None) or err}); "
                        "pass a Markdown file")


def read_inputs(args) -> dict | None:
    """Check that --notes can be read (it is read again when the report is assembled) and return the
    content of --hue DIR/hue.json (UserError when either is unreadable)."""
    read_notes(args.notes)
    hue = None
    if args.hue:
        path = Path(args.hue) / "hue.json"
        if not path.is_file():
            raise UserError(f"--hue {args.hue}: no hue.json there; write it with python -m reports.hue --out {args.hue}")
        hue = json.loads(path.read_text())
    return hue


def figure_names(report: str) -> list[str]:
    """The image files a Markdown report shows, in order, each once."""
    import re

    return list(dict.fromkeys(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)))


def thin_gif(path: Path) -> int:
    """Keep every other frame of a GIF (the last one always), each shown twice as long; returns the
    new number of frames."""
    import imageio.v3 as iio

    from plumbing.pictures import save_gif

    frames = iio.imread(path, index=None)[..., :3]
    kept = list(frames[::2]) + ([] if (len(frames) - 1) % 2 == 0 else [frames[-1]])
    step_ms = iio.immeta(path).get("duration", 80)
    save_gif(kept, path, seconds_per_frame=2 * step_ms / 1000)
    return len(kept)


def fit_budget(out: Path, names: list[str], budget_mb: float, min_frames: int = 5) -> tuple[float, dict]:
    """Thin the largest GIF (`thin_gif`) until the figures take at most `budget_mb` or no GIF has
    more than `min_frames` frames; returns (MB in all, {GIF: its frame count after thinning})."""
    from PIL import Image

    def total() -> float:
        return sum((out / name).stat().st_size for name in names) / 1e6

    thinned = {}
    while total() > budget_mb:
        gifs = [n for n in names if n.endswith(".gif") and Image.open(out / n).n_frames > min_frames]
        if not gifs:
            break
        largest = max(gifs, key=lambda n: (out / n).stat().st_size)
        thinned[largest] = thin_gif(out / largest)
    return total(), thinned


def measure_cost(run: Run, loaded, sampled: dict, steps: int) -> dict:
    """Parameters, FLOPs, and the sampling time and memory measured in the fresh process."""
    model, schedule, space, cfg = loaded.model, loaded.schedule, loaded.space, loaded.cfg
    cost = {"shape": list(space.shape), "T": schedule.T, "ddim_steps": sampled["ddim"]["steps"],
            "unet_parameters": parameters(model),
            "train_flops": training_flops_per_image(model, schedule, space.shape, cfg),
            "sample_flops": sampling_flops(model, schedule, space, cfg, steps),
            "ddim_seconds": sampled["ddim"]["seconds"], "ddpm_seconds": sampled["ddpm"]["seconds"],
            **{k: sampled[k] for k in ("peak_rss_mb", "start_rss_mb", "peak_cuda_mb") if k in sampled}}
    if run.space == "latent":
        vae = space.vae
        probe = torch.zeros(1, 3, cfg.data.size, cfg.data.size, device=next(vae.parameters()).device)
        with torch.inference_mode():
            cost["encode_flops"] = counted_flops(lambda: vae.encode(probe))
        cost.update({"ae_parameters": parameters(vae), "decoder_parameters": parameters(vae.decoder)})
    return cost


def write_figures(run: Run, loaded, sampled: dict, steps: int, seed: int, out: Path, device) -> bool:
    """The sample grids, the reverse-process GIF and the loss curve of one run; whether it had a loss curve."""
    for sampler in ("ddim", "ddpm"):
        save_grid(to_unit_range(sampled[sampler]["images"]), out / f"samples_{run.space}_{sampler}.png", nrow=8)
    reverse_process_gif(loaded, steps, seed, out / f"reverse_{run.space}.gif", device)
    return copy_loss_curve(run, out / f"loss_{run.space}.png")


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.n <= K_NEIGHBOURS:
        raise UserError(f"--n {args.n}: the metrics need more than {K_NEIGHBOURS} samples (64 give usable numbers)")
    latent = load_run(args.ldm, "latent", "--ldm")
    pixel = load_run(args.pixel, "pixel", "--pixel")
    runs = [latent, pixel]
    for run in runs:
        if not 1 <= args.steps <= run.cfg.schedule.T:
            raise UserError(f"--steps {args.steps} must be between 1 and T={run.cfg.schedule.T}")
    hue = read_inputs(args)  # checked now, so that a bad --notes or --hue fails before the slow part
    out = writable_dir(args.out)
    device = pick_device(args.device)
    start = time.time()
    cache = {}
    sprites = {run.space: sprites_of(run, sprites_root(args.data, run.cfg.data.root), cache) for run in runs}  # before anything slow

    print(f"sampling: {args.n} samples with DDIM and with DDPM per model, each model in a fresh process")
    sampled = {run.space: in_fresh_process(sampling_job, ckpt=str(run.ckpt_path), n=args.n, steps=args.steps,
                                           seed=args.seed, device=args.device) for run in runs}
    loaded = {run.space: load_diffusion(run.ckpt_path, device) for run in runs}
    print("cost, figures, metrics")
    cost = {run.space: measure_cost(run, loaded[run.space], sampled[run.space], args.steps) for run in runs}
    has_loss = {run.space: write_figures(run, loaded[run.space], sampled[run.space], args.steps, args.seed, out,
                                         device) for run in runs}
    quality = quality_of(runs, sampled, sprites, args.seed)
    print("forward process")
    stats = forward_figures(loaded["pixel"], loaded["latent"], sprites["pixel"], sprites["latent"], args.seed, out)
    types = None
    if loaded["latent"].cfg.cond.labels != "none":
        types = type_grid(loaded["latent"], args.steps, args.seed, out / "types_latent.png", device)

    machine_now = machine_summary(device)
    facts = equal_compute(latent, pixel)
    notes = read_notes(args.notes)  # read now: the discussion may be written while the samples are drawn
    sections = [section_compute(latent, pixel, facts), section_samples(args.n, args.steps, args.seed, has_loss),
                section_cost(cost, args.n, machine_now, latent, pixel), section_quality(quality, args.steps),
                section_forward(stats), section_types(types, hue, latent), section_discussion(notes)]
    names = figure_names("\n".join(sections))
    size_mb, thinned = fit_budget(out, names, FIGURE_BUDGET_MB)
    title = section_title(latent, pixel, time.time() - start, len(names), size_mb, thinned)
    report = "\n\n".join(s for s in [title, *sections] if s) + "\n"
    (out / "report.md").write_text(report)
    numbers = {"runs": {r.space: {"ckpt": str(r.ckpt_path), "metrics": r.metrics, "ae": r.ae or None} for r in runs},
               "equal_compute": {k: v for k, v in facts.items() if k != "sentences"}, "cost": cost,
               "quality": quality, "forward": stats, "types": types, "machine": machine_now,
               "figures": {"files": names, "mb": size_mb, "thinned_gifs": thinned},
               "settings": {"n": args.n, "steps": args.steps, "seed": args.seed}}
    (out / "report.json").write_text(json.dumps(numbers, indent=1, default=str) + "\n")
    print(f"figures: {len(names)} files, {size_mb:.2f} MB (budget {FIGURE_BUDGET_MB:g} MB"
          + (f"; GIFs thinned to fit: {thinned}" if thinned else "") + ")"
          + ("" if size_mb <= FIGURE_BUDGET_MB else " - still over the budget: do not commit them as they are"))
    print(f"-> {out / 'report.md'}")


if __name__ == "__main__":
    run_main(main)
