"""Timing one training step: warm-up, a FLOP count, the median of timed repeats, both memory layouts.

A *step* is a closure that runs one full training step (forward, loss, backward, optimiser step) on
a fixed batch. `time_step` runs it under torch's FLOP counter once (that run is also the first
warm-up), then the remaining warm-up steps, then the timed repeats, and reports the median.
`in_layouts` does this for a model in NCHW and in channels-last NHWC, and `summarise` picks the
model's faster layout, so a comparison never handicaps a model with a layout that suits it badly.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

LAYOUTS = {"NCHW": torch.contiguous_format, "NHWC": torch.channels_last}


def layout_name(memory_format: torch.memory_format) -> str:
    """The name in LAYOUTS of a memory format ("NHWC" for torch.channels_last)."""
    return next(name for name, fmt in LAYOUTS.items() if fmt == memory_format)


def _count_cpu_attention() -> None:
    """Teach the FLOP counter the CPU attention kernel.

    torch's counter has formulas for the CUDA scaled-dot-product-attention kernels but none for the
    CPU flash kernel, so on a CPU every attention layer would count as 0 FLOPs. The CPU kernel does
    the same arithmetic, so it gets the same formulas (forward and backward; those are already
    wrapped to take shapes, hence get_raw).
    """
    aten = torch.ops.aten
    kernels = [("_scaled_dot_product_flash_attention_for_cpu", flop_counter.sdpa_flop),
               ("_scaled_dot_product_flash_attention_for_cpu_backward", flop_counter.sdpa_backward_flop)]
    for name, formula in kernels:
        op = getattr(aten, name, None)
        if op is not None and op not in flop_counter.flop_registry:
            flop_counter.register_flop_formula(op, get_raw=True)(formula)


_count_cpu_attention()


@dataclass(frozen=True)
class Plan:
    """How a step is timed: `warmup` untimed steps (the first one under the FLOP counter), then
    up to `repeats` timed steps, stopping after `min_repeats` once `budget_s` seconds are spent."""
    warmup: int = 2
    repeats: int = 5
    min_repeats: int = 3
    budget_s: float = 8.0


def median_seconds(run: Callable[[], object], plan: Plan) -> tuple[float, int]:
    """(median wall time of `run`, number of timed runs) under `plan`'s repeat rules (no warm-up)."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < plan.repeats:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        if len(times) >= plan.min_repeats and time.perf_counter() - start > plan.budget_s:
            break
    return statistics.median(times), len(times)


def interleaved_medians(runs: dict[str, Callable[[], object]], plan: Plan) -> dict[str, tuple[float, int]]:
    """{name: (median wall time, number of timed runs)} of several ways to do one job, timed round by
    round (each once per round, no warm-up), so that all see the same moments of a shared machine;
    `plan`'s repeat rules count rounds."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    start = time.perf_counter()
    for done in range(1, plan.repeats + 1):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
        if done >= plan.min_repeats and time.perf_counter() - start > plan.budget_s:
            break
    return {name: (statistics.median(ts), len(ts)) for name, ts in times.items()}


def time_step(step: Callable[[], None], batch: int, plan: Plan) -> dict:
    """Median time, images per second, FLOPs per step and achieved GFLOP/s of one training step."""
    with FlopCounterMode(display=False) as counter:
        step()
    for _ in range(plan.warmup - 1):
        step()
    median_s, repeats = median_seconds(step, plan)
    flops = counter.get_total_flops()
    return {"median_s": median_s, "img_per_s": batch / median_s, "gflop_per_step": flops / 1e9,
            "gflop_per_s": flops / median_s / 1e9, "repeats": repeats}


def in_layouts(make_step: Callable[[torch.memory_format], Callable[[], None]], batch: int, plan: Plan) -> dict:
    """time_step in each layout; `make_step(memory_format)` builds a fresh (seeded) model and its step."""
    return {name: time_step(make_step(fmt), batch, plan) for name, fmt in LAYOUTS.items()}


def summarise(layouts: dict, params: int) -> dict:
    """A model's row: its numbers in its faster layout, and every layout's numbers."""
    best = min(layouts, key=lambda name: layouts[name]["median_s"])
    keep = ("median_s", "img_per_s", "gflop_per_step", "gflop_per_s")
    return {"params_M": params / 1e6, "best_layout": best, **{k: layouts[best][k] for k in keep}, "layouts": layouts}


def speedup(ours: dict, reference: dict) -> float | None:
    """reference time / our time, each in its faster layout (None when the reference did not run)."""
    if "median_s" not in ours or "median_s" not in reference:
        return None
    return reference["median_s"] / ours["median_s"]
