"""Where the time of one latent training step goes: the trainer's phases and the operators inside them.

The step is the trainer's (diffusion/trainer.py, `objective` and `update`) on a fixed batch:

    forward             x0_hat = f(x_t, t), the x0 MSE and the config's hidden-state terms (diffusion/align.py)
    backward            the gradients of that loss
    gradient clipping   the global norm scaled to train.grad_clip
    AdamW               the optimiser's step (fused, plumbing/optim.py)
    EMA                 the moving average of the weights that sampling uses

Each phase is timed by the wall clock around it (the median over the timed steps), so the phases add
up to the step. The step runs in the network's layout (diffusion/denoiser.py, network_layout) and, in
alternation with it, in the other one (NCHW or channels-last): a fresh model of the same seed each,
timed round by round, so that both see the same moments of a shared machine. The operator classes
come from one pass of torch's profiler over the same number of steps in the network's layout: the
self CPU time of each aten operator, grouped by what it computes. The profiler's overhead per
operator weighs most on phases made of many small operators (the EMA, clipping); the phase timings
carry no such overhead. Drawing the batch (the latents, t, the labels) is not in the step: the data
section measures the batch rates. The two layouts' models start from the same weights and step on the
same batch, so their losses along the timed rounds are one loss curve twice: they must agree up to
rounding, which is the check that the faster layout computes the same training.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.harness import LAYOUTS, Plan, layout_name
from benchmarks.unet_step import noise_teacher, step_inputs
from diffusion.align import HiddenTerms
from diffusion.denoiser import build_unet, network_layout, predict_x0
from plumbing.optim import EMA, adamw, clip_gradients

PHASES = ("forward", "backward", "gradient clipping", "AdamW", "EMA")

# Operator classes, by the first pattern an aten operator's name contains (the rest: "elementwise and copies").
OPERATORS = {"convolution": ("convolution",), "group norm": ("group_norm",), "SiLU": ("silu",),
             "attention": ("scaled_dot_product", "flash_attention"),
             "matrix products": ("addmm", "aten::mm", "bmm", "matmul", "linear"), "AdamW": ("adam",)}
OTHER = "elementwise and copies"


def operator_class(name: str) -> str:
    """The class of an aten operator's name (OPERATORS), else OTHER."""
    return next((cls for cls, patterns in OPERATORS.items() if any(p in name for p in patterns)), OTHER)


def trainer_step(config: str | Path, overrides: list[str], shape: tuple[int, int, int], batch: int | None,
                 layout: torch.memory_format | None = None):
    """(step, batch, bf16 on): `step()` runs one training step as the trainer does (the network in
    `layout`, default: its own) and returns the seconds of each phase (PHASES) and the step's loss.
    The teacher's features are noise of the shipped teacher's shape."""
    cfg, batch, use_bf16, x0, t, xt, gen = step_inputs(config, overrides, shape, batch)
    torch.manual_seed(0)
    model = build_unet(cfg, shape[0])
    terms = HiddenTerms(cfg.loss, model, noise_teacher(batch, gen) if cfg.loss.align > 0 else None)
    params = list(model.parameters()) + (list(terms.projection.parameters()) if terms.projection is not None else [])
    opt = adamw(params, cfg.train.lr, x0.device, weight_decay=0.0)
    ema = EMA(model, cfg.train.ema_decay)
    rows, flip = torch.arange(batch), torch.zeros(batch, dtype=torch.bool)

    def step() -> tuple[dict[str, float], float]:
        laps = [time.perf_counter()]
        loss = (predict_x0(model, xt, t, use_bf16, layout=layout) - x0).pow(2).mean()
        if terms:
            loss = loss + terms(rows, flip, 0)[0]
        laps.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        laps.append(time.perf_counter())
        if cfg.train.grad_clip > 0:
            clip_gradients(model.parameters(), cfg.train.grad_clip)
        laps.append(time.perf_counter())
        opt.step()
        laps.append(time.perf_counter())
        ema.update(model)
        laps.append(time.perf_counter())
        return {name: b - a for name, a, b in zip(PHASES, laps, laps[1:])}, loss.item()
    return step, batch, use_bf16


def measure_profile(config: str | Path, overrides: list[str], shape: tuple[int, int, int], batch: int | None = None,
                    plan: Plan = Plan(), steps: int = 10) -> dict:
    """The trainer's step on `shape` (C, H, W) under `config` (a benchmark job): median seconds, img/s
    and GFLOP/s of the whole step and each phase's median seconds and share in the network's layout,
    the median seconds, img/s and loss of each round in each layout, the largest relative difference
    of the two layouts' losses, and each operator class's share of the profiled CPU time (module
    docstring). `plan.warmup` untimed steps in each layout, then `steps` timed rounds of both, then
    `steps` profiled steps."""
    made = {name: trainer_step(config, overrides, shape, batch, fmt) for name, fmt in LAYOUTS.items()}
    _, batch, use_bf16 = made["NCHW"]
    own = layout_name(network_layout(torch.device("cpu"), use_bf16))
    step = made[own][0]  # the network's own layout: counted, profiled and reported
    with FlopCounterMode(display=False) as counter:
        step()
    for name, (each, _, _) in made.items():
        for _ in range(plan.warmup - (name == own)):
            each()
    timed: dict[str, list[dict[str, float]]] = {name: [] for name in made}
    losses: dict[str, list[float]] = {name: [] for name in made}
    for _ in range(steps):  # round by round: both layouts see the same moments of the machine
        for name, (each, _, _) in made.items():
            phase_s, loss = each()
            timed[name].append(phase_s)
            losses[name].append(loss)
    loss_gap = max(abs(a - b) / abs(b) for a, b in zip(losses["NHWC"], losses["NCHW"]))
    seconds = {name: statistics.median(sum(p.values()) for p in runs) for name, runs in timed.items()}
    phases = {name: statistics.median(p[name] for p in timed[own]) for name in PHASES}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    operators = dict.fromkeys([*OPERATORS, OTHER], 0.0)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            operators[operator_class(event.key)] += event.self_cpu_time_total
    profiled = sum(operators.values())
    flops = counter.get_total_flops()
    median_s = seconds[own]
    return {"name": "step profile", "batch": batch, "shape": list(shape), "bf16": use_bf16, "steps": steps,
            "layout": own, "median_s": median_s, "img_per_s": batch / median_s, "gflop_per_step": flops / 1e9,
            "gflop_per_s": flops / median_s / 1e9,
            "layouts": {name: {"median_s": s, "img_per_s": batch / s, "losses": losses[name]}
                        for name, s in seconds.items()},
            "loss_max_rel_diff": loss_gap,
            "phases": {name: {"median_s": s, "share": s / sum(phases.values())} for name, s in phases.items()},
            "operators": {name: us / profiled for name, us in operators.items()}}
