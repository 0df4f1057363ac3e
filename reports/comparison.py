"""The latent-against-pixel report's parts: loading the runs, sampling them, every measure and figure,
and the Markdown sections (`python -m reports.compare` writes the report; its docstring says what).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from diffusion.config import DiffusionConfig
from diffusion.pipeline import Pipeline
from diffusion.space import find_ae
from plumbing.checkpoint import load_checkpoint
from plumbing.cli import UserError
from plumbing.config import from_dict
from plumbing.pictures import save_gif, save_grid
from reports.colour import markdown_table
from reports.creature import RECOGNISED, block_shuffle, creature_scores
from reports.measures import K_NEIGHBOURS, evaluate, gaussian_blur
from reports.noising import latent_proof, pixel_proof
from reports.pokenet import SHIPPED_DIR, SHIPPED_NAME, load_pokenet, predict, validation_artworks
from reports.reference import reference_rows
from sprites.dataset import load_artworks, to_unit_range
from sprites.labels import TYPES

GIF_SAMPLES = 16
GIF_FRAMES = 20
TYPE_ROW = 8                 # samples per type in the per-type grid
WALL_TIME_TOLERANCE = 0.10   # wall times further apart than this are not "equal compute"
FIGURE_BUDGET_MB = 5.0
SWD_PATCHES = 8192           # patches per pyramid level and set in the sliced Wasserstein distance (its default)
LABELS = {"latent": "latent (LDM)", "pixel": "pixel", "pixel_total": "pixel, AE + LDM minutes"}


@dataclass
class Run:
    """One trained diffusion model as the report sees it."""
    space: str                     # "latent", "pixel" or "pixel_total" (a pixel model: the report's key)
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


def load_run(arg: str, key: str, flag: str) -> Run:
    """The run behind --ldm / --pixel / --pixel-total: a run folder (or its diffusion.pt) of a model in
    the space that `key` needs."""
    space = "latent" if key == "latent" else "pixel"
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
                        "(scripts/train_ldm.sh), --pixel and --pixel-total a pixel-space run (scripts/train_pixel.sh)")
    run = Run(key, ckpt_path, ckpt_path.parent, from_dict(DiffusionConfig, ckpt["config"]),
              read_metrics(ckpt_path.parent, ckpt), ckpt.get("data_fingerprint"))
    if space == "latent":
        ae_path = find_ae(ckpt["ae"], ckpt_path)
        ae_ckpt = load_checkpoint(ae_path, kind="autoencoder")
        run.ae = {"path": str(ae_path), "metrics": read_metrics(ae_path.parent, ae_ckpt)}
    return run


# --- data and measures ----------------------------------------------------------------------------

def sprites_of(run: Run, root: str, cache: dict):
    """The artworks (sprites.dataset.ImageSet) at the run's size and held-out split, loaded once per setting."""
    d = run.cfg.data
    key = (root, d.size, d.holdout, d.split_seed)
    if key not in cache:
        sprites = load_artworks(root, d.size, d.cache_dir, d.holdout, d.split_seed)
        need = K_NEIGHBOURS + 1
        if len(sprites.holdout_idx) < need or len(sprites.train_idx) < need:
            raise UserError(f"{len(sprites.train_idx)} training and {len(sprites.holdout_idx)} held-out sprites in "
                            f"{root}; the metrics need at least {need} of each: use more sprites")
        cache[key] = sprites
    return cache[key]


def pixel_quality(runs: list[Run], sampled: dict, sprites: dict, seed: int) -> dict:
    """reports.measures.evaluate of every sample set, and reference_rows once per image size."""
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
            quality["notes"].append(f"Note: the {LABELS[run.space]} model was trained on other images than the "
                                    "artworks evaluated here (the corpus too, or another folder).")
    return quality


