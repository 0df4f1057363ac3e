"""A training-only term on the U-Net's hidden state: representation alignment.

It reads the hidden state h [B, C, h, w] of one U-Net stage on the noisy input x_t, taken by a
forward hook (`Tap`) so the network itself is unchanged; the sampler and the release never see it.

Representation alignment (loss.align; REPA, Yu et al. 2024, arXiv 2410.06940; U-REPA aligns a
U-Net's middle stage, arXiv 2503.18414). A teacher (diffusion/teacher.py) gives features y of the
clean image x_0, cached once. With iREPA's choices (arXiv 2512.10794): a conv projection, and targets
normalised over the positions of each image, so the term teaches how the parts of an image relate
rather than what the image is as a whole:
    y~_p = (y_p - mean_q y_q) / (std_q y_q + eps)                    per image and channel, p, q positions
    L_align = - mean_{b, p} cos(proj(h)_{b, p}, y~_{b, p})           proj = conv3x3 -> SiLU -> conv1x1
The teacher's map is pooled (or upsampled) to the stage's size. HASTE (arXiv 2505.16792) switches the
term off after an early phase: loss.align_until.

The dispersive loss (Wang & He 2025) was measured in the pilot and left the code: docs/design.md.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from diffusion.unet import UNet


def stage_module(model: UNet, stage: str) -> nn.Module:
    """The module whose output is the hidden state of `stage`: "mid" (after the middle's second block),
    "enc<L>" / "dec<L>" (the last block of encoder / decoder level L, after its attention if any)."""
    if stage == "mid":
        return model.mid2
    level = int(stage[3:])
    blocks = [layer for layer in (model.down if stage.startswith("enc") else model.up) if isinstance(layer, nn.ModuleList)]
    per_level = len(blocks) // len(model.levels)
    order = list(range(len(model.levels))) if stage.startswith("enc") else list(reversed(range(len(model.levels))))
    return blocks[(order.index(level) + 1) * per_level - 1][1]


class Tap:
    """Keeps the output of a module from the last forward pass (a forward hook)."""

    def __init__(self, module: nn.Module):
        self.value: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self.value = output


def spatially_normalised(y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """y~ = (y - mean over positions) / (std over positions + eps), per image and channel."""
    flat = y.flatten(2)
    mean, std = flat.mean(-1, keepdim=True), flat.std(-1, keepdim=True)
    return ((flat - mean) / (std + eps)).view_as(y)


def resized(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The teacher's map at the stage's size: average-pooled down, or bilinear up."""
    if tuple(y.shape[-2:]) == tuple(size):
        return y
    if y.shape[-1] >= size[-1]:
        return F.adaptive_avg_pool2d(y, size)
    return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


class Projection(nn.Module):
    """proj(h): conv3x3 -> SiLU -> conv1x1, from the stage's C channels to the teacher's D."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(c_in, 2 * c_out, 3, padding=1), nn.SiLU(), nn.Conv2d(2 * c_out, c_out, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def align_loss(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_align = - mean_{b, p} cos(proj(h)_{b, p}, y~_{b, p}); target already at the stage's size."""
    y = spatially_normalised(target.float())
    return -F.cosine_similarity(projected.float(), y, dim=1).mean()


def stage_channels(model: UNet, stage: str) -> int:
    """C of a stage's hidden state."""
    if stage == "mid":
        return model.levels[-1]
    return model.levels[int(stage[3:])]


class HiddenTerms:
    """The loss.align term of a run: a tap on the training model, the projection
    (trained with the U-Net, kept in the training state, never in a release) and the teacher's features.

        extra, parts = terms(idx, flip, step)     after the forward pass of the step
    """

    def __init__(self, cfg, model: UNet, features=None):
        self.cfg = cfg
        self.features = features
        self.align_tap = Tap(stage_module(model, cfg.align_stage)) if cfg.align > 0 else None
        self.projection = (Projection(stage_channels(model, cfg.align_stage), features.dim)
                           if cfg.align > 0 else None)

    def __bool__(self) -> bool:
        return self.align_tap is not None

    def names(self) -> list[str]:
        """The terms in use, as named in the loss history."""
        return ["align"] if self.align_tap else []

    def describe(self) -> str:
        c = self.cfg
        if not self.align_tap:
            return ""
        until = f", off from step {c.align_until}" if c.align_until else ""
        return f"align {c.align:g} x cos(proj(h_{c.align_stage}), teacher's {self.features.dim}-dim map){until}"

    def aligning(self, step: int) -> bool:
        """Whether the alignment term is on at this step (loss.align_until: off from that step on)."""
        return self.align_tap is not None and (self.cfg.align_until == 0 or step < self.cfg.align_until)

    def __call__(self, idx: torch.Tensor, flip: torch.Tensor, step: int) -> tuple[torch.Tensor, dict]:
        """(weighted sum of the terms, {name: value}) for the images `idx` (mirrored where `flip`) of
        the forward pass just made."""
        extra, parts = 0.0, {}
        if self.aligning(step):
            h = self.align_tap.value
            target = resized(self.features.batch(idx, flip).to(h.device, torch.float32), tuple(h.shape[-2:]))
            term = align_loss(self.projection(h.float()), target)
            extra, parts["align"] = extra + self.cfg.align * term, term.detach()
        return extra, parts
