"""Checkpoints: written atomically, loaded without running code, identified by content hash.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:

    {"kind": "autoencoder" | "ldm", "format": FORMAT_VERSION, "config": {...resolved config...},
     "model": state_dict, ...stage-specific entries...}

Saving writes to a temporary file in the same folder, flushes and fsyncs it, then renames it over
the target: a crash (or a full disk) while writing never leaves a truncated checkpoint behind.
Loading uses `torch.load(weights_only=True)`, which refuses pickled code: a file carrying a
pickle payload is rejected and its code never runs. Weights may be stored in half precision
(`half_precision`, the shipped weights); the loaders cast every tensor to float32 before
load_state_dict, so an fp16 file loads exactly like an fp32 one.

The shipped release is in safetensors instead (`write_safetensors`, `read_safetensors`): the
ecosystem's format for weights, a flat file of named tensors that other tools read and whose
loading cannot run code; its configuration travels beside it as JSON (plumbing/release.py).
"""
from __future__ import annotations

import errno
import hashlib
import os
import pickle
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from plumbing.cli import UserError

FORMAT_VERSION = 1


def save_atomic(obj: dict, path: str | Path) -> Path:
    """Write `obj` with torch.save to `path` atomically (temp file + fsync + rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create folder {path.parent} ({err.strerror}); choose a writable --out")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            raise UserError(f"disk full while saving {path}; the previous file is intact, free some space and retry")
        raise UserError(f"cannot write {path} ({err.strerror}); choose a writable --out")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_cache(path: Path | None, mmap: bool = False):
    """What a cache file holds (tensors, numbers, strings; read without running code), or None when
    there is no file or it cannot be read: a damaged cache is rebuilt, never trusted. With `mmap` the
    tensors are mapped from the file, not copied: the processes of one machine share their pages."""
    if path is None or not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True, mmap=mmap)
    except Exception:  # truncated, foreign or unpicklable: rebuild it
        return None


def cpu_state_dict(weights: torch.nn.Module | dict) -> dict:
    """A module's state dict (or a dict of tensors, e.g. EMA weights) as contiguous CPU tensors,
    the form every checkpoint stores."""
    sd = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def load_checkpoint(path: str | Path, kind: str | None = None, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (no code runs) and check that it is of the expected `kind`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; pass the path of a .pt file written by a training run")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" not in str(err):  # not a pickle at all (text, PNG, JSON...)
            raise UserError(f"checkpoint {path} is not a torch checkpoint; pass a .pt file written by a training run")
        first = (str(err).strip().splitlines() or [""])[0][:120]
        raise UserError(f"checkpoint {path} was refused: it holds objects other than weights ({first}); "
                        "only load checkpoints written by this project")
    except Exception as err:  # truncated zip, empty file, garbage bytes: torch raises many kinds
        first = (str(err).strip().splitlines() or [err.__class__.__name__])[0][:80]
        raise UserError(f"checkpoint {path} is not a readable torch checkpoint ({first}); "
                        "it may be truncated or of another format")
    if not isinstance(ckpt, dict) or "kind" not in ckpt or "format" not in ckpt:
        raise UserError(f"checkpoint {path} is not a pokediffusion checkpoint; pass one written by this project")
    if ckpt["format"] != FORMAT_VERSION:
        raise UserError(f"checkpoint {path} has format {ckpt['format']}, this code reads format {FORMAT_VERSION}; "
                        "retrain or use the matching version of pokediffusion")
    if kind is not None and ckpt["kind"] != kind:
        raise UserError(f"checkpoint {path} is a '{ckpt['kind']}' checkpoint, expected '{kind}'")
    return ckpt


def half_precision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of a state dict with every floating-point tensor in float16 (half the bytes); integer
    tensors are kept as they are. float16 keeps 11 significant bits: a relative rounding error of at
    most 2^-11 = 4.9e-4 per weight (values beyond +-65504 would overflow, so they are refused)."""
    out = {}
    for name, value in state.items():
        if value.is_floating_point():
            if value.numel() and value.abs().max() > torch.finfo(torch.float16).max:
                raise ValueError(f"{name} holds values beyond the float16 range; keep it in float32")
            value = value.half()
        out[name] = value.contiguous()
    return out


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (how an LDM names the exact AE it was trained on)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_safetensors(state: dict[str, torch.Tensor], path: str | Path) -> Path:
    """A state dict as a safetensors file, written atomically (temp file + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (on the CPU), or a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is missing; fetch the release again (git checkout checkpoints/release)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable safetensors file ({str(err)[:80]}); fetch it again")