def creature_quality(runs: list[Run], sampled: dict, sprites: dict, root: str, seed: int) -> dict | None:
    """The creature measures (reports/creature.py, shipped PokeNet) of every sample set and of PokeNet's
    reference rows, against the training artworks; None (with the reason) where they cannot be computed."""
    weights = SHIPPED_DIR / SHIPPED_NAME
    sizes = {run.cfg.data.size for run in runs}
    if sizes != {64} or not weights.is_file():
        return {"note": f"not computed: PokeNet ({weights}) measures 64x64 images; these runs are {sorted(sizes)} px"}
    model, ckpt = load_pokenet(weights)
    train = to_unit_range(sprites[runs[0].space].train())
    ref = predict(model, train, "cpu")[0]
    held = to_unit_range(validation_artworks(ckpt, root)[0])
    rows = {f"{LABELS[run.space]}, {sampler.upper()}":
            creature_scores(model, sampled[run.space][sampler]["images"], train, ref, c2st_real=train, seed=seed)
            for run in runs for sampler in ("ddim", "ddpm")}
    gen = torch.Generator().manual_seed(seed)
    reference = {"held-out artworks (PokeNet's validation set)": held, "held-out, blurred": gaussian_blur(held, 2.0),
                 "held-out, tiles shuffled (8x8)": block_shuffle(held, 8, seed),
                 "uniform noise": torch.rand(held.shape, generator=gen) * 2 - 1}
    for name, images in reference.items():
        rows[f"reference: {name}"] = creature_scores(model, images, train, ref, c2st_real=train, seed=seed)
    return {"rows": rows}


# --- figures --------------------------------------------------------------------------------------

def forward_figures(pixel: Pipeline, latent: Pipeline, pixel_sprites, latent_sprites, seed: int, out: Path) -> dict:
    """reports.noising's proof for both spaces, each with its run's schedule and small GIFs; returns
    the statistics of x_0 and x_T."""
    gen = torch.Generator().manual_seed(seed)
    x0 = to_unit_range(pixel_sprites.train())
    stats = {"pixels": pixel_proof(pixel.schedule, x0, gen, out, frames=GIF_FRAMES, upscale=1),
             "schedule_pixels": pixel.schedule.diagnostics(x0), "n_pixels": len(x0)}
    latent.space.prepare(latent_sprites.train())
    stats["latents"] = latent_proof(latent.schedule, latent.space, to_unit_range(latent_sprites.train()), gen, out,
                                    frames=GIF_FRAMES, upscale=1)
    stats["schedule_latents"] = latent.schedule.diagnostics(latent.space.all_x0())
    stats["n_latents"] = len(latent_sprites.train_idx)
    return stats


def type_grid(pipe: Pipeline, steps: int, seed: int, path: Path) -> dict:
    """One row of TYPE_ROW samples per Pokemon type (as diffusion.sample --type all) at the run's
    guidance scale cond.guidance."""
    labels, _ = pipe.labels(["all"], None, TYPE_ROW)
    images, _, _ = pipe.generate(len(labels), seed, labels, pipe.cfg.cond.guidance, steps=steps)
    save_grid(images, path, nrow=TYPE_ROW)
    return {"types": list(TYPES), "per_type": TYPE_ROW, "guidance": pipe.cfg.cond.guidance}


def write_figures(run: Run, pipe: Pipeline, sampled: dict, steps: int, seed: int, out: Path) -> bool:
    """The sample grids, the reverse-process GIF and the loss curve of one run; whether it had a loss curve."""
    for sampler in ("ddim", "ddpm"):
        save_grid(to_unit_range(sampled[sampler]["images"]), out / f"samples_{run.space}_{sampler}.png", nrow=8)
    save_gif(pipe.reverse_process(GIF_SAMPLES, seed, frames=GIF_FRAMES, steps=steps), out / f"reverse_{run.space}.gif")
    source = run.run_dir / "loss.png"
    if source.is_file():
        shutil.copyfile(source, out / f"loss_{run.space}.png")
    return source.is_file()


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


def total_compute_sentence(latent: Run, total: Run) -> str:
    """Whether the --pixel-total run trained for the AE's and the LDM's minutes together."""
    want = (latent.metrics.get("train_seconds") or 0) + (latent.ae.get("metrics", {}).get("train_seconds") or 0)
    got = total.metrics.get("train_seconds")
    if not want or got is None:
        return "**Equal total compute cannot be checked**: a run does not record its training time."
    gap = abs(got - want) / want
    verdict = "within" if gap <= WALL_TIME_TOLERANCE else "**not within**"
    return (f"The pixel model of the third column trained for {minutes(got)}, {verdict} {WALL_TIME_TOLERANCE:.0%} of "
            f"the latent pipeline's AE and LDM together ({minutes(want)}): equal total compute.")


