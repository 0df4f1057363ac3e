"""One U-Net training step, ours against diffusers' UNet2DModel at equal widths, depth and attention.

The job of both models: a batch x_0 of latents or pixels, t ~ U{0..T-1}, x_t = q_sample(x_0, t, eps),
x0_hat = f(x_t, t), loss = MSE(x0_hat, x_0), backward, AdamW step, bf16 autocast where native.

diffusers is configured as the reference: block_out_channels = our widths, layers_per_block =
our `blocks` (its decoder, like ours, has blocks + 1 residual blocks per level), AttnDownBlock2D /
AttnUpBlock2D at our attention levels and DownBlock2D / UpBlock2D elsewhere, a middle block with
attention (as ours), 3x3 stride-2 convolutions down and nearest + 3x3 convolution up (as ours), and a
4 x width time embedding (as ours). diffusers takes one attention head size for every level; it is set
to (narrowest attention width) / our heads, so the narrowest attention level has our head count and
wider levels more heads of the same size (the attention FLOPs do not depend on the head count).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from benchmarks.harness import Plan, in_layouts, summarise, time_step
from diffusion.align import HiddenTerms
from diffusion.config import DiffusionConfig, LossConfig, UNetConfig
from diffusion.teacher import TeacherFeatures
from diffusion.denoiser import build_schedule, build_unet
from plumbing.config import load_config
from plumbing.device import autocast, bf16_pays
from plumbing.optim import adamw

REPO = Path(__file__).resolve().parents[1]
LDM_CONFIG = REPO / "configs" / "ldm.yaml"
PIXEL_CONFIG = REPO / "configs" / "pixel.yaml"
NAMES = {"pokediffusion": "pokediffusion U-Net", "diffusers": "diffusers UNet2DModel"}


def pixel_config_path() -> Path:
    """The config whose U-Net the pixel-space runs use: configs/pixel.yaml if there is one, else ldm.yaml's."""
    return PIXEL_CONFIG if PIXEL_CONFIG.is_file() else LDM_CONFIG


def ours(cfg: DiffusionConfig, in_channels: int, size: int):
    """Our U-Net and its forward (x_t, t) -> x0_hat."""
    model = build_unet(cfg, in_channels)
    return model, model


def diffusers_attention_head_dim(m: UNetConfig) -> int:
    """diffusers' one head size: the narrowest attention width (the middle block's if none) / our heads."""
    widths = [m.channels[level] for level in m.attention_levels] or [m.channels[-1]]
    return min(widths) // m.heads


def diffusers_unet(cfg: DiffusionConfig, in_channels: int, size: int):
    """diffusers' UNet2DModel with our widths, depth and attention placement (see the module docstring)."""
    from diffusers import UNet2DModel

    m = cfg.model
    levels = range(len(m.channels))
    down = tuple("AttnDownBlock2D" if lv in m.attention_levels else "DownBlock2D" for lv in levels)
    up = tuple("AttnUpBlock2D" if lv in m.attention_levels else "UpBlock2D" for lv in reversed(levels))
    model = UNet2DModel(sample_size=size, in_channels=in_channels, out_channels=in_channels,
                        block_out_channels=tuple(m.channels), layers_per_block=m.blocks,
                        down_block_types=down, up_block_types=up, dropout=m.dropout,
                        attention_head_dim=diffusers_attention_head_dim(m), norm_num_groups=min(32, m.channels[0]))

    def forward(x, t):
        return model(x, t).sample
    return model, forward


BUILDERS = {"pokediffusion": ours, "diffusers": diffusers_unet}


