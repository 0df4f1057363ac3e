"""Classifier-free guidance (diffusion/guidance.py): label dropout and the guided x0 prediction."""
from __future__ import annotations

import pytest
import torch

from diffusion.guidance import drop_labels, guided_denoiser, guided_x0
from diffusion.unet import UNet
from sprites.labels import NULL_LABEL


def labels(n: int, seed: int = 0) -> torch.Tensor:
    """n labels in 0..17 (none of them null)."""
    return torch.randint(0, NULL_LABEL, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_rate_is_p(p):
    n = 100_000
    y = labels(n)
    dropped = drop_labels(y, p, torch.Generator().manual_seed(1))
    rate = (dropped == NULL_LABEL).float().mean().item()
    # binomial standard deviation sqrt(p (1 - p) / n) <= 0.0016; allow ~5 of them
    assert abs(rate - p) < 0.008
    kept = dropped != NULL_LABEL
    assert torch.equal(dropped[kept], y[kept])  # the others are untouched


def test_p0_keeps_and_p1_drops_everything():
    y = labels(1000)
    assert torch.equal(drop_labels(y, 0.0, torch.Generator().manual_seed(0)), y)
    assert (drop_labels(y, 1.0, torch.Generator().manual_seed(0)) == NULL_LABEL).all()
    assert (drop_labels(y, 1.0, torch.Generator().manual_seed(0), null_label=4) == 4).all()
    with pytest.raises(ValueError):
        drop_labels(y, 1.5, torch.Generator())


def test_drop_is_deterministic_per_seed_and_leaves_input_alone():
    y = labels(500)
    before = y.clone()
    a = drop_labels(y, 0.3, torch.Generator().manual_seed(7))
    b = drop_labels(y, 0.3, torch.Generator().manual_seed(7))
    c = drop_labels(y, 0.3, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(y, before)
    # the generator advances by one draw per label whatever p is
    g0, g1 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    drop_labels(y, 0.0, g0), drop_labels(y, 0.9, g1)
    assert torch.equal(torch.rand(4, generator=g0), torch.rand(4, generator=g1))


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    net = UNet(in_channels=3, channels=[8, 16], blocks=1, attention_levels=[], dropout=0.0,
               num_classes=18, heads=4)
    return net.eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 16, 16, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    y = torch.tensor([0, 6, 17, 3])
    return x, t, y


@torch.no_grad()
def test_scale_1_is_conditional_and_0_unconditional(unet, batch):
    x, t, y = batch
    cond = unet(x, t, y)
    uncond = unet(x, t, torch.full_like(y, NULL_LABEL))
    assert (cond - uncond).abs().max() > 1e-4  # the label matters, so the test means something
    assert torch.allclose(guided_x0(unet, x, t, y, 1.0, NULL_LABEL), cond, atol=1e-5)
    assert torch.allclose(guided_x0(unet, x, t, y, 0.0, NULL_LABEL), uncond, atol=1e-5)
    s = 3.0
    assert torch.allclose(guided_x0(unet, x, t, y, s), uncond + s * (cond - uncond), atol=1e-4)


@torch.no_grad()
def test_one_batched_forward_pass(unet, batch):
    x, t, y = batch
    calls = []

    def model(*args):
        calls.append(args)
        return unet(*args)

    out = guided_x0(model, x, t, y, 2.0)
    assert len(calls) == 1
    xs, ts, ys = calls[0]
    assert xs.shape[0] == ts.shape[0] == ys.shape[0] == 2 * len(x)
    assert torch.equal(ys, torch.cat([y, torch.full_like(y, NULL_LABEL)]))
    assert out.shape == x.shape
    assert torch.equal(guided_denoiser(model, y, 2.0)(x, t), out)


@torch.no_grad()
def test_unconditional_model_without_labels():
    torch.manual_seed(0)
    net = UNet(in_channels=3, channels=[8, 16], blocks=1, attention_levels=[], dropout=0.0, num_classes=0).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 50])
    assert torch.equal(guided_x0(net, x, t, None, 5.0), net(x, t))