def section_compute(runs: list[Run], facts: dict, extra: list[str]) -> str:
    rows = [["train.max_minutes", *(f"{r.cfg.train.max_minutes:g}" for r in runs)]]
    for name, key, spec in [("training wall time", "train_seconds", None), ("steps", "steps", "d"),
                            ("epochs", "epochs_completed", ".1f"), ("training img/s", "train_img_per_s", ".1f"),
                            ("device", "device", "s"), ("bf16 autocast", "bf16", None)]:
        cells = []
        for run in runs:
            v = run.metrics.get(key)
            cells.append(minutes(v) if key == "train_seconds" else fmt(v, spec) if spec else str(v))
        rows.append([name, *cells])
    rows.append(["machine", *(machine_text(r.metrics.get("machine")) for r in runs)])
    rows.append(["run", *(f"`{r.run_dir}`" for r in runs)])
    sentences = facts["sentences"] + extra
    return "## Equal compute\n\n" + "\n".join(f"- {line}" for line in sentences) + "\n\n" + \
        table(["", *(LABELS[r.space] for r in runs)], rows)


def section_samples(runs: list[Run], n: int, steps: int, seed: int, has_loss: dict) -> str:
    heads = [LABELS[r.space] for r in runs]
    text = [f"## Samples\n\n{n} samples of each model from seed {seed} (the same seed; x_T has a different shape "
            "in each space, so the models share the seed, not the noise; a style-conditional model draws its "
            "default style, artwork)."]
    for sampler, what in (("ddim", f"DDIM, {steps} steps"), ("ddpm", "ancestral DDPM, all T steps")):
        text.append(f"**{what}**\n\n" + table(heads, [[f"![{r.space}, {what}](samples_{r.space}_{sampler}.png)"
                                                       for r in runs]]))
    text.append(f"**The reverse process** (DDIM, the first {GIF_SAMPLES} samples, x_t decoded to pixels)\n\n" + table(
        heads, [[f"![{r.space} reverse process](reverse_{r.space}.gif)" for r in runs]]))
    curves = [f"![{r.space} loss](loss_{r.space}.png)" if has_loss[r.space] else "not recorded" for r in runs]
    text.append("**Training loss**\n\n" + table(heads, [curves]))
    return "\n\n".join(text)


def gflops(v) -> str:
    return fmt(None if v is None else v / 1e9, ".3g")


def section_cost(runs: list[Run], cost: dict, n: int, machine_now: dict) -> str:
    cs = [cost[r.space] for r in runs]
    lc = cost["latent"]
    rows = [
        ["diffusion space x_0", *("x".join(map(str, c["shape"])) for c in cs)],
        ["U-Net parameters", *(f"{c['unet_parameters'] / 1e6:.2f}M" for c in cs)],
        ["AE parameters (decoder, used in sampling)",
         *(f"{c['ae_parameters'] / 1e6:.2f}M ({c['decoder_parameters'] / 1e6:.2f}M)" if "ae_parameters" in c
           else "none" for c in cs)],
        ["GFLOPs per training image (U-Net forward + backward)", *(gflops(c["train_flops"]) for c in cs)],
        [f"GFLOPs per sample, DDIM {lc['ddim_steps']} steps (decoding included)",
         *(gflops(c["sample_flops"]["ddim"]) for c in cs)],
        ["GFLOPs per sample, DDPM (all T)", *(gflops(c["sample_flops"]["ddpm"]) for c in cs)],
        ["training wall time", *(minutes(r.metrics.get("train_seconds")) for r in runs)],
        ["training img/s", *(fmt(r.metrics.get("train_img_per_s"), ".1f") for r in runs)],
        [f"sampling time, {n} samples, DDIM {lc['ddim_steps']} steps", *(f"{c['ddim_seconds']:.1f} s" for c in cs)],
        [f"sampling time, {n} samples, DDPM all T steps", *(f"{c['ddpm_seconds']:.1f} s" for c in cs)],
        ["peak memory of the sampling process (RSS, DDIM and DDPM runs)", *(f"{c['peak_rss_mb']:.0f} MB" for c in cs)],
    ]
    if "peak_cuda_mb" in lc:
        rows.append(["peak GPU memory allocated", *(f"{c.get('peak_cuda_mb', 0):.0f} MB" for c in cs)])
    notes = (f"FLOPs are those torch.utils.flop_counter counts (matrix products, convolutions, attention; "
             f"norms and activations are not counted), at batch 1 (benchmarks/model_cost.py); the latent model's "
             f"training images are encoded once before training ({gflops(lc['encode_flops'])} GFLOPs per image and "
             f"per mirror image, not in the row above). Training time and img/s are the runs' own (metrics.json). "
             f"Sampling time (decoding included, after a warm-up run) and peak memory were measured by this "
             f"command, each model in a fresh Python process (its resident memory includes Python and torch: "
             f"{lc['start_rss_mb']:.0f} MB before loading anything), on {machine_text(machine_now)}.")
    return "## Cost\n\n" + table(["", *(LABELS[r.space] for r in runs)], rows) + "\n\n" + notes


