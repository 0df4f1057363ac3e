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

The format, its writer and its readers are plumbing/release.py.
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
from pathlib import Path

import torch

from diffusion.denoiser import make_denoiser
from diffusion.pipeline import load_diffusion
from diffusion.samplers import ddim_sample
from diffusion.space import find_ae
from plumbing.checkpoint import load_checkpoint
from plumbing.cli import UserError, run_main, user_path
from plumbing.device import pick_device
from plumbing.release import (CARD, RELEASE_AE, RELEASE_CONFIG, RELEASE_LDM, describe, image_difference, model_card,
                              passes, release_dir, write_release)
from plumbing.runs import writable_dir

SIZE_BUDGET_MB = 20.0        # AE + LDM together: what the repository ships


def checkpoint_in(arg: str, filename: str, flag: str) -> Path:
    """`arg` itself if it is a file, else `arg`/`filename` (a run folder); UserError if neither exists."""
    path = Path(arg)
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        raise UserError(f"{flag} {arg}: no {filename} there; pass a run folder (or its {filename}) written by training")
    return path


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
