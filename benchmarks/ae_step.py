"""Benchmark: one VAE training step, ours against diffusers' AutoencoderKL at equal widths.

`python -m benchmarks` (section `ae`) runs it with the other measurements. Both models get the same
job: a batch of B images at size x size, forward, L1 + KL loss, backward, AdamW step, bf16 autocast
where native. diffusers is configured as the reference: the same widths per level, one block
per level and the same latent shape (4 x size/4 x size/4). Each model is timed in NCHW and in NHWC;
the speed-up compares each model's faster layout. Medians over `repeats` timed steps after 2 warm-up
steps. Achieved GFLOP/s uses torch.utils.flop_counter. diffusers is a benchmark-only dependency
(requirements-bench.txt).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from autoencoder.config import AEConfig
from autoencoder.latents import build_vae
from autoencoder.losses import kl_to_standard_normal
from benchmarks.harness import Plan, in_layouts, summarise
from plumbing.config import load_config
from plumbing.device import autocast, bf16_pays

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "ae.yaml"
NAMES = {"pokediffusion": "pokediffusion VAE", "diffusers": "diffusers AutoencoderKL"}


def ours(cfg: AEConfig):
    """Our VAE and its training forward: x -> (x_hat, posterior mean, posterior logvar)."""
    model = build_vae(cfg)

    def forward(x):
        x_hat, mean, logvar = model(x)
        return x_hat, mean, logvar
    return model, forward


def diffusers_vae(cfg: AEConfig):
    """diffusers' AutoencoderKL with our widths, one block per level and our latent shape."""
    from diffusers import AutoencoderKL

    widths = tuple(cfg.model.channels)
    model = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=widths,
                          down_block_types=("DownEncoderBlock2D",) * len(widths),
                          up_block_types=("UpDecoderBlock2D",) * len(widths),
                          layers_per_block=1, latent_channels=cfg.model.latent_channels,
                          norm_num_groups=min(32, widths[0]), sample_size=cfg.data.size)

    def forward(x):
        posterior = model.encode(x).latent_dist
        z = posterior.sample()
        return model.decode(z).sample, posterior.mean, posterior.logvar
    return model, forward


BUILDERS = {"pokediffusion": ours, "diffusers": diffusers_vae}


def training_step(model: torch.nn.Module, forward: Callable, x: torch.Tensor, use_bf16: bool) -> Callable[[], None]:
    """One step on the fixed batch x: forward, L1 + 1e-6 KL, backward, AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with autocast(x.device, use_bf16):
            x_hat, mean, logvar = forward(x)
        loss = (x_hat.float() - x).abs().mean() + 1e-6 * kl_to_standard_normal(mean.float(), logvar.float()).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def measure_ae(model: str, config: str | Path = DEFAULT_CONFIG, overrides: list[str] = (), batch: int | None = None,
               plan: Plan = Plan()) -> dict:
    """The AE training step of `model` ("pokediffusion" or "diffusers") in both layouts (a benchmark job).

    The batch defaults to the config's train.batch_size; inputs are uniform noise in [-1, 1] (the
    step's cost does not depend on the pixel values).
    """
    cfg = load_config(AEConfig, config, list(overrides))
    batch = batch or cfg.train.batch_size
    build = BUILDERS[model]
    use_bf16 = cfg.train.bf16 and bf16_pays(torch.device("cpu"))
    x = torch.rand(batch, 3, cfg.data.size, cfg.data.size, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def make_step(fmt: torch.memory_format) -> Callable[[], None]:
        torch.manual_seed(0)
        net, forward = build(cfg)
        return training_step(net.to(memory_format=fmt), forward, x.contiguous(memory_format=fmt), use_bf16)

    params = sum(p.numel() for p in build(cfg)[0].parameters())
    return {**summarise(in_layouts(make_step, batch, plan), params), "name": NAMES[model], "batch": batch,
            "size": cfg.data.size, "bf16": use_bf16}
