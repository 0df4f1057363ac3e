"""The machine's ceilings: what a plain matrix product achieves in fp32 and bf16, and what the CPU is.

Every achieved GFLOP/s of a training step reads against these: a step at half the fp32 matmul rate
is doing well for convolutions with 32 to 128 channels; one at 5% is bound by something else.
"""
from __future__ import annotations

import platform
import statistics

import torch

from plumbing.device import bf16_native, bf16_pays, machine_summary, matmul_seconds

# A bf16 product is measured at the full size only if a probe says it takes at most this long:
# without native bf16 (no AVX512-BF16 / AMX) a 2048^3 product runs at ~0.3 GFLOP/s, about a minute.
MAX_PRODUCT_S = 1.0
PROBE_SIZE = 256


def matmul_rate(size: int, dtype: torch.dtype, repeats: int) -> dict:
    """GFLOP/s of a square product (2 n^3 FLOPs), measured at `size` unless that would take over
    MAX_PRODUCT_S per product (estimated from one product at PROBE_SIZE), then at PROBE_SIZE."""
    if size > PROBE_SIZE:
        probe = matmul_seconds(PROBE_SIZE, dtype, 1, statistics.median)
        if probe * (size / PROBE_SIZE) ** 3 > MAX_PRODUCT_S:
            size = PROBE_SIZE
    seconds = matmul_seconds(size, dtype, repeats, statistics.median)
    return {"size": size, "gflop_per_s": 2 * size ** 3 / seconds / 1e9}


def measure_machine(matmul_size: int, repeats: int) -> dict:
    """CPU, torch, threads, native bf16, and the fp32 and bf16 matmul rates (a benchmark job)."""
    cpu = torch.device("cpu")
    return {
        **machine_summary(cpu),  # CPU model, cores, torch threads, torch: as every run's metrics.json
        "python": platform.python_version(),
        "bf16_native": bf16_native(cpu), "bf16_used": bf16_pays(cpu),
        "matmul": {"fp32": matmul_rate(matmul_size, torch.float32, repeats),
                   "bf16": matmul_rate(matmul_size, torch.bfloat16, repeats)},
    }
