"""The shipped weights: a latent model and its AE as safetensors files with a JSON config beside them.

    python -m diffusion.release --ldm LDM_RUN [--ae AE_RUN] [--out checkpoints/release] [--card FILE]
                                [--dtype auto|float16|float32] [--min-psnr 40] [--n 16] [--steps 50] [--seed 0]

LDM_RUN and AE_RUN are run folders (or the diffusion.pt / ae.pt in them); without --ae the AE that
the LDM records is used (found as `python -m diffusion.sample` finds it, checked by sha256).
Writes into --out:

    ldm.safetensors  the U-Net's EMA weights (what sampling uses; the raw training weights stay in the run)
    ae.safetensors   the VAE's weights
    config.json      both configs, the latent statistics, the labels, each part's source (path, sha256),
                     dtype and sha256, the training metrics, file sizes and the fidelity check
    MODEL_CARD.md    what the model is, what it was trained on and how, and what it measures: the facts
                     from the runs, and the Markdown of --card (quality, limitations, intended use)

safetensors is the ecosystem's format for weights (a flat file of named tensors; loading it runs
no code); the loaders (diffusion/pipeline.py, autoencoder/latents.py) read the config beside it.
`python -m diffusion.sample` samples the release when no training run exists (see its --help), and
`train.init=checkpoints/release` fine-tunes it.

The fidelity check. --n samples are drawn with DDIM (--steps, --seed) from the source float32
weights and from the written files, both computed in float32 (no bf16 autocast, so only the stored
weights differ), and decoded to pixels. Each comparison gives the PSNR over all samples
(10 log10(1 / MSE) on the [0, 1] scale), the largest difference of the 8-bit images (of 255 levels)
and the share of 8-bit values that differ, for the AE alone (the float32 samples' latents decoded by
both AEs), the U-Net alone (both U-Nets' samples decoded by the float32 AE) and the whole pipeline.
With --dtype auto (the default) each part is stored in float16 where its own PSNR is at least
--min-psnr (40 dB: an RMS difference of 1% of the range, 2.6 of 255 levels) and in float32
otherwise; the numbers in config.json are those of the files as written.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from diffusion.model import make_denoiser
from diffusion.pipeline import load_diffusion
from diffusion.sampling import ddim_sample
from diffusion.space import find_ae
from plumbing.checkpoint import file_sha256, half_precision, load_checkpoint, write_safetensors
from plumbing.cli import UserError, run_main, user_path
from plumbing.device import pick_device
from plumbing.runs import RELEASE_AE, RELEASE_CONFIG, RELEASE_LDM, release_dir, writable_dir
from sprites.dataset import to_uint8

SIZE_BUDGET_MB = 20.0        # AE + LDM together: what the repository ships
RELEASE_FORMAT = "pokediffusion-release-1"
CARD = "MODEL_CARD.md"


def checkpoint_in(arg: str, filename: str, flag: str) -> Path:
    """`arg` itself if it is a file, else `arg`/`filename` (a run folder); UserError if neither exists."""
    path = Path(arg)
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        raise UserError(f"{flag} {arg}: no {filename} there; pass a run folder (or its {filename}) written by training")
    return path


def converted(state: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """A state dict stored in `dtype` ("float16" or "float32"; integer tensors unchanged)."""
    if dtype == "float16":
        return half_precision(state)
    return {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def write_release(ae_src: Path, ldm_src: Path, dtypes: dict[str, str], out: Path) -> dict:
    """Write the two safetensors files and config.json (without the fidelity check); return the config."""
    ae, ldm = load_checkpoint(ae_src, kind="autoencoder"), load_checkpoint(ldm_src, kind="diffusion")
    write_safetensors(converted(ae["model"], dtypes["ae"]), out / RELEASE_AE)
    write_safetensors(converted(ldm["ema"], dtypes["ldm"]), out / RELEASE_LDM)
    meta = {
        "format": RELEASE_FORMAT,
        "ldm": {"file": RELEASE_LDM, "config": ldm["config"], "shape": ldm["space"]["shape"],
                "labels": ldm.get("labels", {"types": [], "styles": []}), "dtype": dtypes["ldm"],
                "sha256": file_sha256(out / RELEASE_LDM), "source": str(ldm_src), "source_sha256": file_sha256(ldm_src),
                "data_fingerprint": ldm.get("data_fingerprint"), "metrics": ldm.get("metrics", {})},
        "ae": {"file": RELEASE_AE, "config": ae["config"], "latent": ae["latent"], "dtype": dtypes["ae"],
               "sha256": file_sha256(out / RELEASE_AE), "source": str(ae_src), "source_sha256": file_sha256(ae_src),
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


def fidelity(ldm_src: Path, ae_src: Path, release: Path, n: int, steps: int, seed: int, device) -> dict:
    """The release against its float32 source: the AE alone, the U-Net alone, and both (see the
    module docstring); every sampling run in float32 from the same seed."""
    src = load_diffusion(ldm_src, device, str(ae_src))
    rel = load_diffusion(release, device)
    labels, _ = src.labels(None, None, n)  # a style-conditional model: its default style
    with torch.inference_mode():
        z32 = _latents(src, n, seed, labels, steps)
        z16 = _latents(rel, n, seed, labels, steps)
        reference = src.space.decode(z32).cpu()
        return {"n": n, "sampler": f"ddim{steps}", "seed": seed,
                "ae": image_difference(reference, rel.space.decode(z32).cpu()),
                "ldm": image_difference(reference, src.space.decode(z16).cpu()),
                "both": image_difference(reference, rel.space.decode(z16).cpu())}


def _latents(pipe, n: int, seed: int, labels, steps: int) -> torch.Tensor:
    """The diffusion-space samples x_0 (not decoded) of a pipeline, in float32, guidance 3 with labels."""
    denoise = make_denoiser(pipe.model, pipe.device, False, labels, 3.0)
    x, _ = ddim_sample(denoise, pipe.schedule, (n, *pipe.space.shape), torch.Generator().manual_seed(seed),
                       pipe.device, pipe.space.clip, steps=steps)
    return x


def passes(diff: dict, min_psnr: float) -> bool:
    return diff["psnr_db"] is None or diff["psnr_db"] >= min_psnr


def describe(diff: dict) -> str:
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
    conditioned = " and ".join(p for p, on in (("Pokemon type", labels["types"]), ("style", labels["styles"])) if on)

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


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m diffusion.release", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ldm", required=True, help="latent diffusion run folder (or its diffusion.pt)")
    p.add_argument("--ae", default=None, help="AE run folder or ae.pt (default: the AE the LDM records)")
    p.add_argument("--out", default=None, help="output folder (default: checkpoints/release)")
    p.add_argument("--card", default=None, help="Markdown for the model card: quality, limitations, intended use")
    p.add_argument("--dtype", choices=["auto", "float16", "float32"], default="auto",
                   help="storage precision of both parts (default auto: float16 where it passes --min-psnr)")
    p.add_argument("--min-psnr", type=float, default=40.0, help="PSNR (dB) a float16 part must reach (default 40)")
    p.add_argument("--n", type=int, default=16, help="samples of the fidelity check (default 16)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of the fidelity check (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    args.ldm, args.ae, args.out, args.card = (str(user_path(a)) if a else a
                                              for a in (args.ldm, args.ae, args.out, args.card))
    if args.n <= 0:
        raise UserError(f"--n {args.n}: the number of samples must be positive")
    notes = None
    if args.card:
        try:
            notes = Path(args.card).read_text()
        except OSError as err:
            raise UserError(f"--card {args.card} cannot be read ({err.strerror}); pass a Markdown file")
    ldm_src = checkpoint_in(args.ldm, "diffusion.pt", "--ldm")
    ldm = load_checkpoint(ldm_src, kind="diffusion")
    if ldm["config"]["space"] != "latent":
        raise UserError(f"--ldm {args.ldm} is a {ldm['config']['space']}-space model; the shipped weights are a "
                        "latent model and its AE: pass a run of scripts/train_ldm.sh")
    ae_src = find_ae(ldm["ae"], ldm_src, str(checkpoint_in(args.ae, "ae.pt", "--ae")) if args.ae else None)
    if not 1 <= args.steps <= ldm["config"]["schedule"]["T"]:
        raise UserError(f"--steps {args.steps} must be between 1 and T={ldm['config']['schedule']['T']}")
    out = writable_dir(args.out or release_dir())
    device = pick_device(args.device)

    dtypes = {"ae": "float16", "ldm": "float16"} if args.dtype == "auto" else {"ae": args.dtype, "ldm": args.dtype}
    write_release(ae_src, ldm_src, dtypes, out)
    check = fidelity(ldm_src, ae_src, out, args.n, args.steps, args.seed, device)
    kept = [part for part in ("ae", "ldm") if args.dtype == "auto" and not passes(check[part], args.min_psnr)]
    for part in kept:
        print(f"{part}: float16 gives {describe(check[part])}, under {args.min_psnr:g} dB: stored in float32")
        dtypes[part] = "float32"
    if kept:
        write_release(ae_src, ldm_src, dtypes, out)
        check = fidelity(ldm_src, ae_src, out, args.n, args.steps, args.seed, device)

    sizes = {"ae_mb": (out / RELEASE_AE).stat().st_size / 1e6, "ldm_mb": (out / RELEASE_LDM).stat().st_size / 1e6}
    sizes["total_mb"] = sizes["ae_mb"] + sizes["ldm_mb"]
    meta = json.loads((out / RELEASE_CONFIG).read_text())
    meta.update({"sizes": sizes, "size_budget_mb": SIZE_BUDGET_MB, "min_psnr_db": args.min_psnr, "fidelity": check})
    (out / RELEASE_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    (out / CARD).write_text(model_card(meta, notes))

    print(f"{out / RELEASE_AE}: {sizes['ae_mb']:.2f} MB ({dtypes['ae']}), {out / RELEASE_LDM}: {sizes['ldm_mb']:.2f} MB "
          f"({dtypes['ldm']}, EMA weights), together {sizes['total_mb']:.2f} MB")
    if sizes["total_mb"] > SIZE_BUDGET_MB:
        print(f"warning: together over the {SIZE_BUDGET_MB:g} MB budget of committed weights")
    print(f"fidelity against the float32 source ({args.n} DDIM-{args.steps} samples, seed {args.seed}, "
          "float32 compute):")
    for part, what in (("ae", "AE alone"), ("ldm", "U-Net alone"), ("both", "AE and U-Net")):
        print(f"  {what:13s} {describe(check[part])}")
    print(f"-> {out / RELEASE_CONFIG}, {out / CARD}")


if __name__ == "__main__":
    run_main(main)