def training_step(model: torch.nn.Module, forward: Callable, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                  use_bf16: bool, terms: HiddenTerms | None = None) -> Callable[[], None]:
    """One step on a fixed batch: x0_hat = forward(x_t, t), x0 MSE (+ the hidden-state terms), backward,
    AdamW (the trainer's: fused where PyTorch has it, for both models)."""
    params = list(model.parameters()) + (list(terms.projection.parameters()) if terms and terms.projection else [])
    opt = adamw(params, 1e-4, xt.device)
    rows = torch.arange(len(x0))
    flip = torch.zeros(len(x0), dtype=torch.bool)

    def step():
        with autocast(xt.device, use_bf16):
            x0_hat = forward(xt, t).float()
        loss = (x0_hat - x0).pow(2).mean()
        if terms:
            loss = loss + terms(rows, flip, 0)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def step_inputs(config: str | Path, overrides: list[str], shape: tuple[int, int, int], batch: int | None):
    """(config, batch, bf16 on, x_0, t, x_t, generator) of a timed training step: x_0 is seeded Gaussian noise
    (the step's cost does not depend on the values), the batch defaults to the config's train.batch_size."""
    cfg = load_config(DiffusionConfig, config, list(overrides))
    batch = batch or cfg.train.batch_size
    use_bf16 = cfg.train.bf16 and bf16_pays(torch.device("cpu"))
    schedule = build_schedule(cfg)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, *shape, generator=gen)
    t = torch.randint(0, schedule.T, (batch,), generator=gen)
    xt = schedule.q_sample(x0, t, torch.randn(x0.shape, generator=gen))
    return cfg, batch, use_bf16, x0, t, xt, gen


def measure_unet(model: str, config: str | Path, overrides: list[str], shape: tuple[int, int, int],
                 batch: int | None = None, plan: Plan = Plan()) -> dict:
    """The U-Net training step of `model` ("pokediffusion" or "diffusers") on inputs of `shape`
    (C, H, W) in both layouts (a benchmark job). The batch defaults to the config's train.batch_size;
    x_0 is Gaussian noise (the step's cost does not depend on the values)."""
    cfg, batch, use_bf16, x0, t, xt, _ = step_inputs(config, overrides, shape, batch)
    build = BUILDERS[model]
    channels, size = shape[0], shape[-1]

    def make_step(fmt: torch.memory_format) -> Callable[[], None]:
        torch.manual_seed(0)
        net, forward = build(cfg, channels, size)
        return training_step(net.to(memory_format=fmt), forward, x0.contiguous(memory_format=fmt),
                             xt.contiguous(memory_format=fmt), t, use_bf16)

    params = sum(p.numel() for p in build(cfg, channels, size)[0].parameters())
    return {**summarise(in_layouts(make_step, batch, plan), params), "name": NAMES[model], "batch": batch,
            "shape": list(shape), "bf16": use_bf16}


def noise_teacher(batch: int, gen: torch.Generator, dim: int = 64, side: int = 8) -> TeacherFeatures:
    """Teacher features of a batch (and its mirror images) as fp16 noise of the shipped teacher's shape:
    what loss.align costs does not depend on their values."""
    return TeacherFeatures(torch.randn(2, batch, dim, side, side, generator=gen).half())


# The hidden-state term of diffusion/align.py at its documented weight, on the config's stage.
TERMS = {"x0 MSE": LossConfig(), "+ loss.align": LossConfig(align=0.5)}


def measure_terms(config: str | Path, overrides: list[str], shape: tuple[int, int, int], batch: int | None = None,
                  plan: Plan = Plan(), teacher_dim: int = 64, teacher_side: int = 8) -> dict:
    """What loss.align costs per training step of our U-Net on `shape` (a benchmark job):
    the step's img/s with it, in NCHW, against the plain x0 MSE step. The teacher's features are
    Gaussian noise of the shipped teacher's shape (the cost does not depend on their values)."""
    cfg, batch, use_bf16, x0, t, xt, gen = step_inputs(config, overrides, shape, batch)
    features = noise_teacher(batch, gen, teacher_dim, teacher_side)
    rows = {}
    for name, loss_cfg in TERMS.items():
        torch.manual_seed(0)
        model = build_unet(cfg, shape[0])
        terms = HiddenTerms(loss_cfg, model, features)
        rows[name] = time_step(training_step(model, model, x0, xt, t, use_bf16, terms if terms else None), batch, plan)
    plain = rows["x0 MSE"]["median_s"]
    return {"name": "hidden-state terms", "batch": batch, "shape": list(shape), "bf16": use_bf16,
            "stage": {"align": LossConfig().align_stage},
            "steps": {name: {"img_per_s": r["img_per_s"], "median_s": r["median_s"], "cost": r["median_s"] / plain}
                      for name, r in rows.items()}}
