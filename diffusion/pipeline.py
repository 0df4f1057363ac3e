"""The Python API: a trained model as one object that draws Pokemon.

    from diffusion.pipeline import load_pipeline

    pipe = load_pipeline("checkpoints/release")           # or a run folder, or its diffusion.pt
    images = pipe(n=8, seed=0)                            # 8 PIL images (64x64 RGB)
    images = pipe(n=8, seed=0, type="Fire", style="artwork", guidance=3)   # a conditional model
    images = pipe(n=8, species="charmander", style="dream_world")          # a species model
    images = pipe(n=8, fuse=("charmander", "squirtle"), fuse_weight=0.5)   # a fusion of two species
    frames = pipe.reverse_process(n=16, seed=0)           # uint8 grids of x_t decoded, x_T -> x_0

`load_pipeline` takes the shipped release (a folder of safetensors weights with config.json,
written by `python -m diffusion.release`) or a training run (its folder or diffusion.pt, a torch
checkpoint read with weights_only=True); a latent model finds its AE as recorded (by path and
sha256, else a file of that name beside the checkpoint). The same seed gives the same images on
any device: every random draw comes from a CPU generator.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffusion.config import DiffusionConfig
from diffusion.guidance import DEFAULT_GUIDANCE
from diffusion.labels import Labels, SpeciesKnown, requested
from diffusion.denoiser import build_schedule, build_unet, make_denoiser, num_species, num_styles, num_types
from diffusion.samplers import ddim_sample, ddpm_sample
from diffusion.schedule import LinearSchedule
from diffusion.space import Space, checkpoint_space
from diffusion.unet import UNet
from plumbing.checkpoint import file_sha256, load_checkpoint
from plumbing.cli import UserError
from plumbing.config import from_dict
from plumbing.device import bf16_pays, pick_device
from plumbing.pictures import grid_array, save_image, to_uint8
from plumbing.release import is_release, read_release, release_dir
from plumbing.runs import newest_run_file

STATE_KIND = "diffusion-state"   # the kind of a training-state checkpoint (diffusion/train.py, plumbing/resume.py)
MAX_GUIDANCE = 20.0       # above it the guided x0 leaves the data's range and every sample saturates
MAX_SEED = 2 ** 64 - 1    # torch.Generator.manual_seed takes 64-bit seeds
SAMPLE_BATCH = 128        # samples drawn at once: a larger n is drawn in batches, memory bounded by this
MAX_SAMPLES = 1_000_000   # one request: at 8 KB a PNG that is 8 GB of files, and days of sampling on a CPU
PNG_BYTES = 13_000        # room a 64x64 RGB sample takes on disk at most (12,288 bytes of pixels and the PNG headers)


@dataclass
class Pipeline:
    """A trained diffusion model ready to sample: EMA U-Net, schedule, space, config, device."""

    model: UNet
    schedule: LinearSchedule
    space: Space
    cfg: DiffusionConfig
    device: torch.device
    source: Path
    species: SpeciesKnown | None = None   # a species model's table and trained numbers

    @property
    def conditional(self) -> dict[str, bool]:
        """Which labels the model was trained with: {"type": bool, "style": bool, "species": bool}."""
        return {"type": num_types(self.cfg) > 0, "style": num_styles(self.cfg) > 0, "species": num_species(self.cfg) > 0}

    def labels(self, types: list[str] | None, styles: list[str] | None, n: int, species: list[str] | None = None,
               fusions: list[tuple[str, str, float]] | None = None, seed: int = 0) -> tuple[Labels | None, list[str]]:
        """The labels of n samples per requested (species, type, style) and the row names (diffusion/labels.py);
        'random' species are drawn with `seed`."""
        return requested(types, styles, self.conditional["type"], self.conditional["style"], n, species=species,
                         fusions=fusions, known=self.species, seed=seed)

    def batches(self, n: int, seed: int = 0, labels: Labels | None = None, guidance: float = DEFAULT_GUIDANCE,
                sampler: str = "ddim", steps: int = 50, eta: float = 0.0, frames: int = 0, bf16: bool | None = None,
                progress=None, noise: torch.Tensor | None = None, on_frame=None, batch: int = SAMPLE_BATCH):
        """The n samples of `generate`, `batch` at a time: yields (index of the first, samples decoded to pixels
        in [-1, 1] on the CPU, recorded [(t, x_t)] (the first batch only)). One generator draws every batch in
        turn, so n up to `batch` gives the samples of one call. `noise` (DDIM; shape [n, ...]) is x_T
        instead of a draw; `on_frame(t, x_t)` sees each recorded x_t as it is made.
        Raises UserError where a batch decodes to non-finite numbers, before anything is written."""
        check_request(n, guidance, sampler, steps, eta, self.schedule.T, seed=seed)
        if noise is not None and (sampler != "ddim" or len(noise) != n):
            raise ValueError(f"a given x_T needs the DDIM sampler and one row per sample ({n}), got {sampler} and "
                             f"{len(noise)}")
        if bf16 is None:  # decided before the clock starts: bf16_pays measures the CPU once per process
            bf16 = self.cfg.train.bf16 and bf16_pays(self.device)
        gen = torch.Generator().manual_seed(seed)
        for first in range(0, n, batch):
            size = min(batch, n - first)
            part = None if labels is None else labels.index(slice(first, first + size))
            denoise = make_denoiser(self.model, self.device, bf16, part, guidance)
            shape = (size, *self.space.shape)
            record = frames if first == 0 else 0
            with torch.inference_mode():
                if sampler == "ddpm":
                    x, recorded = ddpm_sample(denoise, self.schedule, shape, gen, self.device, self.space.clip,
                                              frames=record, progress=progress, on_frame=on_frame)
                else:
                    start = None if noise is None else (self.schedule.T - 1, noise[first:first + size])
                    x, recorded = ddim_sample(denoise, self.schedule, shape, gen, self.device, self.space.clip,
                                              steps=steps, eta=eta, frames=record, progress=progress, start=start,
                                              on_frame=on_frame)
                images = self.space.decode(x).cpu()
            if not torch.isfinite(images).all():
                raise UserError(f"guidance={guidance:g} gave samples that are not finite numbers; "
                                "use a smaller guidance scale (1: conditional, 3: stronger)")
            yield first, images, recorded

    def generate(self, n: int, seed: int = 0, labels: Labels | None = None, guidance: float = DEFAULT_GUIDANCE,
                 sampler: str = "ddim", steps: int = 50, eta: float = 0.0, frames: int = 0, bf16: bool | None = None,
                 progress=None, noise: torch.Tensor | None = None, on_frame=None) -> tuple[torch.Tensor, list, float]:
        """(n samples decoded to pixels in [-1, 1] on the CPU, recorded [(t, x_t)], seconds incl. decoding).

        `labels` (len n, or None) conditions the samples (classifier-free guidance with `guidance`);
        `frames` > 0 records that many x_t along the way; `bf16` None uses bf16 autocast where the
        config and the hardware say it pays, False computes in float32. Drawn in batches (`batches`)."""
        if bf16 is None:  # decided before the clock starts: bf16_pays measures the CPU once per process
            bf16 = self.cfg.train.bf16 and bf16_pays(self.device)
        start = time.time()
        parts, recorded = [], []
        for first, images, rec in self.batches(n, seed, labels, guidance, sampler, steps, eta, frames, bf16, progress,
                                               noise, on_frame):
            parts.append(images)
            recorded = recorded or rec
        return torch.cat(parts), recorded, time.time() - start

    def __call__(self, n: int = 8, seed: int = 0, type: str | None = None, style: str | None = None,
                 guidance: float = DEFAULT_GUIDANCE, sampler: str = "ddim", steps: int = 50,
                 species: str | int | None = None, fuse: tuple[str, str] | None = None,
                 fuse_weight: float = 0.5) -> list[Image.Image]:
        """n samples as PIL images. `type` (e.g. "Fire"), `style` (artwork, dream_world, sprite_front,
        sprite_back) and `species` (a name, a Pokedex number or "random") need a model trained with
        those labels; `fuse` (two species) draws their fusion, `fuse_weight` of the way to the second.
        A style-conditional model draws artworks unless told otherwise."""
        check_request(n, guidance, sampler, steps, 0.0, self.schedule.T, seed=seed)
        labels, _ = self.labels([type] if type else None, [style] if style else None, n,
                                [species] if species is not None else None,
                                [(*fuse, fuse_weight)] if fuse else None, seed)
        images, _, _ = self.generate(n, seed, labels, guidance, sampler, steps)
        return to_pil(images)

    def morph_request(self, a: str | int, b: str | int, k: int = 5, seed: int = 0, type: str | None = None,
                      style: str | None = None) -> tuple[Labels, torch.Tensor]:
        """The labels and the x_T of a morph (`morph`): k fusions of a and b, weights 0, 1/(k-1), ..., 1,
        each starting from x_T of the first sample of `seed`."""
        if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= SAMPLE_BATCH:
            raise UserError(f"a morph of {k!r} steps: use between 2 and {SAMPLE_BATCH} (its first picture is "
                            "the first species, its last the second)")
        check_request(k, DEFAULT_GUIDANCE, "ddim", 1, 0.0, seed=seed)  # the seed (guidance and steps: at sampling)
        fusions = [(a, b, i / (k - 1)) for i in range(k)]
        labels, _ = self.labels([type] if type else None, [style] if style else None, 1, fusions=fusions, seed=seed)
        x_T = torch.randn((1, *self.space.shape), generator=torch.Generator().manual_seed(seed))
        return labels, x_T.expand(k, *self.space.shape).clone()

    def morph(self, a: str | int, b: str | int, k: int = 5, seed: int = 0, type: str | None = None,
              style: str | None = None, guidance: float = DEFAULT_GUIDANCE, steps: int = 50) -> list[Image.Image]:
        """k samples from species a to species b: fusions with the weight 0, 1/(k-1), ..., 1 on b, every
        one drawn by DDIM from the same x_T (that of the first sample of `seed`), so only the label
        changes along the row; its ends are `self(n=1, seed=seed, species=a)` and the same for b (in
        float32; under bf16 autocast within a few 8-bit levels, its kernels depending on the batch size)."""
        labels, x_T = self.morph_request(a, b, k, seed, type, style)
        images, _, _ = self.generate(k, seed, labels, guidance, steps=steps, noise=x_T)
        return to_pil(images)

    def reverse_process(self, n: int = 16, seed: int = 0, frames: int = 40, nrow: int = 4, type: str | None = None,
                        style: str | None = None, guidance: float = DEFAULT_GUIDANCE,
                        steps: int = 50, species: str | int | None = None) -> list[np.ndarray]:
        """The reverse process of n samples: `frames` uint8 grids (H x W x 3), each recorded x_t decoded,
        from x_T to x_0 (what `python -m diffusion.sample --gif` writes as reverse.gif)."""
        check_request(n, guidance, "ddim", steps, 0.0, self.schedule.T, seed=seed)
        labels, _ = self.labels([type] if type else None, [style] if style else None, n,
                                [species] if species is not None else None, seed=seed)
        _, recorded, _ = self.generate(n, seed, labels, guidance, steps=steps, frames=frames)
        with torch.inference_mode():
            return [grid_array(self.space.decode(xt).cpu(), nrow=min(nrow, n)) for _, xt in recorded]


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Samples in [-1, 1] [N, 3, H, W] as PIL images."""
    return [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in to_uint8(images)]


