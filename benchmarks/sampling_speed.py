"""Sampling speed: n latent samples with DDIM and with ancestral DDPM over all T steps, decoded to pixels.

The same path as `python -m diffusion.sample` (make_denoiser, ddim_sample / ddpm_sample, the latent
space's decode, torch.inference_mode), but with an untrained U-Net of the ldm config and an untrained
VAE of the ae config, both randomly initialised from a fixed seed, so the benchmark needs no
checkpoint: the time of a sampling run does not depend on the weights' values, only on the shapes.
DDIM is timed in the network's layout (diffusion/denoiser.py, network_layout) and, round by round
with it, in the other one (NCHW or channels-last).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from autoencoder.config import AEConfig
from autoencoder.latents import build_vae
from benchmarks.harness import LAYOUTS, Plan, interleaved_medians, layout_name
from diffusion.config import DiffusionConfig
from diffusion.samplers import ddim_sample, ddpm_sample
from diffusion.denoiser import build_schedule, build_unet, make_denoiser, network_layout
from diffusion.space import LatentSpace
from plumbing.config import load_config
from plumbing.device import bf16_pays

CPU = torch.device("cpu")


def untrained_pipeline(ae_config: str | Path, ae_overrides: list[str], ldm_config: str | Path,
                       ldm_overrides: list[str], seed: int = 0):
    """({layout: denoiser}, schedule, latent space, config, bf16 or not) from seeded random weights, as
    diffusion.sample builds them; a denoiser of the same U-Net for each layout of benchmarks/harness.py."""
    ae_cfg = load_config(AEConfig, ae_config, list(ae_overrides))
    cfg = load_config(DiffusionConfig, ldm_config, list(ldm_overrides))
    torch.manual_seed(seed)
    vae = build_vae(ae_cfg).eval().requires_grad_(False)
    c = vae.latent_channels
    identity_stats = {"scale": 1.0, "channel_mean": [0.0] * c, "channel_std": [1.0] * c}
    space = LatentSpace(vae, identity_stats, CPU, ae_cfg.data.size)
    unet = build_unet(cfg, c).eval().requires_grad_(False)
    schedule = build_schedule(cfg)
    use_bf16 = cfg.train.bf16 and bf16_pays(CPU)
    denoisers = {name: make_denoiser(unet, CPU, use_bf16, layout=fmt) for name, fmt in LAYOUTS.items()}
    return denoisers, schedule, space, cfg, use_bf16


def sample_and_decode(denoise, schedule, space, n: int, sampler: str, steps: int, eta: float, seed: int = 0) -> None:
    """n samples from x_T to decoded pixels, in inference mode."""
    gen = torch.Generator().manual_seed(seed)
    shape = (n, *space.shape)
    with torch.inference_mode():
        if sampler == "ddpm":
            x, _ = ddpm_sample(denoise, schedule, shape, gen, CPU, space.clip)
        else:
            x, _ = ddim_sample(denoise, schedule, shape, gen, CPU, space.clip, steps=steps, eta=eta)
        space.decode(x)


def measure_sampling(ae_config: str | Path, ae_overrides: list[str], ldm_config: str | Path, ldm_overrides: list[str],
                     n: int, ddim_steps: int, plan: Plan, ddpm: bool = True) -> dict:
    """Seconds for n DDIM samples in each layout (medians under `plan`, round by round, after a 2-step
    warm-up run each; "ddim" is the network's own layout) and for n DDPM samples over all T steps in
    the network's layout (one run: it takes T / ddim_steps times as long), decode included (a benchmark job)."""
    denoisers, schedule, space, cfg, use_bf16 = untrained_pipeline(ae_config, ae_overrides, ldm_config, ldm_overrides)
    own = layout_name(network_layout(CPU, use_bf16))
    for denoise in denoisers.values():
        sample_and_decode(denoise, schedule, space, n, "ddim", 2, cfg.sample.eta)  # warm-up
    timed = interleaved_medians(
        {name: lambda d=denoise: sample_and_decode(d, schedule, space, n, "ddim", ddim_steps, cfg.sample.eta)
         for name, denoise in denoisers.items()}, plan)
    ddim_s, repeats = timed[own]
    result = {"n": n, "latent_shape": list(space.shape), "bf16": use_bf16, "layout": own,
              "ddim": {"steps": ddim_steps, "eta": cfg.sample.eta, "seconds": ddim_s, "repeats": repeats},
              "ddim_layouts": {name: seconds for name, (seconds, _) in timed.items()}}
    denoise = denoisers[own]
    if ddpm:
        t0 = time.perf_counter()
        sample_and_decode(denoise, schedule, space, n, "ddpm", schedule.T, 0.0)
        result["ddpm"] = {"steps": schedule.T, "seconds": time.perf_counter() - t0, "repeats": 1}
    return result
