"""Classifier-free guidance (diffusion/guidance.py): label dropout and the guided x0 prediction."""
from __future__ import annotations

import pytest
import torch

from diffusion.config import ConditionConfig
from diffusion.guidance import DEFAULT_GUIDANCE, drop_labels, dropped, guided_x0
from diffusion.labels import NULL_STYLE, NULL_TYPE, Labels
from diffusion.unet import UNet

NULL_LABEL = NULL_TYPE


def labels(n: int, seed: int = 0) -> torch.Tensor:
    """n labels in 0..17 (none of them null)."""
    return torch.randint(0, NULL_LABEL, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_rate_is_p(p):
    n = 100_000
    y = labels(n)
    out = drop_labels(y, p, torch.Generator().manual_seed(1), NULL_LABEL)
    rate = (out == NULL_LABEL).float().mean().item()
    # binomial standard deviation sqrt(p (1 - p) / n) <= 0.0016; allow ~5 of them
    assert abs(rate - p) < 0.008
    kept = out != NULL_LABEL
    assert torch.equal(out[kept], y[kept])  # the others are untouched


def test_p0_keeps_and_p1_drops_everything():
    y = labels(1000)
    assert torch.equal(drop_labels(y, 0.0, torch.Generator().manual_seed(0), NULL_LABEL), y)
    assert (drop_labels(y, 1.0, torch.Generator().manual_seed(0), NULL_LABEL) == NULL_LABEL).all()
    assert (drop_labels(y, 1.0, torch.Generator().manual_seed(0), null_label=4) == 4).all()
    with pytest.raises(ValueError):
        drop_labels(y, 1.5, torch.Generator(), NULL_LABEL)


def test_drop_is_deterministic_per_seed_and_leaves_input_alone():
    y = labels(500)
    before = y.clone()
    a = drop_labels(y, 0.3, torch.Generator().manual_seed(7), NULL_LABEL)
    b = drop_labels(y, 0.3, torch.Generator().manual_seed(7), NULL_LABEL)
    c = drop_labels(y, 0.3, torch.Generator().manual_seed(8), NULL_LABEL)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(y, before)
    # the generator advances by one draw per label whatever p is
    g0, g1 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    drop_labels(y, 0.0, g0, NULL_LABEL), drop_labels(y, 0.9, g1, NULL_LABEL)
    assert torch.equal(torch.rand(4, generator=g0), torch.rand(4, generator=g1))


def test_each_kind_is_dropped_on_its_own():
    n = 20_000
    both = Labels(labels(n), torch.randint(0, NULL_STYLE, (n,), generator=torch.Generator().manual_seed(2)))
    out = dropped(both, 0.5, torch.Generator().manual_seed(0))
    t_null, s_null = out.type == NULL_TYPE, out.style == NULL_STYLE
    assert abs(t_null.float().mean() - 0.5) < 0.02 and abs(s_null.float().mean() - 0.5) < 0.02
    # independent: all four combinations (both, type only, style only, none) at about a quarter each
    assert abs((t_null & s_null).float().mean() - 0.25) < 0.02
    assert dropped(Labels(None, both.style), 1.0, torch.Generator()).type is None


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    net = UNet(in_channels=3, channels=[8, 16], blocks=1, attention_levels=[], dropout=0.0,
               num_types=18, num_styles=4, heads=4)
    return net.eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 16, 16, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    y = Labels(torch.tensor([0, 6, 17, 3]), torch.tensor([0, 1, 2, 3]))
    return x, t, y


@torch.no_grad()
def test_scale_1_is_conditional_and_0_unconditional(unet, batch):
    x, t, y = batch
    cond = unet(x, t, y)
    uncond = unet(x, t, y.null())
    assert (cond - uncond).abs().max() > 1e-4  # the labels matter, so the test means something
    assert torch.allclose(unet(x, t, None), uncond)  # no labels = every kind "no label"
    assert torch.allclose(guided_x0(unet, x, t, y, 1.0), cond, atol=1e-5)
    assert torch.allclose(guided_x0(unet, x, t, y, 0.0), uncond, atol=1e-5)
    s = 3.0
    assert torch.allclose(guided_x0(unet, x, t, y, s), uncond + s * (cond - uncond), atol=1e-4)
    # one kind alone: the other is "no label" in both halves
    style_only = Labels(None, y.style)
    assert torch.allclose(guided_x0(unet, x, t, style_only, 1.0), unet(x, t, Labels(y.null().type, y.style)),
                          atol=1e-5)


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
    assert xs.shape[0] == ts.shape[0] == len(ys) == 2 * len(x)
    assert torch.equal(ys.type, torch.cat([y.type, torch.full_like(y.type, NULL_TYPE)]))
    assert torch.equal(ys.style, torch.cat([y.style, torch.full_like(y.style, NULL_STYLE)]))
    assert out.shape == x.shape


@torch.no_grad()
@pytest.mark.parametrize("scale, null", [(1.0, False), (0.0, True)])
def test_scales_1_and_0_take_one_pass_over_the_batch(unet, batch, scale, null):
    x, t, y = batch
    calls = []

    def model(*args):
        calls.append(args)
        return unet(*args)

    out = guided_x0(model, x, t, y, scale)
    assert len(calls) == 1 and calls[0][0].shape[0] == len(x)
    want = y.null() if null else y
    assert torch.equal(calls[0][2].type, want.type) and torch.equal(calls[0][2].style, want.style)
    assert torch.equal(out, unet(x, t, want))


@torch.no_grad()
def test_unconditional_model_without_labels():
    torch.manual_seed(0)
    net = UNet(in_channels=3, channels=[8, 16], blocks=1, attention_levels=[], dropout=0.0).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 50])
    assert torch.equal(guided_x0(net, x, t, None, 5.0), net(x, t))


def test_training_grids_use_the_samplers_default_guidance():
    """A run's sample grids show what `python -m diffusion.sample` draws from it by default."""
    assert ConditionConfig().guidance == DEFAULT_GUIDANCE
