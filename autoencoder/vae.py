"""The stage-1 convolutional VAE: encoder, diagonal Gaussian posterior, decoder.

Shapes (defaults: channels = [32, 64, 128], latent_channels = 4):

    x      [B, 3, 64, 64]   pixels in [-1, 1]
    h      [B, 128, 16, 16] encoder features; f = 2 ** (len(channels) - 1) = 4
    mean, logvar [B, 4, 16, 16]  the posterior q(z | x) = N(mean, diag(exp(logvar)))
    z      [B, 4, 16, 16]   z = mean + std * eps, eps ~ N(0, I)  (reparameterisation trick)
    x_hat  [B, 3, 64, 64]   decoder output

Building blocks, kept deliberately plain:
    ResBlock:  y = x + conv3x3(silu(norm(conv3x3(silu(norm(x))))))   (1x1 conv on the skip if the
               width changes). The residual path lets the block start close to identity.
    Down:      a 2x2 conv with stride 2 (each output pixel is a learned mix of one 2x2 patch), which
               also changes the width to the next level's.
    Up:        a 2x2 transposed conv with stride 2 (each input pixel paints one 2x2 patch; the patches
               do not overlap, so there are no checkerboard artefacts), changing the width too.
Normalisation is GroupNorm (batch-size independent, so train and eval behave alike).
The number of residual blocks is set per level (`blocks`, full resolution first). The CPU default
[0, 1, 1] has none at 64x64: there the 32-wide 3x3 convolutions run at ~260 GFLOP/s in bf16 on the
development CPU against ~600-800 at the wider, smaller levels, so a full-resolution block cost 40% of
a step; dropping it trades 0.2 dB at equal epochs for 1.5x more steps (docs/design.md).

Why 2x2 resampling: on a CPU the cost is the arithmetic. A 3x3 conv at width c on an HxW map costs
2 * 9 * c_in * c_out * H * W FLOPs; the usual "upsample then 3x3 conv at the *wide* width"
(e.g. 128 channels at 32x32: 302 MFLOP per image) costs more than a whole residual block at that
level. The 2x2 stride-2 versions cost 2 * 4 * c_in * c_out * H_out * W_out / 4 (17 MFLOP for 128->64
channels from 16x16 to 32x32), and the residual blocks do the spatial mixing.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels each."""
    groups = min(32, max(1, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    """Pre-activation residual block: y = skip(x) + conv(silu(norm(conv(silu(norm(x))))))."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    """x [B,3,H,W] -> (mean, logvar) [B,C,H/f,W/f] with f = 2 ** (len(channels) - 1)."""

    def __init__(self, channels: list[int], blocks: list[int], latent_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(3, channels[0], 3, padding=1)
        layers: list[nn.Module] = []
        c = channels[0]
        for level, width in enumerate(channels):
            if level > 0:  # downsample between levels: 2x2 patches -> one pixel of the next width
                layers.append(nn.Conv2d(c, width, 2, stride=2))
                c = width
            layers += [ResBlock(c, c) for _ in range(blocks[level])]
        self.body = nn.Sequential(*layers)
        self.norm_out = norm(c)
        self.conv_out = nn.Conv2d(c, 2 * latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(self.conv_in(x))
        mean, logvar = self.conv_out(F.silu(self.norm_out(h))).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # keeps exp(logvar) finite


class Decoder(nn.Module):
    """z [B,C,h,w] -> x_hat [B,3,h*f,w*f]; the mirror image of the encoder."""

    def __init__(self, channels: list[int], blocks: list[int], latent_channels: int):
        super().__init__()
        c = channels[-1]
        self.conv_in = nn.Conv2d(latent_channels, c, 3, padding=1)
        layers: list[nn.Module] = []
        for level, width in reversed(list(enumerate(channels))):
            if level < len(channels) - 1:  # upsample between levels: one pixel -> a 2x2 patch
                layers.append(nn.ConvTranspose2d(c, width, 2, stride=2))
                c = width
            layers += [ResBlock(c, c) for _ in range(blocks[level])]
        self.body = nn.Sequential(*layers)
        self.norm_out = norm(c)
        self.conv_out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.body(self.conv_in(z)))))


class VAE(nn.Module):
    """KL-regularised autoencoder (Kingma & Welling 2014; Rombach et al. 2022, first stage).

    Colour whitening. The pixel colours of the sprites are dominated by one axis: the eigenvalues
    of their 3x3 covariance are about 0.67 (grey level), 0.039 (blue-orange) and 0.010
    (green-magenta). Gradient descent learns the directions of a (near-)linear map in the order of
    their variance, so an AE trained for minutes reproduces grey levels, then blue-orange, and
    green Pokemon come back grey-blue. With `set_colour_statistics` the network works on whitened
    colours instead, a fixed invertible map computed from the training pixels:
        x_w = W (x - m),  W = Lambda^(-1/2) U^T    (U Lambda U^T = Cov(x), m = mean colour)
    The encoder sees x_w; the decoder's raw output is in whitened units and is mapped back with
    x = U Lambda^(1/2) x_w + m. Without statistics W is the identity (plain RGB).
    """

    def __init__(self, channels: list[int], blocks: int | list[int], latent_channels: int):
        super().__init__()
        if isinstance(blocks, int):  # the same number of residual blocks at every level
            blocks = [blocks] * len(channels)
        if len(blocks) != len(channels):
            raise ValueError(f"blocks {blocks} needs one entry per level of channels {channels}")
        self.downsample_factor = 2 ** (len(channels) - 1)
        self.latent_channels = latent_channels
        self.encoder = Encoder(channels, blocks, latent_channels)
        self.decoder = Decoder(channels, blocks, latent_channels)
        self.register_buffer("colour_mean", torch.zeros(3))
        self.register_buffer("colour_to_white", torch.eye(3))
        self.register_buffer("colour_from_white", torch.eye(3))

    @torch.no_grad()
    def set_colour_statistics(self, pixels: torch.Tensor) -> None:
        """Compute m, W and W^-1 from images [N, 3, H, W] in [-1, 1] (see the class docstring)."""
        flat = pixels.detach().float().permute(1, 0, 2, 3).reshape(3, -1)
        mean = flat.mean(dim=1)
        eigval, eigvec = torch.linalg.eigh(torch.cov(flat))
        eigval = eigval.clamp_min(1e-6)
        self.colour_mean.copy_(mean)
        self.colour_to_white.copy_(torch.diag(eigval.rsqrt()) @ eigvec.T)
        self.colour_from_white.copy_(eigvec @ torch.diag(eigval.sqrt()))

    def whiten(self, x: torch.Tensor) -> torch.Tensor:
        """x_w = W (x - m), per pixel."""
        return torch.einsum("ij,bjhw->bihw", self.colour_to_white, x - self.colour_mean.view(1, 3, 1, 1))

    def unwhiten(self, x_w: torch.Tensor) -> torch.Tensor:
        """x = W^-1 x_w + m, per pixel."""
        return torch.einsum("ij,bjhw->bihw", self.colour_from_white, x_w) + self.colour_mean.view(1, 3, 1, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters (mean, logvar) of q(z | x)."""
        return self.encoder(self.whiten(x))

    @staticmethod
    def sample_posterior(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None):
        """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I): differentiable in mean and logvar."""
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output clipped to the pixel range [-1, 1] (for pictures and metrics)."""
        return self.unwhiten(self.decoder(z)).clamp(-1.0, 1.0)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None):
        """Training pass: returns the unclipped reconstruction (so the L1 gradient never vanishes
        at the range edges) and the posterior parameters for the KL term. `eps` is the N(0, I) noise
        of the posterior sample z = mean + std * eps (drawn here from torch's global generator when
        not given; the trainer passes its own, drawn for the whole global batch, so that any number
        of processes draws the same noise)."""
        mean, logvar = self.encode(x)
        if eps is not None:
            z = mean + torch.exp(0.5 * logvar) * eps.to(mean.device)
        else:
            z = self.sample_posterior(mean, logvar)
        return self.unwhiten(self.decoder(z)), mean, logvar
