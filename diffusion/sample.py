"""Sample from a trained diffusion checkpoint (latent or pixel space).

    python -m diffusion.sample --ckpt CKPT --n 64 --sampler ddpm|ddim --steps 50 --seed 0 --out DIR [--gif]
    python -m diffusion.sample --ckpt CKPT --type Fire [--type Water ...] --guidance 3.0 ...   (conditional)
    python -m diffusion.sample --ckpt CKPT --type all --n 8 ...    (one row of n samples per type)

Writes DIR/grid.png, one PNG per sample (DIR/0000.png, ...) and, with --gif, DIR/reverse.gif:
the reverse process x_T -> x_0 for a grid of samples, each shown x_t decoded to pixels.
The same seed gives the same images.

Without --ckpt: the newest checkpoints/*/diffusion.pt of a training run (your own training wins),
and when there is none, as in a fresh clone, the shipped weights checkpoints/release/ldm.pt with
their AE checkpoints/release/ae.pt (python -m diffusion.release). To sample the shipped weights
while run folders exist, pass --ckpt checkpoints/release/ldm.pt. A latent checkpoint finds its AE
at the recorded path, else as a file of the same name beside the checkpoint; its sha256 must match.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from diffusion.config import DiffusionConfig
from diffusion.sampling import ddim_sample, ddim_timesteps, ddpm_sample
from diffusion.space import LatentSpace, PixelSpace
from diffusion.train import build_schedule, build_unet, make_denoiser, num_classes
from plumbing.checkpoint import file_sha256, load_checkpoint
from plumbing.cli import UserError, run_main
from plumbing.config import from_dict
from plumbing.device import bf16_pays, pick_device
from plumbing.pictures import grid_array, label_rows, save_gif, save_grid, save_image
from plumbing.runs import RELEASE_LDM, newest_run_file, release_dir, writable_dir
from sprites.labels import TYPES, parse_type


def find_ae(record: dict, ckpt_path: str | Path, ae_path: str | None = None) -> Path:
    """The AE file of a latent checkpoint: `ae_path` if given, else the recorded path, else a file of
    the recorded name beside the checkpoint (a moved run folder, the shipped pair). Its sha256 must be
    the recorded one."""
    if ae_path:
        path = Path(ae_path)
        if not path.is_file():
            raise UserError(f"AE {path} not found; pass the AE this model was trained on with --ae PATH")
    else:
        path = Path(record["path"])
        beside = Path(ckpt_path).parent / path.name
        if not path.is_file() and beside.is_file():
            path = beside
        if not path.is_file():
            raise UserError(f"the AE this model was trained on ({record['path']}) is missing; pass it with --ae PATH")
    if file_sha256(path) != record["sha256"]:
        raise UserError(f"AE {path} is not the one this model was trained on (sha256 {record['sha256'][:12]}...); "
                        "pass the matching AE with --ae PATH")
    return path


def load_diffusion(ckpt_path: str | Path, device: torch.device, ae_path: str | None = None):
    """(EMA model in eval mode, schedule, space, config) from a diffusion checkpoint.

    A latent checkpoint names its AE by path and sha256 (`find_ae`). Weights stored in float16 (the
    shipped ones) are cast to float32 before loading.
    """
    ckpt = load_checkpoint(ckpt_path, kind="diffusion", map_location="cpu")
    cfg = from_dict(DiffusionConfig, ckpt["config"])
    shape = tuple(ckpt["space"]["shape"])
    if cfg.space == "pixel":
        space = PixelSpace(shape[-1])
    else:
        from autoencoder.latents import load_autoencoder

        vae, ae_ckpt = load_autoencoder(find_ae(ckpt["ae"], ckpt_path, ae_path), device)
        space = LatentSpace(vae, ae_ckpt["latent"], cfg.ae.norm, cfg.ae.posterior, device, cfg.data.size)
    model = build_unet(cfg, shape[0]).to(device)
    model.load_state_dict({k: v.float() for k, v in ckpt["ema"].items()})
    model.eval().requires_grad_(False)
    return model, build_schedule(cfg), space, cfg


def default_checkpoint() -> Path:
    """The checkpoint sampled without --ckpt: the newest run's diffusion.pt, else the shipped weights."""
    found = newest_run_file("diffusion.pt")
    if found is not None:
        return found
    shipped = release_dir() / RELEASE_LDM
    if shipped.is_file():
        return shipped
    raise UserError(f"no diffusion checkpoint found: no run folder under {shipped.parent.parent}/ and no shipped "
                    f"{shipped}; run scripts/train_ldm.sh or pass --ckpt")