def metric_row(name: str, r: dict) -> list[str]:
    levels = [k for k in r["swd"] if k != "mean"]
    return [name, str(r["n"]), " / ".join(f"{r['swd'][k]:.1f}" for k in levels) + f" ({', '.join(levels)})",
            f"{r['swd']['mean']:.1f}", f"{r['precision']:.2f}", f"{r['recall']:.2f}",
            f"{r['memorisation']['rate']:.1%}", f"{r['memorisation']['median_nn_distance']:.3f}",
            f"{r['diversity']:.3f}", fmt(r["fid"], ".1f", "not computed"), fmt(r["kid"], ".4f", "not computed")]


def section_creatures(creature: dict | None) -> str:
    if creature is None or "rows" not in creature:
        return "### Creature measures\n\n" + (creature or {}).get("note", "not computed")
    header = ["set", "n", "recognised", "mean top p", "exp-KL", "Frechet (PokeNet)", "precision", "recall", "C2ST"]
    rows = [[name, str(r["n"]), f"{r['recognised']:.3f}", f"{r['mean_top_probability']:.3f}", f"{r['exp_kl']:.1f}",
             f"{r['frechet_pokenet']:.1f}", f"{r['precision']:.2f}", f"{r['recall']:.2f}",
             fmt(r.get("c2st"), ".2f", "-")] for name, r in creature["rows"].items()]
    return "\n".join([
        "### Creature measures (the headline)\n",
        "PokeNet (reports/pokenet.py, the shipped weights) names the species of an image; `reports/creature.py`. "
        f"recognised: share of images whose most probable species has p >= {RECOGNISED} (higher is better; real "
        "artworks are the reference); exp-KL: exp E KL(p(y|x) || p(y)) (Salimans et al. 2016); Frechet: the "
        "Frechet distance of Gaussians fitted to PokeNet's penultimate features of the set and of the training "
        "artworks (lower is better; not FID); precision / recall: k-NN manifolds in those features; C2ST: held-out "
        "accuracy of a small CNN telling the set from training artworks (0.5 = indistinguishable). "
        "docs/evaluation.md has the calibration.\n",
        table(header, rows)])


