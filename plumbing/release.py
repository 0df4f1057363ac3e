"""The release format: the shipped weights as safetensors files with a JSON config beside them.

    <folder>/ldm.safetensors  the U-Net's EMA weights           <folder>/ae.safetensors  the VAE's weights
    <folder>/config.json      {"format", "ldm": {file, config, shape, labels, dtype, sha256, source, metrics},
                               "ae": {file, config, latent, dtype, sha256, source, metrics}, sizes, fidelity}
    <folder>/MODEL_CARD.md    what the model is, how it was trained, what it measures

safetensors is the ecosystem's format for weights (a flat file of named tensors; loading it runs no
code). This module is the one place that knows the layout: `write_release` and `model_card` make it
(`python -m diffusion.release`), `read_release` and `read_part` read it for stage 2
(diffusion/pipeline.py) and stage 1 (autoencoder/latents.py).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from plumbing import runs
from plumbing.checkpoint import file_sha256, half_precision, load_checkpoint, read_safetensors, write_safetensors
from plumbing.cli import UserError
from plumbing.pictures import to_uint8

RELEASE_FORMAT = "pokediffusion-release-1"
RELEASE_NAME = "release"
RELEASE_AE, RELEASE_LDM, RELEASE_CONFIG, CARD = "ae.safetensors", "ldm.safetensors", "config.json", "MODEL_CARD.md"


def release_dir() -> Path:
    """Where the shipped weights live: checkpoints/release/."""
    return runs.CHECKPOINT_ROOT / RELEASE_NAME


def is_release(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / RELEASE_CONFIG).is_file()


def read_config(folder: str | Path) -> dict:
    """config.json of a release folder (a UserError naming the fix when it is not readable)."""
    path = Path(folder) / RELEASE_CONFIG
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{path} is not a readable release config ({err}); fetch the release again")


def read_release(folder: str | Path) -> dict:
    """config.json of a release folder, each part's weights read from its safetensors file ("weights")."""
    meta = read_config(folder)
    for part in ("ldm", "ae"):
        if part in meta:
            meta[part]["weights"] = read_safetensors(Path(folder) / meta[part]["file"])
    return meta


def read_part(weights_file: str | Path) -> dict:
    """One part of a release from its safetensors file: the record of config.json beside it whose "file" is
    this file's name, with its weights ("weights")."""
    path = Path(weights_file)
    meta = read_config(path.parent)
    record = next((meta[p] for p in ("ae", "ldm") if meta.get(p, {}).get("file") == path.name), None)
    if record is None:
        raise UserError(f"{path.parent / RELEASE_CONFIG} does not describe {path.name}; fetch the release again")
    return {**record, "weights": read_safetensors(path)}