def load_unconditional(ckpt: str | None, device_name: str, ae: str | None):
    """(checkpoint path, device, EMA model, schedule, space, config) of the unconditional checkpoint a
    diagnostic runs on (`ckpt`, else the one `diffusion.sample` would take); a type-conditional one is
    a one-line error. For the diagnostics reports.restore and reports.trajectory."""
    ckpt_path = ckpt or default_checkpoint()
    device = pick_device(device_name)
    model, schedule, space, cfg = load_diffusion(ckpt_path, device, ae)
    if num_classes(cfg) > 0:
        raise UserError(f"{ckpt_path} is type-conditional; pass an unconditional checkpoint")
    return ckpt_path, device, model, schedule, space, cfg


def sample_latents(model, schedule, space, cfg: DiffusionConfig, device: torch.device, n: int, sampler: str = "ddim",
                   steps: int = 50, eta: float = 0.0, seed: int = 0, labels: torch.Tensor | None = None,
                   guidance: float = 3.0, frames: int = 0, bf16: bool | None = None, progress=None):
    """(x_0 [n, *space.shape] in the diffusion space, recorded [(t, x_t), ...]) of n samples.

    The seed fixes x_T and every later noise draw (a CPU generator), so it gives the same samples on
    any device. `bf16`: None uses bf16 autocast where the config and the hardware say it pays (as
    training did); False computes in float32.
    """
    gen = torch.Generator().manual_seed(seed)
    use_bf16 = (cfg.train.bf16 and bf16_pays(device)) if bf16 is None else bf16
    denoise = make_denoiser(model, schedule, cfg.model.x0_skip, device, use_bf16, labels, guidance)
    shape = (n, *space.shape)
    with torch.inference_mode():
        if sampler == "ddpm":
            return ddpm_sample(denoise, schedule, shape, gen, device, space.clip, frames=frames, progress=progress)
        return ddim_sample(denoise, schedule, shape, gen, device, space.clip, steps=steps, eta=eta, frames=frames,
                           progress=progress)


def generate(model, schedule, space, cfg: DiffusionConfig, device: torch.device, n: int, sampler: str = "ddim",
             **kwargs) -> tuple[torch.Tensor, list, float]:
    """(n samples decoded to pixels in [-1, 1] on the CPU, recorded frames, seconds taken including the
    decoding); keyword arguments as `sample_latents`."""
    bf16 = kwargs.pop("bf16", None)
    if bf16 is None:  # decided before the clock starts: bf16_pays measures the CPU once per process
        bf16 = cfg.train.bf16 and bf16_pays(device)
    start = time.time()
    x, recorded = sample_latents(model, schedule, space, cfg, device, n, sampler, bf16=bf16, **kwargs)
    with torch.inference_mode():
        images = space.decode(x).cpu()
    return images, recorded, time.time() - start


