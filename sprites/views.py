"""Other views of the same creature: augmentation that keeps the species, for the networks that learn
to name it (PokeNet, reports/pokenet.py; the alignment teacher, diffusion/teacher.py)."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def augment(x: torch.Tensor, flip: torch.Tensor, shift: float, min_scale: float, gen: torch.Generator,
            grey_prob: float = 0.0, swap_prob: float = 0.0) -> torch.Tensor:
    """Flip where `flip` is set, then zoom out by s ~ U[min_scale, 1] and shift by up to `shift` of the
    side in x and y, filling with white (one affine resampling per image); then, in colour, show a
    share `grey_prob` of the images in grey and permute the colour channels of a share `swap_prob`
    (white stays white). Colour tells species apart too easily; these make the network also use shape."""
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    n = len(x)
    s = min_scale + (1 - min_scale) * torch.rand(n, generator=gen)
    t = shift * 2 * (2 * torch.rand(n, 2, generator=gen) - 1)  # affine_grid coordinates span 2 per side
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
    theta[:, :, 2] = -t / s[:, None]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # sample x - 1 so that outside (zeros) is white once 1 is added back
    x = F.grid_sample(x - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1
    grey_rows = torch.rand(n, generator=gen) < grey_prob
    swap_rows = torch.rand(n, generator=gen) < swap_prob
    order = torch.argsort(torch.rand(n, 3, generator=gen), dim=1)  # a random permutation of RGB per image
    swapped = x.gather(1, order[:, :, None, None].expand_as(x))
    x = torch.where(swap_rows[:, None, None, None], swapped, x)
    luma = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(x)
    return torch.where(grey_rows[:, None, None, None], luma, x)
