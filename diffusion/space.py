"""Where diffusion happens: pixels, or a frozen VAE's normalised latents.

This is the only thing that differs between the pixel-space baseline and the latent model; the
schedule, the U-Net, the loss and the samplers are the same code. A space (`Space`) knows
    name, shape   "pixel" or "latent", and the shape of one diffusion sample x_0 (C, H, W)
    clip          whether x0 predictions may be clipped to a known data range ([-1, 1] pixels)
    prepare(imgs) what training needs once: for latents, every training image encoded
    batch(...)    x_0 for a batch of training images (with their flips)
    encode(pix)   pixels in [-1, 1] -> x_0 (for pictures of the forward process)
    decode(x)     x_0 (or any x_t) -> pixels in [-1, 1]
    all_x0()      every training x_0 (unflipped), for statistics

Latent normalisation (see autoencoder/latents.py): each channel is standardised, (z_c - m_c) / s_c,
with the per-channel mean and std of the training latents stored in the AE checkpoint. The
latent x_0 of an image is its posterior mean (the VAE's q(z|x) sampled anew each epoch gave worse
samples: docs/design.md, "What the DDPM trains on").

`training_space` builds the space of a config for training, `checkpoint_space` the space of a
trained model: the one place each is built.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm

from autoencoder.latents import encode_posterior, load_autoencoder
from diffusion.config import DiffusionConfig
from plumbing.checkpoint import file_sha256, read_cache, save_atomic
from plumbing.cli import UserError
from plumbing.runs import newest_run_file
from sprites.dataset import pixel_batch, to_unit_range


class Space(Protocol):
    name: str
    shape: tuple[int, int, int]
    clip: bool

    def prepare(self, images_uint8: torch.Tensor, cache: Path | None = None) -> None: ...
    def batch(self, idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor: ...
    def encode(self, pixels: torch.Tensor) -> torch.Tensor: ...
    def decode(self, x: torch.Tensor) -> torch.Tensor: ...
    def all_x0(self) -> torch.Tensor: ...


class PixelSpace:
    """Diffusion directly on pixels in [-1, 1]."""

    name = "pixel"
    clip = True

    def __init__(self, size: int):
        self.shape = (3, size, size)
        self.images = None

    def prepare(self, images_uint8: torch.Tensor, cache: Path | None = None) -> None:
        self.images = images_uint8

    def batch(self, idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        return pixel_batch(self.images, idx, flip)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-1, 1)

    def all_x0(self) -> torch.Tensor:
        """Every (unflipped) training x_0, for statistics."""
        return to_unit_range(self.images)


class LatentSpace:
    """Diffusion on a frozen VAE's posterior means, normalised to about unit variance."""

    name = "latent"
    clip = False  # latents have no known range: never clip them

    def __init__(self, vae, latent_stats: dict, device: torch.device, size: int):
        self.vae, self.device = vae, device
        c = vae.latent_channels
        self.shape = (c, size // vae.downsample_factor, size // vae.downsample_factor)
        self.shift = torch.tensor(latent_stats["channel_mean"]).view(1, c, 1, 1)          # m_c
        self.scale = 1.0 / torch.tensor(latent_stats["channel_std"]).view(1, c, 1, 1)     # 1 / s_c
        self.post_mean = None

    def prepare(self, images_uint8: torch.Tensor, cache: Path | None = None, batch_size: int = 64) -> None:
        """Encode the training images and their mirror images once (q(z|x)'s means), or read them from
        `cache` (a file keyed by the AE and the images: see `latent_cache`), writing it when missing. A
        cache read is memory-mapped: the training processes of one machine share one copy."""
        means = read_cache(cache, mmap=True)
        if isinstance(means, torch.Tensor) and means.shape[:2] == (2, len(images_uint8)):
            self.post_mean = means
            return
        with tqdm(total=2 * len(images_uint8), desc="encoding latents (each image and its mirror image)",
                  unit="img", disable=len(images_uint8) < 2048) as bar:  # a large set takes minutes
            self.post_mean = torch.stack([encode_posterior(self.vae, images_uint8, batch_size, self.device, flip=flip,
                                                           progress=bar)[0]
                                          for flip in (False, True)])  # [2 (plain, mirrored), N, C, h, w]
        if cache is not None:
            save_atomic(self.post_mean, cache)

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        """z -> (z - shift) * scale."""
        return (z - self.shift.to(z)) * self.scale.to(z)

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """x -> x / scale + shift (the inverse of normalise)."""
        return x / self.scale.to(x) + self.shift.to(x)

    def batch(self, idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """x_0 = normalise(mean of q(z | x)) for the images idx (mirrored where `flip`)."""
        return self.normalise(self.post_mean[flip.long(), idx])

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        mean, _ = self.vae.encode(pixels.to(self.device))
        return self.normalise(mean.float())

    @torch.no_grad()
    def decode(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        out = [self.vae.decode(self.denormalise(x[i:i + batch_size].to(self.device))).float()
               for i in range(0, len(x), batch_size)]
        return torch.cat(out)

    def all_x0(self) -> torch.Tensor:
        """Every (unflipped) training latent, posterior means, normalised."""
        return self.normalise(self.post_mean[0])


def latent_cache(cache_dir: str | None, ae_sha256: str, images_key: str) -> Path | None:
    """Where the encoded training images of an AE are kept: <cache_dir>/latents_<AE>_<images>.pt."""
    return None if not cache_dir else Path(cache_dir) / f"latents_{ae_sha256[:16]}_{images_key[:16]}.pt"


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


def latent_space(ae_path: Path, cfg: DiffusionConfig, device: torch.device) -> LatentSpace:
    """The latent space of a config on the AE in `ae_path` (which must be trained at data.size)."""
    vae, ae_ckpt = load_autoencoder(ae_path, device)
    ae_size = ae_ckpt["config"]["data"]["size"]
    if ae_size != cfg.data.size:
        raise UserError(f"data.size={cfg.data.size} but the AE {ae_path} was trained at {ae_size}px; "
                        f"set data.size={ae_size}")
    return LatentSpace(vae, ae_ckpt["latent"], device, cfg.data.size)


def training_space(cfg: DiffusionConfig, device: torch.device, trained_on: dict | None = None):
    """(space, AE record {path, sha256} or None) of a config for training.

    The AE is ae.ckpt, else `trained_on` (the AE of a resumed run, or of the model a fine-tuning
    run starts from), else the newest checkpoints/*/ae.pt; with `trained_on`, whichever is used must
    have its sha256."""
    if cfg.space == "pixel":
        return PixelSpace(cfg.data.size), None
    if cfg.ae.ckpt:
        ae_path = Path(cfg.ae.ckpt)
    elif trained_on:
        ae_path = Path(trained_on["path"])
    else:
        ae_path = newest_run_file("ae.pt")
        if ae_path is None:
            raise UserError("no AE checkpoint found under checkpoints/; run scripts/train_ae.sh first or pass "
                            "ae.ckpt=PATH")
    if not ae_path.is_file():
        raise UserError(f"AE checkpoint {ae_path} not found; pass the AE with ae.ckpt=PATH")
    sha = file_sha256(ae_path)
    if trained_on and sha != trained_on["sha256"]:
        raise UserError(f"AE {ae_path} is not the one this model was trained on (sha256 {trained_on['sha256'][:12]}); "
                        "pass the matching AE with ae.ckpt=PATH")
    return latent_space(ae_path, cfg, device), {"path": str(ae_path), "sha256": sha}


def checkpoint_space(cfg: DiffusionConfig, shape: tuple, ae_record: dict | None, ckpt_path: str | Path,
                     device: torch.device, ae_path: str | None = None):
    """The space of a trained model: pixels, or its AE's latents (found by `find_ae`)."""
    if cfg.space == "pixel":
        return PixelSpace(shape[-1])
    return latent_space(find_ae(ae_record, ckpt_path, ae_path), cfg, device)
