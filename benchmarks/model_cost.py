"""What a trained diffusion model costs: parameters, FLOPs, and sampling time and memory.

    training_flops_per_image   one training image through the trainer's step (x0 prediction, x0-MSE,
                               backward), counted by torch.utils.flop_counter
    sampling_flops             one sample: a network evaluation per step, then decoding to pixels
    sampling_job               n samples with DDIM and with ancestral DDPM (after a warm-up run),
                               timed, with the peak memory of the process; meant to run in a fresh
                               process (`in_fresh_process`) so that the peak is the job's own
    measure_cost               all of them for one model (what reports/compare.py tabulates)

FLOPs are what FlopCounterMode counts (matrix products, convolutions, attention; norms and
activations are not counted), at batch 1.
"""
from __future__ import annotations

import concurrent.futures
import copy
import multiprocessing

import torch
from torch.utils.flop_counter import FlopCounterMode

import benchmarks.harness  # noqa: F401  (teaches the FLOP counter torch's CPU attention kernel)
from benchmarks.jobs import peak_rss_mb
from diffusion.labels import Labels
from diffusion.denoiser import make_denoiser, num_styles, num_types, predict_x0
from diffusion.pipeline import Pipeline, load_diffusion
from diffusion.samplers import ddim_timesteps
from plumbing.device import pick_device
from plumbing.pictures import to_uint8


def sampling_job(ckpt: str, n: int, steps: int, seed: int, device: str) -> dict:
    """Load a model and draw n samples with DDIM (`steps`) and with DDPM (all T), after a warm-up run;
    a style-conditional model draws its default style (artwork), as diffusion.sample does.

    Returns the samples as uint8, the seconds of each sampler (decoding included) and the peak
    resident memory (Python and torch included when run in a fresh process)."""
    dev = pick_device(device)
    start_mb = peak_rss_mb()
    pipe = load_diffusion(ckpt, dev)
    labels, _ = pipe.labels(None, None, n)
    pipe.generate(2, seed, None if labels is None else labels.index(slice(0, 2)), steps=2)  # warm-up
    result = {"start_rss_mb": start_mb}
    for sampler in ("ddim", "ddpm"):
        images, _, seconds = pipe.generate(n, seed, labels, sampler=sampler, steps=steps)
        result[sampler] = {"images": to_uint8(images), "seconds": seconds,
                           "steps": len(ddim_timesteps(pipe.schedule.T, steps)) if sampler == "ddim"
                           else pipe.schedule.T}
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


def counted_flops(fn) -> int:
    """FLOPs of fn() as torch.utils.flop_counter counts them."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def training_flops_per_image(pipe: Pipeline) -> int:
    """One training image through diffusion.train's step: x0_hat = f(x_t, t[, labels]), the x0-MSE, backward."""
    net = copy.deepcopy(pipe.model).train().requires_grad_(True)
    dev = next(net.parameters()).device
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, *pipe.space.shape, generator=gen)
    t = torch.full((1,), pipe.schedule.T // 2)
    xt = pipe.schedule.q_sample(x0, t, torch.randn(x0.shape, generator=gen)).to(dev)
    zero = torch.zeros(1, dtype=torch.long, device=dev)
    y = Labels(zero if num_types(pipe.cfg) else None, zero if num_styles(pipe.cfg) else None)

    def step():
        loss = (predict_x0(net, xt, t.to(dev), False, y) - x0.to(dev)).pow(2).mean()
        loss.backward()
    return counted_flops(step)


def sampling_flops(pipe: Pipeline, steps: int) -> dict:
    """FLOPs of one sample: one network evaluation per step, then decoding to pixels."""
    dev = next(pipe.model.parameters()).device
    denoise = make_denoiser(pipe.model, dev, False)
    x = torch.randn(1, *pipe.space.shape, generator=torch.Generator().manual_seed(0)).to(dev)
    t = torch.full((1,), pipe.schedule.T - 1, device=dev)
    with torch.inference_mode():
        step = counted_flops(lambda: denoise(x, t))
        decode = counted_flops(lambda: pipe.space.decode(x))
    ddim_steps = len(ddim_timesteps(pipe.schedule.T, steps))
    return {"network_evaluation": step, "decode": decode, "ddim": ddim_steps * step + decode,
            "ddpm": pipe.schedule.T * step + decode}


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def measure_cost(pipe: Pipeline, sampled: dict, steps: int) -> dict:
    """Parameters and FLOPs of a model, with the sampling time and memory that `sampling_job` measured."""
    cost = {"shape": list(pipe.space.shape), "T": pipe.schedule.T, "ddim_steps": sampled["ddim"]["steps"],
            "unet_parameters": parameters(pipe.model), "train_flops": training_flops_per_image(pipe),
            "sample_flops": sampling_flops(pipe, steps),
            "ddim_seconds": sampled["ddim"]["seconds"], "ddpm_seconds": sampled["ddpm"]["seconds"],
            **{k: sampled[k] for k in ("peak_rss_mb", "start_rss_mb", "peak_cuda_mb") if k in sampled}}
    if pipe.space.name == "latent":
        vae = pipe.space.vae
        probe = torch.zeros(1, 3, pipe.cfg.data.size, pipe.cfg.data.size, device=next(vae.parameters()).device)
        with torch.inference_mode():
            cost["encode_flops"] = counted_flops(lambda: vae.encode(probe))
        cost.update({"ae_parameters": parameters(vae), "decoder_parameters": parameters(vae.decoder)})
    return cost
