"""From a diffusion config to the function the samplers call: x0_hat = denoise(x_t, t).

    build_schedule(cfg)              the linear beta schedule (diffusion/schedule.py)
    build_unet(cfg, in_channels)     the U-Net, with an embedding for each kind of label it is conditioned on
    predict_x0(model, x_t, t, ...)   one forward pass, in bf16 autocast where enabled, returned in float32
                                     and NCHW (the network computes in network_layout's memory layout)
    make_denoiser(model, ...)        denoise(x_t, t) for diffusion/samplers.py, classifier-free guided
                                     (diffusion/guidance.py) when labels are given

Used by training (sample grids), sampling (diffusion/pipeline.py) and the diagnostics in reports/.
"""
from __future__ import annotations

import torch

from diffusion.config import DiffusionConfig
from diffusion.guidance import guided_x0
from diffusion.labels import Labels
from diffusion.schedule import LinearSchedule
from diffusion.unet import UNet
from plumbing.device import autocast
from sprites.config import SOURCES
from sprites.labels import NUM_SPECIES, TYPES


def num_types(cfg: DiffusionConfig) -> int:
    """Classes of the type embedding: the 18 types when type-conditional, none otherwise."""
    return len(TYPES) if cfg.cond.labels != "none" else 0


def num_styles(cfg: DiffusionConfig) -> int:
    """Classes of the style embedding: the sources when style-conditional, none otherwise."""
    return len(SOURCES) if cfg.cond.style else 0


def num_species(cfg: DiffusionConfig) -> int:
    """Classes of the species embedding: the Pokedex numbers 1..NUM_SPECIES when species-conditional."""
    return NUM_SPECIES if cfg.cond.species else 0


def build_schedule(cfg: DiffusionConfig) -> LinearSchedule:
    s = cfg.schedule
    return LinearSchedule(s.T, s.beta_start, s.beta_end, s.scale_to_T)


def build_unet(cfg: DiffusionConfig, in_channels: int) -> UNet:
    m = cfg.model
    return UNet(in_channels, m.channels, m.blocks, m.attention_levels, m.dropout, num_types(cfg), num_styles(cfg),
                m.heads, num_species(cfg))


def network_layout(device: torch.device, use_bf16: bool) -> torch.memory_format:
    """The memory layout the U-Net computes in: channels-last (NHWC) on a CPU in float32, where its
    training step runs 1.2x and its sampling 1.4x as fast as in NCHW (Intel Xeon, docs/performance.md);
    NCHW under bf16 autocast (GroupNorm and SiLU run 10-15x slower in NHWC under bf16 on the AMD
    EPYC) and on CUDA."""
    return torch.channels_last if device.type == "cpu" and not use_bf16 else torch.contiguous_format


def predict_x0(model: UNet, xt: torch.Tensor, t: torch.Tensor, use_bf16: bool,
               labels: Labels | None = None, layout: torch.memory_format | None = None) -> torch.Tensor:
    """x0_hat = f(x_t, t[, labels]) in float32 and NCHW. The network computes in bf16 autocast when
    `use_bf16`, on x_t in `layout` (default: network_layout): a convolution whose input is channels-last
    computes channels-last, and every layer after it follows, while the weights keep their layout."""
    xt = xt.contiguous(memory_format=layout or network_layout(xt.device, use_bf16))
    with autocast(xt.device, use_bf16):
        return model(xt, t, labels).float().contiguous()


def make_denoiser(model: UNet, device: torch.device, use_bf16: bool, labels: Labels | None = None,
                  guidance: float = 1.0, layout: torch.memory_format | None = None):
    """denoise(x_t, t) -> x0_hat for the samplers. With `labels` (one per sample) the prediction is
    classifier-free guided with scale `guidance` (diffusion/guidance.py). `layout`: as in predict_x0."""
    labels = None if labels is None else labels.to(device)

    def network(x: torch.Tensor, t: torch.Tensor, batch_labels: Labels | None = None) -> torch.Tensor:
        return predict_x0(model, x, t, use_bf16, batch_labels, layout)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return guided_x0(network, x, t.to(device), labels, guidance)

    return denoise
