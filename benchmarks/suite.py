"""The benchmark suite: which measurements to run, in which order, and the results tree they fill.

Each measurement is a job (benchmarks/jobs.py), in its own forked process where possible. Our
models run first, then diffusers is imported and its models run, so that the peak memory of our
jobs does not include diffusers' imported modules.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from autoencoder.config import AEConfig
from benchmarks import ae_step, step_profile, unet_step
from benchmarks.data_loading import measure_data
from benchmarks.harness import speedup
from benchmarks.jobs import JobError, run_job
from benchmarks.machine import measure_machine
from benchmarks.reference import NOT_INSTALLED, diffusers_version
from benchmarks.sampling_speed import measure_sampling
from benchmarks.settings import REPO, Settings
from diffusion.config import DiffusionConfig
from plumbing.config import load_config

SECTIONS = ("machine", "ae", "unet", "profile", "sampling", "data")
LDM_NOTE = ("The LDM step excludes the AE: training encodes the sprites once and caches the latents "
            "(diffusion/space.py, LatentSpace.prepare), so an LDM training step is a U-Net step on the latents.")
SAMPLING_NOTE = ("Untrained, seeded U-Net (ldm config) and VAE (ae config): the sampling time depends on the "
                 "shapes, not on the weights' values.")


@dataclass
class Job:
    """One measurement: `fn(**kwargs)`, whose result goes to results[path[0]]...[path[-1]]."""
    path: tuple[str, ...]
    label: str
    name: str                 # the model (or job) as the tables name it
    fn: Callable[..., dict]
    kwargs: dict = field(default_factory=dict)
    reference: bool = False   # a diffusers model


def relative(path: Path) -> str:
    """A config path as written in the results: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def unet_inputs(s: Settings) -> dict[str, tuple[Path, tuple[int, int, int]]]:
    """The U-Net inputs: (config, (C, H, W)) for the AE's latents, full-size pixels and half-size pixels."""
    ae = load_config(AEConfig, s.ae_config, list(s.ae_overrides))
    ldm = load_config(DiffusionConfig, s.ldm_config, list(s.unet_overrides))
    z = ae.data.size // 2 ** (len(ae.model.channels) - 1)
    px = ldm.data.size
    return {"latent": (s.ldm_config, (ae.model.latent_channels, z, z)),
            "pixel": (s.pixel_config, (3, px, px)),
            "pixel_half": (s.pixel_config, (3, px // 2, px // 2))}


def shape_label(shape) -> str:
    """(C, H, W) -> 'HxWxC'."""
    c, h, w = shape
    return f"{h}x{w}x{c}"


def step_jobs(s: Settings, sections: tuple[str, ...], model: str) -> list[Job]:
    """The training-step jobs of one model family ("pokediffusion" or "diffusers"): the AE, then each U-Net input."""
    jobs: list[Job] = []
    reference = model == "diffusers"
    if "ae" in sections:
        name = ae_step.NAMES[model]
        jobs.append(Job(("ae", "models", model), f"AE step, {name}", name, ae_step.measure_ae,
                        {"model": model, "config": s.ae_config, "overrides": list(s.ae_overrides),
                         "batch": s.batch, "plan": s.step_plan}, reference))
    if "unet" in sections:
        name = unet_step.NAMES[model]
        for key, (config, shape) in unet_inputs(s).items():
            jobs.append(Job(("unet", "inputs", key, "models", model), f"U-Net step on {shape_label(shape)}, {name}",
                            name, unet_step.measure_unet,
                            {"model": model, "config": config, "overrides": list(s.unet_overrides), "shape": shape,
                             "batch": s.batch, "plan": s.step_plan}, reference))
        if not reference:  # what the training-only terms of diffusion/align.py add to our latent step
            config, shape = unet_inputs(s)["latent"]
            jobs.append(Job(("unet", "terms"), f"U-Net step on {shape_label(shape)} with loss.align",
                            "hidden-state terms", unet_step.measure_terms,
                            {"config": config, "overrides": list(s.unet_overrides), "shape": shape,
                             "batch": s.batch, "plan": s.step_plan}))
    return jobs


def plan_jobs(s: Settings, sections: tuple[str, ...]) -> list[Job]:
    """Every job of the chosen sections: the machine, our models, sampling, then diffusers' models."""
    jobs: list[Job] = []
    if "machine" in sections:
        jobs.append(Job(("machine",), "machine ceilings", "machine", measure_machine,
                        {"matmul_size": s.matmul_size, "repeats": s.matmul_repeats}))
    jobs += step_jobs(s, sections, "pokediffusion")
    if "profile" in sections:
        shape = unet_inputs(s)["latent"][1]
        jobs.append(Job(("profile",), f"the training step of {relative(s.profile_config)} on {shape_label(shape)}, "
                        "phase by phase", "step profile", step_profile.measure_profile,
                        {"config": s.profile_config, "overrides": list(s.profile_overrides), "shape": shape,
                         "batch": s.batch, "plan": s.step_plan, "steps": s.profile_steps}))
    if "sampling" in sections:
        jobs.append(Job(("sampling",), f"sampling {s.samples} (DDIM {s.ddim_steps}, DDPM all T), decoded",
                        "sampling", measure_sampling,
                        {"ae_config": s.ae_config, "ae_overrides": list(s.ae_overrides),
                         "ldm_config": s.ldm_config, "ldm_overrides": list(s.unet_overrides),
                         "n": s.samples, "ddim_steps": s.ddim_steps, "plan": s.sampling_plan, "ddpm": s.ddpm}))
    if "data" in sections:
        if s.corpus is None:
            jobs.append(Job(("data",), "corpus decoding and mixture batches", "data", no_corpus))
        else:
            batch = s.batch or load_config(DiffusionConfig, s.ldm_config, list(s.unet_overrides)).train.batch_size
            jobs.append(Job(("data",), "corpus decoding and mixture batches", "data", measure_data,
                            {"root": s.data_root, "corpus": s.corpus, "size": s.data_size, "batch": batch,
                             "budget_s": s.data_budget_s}))
    return jobs + step_jobs(s, sections, "diffusers")


def no_corpus() -> dict:
    return {"name": "data", "note": "not measured: --quick measures the data path only on a corpus given with --corpus"}


def skeleton(s: Settings, sections: tuple[str, ...]) -> dict:
    """The results tree before any measurement: configs, shapes and notes of the chosen sections."""
    tree: dict = {"machine": {}} if "machine" in sections else {}
    if "ae" in sections:
        tree["ae"] = {"config": relative(s.ae_config), "overrides": list(s.ae_overrides), "models": {}}
    if "unet" in sections:
        pixel_source = relative(s.pixel_config) + ("" if s.pixel_config != s.ldm_config else " (no configs/pixel.yaml)")
        tree["unet"] = {"config": relative(s.ldm_config), "pixel_config": pixel_source,
                        "overrides": list(s.unet_overrides), "note": LDM_NOTE,
                        "inputs": {key: {"shape": list(shape), "label": shape_label(shape), "models": {}}
                                   for key, (_, shape) in unet_inputs(s).items()}}
    if "profile" in sections:
        tree["profile"] = {"config": relative(s.profile_config), "overrides": list(s.profile_overrides)}
    if "sampling" in sections:
        tree["sampling"] = {"note": SAMPLING_NOTE}
    return tree


def store(tree: dict, path: tuple[str, ...], value: dict) -> None:
    """tree[path[0]]...[path[-1]] = value, merging into a dict that is already there."""
    node = tree
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node.setdefault(path[-1], {}).update(value)


def add_ratios(tree: dict) -> None:
    """Speed-ups against diffusers (each model in its faster layout) and LDM vs full-size pixel img/s."""
    if "ae" in tree:
        m = tree["ae"]["models"]
        tree["ae"]["speedup"] = speedup(m.get("pokediffusion", {}), m.get("diffusers", {}))
    if "unet" in tree:
        inputs = tree["unet"]["inputs"]
        for entry in inputs.values():
            entry["speedup"] = speedup(entry["models"].get("pokediffusion", {}), entry["models"].get("diffusers", {}))
        latent = inputs["latent"]["models"].get("pokediffusion", {})
        pixel = inputs["pixel"]["models"].get("pokediffusion", {})
        both = "img_per_s" in latent and "img_per_s" in pixel
        tree["unet"]["ldm_vs_pixel"] = latent["img_per_s"] / pixel["img_per_s"] if both else None
    if "data" in tree and "pixel_batches" in tree["data"]:
        d = tree["data"]
        ae = tree.get("ae", {}).get("models", {}).get("pokediffusion", {}).get("img_per_s")
        unet = tree.get("unet", {}).get("inputs", {}).get("latent", {}).get("models", {}).get("pokediffusion", {})
        d["pixel_vs_ae_step"] = d["pixel_batches"]["img_per_s"] / ae if ae else None
        d["latent_vs_unet_step"] = d["latent_batches"]["img_per_s"] / unet["img_per_s"] if unet.get("img_per_s") else None


def job_summary(result: dict) -> str:
    """One progress line's worth of a job's result."""
    if "note" in result or "error" in result:
        return result.get("note") or f"error: {result['error']}"
    if "phases" in result:
        phases = ", ".join(f"{name} {p['share']:.0%}" for name, p in result["phases"].items())
        return f"{result['img_per_s']:.1f} img/s: {phases}"
    if "img_per_s" in result:
        return f"{result['img_per_s']:.1f} img/s ({result['best_layout']}), peak {result['peak_rss_mb']:.0f} MB"
    if "ddim" in result:
        ddpm = f", DDPM {result['ddpm']['seconds']:.1f} s" if "ddpm" in result else ""
        return f"DDIM {result['ddim']['seconds']:.1f} s{ddpm}, peak {result['peak_rss_mb']:.0f} MB"
    if "decode_s" in result:
        return (f"{result['images']} images decoded in {result['decode_s']:.0f} s, batches "
                f"{result['pixel_batches']['img_per_s']:.0f} img/s (pixels), "
                f"{result['latent_batches']['img_per_s']:.0f} img/s (latents)")
    if "matmul" in result:
        return (f"fp32 {result['matmul']['fp32']['gflop_per_s']:.0f} GFLOP/s, "
                f"bf16 {result['matmul']['bf16']['gflop_per_s']:.0f} GFLOP/s")
    return ""


def run_one(job: Job, isolate: bool, have_diffusers: bool) -> dict:
    """A job's result. A diffusers job gets NOT_INSTALLED without diffusers, and the last line of its
    error if it fails (e.g. another diffusers version); a failure of our own models stops the benchmark."""
    if job.reference and not have_diffusers:
        return {"name": job.name, "note": NOT_INSTALLED}
    try:
        return run_job(job.fn, job.kwargs, isolate)
    except JobError as err:
        if not job.reference:
            raise
        lines = str(err).strip().splitlines()
        return {"name": job.name, "error": lines[-1] if lines else "failed"}


def run_suite(s: Settings, sections: tuple[str, ...], isolate: bool, log: Callable[[str], None] = print) -> dict:
    """Run every job of the chosen sections and return the results tree (ratios included)."""
    tree = skeleton(s, sections)
    start = time.perf_counter()
    for job in plan_jobs(s, sections):
        if job.reference and "diffusers" not in tree:  # imported only now, after our jobs (module docstring)
            tree["diffusers"] = diffusers_version() or NOT_INSTALLED
        result = run_one(job, isolate, tree.get("diffusers") != NOT_INSTALLED)
        store(tree, job.path, result)
        log(f"[{time.perf_counter() - start:6.1f} s] {job.label}: {job_summary(result)}")
    add_ratios(tree)
    return tree