def reverse_gif(space, recorded: list, k: int, path: str | Path, nrow: int = 4) -> int:
    """The reverse process of the first k samples as a GIF, each recorded x_t decoded to pixels
    (tiles at native size); returns the number of frames."""
    frames = []
    with torch.inference_mode():
        for _, xt in recorded:
            frames.append(grid_array(space.decode(xt[:k]).cpu(), nrow=min(nrow, k)))
    save_gif(frames, path)
    return len(frames)


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m diffusion.sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None,
                   help="diffusion checkpoint (default: the newest checkpoints/*/diffusion.pt of a training run, "
                        "else the shipped checkpoints/release/ldm.pt)")
    p.add_argument("--ae", default=None, help="AE checkpoint, if not at the path recorded in the diffusion checkpoint")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50; DDPM always uses all T)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="samples", help="output folder (default: samples/)")
    p.add_argument("--gif", action="store_true", help="also write reverse.gif of the reverse process")
    p.add_argument("--gif-n", type=int, default=16, help="samples shown in the GIF (default 16)")
    p.add_argument("--type", action="append", default=None, dest="types",
                   help="Pokemon type to sample (type-conditional checkpoints); repeat it for several types, "
                        "each getting --n samples, or 'all' for one row of --n per type")
    p.add_argument("--guidance", type=float, default=3.0,
                   help="classifier-free guidance scale (0: unconditional, 1: conditional, >1: stronger; default 3)")
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def sample_labels(types: list[str] | None, n: int, conditional: bool) -> tuple[torch.Tensor | None, int]:
    """(labels of the samples or None, how many samples) for the --type arguments."""
    if not types:
        return None, n
    if not conditional:
        raise UserError("this checkpoint is unconditional (trained without cond.labels); drop --type, or train "
                        "with cond.labels=type1 (configs/ldm_types.yaml)")
    if any(name.lower() == "all" for name in types):
        chosen = list(range(len(TYPES)))
    else:
        chosen = [parse_type(name) for name in types]
    labels = torch.tensor(chosen).repeat_interleave(n)
    return labels, len(labels)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.n <= 0:
        raise UserError(f"--n {args.n}: the number of samples must be positive")
    if args.gif and not 1 <= args.gif_n:
        raise UserError(f"--gif-n {args.gif_n}: the number of samples in the GIF must be positive")
    if args.eta < 0:
        raise UserError(f"--eta {args.eta} must be >= 0")
    ckpt_path = args.ckpt or default_checkpoint()
    if not args.ckpt:
        print(f"no --ckpt: sampling {ckpt_path}")
    device = pick_device(args.device)
    model, schedule, space, cfg = load_diffusion(ckpt_path, device, args.ae)
    if args.sampler == "ddim" and not 1 <= args.steps <= schedule.T:
        raise UserError(f"--steps {args.steps} must be between 1 and T={schedule.T}")
    out = writable_dir(args.out)

    labels, n = sample_labels(args.types, args.n, num_classes(cfg) > 0)
    n_steps = schedule.T if args.sampler == "ddpm" else len(ddim_timesteps(schedule.T, args.steps))
    with tqdm(total=n_steps, desc=f"{args.sampler} sampling", unit="step") as bar:
        images, recorded, seconds = generate(model, schedule, space, cfg, device, n, args.sampler, steps=args.steps,
                                             eta=args.eta, seed=args.seed, labels=labels, guidance=args.guidance,
                                             frames=40 if args.gif else 0, progress=bar)
    if labels is not None and n > args.n:  # several types: one labelled row per type
        grid = grid_array(images, nrow=args.n)
        row_names = [TYPES[i] if i < len(TYPES) else "no label" for i in labels[::args.n].tolist()]
        Image.fromarray(label_rows(grid, row_names, row_height=images.shape[-2])).save(out / "grid.png")
    else:
        save_grid(images, out / "grid.png")
    for i, img in enumerate(images):
        save_image(img, out / f"{i:04d}.png")
    what = "" if labels is None else f", types {', '.join(TYPES[i] for i in labels.unique_consecutive().tolist())}, guidance {args.guidance}"
    print(f"{n} samples ({args.sampler}, {n_steps} steps, seed {args.seed}{what}) in {seconds:.1f}s -> {out}/grid.png")
    if args.gif:
        frames = reverse_gif(space, recorded, min(args.gif_n, n), out / "reverse.gif")
        print(f"reverse process ({frames} frames) -> {out}/reverse.gif")


if __name__ == "__main__":
    run_main(main)
