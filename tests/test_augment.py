"""Non-leaking augmentation (diffusion/augment.py) and its condition in the U-Net."""
from __future__ import annotations

import math

import pytest
import torch

from diffusion import trainer as dtrainer
from diffusion.augment import AUG_DIM, augment, shifted, zoomed
from diffusion.config import DiffusionConfig
from diffusion.labels import Labels
from diffusion.pipeline import load_diffusion
from diffusion.unet import UNet
from plumbing.checkpoint import load_checkpoint
from plumbing.cli import UserError
from plumbing.config import load_config
from tests.helpers import TINY_DIFFUSION


def _images(n: int = 64, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, size, size, generator=g)


def test_p0_changes_nothing_and_p1_applies_every_transform():
    x = _images()
    same, params = augment(x, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(same, x) and torch.equal(params, torch.zeros(len(x), AUG_DIM))
    out, params = augment(x, 1.0, torch.Generator().manual_seed(1))
    assert (params[:, 0] == 1).all()                         # every image flipped
    assert (params[:, 3] != 0).all()                         # every image zoomed
    rot = params[:, 4:]
    assert ((rot != 0).any(dim=1)).all()                     # every image rotated by 90, 180 or 270 degrees
    assert not torch.equal(out, x)


@pytest.mark.parametrize("p", [0.2, 0.6])
def test_each_transform_is_applied_with_probability_p(p):
    n = 4000
    _, params = augment(torch.zeros(n, 1, 8, 8), p, torch.Generator().manual_seed(2))
    sd = (p * (1 - p) / n) ** 0.5
    assert abs((params[:, 0] == 1).float().mean() - p) < 5 * sd
    assert abs((params[:, 3] != 0).float().mean() - p) < 5 * sd
    assert abs((params[:, 4:] != 0).any(1).float().mean() - p) < 5 * sd
    shifted_share = (params[:, 1:3] != 0).any(1).float().mean()  # a shift of (0, 0) counts as none
    assert shifted_share < p and shifted_share > 0.8 * p * (1 - 1 / 9)


def test_the_exact_transforms_can_be_undone():
    """Flip, rotation and integer shift are exact on the grid: undone with their parameters they give
    the input back (away from the edges the shift copied in)."""
    x = _images(32)
    gen = torch.Generator().manual_seed(3)
    out, params = augment(x, 0.7, gen)
    for i in range(len(x)):
        if params[i, 3] != 0:
            continue  # zoomed: resampled, not exact
        y = out[i]
        angle = math.atan2(float(params[i, 4]), float(params[i, 5]) + 1)
        k = round(angle / (math.pi / 2)) % 4
        y = torch.rot90(y, -k, dims=(-2, -1))
        dy, dx = round(float(params[i, 1]) * 16), round(float(params[i, 2]) * 16)
        y = shifted(y, -dy, -dx)
        if params[i, 0] == 1:
            y = y.flip(-1)
        m = 2  # the shift reaches 2 cells at 16x16
        assert torch.allclose(y[:, m:-m, m:-m], x[i, :, m:-m, m:-m]), i


def test_shift_and_zoom():
    x = torch.arange(16.0).view(1, 4, 4)
    assert torch.equal(shifted(x, 1, 0)[0, 1:], x[0, :3]) and torch.equal(shifted(x, 1, 0)[0, 0], x[0, 0])
    assert torch.equal(shifted(x, 0, -1)[0, :, :3], x[0, :, 1:])
    img = torch.randn(2, 3, 8, 8)
    assert torch.allclose(zoomed(img, torch.ones(2)), img, atol=1e-5)   # scale 1: unchanged


def test_unet_zero_augmentation_is_no_augmentation():
    torch.manual_seed(0)
    net = UNet(4, [8, 16], 1, [1], aug_dim=AUG_DIM).eval()
    x, t = torch.randn(3, 4, 8, 8), torch.tensor([5, 50, 500])
    with torch.no_grad():
        plain = net(x, t)
        zero = net(x, t, Labels(aug=torch.zeros(3, AUG_DIM)))
        moved = net(x, t, Labels(aug=torch.ones(3, AUG_DIM)))
    assert torch.equal(plain, zero) and not torch.allclose(plain, moved)


def test_training_with_augmentation(sprite_dir, tmp_path):
    args = [f"data.root={sprite_dir}", f"data.cache_dir={tmp_path / 'cache'}", "space=pixel", *TINY_DIFFUSION,
            "train.epochs=3"]
    result = dtrainer.train(load_config(DiffusionConfig, None, [*args, "train.augment=0.5"]), str(tmp_path / "a"))
    assert result["steps"] > 0
    ckpt = load_checkpoint(tmp_path / "a" / "diffusion.pt")
    assert ckpt["ema"]["aug_emb.weight"].shape[1] == AUG_DIM
    pipe = load_diffusion(tmp_path / "a", "cpu")
    a, _, _ = pipe.generate(2, 0, steps=3)
    b, _, _ = pipe.generate(2, 0, steps=3)
    assert torch.equal(a, b) and torch.isfinite(a).all()
    with pytest.raises(UserError, match="train.augment"):
        load_config(DiffusionConfig, None, [*args, "train.augment=1.5"])