def converted(state: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """A state dict stored in `dtype` ("float16" or "float32"; integer tensors unchanged)."""
    if dtype == "float16":
        return half_precision(state)
    return {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def write_release(ae_src: Path, ldm_src: Path, dtypes: dict[str, str], out: Path) -> dict:
    """Write the two safetensors files and config.json from a VAE's ae.pt (or an earlier release's
    ae.safetensors, for an LDM trained on it) and an LDM's diffusion.pt (without the fidelity check);
    return the config."""
    ldm = load_checkpoint(ldm_src, kind="diffusion")
    if Path(ae_src).suffix == ".safetensors":  # the VAE of an earlier release (an LDM trained on it)
        part = read_part(ae_src)
        ae = {**part, "model": part["weights"]}
        ae_origin = (part["source"], part["source_sha256"])  # where that release's VAE came from
    else:
        ae = load_checkpoint(ae_src, kind="autoencoder")
        ae_origin = (str(ae_src), file_sha256(ae_src))
    write_safetensors(converted(ae["model"], dtypes["ae"]), out / RELEASE_AE)
    write_safetensors(converted(ldm["ema"], dtypes["ldm"]), out / RELEASE_LDM)
    meta = {
        "format": RELEASE_FORMAT,
        "ldm": {"file": RELEASE_LDM, "config": ldm["config"], "shape": ldm["space"]["shape"],
                "labels": ldm.get("labels", {"types": [], "styles": []}), "dtype": dtypes["ldm"],
                "sha256": file_sha256(out / RELEASE_LDM), "source": str(ldm_src), "source_sha256": file_sha256(ldm_src),
                "data_fingerprint": ldm.get("data_fingerprint"), "metrics": ldm.get("metrics", {})},
        "ae": {"file": RELEASE_AE, "config": ae["config"], "latent": ae["latent"], "dtype": dtypes["ae"],
               "sha256": file_sha256(out / RELEASE_AE), "source": ae_origin[0], "source_sha256": ae_origin[1],
               "data_fingerprint": ae.get("data_fingerprint"), "metrics": ae.get("metrics", {})},
    }
    (out / RELEASE_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def image_difference(reference: torch.Tensor, other: torch.Tensor) -> dict:
    """How far `other` is from `reference` (images in [-1, 1]): PSNR in dB on the [0, 1] scale
    (None when identical), the largest 8-bit difference and the share of 8-bit values that differ."""
    mse = ((reference.float() - other.float()) / 2).pow(2).mean().item()
    a, b = to_uint8(reference).int(), to_uint8(other).int()
    return {"psnr_db": None if mse == 0 else 10 * math.log10(1 / mse),
            "max_abs_8bit": int((a - b).abs().max()),
            "share_8bit_differ": float((a != b).double().mean())}


def passes(diff: dict, min_psnr: float) -> bool:
    return diff["psnr_db"] is None or diff["psnr_db"] >= min_psnr


def describe(diff: dict) -> str:
    """A fidelity comparison (diffusion/release.py) in words."""
    psnr = "identical" if diff["psnr_db"] is None else f"PSNR {diff['psnr_db']:.1f} dB"
    return (f"{psnr}, largest 8-bit difference {diff['max_abs_8bit']}/255, "
            f"{diff['share_8bit_differ']:.2%} of 8-bit values differ")


def model_card(meta: dict, notes: str | None) -> str:
    """MODEL_CARD.md: the facts of config.json in words, then the --card notes."""
    ldm, ae = meta["ldm"], meta["ae"]
    lm, am = ldm["metrics"], ae["metrics"]
    def sources(cfg: dict) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in cfg["data"]["mix"].items() if v > 0)

    labels = ldm["labels"]
    kinds = [p for p, on in (("species", labels.get("species")), ("Pokemon type", labels["types"]),
                             ("style", labels["styles"])) if on]
    conditioned = ", ".join(kinds[:-1]) + " and " + kinds[-1] if len(kinds) > 1 else "".join(kinds)

    def machine(m: dict) -> str:
        mm = m.get("machine") or {}
        return f"{mm.get('cpu', '?')}, {mm.get('cores', '?')} cores" + (f", {mm['gpu']}" if mm.get("gpu") else "")

    facts = [
        "# Model card: pokediffusion release", "",
        "A two-stage latent diffusion model that draws 64x64 Pokemon: a convolutional VAE (stage 1) and a DDPM with "
        "a linear beta schedule whose U-Net predicts x0, trained on the VAE's normalised latents (stage 2).", "",
        "## What is in this folder", "",
        "| file | what | dtype | sha256 |", "| --- | --- | --- | --- |",
        f"| `{ldm['file']}` | U-Net, EMA weights ({lm.get('parameters', 0) / 1e6:.2f}M parameters) | {ldm['dtype']} | "
        f"`{ldm['sha256'][:16]}...` |",
        f"| `{ae['file']}` | VAE | {ae['dtype']} | `{ae['sha256'][:16]}...` |",
        "| `config.json` | both configs, latent statistics, labels, sources, metrics, fidelity | | |", "",
        f"Sizes: {meta['sizes']['total_mb']:.2f} MB together. Against the float32 training weights ({meta['fidelity']['n']} "
        f"DDIM-50 samples, float32 compute): {describe(meta['fidelity']['both'])}.", "",
        "## Training", "",
        f"- **Data**: {sources(ldm['config'])} (shares of a batch; `data.mix`); the held-out Pokedex numbers of "
        "the split are never trained on. Data fingerprint (sprites/mixture.py): "
        f"`{(ldm.get('data_fingerprint') or '?')[:16]}...`.",
        f"- **Stage 1 (VAE)**: {am.get('steps', '?')} steps in {am.get('train_seconds', 0) / 60:.1f} min on "
        f"{machine(am)} on {sources(ae['config'])}; held-out artwork PSNR {am.get('psnr_db', float('nan')):.2f} dB.",
        f"- **Stage 2 (DDPM)**: {lm.get('steps', '?')} steps of {ldm['config']['train']['batch_size']} in "
        f"{lm.get('train_seconds', 0) / 60:.1f} min on {machine(lm)} ({lm.get('train_img_per_s', '?')} img/s), "
        f"EMA {ldm['config']['train']['ema_decay']}" + (f"; conditioned on the {conditioned} (classifier-free "
                                                          "guidance)" if conditioned else "")
        + (f"; fine-tuned from `{ldm['config']['train']['init']}` (these figures are the fine-tuning's)"
           if ldm["config"]["train"].get("init") else "") + ".",
        f"- **Sources**: `{ldm['source']}` and `{ae['source']}` (`python -m diffusion.release` made this folder).", "",
    ]
    return "\n".join(facts) + "\n" + (notes.rstrip() + "\n" if notes else "")