def section_quality(runs: list[Run], quality: dict, creature: dict | None, steps: int) -> str:
    header = ["set", "n", "SWD x1e3 per level", "SWD mean", "precision", "recall", "memorised", "NN-train",
              "diversity", "FID", "KID"]
    rows = []
    for run in runs:
        for sampler, what in (("ddim", f"DDIM {steps}"), ("ddpm", "DDPM")):
            rows.append(metric_row(f"{LABELS[run.space]}, {what}", quality["samples"][run.space][sampler]))
    for size, ref in quality["reference"].items():
        suffix = f" ({size}px)" if len(quality["reference"]) > 1 else ""
        rows.append(metric_row(f"reference: held-out real sprites{suffix} (best achievable)", ref["holdout"]))
        rows.append(metric_row(f"reference: held-out sprites blurred{suffix} (bad end)", ref["holdout_blurred"]))
        rows.append(metric_row(f"reference: uniform noise{suffix} (bad end)", ref["noise"]))
    first = quality["samples"]["latent"]["ddim"]
    note = first["fid_kid_note"]
    if first["fid"] is None:
        note = "not computed: weights unavailable (" + note.removeprefix("not computed: ") + ")"
    text = [
        "## Quality\n", section_creatures(creature), "",
        "### Pixel measures\n",
        "Every sample set against the training artworks, with `reports.measures.evaluate`; the reference rows are "
        "`reports.reference.reference_rows`, the same metrics for sets of known quality. SWD: sliced Wasserstein "
        "distance of Laplacian-pyramid patches (lower is better); precision / recall: k-NN manifolds in 16x16 "
        "pixel features (higher is better); memorised: share of samples much closer to a training sprite than "
        "new real sprites are; NN-train: median distance to the nearest training sprite; diversity: mean "
        f"pairwise distance (the training sprites: {first['diversity_real']:.3f}); distances are RMS over 16x16 "
        "pixels in [-1, 1]. These see colours, patches and layout, not creatures. The metrics depend on the set "
        "sizes: compare rows of similar n.\n",
        table(header, rows), "", f"**FID / KID**: {note}",
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
        f"`reports.ends_in_noise`'s proof on the training artworks ({stats['n_pixels']} images at the pixel model's "
        f"size, {stats['n_latents']} at the latent model's), each space with its own run's schedule: pixels T = "
        f"{sp['T']}, alpha_bar_T = {sp['alpha_bar_T']:.2e}, KL(q(x_T|x_0) || N(0, I)) = {sp['kl_per_dim']:.2e} "
        f"nats/dim; latents T = {sl['T']}, alpha_bar_T = {sl['alpha_bar_T']:.2e}, KL = {sl['kl_per_dim']:.2e} "
        f"nats/dim. x_T is drawn in closed form; the latents are the normalised posterior means "
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
            "measures above draw without a type.)\n",
            "![one row of samples per Pokemon type](types_latent.png)"]
    if hue is not None:
        same = Path(hue.get("checkpoint", "")).resolve() == ldm.ckpt_path.resolve()
        source = "" if same else f" (from the checkpoint `{hue.get('checkpoint')}`, not this report's LDM)"
        text += ["", f"Hue statistics of `reports.hue`{source}, {hue.get('n')} samples per row, seed "
                 f"{hue.get('seed')}: total variation distances of hue histograms to the real sprites of the type "
                 "and of the other types (lower is closer).\n", markdown_table(hue["rows"])]
    return "\n".join(text)


def section_title(runs: list[Run], seconds: float, n_figures: int, size_mb: float, thinned: dict,
                  verdict: str | None) -> str:
    fitted = ""
    if thinned:
        fitted = " To stay within that budget the GIFs " + ", ".join(
            f"{name} ({frames} frames)" for name, frames in thinned.items()) + " were thinned."
    models = "; ".join(f"{LABELS[r.space]} `{r.ckpt_path}`" + (f" (AE `{r.ae['path']}`)" if r.ae else "") for r in runs)
    head = (f"# Latent against pixel diffusion\n\n{models}; written by `python -m reports.compare` in "
            f"{seconds / 60:.1f} min. Every number below is measured or read from the runs' files. The "
            f"{n_figures} figures take {size_mb:.2f} MB (budget {FIGURE_BUDGET_MB:g} MB).{fitted}")
    body = verdict.rstrip() if verdict else ("**Verdict: not written.** Pass `--verdict FILE` with three "
                                             "sentences that say what the numbers below show.")
    return head + "\n\n" + body


def section_discussion(notes: str | None) -> str:
    if notes is None:
        return ("## Discussion\n\n**Discussion: not written.** This command measures and never judges; pass "
                "`--notes FILE` with a Markdown discussion (what works, what does not, what to try next) to "
                "include it here.")
    return "## Discussion\n\n" + notes.rstrip() + "\n"


# --- the command ----------------------------------------------------------------------------------
