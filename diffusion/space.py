"""Where diffusion happens: pixels, or a frozen VAE's normalised latents.

This is the only thing that differs between the pixel-space baseline and the latent model; the
schedule, the U-Net, the loss and the samplers are the same code. A space knows
    shape          the shape of one diffusion sample x_0 (C, H, W)
    clip           whether x0 predictions may be clipped to a known data range ([-1, 1] pixels)
    batch(...)     x_0 for a batch of training images (with their flips)
    encode(pix)    pixels in [-1, 1] -> x_0 (for pictures of the forward process)
    decode(x)      x_0 (or any x_t) -> pixels in [-1, 1]

Latent normalisation (see autoencoder/latents.py): "global" multiplies by one scale factor
s = 1 / std(z) (Rombach et al. 2022); "channel" standardises each channel, (z_c - m_c) / s_c.
"""
from __future__ import annotations

import torch

from sprites.dataset import pixel_batch, to_unit_range


class PixelSpace:
    """Diffusion directly on pixels in [-1, 1]."""

    name = "pixel"
    clip = True

    def __init__(self, size: int):
        self.shape = (3, size, size)
        self.images = None

    def prepare(self, images_uint8: torch.Tensor) -> None:
        self.images = images_uint8

    def batch(self, idx: torch.Tensor, flip: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return pixel_batch(self.images, idx, flip)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-1, 1)

    def all_x0(self) -> torch.Tensor:
        """Every (unflipped) training x_0, for statistics."""
        return to_unit_range(self.images)


class LatentSpace:
    """Diffusion on a frozen VAE's latents, normalised to about unit variance."""

    name = "latent"
    clip = False  # latents have no known range: never clip them

    def __init__(self, vae, latent_stats: dict, norm: str, posterior: str, device: torch.device, size: int):
        self.vae, self.device = vae, device
        self.norm, self.posterior = norm, posterior
        c = vae.latent_channels
        self.shape = (c, size // vae.downsample_factor, size // vae.downsample_factor)
        if norm == "global":
            self.shift = torch.zeros(1, c, 1, 1)
            self.scale = torch.full((1, c, 1, 1), latent_stats["scale"])
        else:  # per-channel standardisation
            self.shift = torch.tensor(latent_stats["channel_mean"]).view(1, c, 1, 1)
            self.scale = 1.0 / torch.tensor(latent_stats["channel_std"]).view(1, c, 1, 1)
        self.post_mean = self.post_std = None

    def prepare(self, images_uint8: torch.Tensor, batch_size: int = 64) -> None:
        """Encode the training images and their flips once; keep q(z|x)'s mean and std."""
        from autoencoder.latents import encode_posterior

        stats = [encode_posterior(self.vae, images_uint8, batch_size, self.device, flip=flip) for flip in (False, True)]
        self.post_mean = torch.stack([m for m, _ in stats])  # [2 (plain, mirrored), N, C, h, w]
        self.post_std = torch.stack([s for _, s in stats])

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        """z -> (z - shift) * scale."""
        return (z - self.shift.to(z)) * self.scale.to(z)

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """x -> x / scale + shift (the inverse of normalise)."""
        return x / self.scale.to(x) + self.shift.to(x)

    def batch(self, idx: torch.Tensor, flip: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """x_0 = normalise(z), z = mean + std * eps ~ q(z | x)  (or z = mean with posterior=mean)."""
        mean = self.post_mean[flip.long(), idx]
        if self.posterior == "sample":
            std = self.post_std[flip.long(), idx]
            mean = mean + std * torch.randn(mean.shape, generator=generator)
        return self.normalise(mean)

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
