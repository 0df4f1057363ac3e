"""The denoising U-Net f_theta(x_t, t) -> x0_hat, after The Annotated Diffusion Model.

    x_t [B, C, H, W] --conv_in--> level 0 --down--> level 1 --down--> ... --> middle
                                     |                |                         |
                                  (skips)          (skips)                      v
    x0_hat <--conv_out-- level 0 <--up-- level 1 <--up-- ...      <-------------+

* Time: t -> sinusoidal embedding (Vaswani et al. 2017) -> Linear -> SiLU -> Linear, a vector
  `temb` that every residual block adds (after a Linear) to its feature maps.
* Optional labels (diffusion/labels.py): the Pokemon type, the style (source) and the species of the
  image, each a learned embedding added to `temb`; the extra index of each (`num_types`,
  `num_styles`, `num_species`) is its "no label" class, used for classifier-free guidance. Species
  given as weights w [B, num_species + 1] add the mixture w @ E of the species embeddings (fusions).
* ResBlock: h = conv(silu(norm(x))) + Linear(silu(temb)); h = conv(dropout(silu(norm(h)))); x + h.
* Self-attention (multi-head, with a residual) at the levels listed in `attention_levels` and in
  the middle; attention costs O((HW)^2), so it only pays at low resolutions.
* Each decoder level takes `blocks + 1` residual blocks, each consuming one encoder skip.
"""
from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from diffusion.labels import Labels


def group_norm(channels: int) -> nn.GroupNorm:
    groups = min(32, max(1, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding: [cos(t w_k), sin(t w_k)] with w_k = max_period^(-k / (dim/2)), k < dim/2."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, temb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(temb_dim, c_out)
        self.norm2 = group_norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """x + proj(softmax(Q K^T / sqrt(d)) V) over the H*W positions, `heads` heads."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        q, k, v = rearrange(self.qkv(self.norm(x)), "b (three heads d) h w -> three b heads (h w) d",
                            three=3, heads=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(Q K^T / sqrt(d)) V per head
        return x + self.proj(rearrange(out, "b heads (h w) d -> b (heads d) h w", h=h, w=w))


class UNet(nn.Module):
    def __init__(self, in_channels: int, channels: list[int], blocks: int, attention_levels: list[int],
                 dropout: float = 0.0, num_types: int = 0, num_styles: int = 0, heads: int = 4, num_species: int = 0):
        super().__init__()
        self.in_channels = in_channels
        self.levels = list(channels)  # width of each level (diffusion/align.py finds its stages by level)
        self.num_types, self.num_styles, self.num_species = num_types, num_styles, num_species
        base = channels[0]
        temb_dim = 4 * base
        self.time_mlp = nn.Sequential(nn.Linear(base, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        # n + 1 rows each: the last one is the "no label" class of classifier-free guidance.
        self.type_emb = nn.Embedding(num_types + 1, temb_dim) if num_types > 0 else None
        self.style_emb = nn.Embedding(num_styles + 1, temb_dim) if num_styles > 0 else None
        self.species_emb = nn.Embedding(num_species + 1, temb_dim) if num_species > 0 else None
        self.conv_in = nn.Conv2d(in_channels, base, 3, padding=1)

        self.down = nn.ModuleList()
        skip_widths = [base]
        c = base
        for level, width in enumerate(channels):
            for _ in range(blocks):
                self.down.append(nn.ModuleList([ResBlock(c, width, temb_dim, dropout),
                                                Attention(width, heads) if level in attention_levels else nn.Identity()]))
                c = width
                skip_widths.append(c)
            if level < len(channels) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skip_widths.append(c)
        self.mid1 = ResBlock(c, c, temb_dim, dropout)
        self.mid_attn = Attention(c, heads)
        self.mid2 = ResBlock(c, c, temb_dim, dropout)

        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(channels))):
            for _ in range(blocks + 1):
                self.up.append(nn.ModuleList([ResBlock(c + skip_widths.pop(), width, temb_dim, dropout),
                                              Attention(width, heads) if level in attention_levels else nn.Identity()]))
                c = width
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)))
        self.norm_out = group_norm(c)
        self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: Labels | None = None) -> torch.Tensor:
        """x0_hat = f(x_t, t[, labels]). t: int64 [B] step indices; labels: type, style, species [B] each,
        where a missing kind (or a model without it) means "no label"."""
        temb = self.time_mlp(timestep_embedding(t, self.conv_in.out_channels))
        if self.type_emb is not None:
            y = labels.type if labels is not None and labels.type is not None else torch.full_like(t, self.num_types)
            temb = temb + self.type_emb(y)
        if self.style_emb is not None:
            y = labels.style if labels is not None and labels.style is not None else torch.full_like(t, self.num_styles)
            temb = temb + self.style_emb(y)
        if self.species_emb is not None:
            y = labels.species if labels is not None and labels.species is not None else torch.full_like(t, self.num_species)
            # weights over the species (a fusion): the same mixture of their embedding rows
            temb = temb + (y.to(temb.dtype) @ self.species_emb.weight if y.is_floating_point() else self.species_emb(y))
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](h, temb))
            else:
                h = layer(h)
            skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](torch.cat([h, skips.pop()], dim=1), temb))
            else:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))
