"""The denoising U-Net (diffusion/unet.py): shapes, time and class conditioning, gradients."""
from __future__ import annotations

import math

import pytest
import torch

from diffusion.config import DiffusionConfig
from diffusion.denoiser import build_unet, network_layout, predict_x0
from diffusion.labels import Labels
from diffusion.unet import UNet, timestep_embedding
from plumbing.cli import UserError
from plumbing.config import load_config


def _net(seed=0, **kw) -> UNet:
    torch.manual_seed(seed)
    args = dict(in_channels=3, channels=[8, 16], blocks=1, attention_levels=[1], dropout=0.0, num_types=0, heads=4)
    args.update(kw)
    return UNet(**args).eval()


CONFIGS = [
    # in_channels, channels, blocks, attention_levels, size, num_classes
    (3, [8, 16], 1, [], 16, 0),
    (4, [8, 16], 2, [1], 16, 0),
    (3, [8, 16], 1, [0, 1], 32, 0),
    (4, [8, 16, 32], 1, [], 32, 0),
    (3, [8, 16, 32], 2, [1], 16, 0),
    (4, [8, 16, 32], 1, [0, 1], 16, 5),
    (3, [8, 16, 32], 1, [1, 2], 32, 3),
    (3, [8, 16], 2, [], 32, 2),
]


@pytest.mark.parametrize("in_ch, channels, blocks, attn, size, num_classes", CONFIGS)
def test_output_shape_equals_input_shape(in_ch, channels, blocks, attn, size, num_classes):
    net = _net(in_channels=in_ch, channels=channels, blocks=blocks, attention_levels=attn, num_types=num_classes)
    x = torch.randn(2, in_ch, size, size)
    t = torch.tensor([0, 999])
    with torch.no_grad():
        out = net(x, t)
        assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
        if num_classes:
            y = Labels(torch.tensor([0, num_classes - 1]))
            out_y = net(x, t, y)
            assert out_y.shape == x.shape and torch.isfinite(out_y).all()


def test_attention_levels_add_attention_modules():
    count = lambda net: sum(type(m).__name__ == "Attention" for m in net.modules())  # noqa: E731
    # the middle always has one; each listed level has `blocks` in the encoder and `blocks + 1` in the decoder
    assert count(_net(attention_levels=[], blocks=1)) == 1
    assert count(_net(attention_levels=[1], blocks=1)) == 1 + 1 + 2
    assert count(_net(attention_levels=[0, 1], blocks=2)) == 1 + 2 * (2 + 3)


@pytest.mark.parametrize("dim", [8, 9, 32])
def test_timestep_embedding(dim):
    t = torch.tensor([0, 1, 10, 999])
    emb = timestep_embedding(t, dim)
    assert emb.shape == (4, dim) and emb.dtype == torch.float32
    half = dim // 2
    # t = 0: cos = 1, sin = 0
    assert torch.allclose(emb[0, :half], torch.ones(half)) and torch.allclose(emb[0, half:2 * half], torch.zeros(half))
    if dim % 2:
        assert torch.equal(emb[:, -1], torch.zeros(4))  # odd dim: zero padding
    # the first frequency is 1: [cos t, ..., sin t, ...]
    assert torch.allclose(emb[:, 0], torch.cos(t.float()), atol=1e-5)
    assert torch.allclose(emb[:, half], torch.sin(t.float()), atol=1e-5)
    # the last frequency is max_period^(-(half-1)/half)
    w = math.exp(-math.log(10000.0) * (half - 1) / half)
    assert torch.allclose(emb[:, half - 1], torch.cos(t.float() * w), atol=1e-5)
    # cos^2 + sin^2 = 1 pairwise; all rows distinct
    assert torch.allclose(emb[:, :half] ** 2 + emb[:, half:2 * half] ** 2, torch.ones(4, half), atol=1e-5)
    assert torch.cdist(emb, emb).add(torch.eye(4)).min() > 1e-3


def test_different_timesteps_give_different_outputs():
    net = _net()
    x = torch.randn(1, 3, 16, 16).expand(4, -1, -1, -1).contiguous()
    with torch.no_grad():
        out = net(x, torch.tensor([0, 1, 500, 999]))
    for i in range(4):
        for j in range(i + 1, 4):
            assert (out[i] - out[j]).abs().max() > 1e-5, (i, j)
    with torch.no_grad():
        again = net(x, torch.tensor([0, 1, 500, 999]))
    assert torch.equal(out, again)  # eval mode: deterministic


