"""Non-leaking augmentation (Karras et al. 2022, "Elucidating the design space", appendix C.3).

A diffusion model trained on augmented images learns to draw augmented images too (rotated,
shifted, shrunk creatures) unless it is told which images were augmented. So every transform is
applied with probability p on its own, and its parameters go to the U-Net as a condition
(diffusion/unet.py, the `aug` embedding); sampling passes zeros, the parameters of "not
augmented", so the samples are drawn from the un-augmented distribution while the network has
learned from many more views. The transforms, on the training x_0 (pixels or latents, [B, C, H, W]):

    x-flip               mirror left-right                         parameter: 1
    integer translation  shift by (dx, dy) cells, dx, dy ~ U{-H/8..H/8}, edges replicated
                                                                   parameters: dx / H, dy / W
    isotropic scaling    zoom by s = 2^N(0, 0.2^2) about the centre (bilinear; edges replicated)
                                                                   parameter: log2 s
    rotation             by k * 90 degrees, k ~ U{1, 2, 3}         parameters: sin, cos - 1

The parameters of a transform not applied are 0 (so "not augmented" is the zero vector). On the
latent grid flips, rotations by 90 degrees and integer shifts are exact; scaling resamples. The
data loader's own random flips (data.hflip) stay as they are: mirror images are valid Pokemon.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

AUG_DIM = 6   # [x-flip, dx, dy, log2 scale, sin, cos - 1]


def augment(x: torch.Tensor, p: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(augmented copy of x [B, C, H, W], parameters [B, AUG_DIM]); every transform applied with
    probability p, independently per image and transform. A fixed number of draws per batch from
    `generator` whatever p is, so a run's later draws do not depend on p."""
    b, _, h, w = x.shape
    apply = torch.rand(b, 4, generator=generator) < p
    shift_u, scale_n, rot_u = (torch.rand(b, 2, generator=generator), torch.randn(b, generator=generator),
                               torch.rand(b, generator=generator))
    params = torch.zeros(b, AUG_DIM)
    out = x.clone()

    flip = apply[:, 0]
    out[flip] = out[flip].flip(-1)
    params[flip, 0] = 1.0

    reach = max(1, h // 8)
    shifts = (shift_u * (2 * reach + 1)).floor().long() - reach       # U{-reach..reach}
    shifts[~apply[:, 1]] = 0
    for i in torch.nonzero(shifts.abs().sum(1) > 0).flatten().tolist():
        out[i] = shifted(out[i], int(shifts[i, 0]), int(shifts[i, 1]))
    params[:, 1] = shifts[:, 0] / h
    params[:, 2] = shifts[:, 1] / w

    log_scale = 0.2 * scale_n * apply[:, 2]
    scaled = torch.nonzero(apply[:, 2]).flatten()
    if len(scaled):
        out[scaled] = zoomed(out[scaled], 2.0 ** log_scale[scaled])
    params[:, 3] = log_scale

    k = (1 + (rot_u * 3).floor().long()) * apply[:, 3]                 # 0 (not applied) or 1..3
    for i in torch.nonzero(k).flatten().tolist():
        out[i] = torch.rot90(out[i], int(k[i]), dims=(-2, -1))
    angle = k.double() * math.pi / 2
    params[:, 4] = torch.sin(angle).float()
    params[:, 5] = (torch.cos(angle) - 1).float()
    return out, params


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x [C, H, W] moved by dy rows and dx columns, the cells moved in copied from the edges."""
    c, h, w = x.shape
    padded = F.pad(x[None], (abs(dx), abs(dx), abs(dy), abs(dy)), mode="replicate")[0]
    top, left = abs(dy) - dy, abs(dx) - dx
    return padded[:, top:top + h, left:left + w]


def zoomed(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [B, C, H, W] magnified by scale [B] about the centre (bilinear, edges replicated)."""
    b = len(x)
    theta = torch.zeros(b, 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale.to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