def save_samples(images: torch.Tensor, out: Path, first: int = 0) -> list[str]:
    """Samples written as out/0000.png, ... numbered from `first`; their file names."""
    files = [f"{first + i:04d}.png" for i in range(len(images))]
    for name, img in zip(files, images):
        save_image(img, out / name)
    return files


def check_request(n: int, guidance: float, sampler: str, steps: int, eta: float, T: int | None = None,
                  cli: bool = False, seed: int | None = None, out: Path | None = None) -> None:
    """The numbers of a sampling request, checked before any work (UserError, a ValueError, naming the fix);
    the DDIM steps against the schedule's T where it is known, the seed where given, and where `out`
    is given, the room for n PNGs on its disk. `cli`: name them as the command's flags."""
    def name(key: str, value) -> str:
        return f"--{key.replace('_', '-')} {value}" if cli else f"{key}={value!r}"

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"{name('n', n)}: the number of samples must be a positive integer")
    if n > MAX_SAMPLES:
        raise UserError(f"{name('n', n)}: at most {MAX_SAMPLES:,} samples a request (days of sampling on a CPU); "
                        "ask for fewer, or run several requests with different --seed")
    if not math.isfinite(guidance) or not 0 <= guidance <= MAX_GUIDANCE:
        raise UserError(f"{name('guidance', guidance)}: the guidance scale must be a finite number >= 0 and at most "
                        f"{MAX_GUIDANCE:g} (0: unconditional, 1: conditional, above 1: stronger)")
    if sampler not in ("ddim", "ddpm"):
        raise UserError(f"{name('sampler', sampler)}: use 'ddim' or 'ddpm'")
    if sampler == "ddim" and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1
                              or (T is not None and steps > T)):
        raise UserError(f"{name('steps', steps)} must be an integer between 1 and T={T or 'the schedule length'}")
    if not math.isfinite(eta) or not 0 <= eta <= 1:
        raise UserError(f"{name('eta', eta)}: the DDIM eta must lie in [0, 1] (0: deterministic, 1: as noisy as DDPM)")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise UserError(f"{name('seed', seed)}: a seed must be an integer from 0 to {MAX_SEED} (2^64 - 1)")
    if out is not None:
        folder = Path(out).absolute()
        while not folder.exists():  # the folder the command would create: its nearest existing parent's disk
            folder = folder.parent
        free = shutil.disk_usage(folder).free
        if n * PNG_BYTES > free:
            raise UserError(f"{name('n', n)}: {n:,} PNGs take up to {n * PNG_BYTES / 1e6:,.0f} MB and {out} has "
                            f"{free / 1e6:,.0f} MB free; ask for fewer or pass --out on a larger disk")


