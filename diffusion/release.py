"""The shipped weights: half-precision copies of a latent run's AE and LDM in checkpoints/release/.

    python -m diffusion.release --ldm LDM_RUN [--ae AE_RUN] [--out checkpoints/release]
                                [--dtype auto|float16|float32] [--min-psnr 40] [--n 16] [--steps 50] [--seed 0]

LDM_RUN and AE_RUN are run folders (or the diffusion.pt / ae.pt in them); without --ae the AE that
the LDM records is used (found as `python -m diffusion.sample` finds it, checked by sha256).
Writes into --out:

    ae.pt         the AE checkpoint: config, latent statistics, data fingerprint, metrics, weights
    ldm.pt        the LDM checkpoint: config, EMA weights only (what sampling uses; the raw training
                  weights stay in the run folder), its AE re-pointed to ae.pt above, by path and sha256
    release.json  sources (path, sha256), dtype of each part, file sizes and the fidelity check

Both files are ordinary checkpoints, loaded by plumbing.checkpoint.load_checkpoint
(torch.load weights_only=True); the loaders cast float16 weights to float32 before load_state_dict.
`python -m diffusion.sample` samples ldm.pt when no training run exists (see its --help).

The fidelity check. --n samples are drawn with DDIM (--steps, --seed) from the source float32
weights and from the written files, both computed in float32 (no bf16 autocast, so only the stored
weights differ), and decoded to pixels. Each comparison gives the PSNR over all samples
(10 log10(1 / MSE) on the [0, 1] scale), the largest difference of the 8-bit images (of 255 levels)
and the share of 8-bit values that differ, for the AE alone (the float32 samples' latents decoded by
both AEs), the U-Net alone (both U-Nets' samples decoded by the float32 AE) and the whole pipeline.
With --dtype auto (the default) each part is stored in float16 where its own PSNR is at least
--min-psnr (40 dB: an RMS difference of 1% of the range, 2.6 of 255 levels) and in float32
otherwise; the numbers in release.json are those of the files as written.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from plumbing.checkpoint import file_sha256, half_precision, load_checkpoint, save_atomic
from plumbing.cli import UserError, run_main
from plumbing.device import pick_device
from plumbing.runs import RELEASE_AE, RELEASE_LDM, release_dir, writable_dir
from sprites.dataset import to_uint8

SIZE_BUDGET_MB = 20.0        # AE + LDM together (the limit for committed weights)
DTYPES = {"float16": torch.float16, "float32": torch.float32}


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


def release_ae(ae: dict, source: Path, dtype: str) -> dict:
    """The shipped AE checkpoint: everything of the source, weights in `dtype`, and where it came from."""
    return {**ae, "model": converted(ae["model"], dtype),
            "release": {"source": str(source), "source_sha256": file_sha256(source), "dtype": dtype}}


def release_ldm(ldm: dict, source: Path, dtype: str, ae_path: Path) -> dict:
    """The shipped LDM checkpoint: the EMA weights in `dtype` (no raw training weights), its AE
    re-pointed to the shipped `ae_path` by path and content hash."""
    out = {k: v for k, v in ldm.items() if k != "model"}
    out.update({"ema": converted(ldm["ema"], dtype), "ae": {"path": str(ae_path), "sha256": file_sha256(ae_path)},
                "release": {"source": str(source), "source_sha256": file_sha256(source), "dtype": dtype,
                            "source_ae_sha256": ldm["ae"]["sha256"]}})
    return out


def write_release(ae_src: Path, ldm_src: Path, dtypes: dict[str, str], out: Path) -> tuple[Path, Path]:
    """Write out/ae.pt and out/ldm.pt (atomically, the AE first: the LDM records its hash)."""
    ae_path, ldm_path = out / RELEASE_AE, out / RELEASE_LDM
    save_atomic(release_ae(load_checkpoint(ae_src, kind="autoencoder"), ae_src, dtypes["ae"]), ae_path)
    save_atomic(release_ldm(load_checkpoint(ldm_src, kind="diffusion"), ldm_src, dtypes["ldm"], ae_path), ldm_path)
    return ae_path, ldm_path


def image_difference(reference: torch.Tensor, other: torch.Tensor) -> dict:
    """How far `other` is from `reference` (images in [-1, 1]): PSNR in dB on the [0, 1] scale
    (None when identical), the largest 8-bit difference and the share of 8-bit values that differ."""
    mse = ((reference.float() - other.float()) / 2).pow(2).mean().item()
    a, b = to_uint8(reference).int(), to_uint8(other).int()
    return {"psnr_db": None if mse == 0 else 10 * math.log10(1 / mse),
            "max_abs_8bit": int((a - b).abs().max()),
            "share_8bit_differ": float((a != b).double().mean())}


def fidelity(ldm_src: Path, ae_src: Path, ldm_rel: Path, n: int, steps: int, seed: int, device) -> dict:
    """The release against its float32 source: the AE alone, the U-Net alone, and both (see the
    module docstring); every sampling run in float32 from the same seed."""
    from diffusion.sample import load_diffusion, sample_latents

    model32, schedule, space32, cfg = load_diffusion(ldm_src, device, str(ae_src))
    model16, _, space16, _ = load_diffusion(ldm_rel, device)
    x32, _ = sample_latents(model32, schedule, space32, cfg, device, n, "ddim", steps=steps, seed=seed, bf16=False)
    x16, _ = sample_latents(model16, schedule, space32, cfg, device, n, "ddim", steps=steps, seed=seed, bf16=False)
    with torch.inference_mode():
        reference = space32.decode(x32).cpu()
        return {"n": n, "sampler": f"ddim{steps}", "seed": seed,
                "ae": image_difference(reference, space16.decode(x32).cpu()),
                "ldm": image_difference(reference, space32.decode(x16).cpu()),
                "both": image_difference(reference, space16.decode(x16).cpu())}


def passes(diff: dict, min_psnr: float) -> bool:
    return diff["psnr_db"] is None or diff["psnr_db"] >= min_psnr


def describe(diff: dict) -> str:
    psnr = "identical" if diff["psnr_db"] is None else f"PSNR {diff['psnr_db']:.1f} dB"
    return (f"{psnr}, largest 8-bit difference {diff['max_abs_8bit']}/255, "
            f"{diff['share_8bit_differ']:.2%} of 8-bit values differ")


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m diffusion.release", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ldm", required=True, help="latent diffusion run folder (or its diffusion.pt)")
    p.add_argument("--ae", default=None, help="AE run folder or ae.pt (default: the AE the LDM records)")
    p.add_argument("--out", default=None, help="output folder (default: checkpoints/release)")
    p.add_argument("--dtype", choices=["auto", "float16", "float32"], default="auto",
                   help="storage precision of both parts (default auto: float16 where it passes --min-psnr)")
    p.add_argument("--min-psnr", type=float, default=40.0, help="PSNR (dB) a float16 part must reach (default 40)")
    p.add_argument("--n", type=int, default=16, help="samples of the fidelity check (default 16)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of the fidelity check (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    from diffusion.sample import find_ae

    args = parse_args(argv)
    if args.n <= 0:
        raise UserError(f"--n {args.n}: the number of samples must be positive")
    ldm_src = checkpoint_in(args.ldm, "diffusion.pt", "--ldm")
    ldm = load_checkpoint(ldm_src, kind="diffusion")
    if ldm["config"]["space"] != "latent":
        raise UserError(f"--ldm {args.ldm} is a {ldm['config']['space']}-space model; the shipped weights are a "
                        "latent model and its AE: pass a run of scripts/train_ldm.sh")
    ae_src = find_ae(ldm["ae"], ldm_src, str(checkpoint_in(args.ae, "ae.pt", "--ae")) if args.ae else None)
    if not 1 <= args.steps <= ldm["config"]["schedule"]["T"]:
        raise UserError(f"--steps {args.steps} must be between 1 and T={ldm['config']['schedule']['T']}")
    out = Path(args.out or release_dir())
    if {(out / RELEASE_AE).resolve(), (out / RELEASE_LDM).resolve()} & {ae_src.resolve(), ldm_src.resolve()}:
        raise UserError(f"--out {out} would overwrite a source checkpoint; choose another folder")
    out = writable_dir(out)
    device = pick_device(args.device)

    dtypes = {"ae": "float16", "ldm": "float16"} if args.dtype == "auto" else {"ae": args.dtype, "ldm": args.dtype}
    ae_path, ldm_path = write_release(ae_src, ldm_src, dtypes, out)
    check = fidelity(ldm_src, ae_src, ldm_path, args.n, args.steps, args.seed, device)
    kept = [part for part in ("ae", "ldm") if args.dtype == "auto" and not passes(check[part], args.min_psnr)]
    for part in kept:
        print(f"{part}: float16 gives {describe(check[part])}, under {args.min_psnr:g} dB: stored in float32")
        dtypes[part] = "float32"
    if kept:
        ae_path, ldm_path = write_release(ae_src, ldm_src, dtypes, out)
        check = fidelity(ldm_src, ae_src, ldm_path, args.n, args.steps, args.seed, device)

    sizes = {"ae_mb": ae_path.stat().st_size / 1e6, "ldm_mb": ldm_path.stat().st_size / 1e6}
    sizes["total_mb"] = sizes["ae_mb"] + sizes["ldm_mb"]
    record = {"ae": {"source": str(ae_src), "source_sha256": file_sha256(ae_src), "file": RELEASE_AE,
                     "sha256": file_sha256(ae_path), "dtype": dtypes["ae"]},
              "ldm": {"source": str(ldm_src), "source_sha256": file_sha256(ldm_src), "file": RELEASE_LDM,
                      "sha256": file_sha256(ldm_path), "dtype": dtypes["ldm"]},
              "sizes": sizes, "size_budget_mb": SIZE_BUDGET_MB, "min_psnr_db": args.min_psnr, "fidelity": check}
    (out / "release.json").write_text(json.dumps(record, indent=2) + "\n")

    print(f"{ae_path}: {sizes['ae_mb']:.2f} MB ({dtypes['ae']}), {ldm_path}: {sizes['ldm_mb']:.2f} MB "
          f"({dtypes['ldm']}, EMA weights), together {sizes['total_mb']:.2f} MB")
    if sizes["total_mb"] > SIZE_BUDGET_MB:
        print(f"warning: together over the {SIZE_BUDGET_MB:g} MB budget of committed weights")
    print(f"fidelity against the float32 source ({args.n} DDIM-{args.steps} samples, seed {args.seed}, "
          "float32 compute):")
    for part, what in (("ae", "AE alone"), ("ldm", "U-Net alone"), ("both", "AE and U-Net")):
        print(f"  {what:13s} {describe(check[part])}")
    print(f"-> {out / 'release.json'}")


if __name__ == "__main__":
    run_main(main)
