"""Device choice, seeding and mixed precision: the same code on CUDA and the CPU.

Precision is decided here alone (`bf16_pays`, `autocast`, `precision_note`), for both trainers and
sampling: bf16 autocast where the hardware computes in bf16 (CUDA compute capability 8.0 and later;
a CPU with native bf16 that is also faster in it), float32 everywhere else. There is no fp16 path:
a card without bf16 (a T4, capability 7.5) trains in float32, slower but without a loss scaler.

Apple's MPS is never picked by `auto`: the project's tests and measured runs have not run on it (its
float64 and autocast support differ between PyTorch versions), so a Mac trains on its CPU; `device=mps`
asks for it explicitly, untested.
"""
from __future__ import annotations

import contextlib
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch

from plumbing.cli import UserError


def pick_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, else the CPU (never MPS: see the module docstring); an explicit name that is
    not available is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available; use device=cpu or device=auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("device 'mps' requested but MPS is not available; use device=cpu or device=auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) and return a CPU generator for data order.

    With the same seed and config, a CPU run gives bitwise identical weights: every random draw
    (initialisation, batch order, flips, noise) comes from these seeded generators, and the data
    path runs in the main process (no worker processes with their own random state).
    """
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


# CUDA computes in bf16 from compute capability 8.0 (Ampere) on. torch.cuda.is_bf16_supported() is no
# test of that: it is True on older cards too (a T4, 7.5), where bf16 is emulated and slow.
BF16_CUDA_CAPABILITY = (8, 0)


def bf16_native(device: torch.device) -> bool:
    """Whether the hardware computes in bf16 natively: CUDA of compute capability >= 8.0, or a CPU
    whose oneDNN backend reports AVX512-BF16 or AMX. Native is not the same as fast: see `bf16_pays`."""
    if device.type == "cuda":
        return tuple(torch.cuda.get_device_capability(device)) >= BF16_CUDA_CAPABILITY
    if device.type == "cpu":
        checker = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
        if checker is None:
            return False
        try:
            return bool(checker())
        except Exception:
            return False
    return False


# A CPU's bf16 must beat fp32 by this factor on a matrix product before autocast is switched on.
# Measured: an AMD EPYC with AVX512-BF16 runs bf16 at 5.5x its fp32 rate (training 1.5x faster);
# an Intel Xeon with AVX512-BF16 but no AMX at 0.63x (training 0.82x, i.e. slower).
BF16_MIN_SPEEDUP = 1.25
_cpu_bf16_speedup: float | None = None


def matmul_seconds(size: int, dtype: torch.dtype, repeats: int, statistic=min) -> float:
    """`statistic` (min or statistics.median) of the wall times of `repeats` size x size x size
    matrix products in `dtype` on the CPU, after one warm-up product."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return statistic(times)


def cpu_bf16_speedup(size: int = 1024, repeats: int = 5) -> float:
    """fp32 time / bf16 time of a size^3 matrix product on this CPU (best of `repeats`; ~0.1 s once
    per process, then cached)."""
    global _cpu_bf16_speedup
    if _cpu_bf16_speedup is None:
        _cpu_bf16_speedup = (matmul_seconds(size, torch.float32, repeats)
                             / matmul_seconds(size, torch.bfloat16, repeats))
    return _cpu_bf16_speedup


def bf16_pays(device: torch.device) -> bool:
    """Whether bf16 autocast is used (where `train.bf16` allows it): on CUDA where bf16 is native;
    on a CPU only where it is native *and* a bf16 matrix product measures at least
    BF16_MIN_SPEEDUP x faster than fp32 (some CPUs have the instructions but no speed from them);
    never elsewhere (MPS). Where it is False the arithmetic is float32."""
    if device.type == "cuda":
        return bf16_native(device)
    if device.type == "cpu":
        return bf16_native(device) and cpu_bf16_speedup() >= BF16_MIN_SPEEDUP
    return False


def autocast(device: torch.device, enabled: bool):
    """A bf16 autocast context where supported and enabled, a no-op context otherwise."""
    if enabled and bf16_pays(device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precision_note(device: torch.device, enabled: bool) -> str:
    """One phrase for the run log: whether bf16 autocast is on, and if not, why."""
    if not enabled:
        return "bf16 autocast off (train.bf16=false)"
    if device.type == "cuda" and not bf16_native(device):
        major, minor = torch.cuda.get_device_capability(device)
        return (f"bf16 autocast off (compute capability {major}.{minor} < {BF16_CUDA_CAPABILITY[0]}.0 has no bf16 "
                "hardware): float32")
    if not bf16_native(device):
        return "bf16 autocast off (not native here): float32"
    if device.type == "cpu" and not bf16_pays(device):
        return (f"bf16 autocast off (a bf16 matrix product runs at {cpu_bf16_speedup():.2f}x the fp32 rate "
                f"on this CPU, under the {BF16_MIN_SPEEDUP}x that pays): float32")
    return "bf16 autocast on"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what the platform module knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_name() -> str:
    """The machine as a measurement file names it: its CPU model and core count."""
    return f"{cpu_model()}, {os.cpu_count()} cores"


def machine_summary(device: torch.device) -> dict:
    """What a run was measured on, for metrics.json: CPU model, cores, torch threads, torch version,
    and the GPU's name on CUDA. Two runs with equal summaries ran on the same kind of machine."""
    summary = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
               "torch": str(torch.__version__)}  # a TorchVersion object would not load with weights_only
    if device.type == "cuda":
        summary["gpu"] = torch.cuda.get_device_name(device)
    return summary


def configure_cuda(device: torch.device, deterministic: bool = False) -> None:
    """Settings of a CUDA run (none elsewhere).

    * TF32: fp32 matrix products and convolutions run on TF32 tensor cores (Ampere and later: about
      8x the fp32 rate at a 10-bit mantissa, which training does not notice); bf16 autocast
      (`autocast`) covers most of the arithmetic anyway.
    * cuDNN picks the fastest convolution algorithms for the fixed shapes of a run (benchmark mode).
    * deterministic=True (train.deterministic): deterministic algorithms only, cuDNN benchmark off,
      cuBLAS with a fixed workspace (CUBLAS_WORKSPACE_CONFIG), so a seeded CUDA run repeats itself;
      slower, and operations without a deterministic CUDA kernel warn instead. Without it a CUDA
      run is seeded but not bitwise repeatable (autotuned and atomic-add kernels); a CPU run is.
    """
    if device.type != "cuda":
        return
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`: on CUDA through pinned memory with a non-blocking copy, so that the
    copy overlaps the GPU's work; unchanged elsewhere."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