def read_diffusion(path: str | Path, ae_path: str | None = None) -> dict:
    """What a trained diffusion model is, from a release folder, a run folder, a diffusion.pt or a
    training state (state-<step>.pt, its EMA weights):
    {"config": dict, "shape": (C, H, W), "ema": EMA weights, "ae": {path, sha256} or None, "path": Path,
    "labels": the label names and species table it records}.
    A release's AE is its ae.safetensors (autoencoder/latents.py reads it with the config beside it)."""
    path = Path(path)
    if path.is_file() and path.name.startswith("state-"):  # a training state: its EMA weights
        state = load_checkpoint(path, kind=STATE_KIND, map_location="cpu")
        cfg, ema = state["config"], state["ema"]["shadow"]
        size = cfg["data"]["size"]  # pixels; a latent space takes its shape from its AE
        return {"config": cfg, "shape": (ema["conv_in.weight"].shape[1], size, size), "ema": ema,
                "ae": state.get("ae"), "path": path, "labels": state.get("labels", {})}
    if is_release(path):
        meta = read_release(path)
        ldm = meta["ldm"]
        ae = None
        if "ae" in meta:
            ae_file = path / meta["ae"]["file"]
            ae = {"path": str(ae_file), "sha256": file_sha256(ae_file)}
        return {"config": ldm["config"], "shape": tuple(ldm["shape"]), "ema": ldm["weights"], "ae": ae, "path": path,
                "labels": ldm.get("labels", {})}
    if path.is_dir():
        path = path / "diffusion.pt"
    ckpt = load_checkpoint(path, kind="diffusion", map_location="cpu")
    return {"config": ckpt["config"], "shape": tuple(ckpt["space"]["shape"]), "ema": ckpt["ema"],
            "ae": ckpt.get("ae"), "path": path, "labels": ckpt.get("labels", {})}


