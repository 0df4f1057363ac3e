"""Device choice, seeding and mixed precision: the same code on CUDA, CPU and MPS."""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from plumbing.cli import UserError


def pick_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit name that is not available is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
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


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays on CUDA (Ampere+) and on CPUs with AVX-512-BF16 / AMX; not on MPS here."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # The oneDNN backend reports native bf16 support (avx512_bf16 or amx); emulated bf16 is slow.
        mkldnn = getattr(torch.backends, "mkldnn", None)
        checker = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
        if checker is not None:
            try:
                return bool(checker())
            except Exception:
                return False
        return bool(mkldnn and mkldnn.is_available())
    return False


def autocast(device: torch.device, enabled: bool):
    """A bf16 autocast context where supported and enabled, a no-op context otherwise."""
    if enabled and bf16_supported(device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
