"""What stage 2 needs from stage 1: a frozen AE loaded from its checkpoint, and latent statistics.

Latent scaling. The diffusion prior of stage 2 assumes data of roughly unit variance (its forward
process ends in N(0, I) only relative to that scale). Rombach et al. (2022) rescale the latents
by one global factor,
        s = 1 / std(z)      over all training latents z ~ q(z | x),
and we also store per-channel mean m_c and std s_c, which allow the per-channel standardisation
        z'_c = (z_c - m_c) / s_c.
Both are computed once, after training, and saved in the AE checkpoint.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from autoencoder.config import AEConfig
from autoencoder.vae import VAE
from plumbing.checkpoint import load_checkpoint
from plumbing.config import from_dict
from plumbing.release import read_part
from sprites.dataset import to_unit_range


def build_vae(cfg: AEConfig) -> VAE:
    return VAE(cfg.model.channels, cfg.model.blocks, cfg.model.latent_channels)


def load_autoencoder(path: str | Path, device: torch.device | str = "cpu") -> tuple[VAE, dict]:
    """A frozen VAE in eval mode, and its checkpoint dict (config, latent stats, fingerprint...).

    `path` is an AE checkpoint of a training run (ae.pt), or the ae.safetensors of a release, whose
    config and latent statistics are in the config.json beside it (diffusion/release.py)."""
    path = Path(path)
    if path.suffix == ".safetensors":  # a release's part (plumbing/release.py)
        part = read_part(path)
        ckpt = {**part, "model": part["weights"]}
    else:
        ckpt = load_checkpoint(path, kind="autoencoder")
    cfg = from_dict(AEConfig, ckpt["config"])
    vae = build_vae(cfg)
    vae.load_state_dict({k: v.float() for k, v in ckpt["model"].items()})
    vae.to(device).eval().requires_grad_(False)
    return vae, ckpt


@torch.no_grad()
def encode_posterior(vae: VAE, images: torch.Tensor, batch_size: int = 64, device="cpu", flip: bool = False,
                     progress: tqdm | None = None):
    """(mean, std) of q(z | x) for every image (mirrored left-right with `flip`); images are float in
    [-1, 1], or uint8 pixels converted batch by batch (a large set never exists as floats at once).
    `progress`, a tqdm bar, advances by the images encoded. In float32: measured on the 2-core AMD
    EPYC, batches of 64 encode fastest (docs/performance.md), and bf16 would round the latents that
    stage 2 trains on."""
    means, stds = [], []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        x = to_unit_range(x) if x.dtype == torch.uint8 else x
        mean, logvar = vae.encode((x.flip(-1) if flip else x).to(device))
        means.append(mean.float().cpu())
        stds.append(torch.exp(0.5 * logvar.float()).cpu())
        if progress is not None:
            progress.update(len(x))
    return torch.cat(means), torch.cat(stds)


def latent_statistics(mean: torch.Tensor, std: torch.Tensor, seed: int = 0) -> dict:
    """Global scale factor and per-channel mean/std of z ~ q(z | x) over a set of posteriors.

    One posterior sample per image (z = mean + std * eps), as Rombach et al. do on a batch.
    """
    gen = torch.Generator().manual_seed(seed)
    z = mean + std * torch.randn(mean.shape, generator=gen)
    return {
        "scale": float(1.0 / z.std()),
        "channel_mean": z.mean(dim=(0, 2, 3)).tolist(),
        "channel_std": z.std(dim=(0, 2, 3)).tolist(),
        "global_mean": float(z.mean()),
        "global_std": float(z.std()),
    }


def spatial_smoothness(z: torch.Tensor) -> dict:
    """How much the latents look like a small picture rather than a texture code.

    Each channel of z [N, C, H, W] is standardised over the set, z' = (z - m_c) / s_c. Then
      * neighbour correlation: rho = mean of z'[h, w] z'[h, w+1] and z'[h, w] z'[h+1, w]
        (about 0.8 for sprites downsampled to 16x16, 0 for white noise);
      * high-frequency power: with each map's own mean removed, the share of
        sum |FFT2(z')|^2 at radial frequencies r = sqrt(f_h^2 + f_w^2) > 1/4 cycle per sample
        (half of the Nyquist frequency 1/2). White noise spreads its power evenly over the
        frequency bins, so it has the share of bins with r > 1/4; smooth images much less.
    A DDPM builds images coarse to fine; latents whose power sits at high frequencies must be
    generated nearly position by position (Skorokhodov et al. 2025; docs/design.md).
    """
    z = z.float()
    z = (z - z.mean(dim=(0, 2, 3), keepdim=True)) / z.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    rho = 0.5 * ((z[..., 1:] * z[..., :-1]).mean() + (z[..., 1:, :] * z[..., :-1, :]).mean())
    centred = z - z.mean(dim=(2, 3), keepdim=True)
    power = torch.fft.fft2(centred).abs().pow(2).sum(dim=(0, 1))
    f_h = torch.fft.fftfreq(z.shape[-2]).view(-1, 1)
    f_w = torch.fft.fftfreq(z.shape[-1]).view(1, -1)
    high = (f_h ** 2 + f_w ** 2).sqrt() > 0.25
    return {"neighbour_correlation": float(rho), "high_frequency_power": float(power[high].sum() / power.sum())}