def load_diffusion(path: str | Path, device: torch.device | str = "cpu", ae_path: str | None = None) -> Pipeline:
    """A Pipeline from a release folder, a run folder or a diffusion checkpoint (module docstring).
    Weights stored in float16 (the release) are cast to float32."""
    device = torch.device(device) if isinstance(device, str) else device
    found = read_diffusion(path)
    cfg = from_dict(DiffusionConfig, found["config"])
    space = checkpoint_space(cfg, found["shape"], found["ae"], found["path"], device, ae_path)
    model = build_unet(cfg, found["shape"][0]).to(device)
    model.load_state_dict({k: v.float() for k, v in found["ema"].items()})
    model.eval().requires_grad_(False)
    return Pipeline(model, build_schedule(cfg), space, cfg, device, found["path"],
                    SpeciesKnown.from_record(found["labels"]) if num_species(cfg) else None)


def load_pipeline(path: str | Path | None = None, device: str = "auto", ae: str | None = None) -> Pipeline:
    """The model at `path` (release folder, run folder or diffusion.pt), or the one `default_checkpoint`
    picks, on `device` (auto: CUDA, else the CPU)."""
    return load_diffusion(path or default_checkpoint(), pick_device(device), ae)


def default_checkpoint() -> Path:
    """What is sampled without a path: the newest run's diffusion.pt, else the shipped release."""
    found = newest_run_file("diffusion.pt")
    if found is not None:
        return found
    if is_release(release_dir()):
        return release_dir()
    raise UserError(f"no diffusion checkpoint found: no run folder under {release_dir().parent}/ and no release in "
                    f"{release_dir()}; run scripts/train_ldm.sh or pass --ckpt")