def test_type_and_style_conditioning():
    net = _net(num_types=4, num_styles=2)
    x = torch.randn(1, 3, 16, 16).expand(3, -1, -1, -1).contiguous()
    t = torch.tensor([50, 50, 50])
    with torch.no_grad():
        by_type = net(x, t, Labels(torch.tensor([0, 1, 4])))
        by_style = net(x, t, Labels(None, torch.tensor([0, 1, 2])))
        both = net(x, t, Labels(torch.tensor([0, 0, 4]), torch.tensor([0, 1, 2])))
        unlabelled = net(x, t)
    assert (by_type[0] - by_type[1]).abs().max() > 1e-5
    assert (by_style[0] - by_style[1]).abs().max() > 1e-5 and (both[0] - both[1]).abs().max() > 1e-5
    # no labels = the extra "no label" row of each kind (index num_types, num_styles)
    assert torch.allclose(unlabelled[2], by_type[2], atol=1e-6)
    assert torch.allclose(unlabelled[2], by_style[2], atol=1e-6) and torch.allclose(unlabelled[2], both[2], atol=1e-6)
    assert (unlabelled[0] - by_type[0]).abs().max() > 1e-5


def test_batch_elements_are_independent():
    net = _net(attention_levels=[0, 1], num_types=3)
    x = torch.randn(5, 3, 16, 16)
    t = torch.tensor([3, 70, 200, 999, 0])
    y = Labels(torch.tensor([0, 1, 2, 3, 1]))
    with torch.no_grad():
        full = net(x, t, y)
        part = net(x[1:3], t[1:3], y.index(slice(1, 3)))
    assert torch.allclose(full[1:3], part, atol=1e-5)


@pytest.mark.parametrize("channels, attn, num_classes", [([8, 16], [0, 1], 0), ([8, 16, 32], [1], 3)])
def test_gradients_reach_every_parameter(channels, attn, num_classes):
    net = _net(channels=channels, attention_levels=attn, num_types=num_classes, num_styles=num_classes, blocks=2,
               dropout=0.1).train()
    x = torch.randn(4, 3, 16, 16)
    t = torch.tensor([1, 10, 100, 900])
    y = Labels(torch.tensor([0, 1, 2, 3]), torch.tensor([3, 2, 1, 0])) if num_classes else None  # 3: "no label"
    loss = (net(x, t, y) - torch.randn(4, 3, 16, 16)).pow(2).mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    if num_classes:
        assert (net.type_emb.weight.grad.abs().sum(dim=1) > 0).all()  # every row used once
        assert (net.style_emb.weight.grad.abs().sum(dim=1) > 0).all()


def test_dropout_only_in_training_mode():
    net = _net(dropout=0.5)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 6])
    with torch.no_grad():
        assert torch.equal(net(x, t), net(x, t))
        net.train()
        torch.manual_seed(0)
        a = net(x, t)
        torch.manual_seed(1)
        b = net(x, t)
    assert not torch.allclose(a, b)


def test_model_heads_sets_the_attention_heads():
    """model.heads: the attention layers split their channels into that many heads."""
    cfg = load_config(DiffusionConfig, None, ["model.channels=[8,16]", "model.heads=2", "model.attention_levels=[1]"])
    net = build_unet(cfg, 4)
    heads = {m.heads for m in net.modules() if hasattr(m, "heads")}
    assert heads == {2}
    assert net(torch.randn(2, 4, 8, 8), torch.tensor([1, 2])).shape == (2, 4, 8, 8)
    with pytest.raises(UserError, match="multiples of model.heads=3"):
        load_config(DiffusionConfig, None, ["model.channels=[8,16]", "model.heads=3"])


def test_the_network_layout_changes_the_memory_not_the_prediction_or_the_gradients():
    """predict_x0 on a CPU in float32 runs the U-Net channels-last (network_layout): the same x0_hat
    and parameter gradients as NCHW up to rounding, returned NCHW, with the weights left in NCHW."""
    assert network_layout(torch.device("cpu"), use_bf16=False) == torch.channels_last
    assert network_layout(torch.device("cpu"), use_bf16=True) == torch.contiguous_format
    x, t = torch.randn(4, 3, 16, 16), torch.tensor([1, 10, 100, 900])
    target = torch.randn(4, 3, 16, 16)
    results = {}
    for name, layout in (("NCHW", torch.contiguous_format), ("NHWC", torch.channels_last)):
        net = _net(channels=[8, 16], attention_levels=[0, 1], blocks=2).train()
        seen = []
        net.mid1.register_forward_hook(lambda m, i, out: seen.append(out.is_contiguous(memory_format=layout)))
        x0_hat = predict_x0(net, x, t, False, layout=layout)
        assert seen == [True]  # the network computes in the layout asked for, down to its middle
        (x0_hat - target).pow(2).mean().backward()
        assert x0_hat.is_contiguous()
        assert all(p.is_contiguous() for p in net.parameters())  # the weights keep their layout
        results[name] = x0_hat.detach(), {n: p.grad for n, p in net.named_parameters()}
    (a, grads_a), (b, grads_b) = results["NCHW"], results["NHWC"]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for n in grads_a:
        torch.testing.assert_close(grads_a[n], grads_b[n], rtol=1e-3, atol=1e-5, msg=n)
    default = predict_x0(_net(channels=[8, 16], attention_levels=[0, 1], blocks=2), x, t, False)
    torch.testing.assert_close(default, b)  # the default on a CPU in float32 is channels-last
