"""Classifier-free guidance (Ho & Salimans 2022) for an x0-predicting network.

One network learns both the conditional model f(x_t, t, y) and the unconditional one
f(x_t, t, NULL): during training each label is replaced by the null class with probability p
(`drop_labels`), so the null class sees every kind of image. At sampling time the two
predictions are extrapolated away from the unconditional one (`guided_x0`):

    x0_guided = x0_uncond + s * (x0_cond - x0_uncond)

    s = 0: the unconditional model;  s = 1: the conditional model;  s > 1: stronger conditioning
    (more typical of the class, less diverse).

Ho & Salimans write it on the noise prediction, eps~ = (1 + w) eps_cond - w eps_uncond, i.e.
s = 1 + w. For an x0-predicting network the two are the same thing. With a = sqrt(ab_t) and
b = sqrt(1 - ab_t), the noise implied by an x0 prediction (diffusion/samplers.py) is

    eps(x0_hat) = (x_t - a x0_hat) / b,

an affine function of x0_hat, and the x_t term is shared by both predictions, so

    eps_uncond + s (eps_cond - eps_uncond) = (x_t - a x0_uncond) / b - s a (x0_cond - x0_uncond) / b
                                          = eps(x0_uncond + s (x0_cond - x0_uncond)).

Guiding x0 and then converting equals guiding eps.

Each kind of label (type, style, species: diffusion/labels.py) has its own null class, the U-Net's
extra embedding row, and is dropped on its own in training, so one network learns the model
conditioned on every subset of the kinds. Several labels are guided jointly, not one by one: the
conditional prediction carries every label of the request and the unconditional one none of them
(every kind the request gives set to "no label"), so s extrapolates from the unconditional model
towards the model given all of them at once,

    x0_guided = f(x_t, t, NULL) + s * (f(x_t, t, type, style, species) - f(x_t, t, NULL)).

A kind the request leaves out is "no label" in both halves. This module knows nothing about
training loops.
"""
from __future__ import annotations

from typing import Callable

import torch

from diffusion.labels import NULL_SPECIES, NULL_STYLE, NULL_TYPE, Labels

# The sampling default: the conditional model itself, one pass per step (docs/results.md measures
# 1 against 3: 3 is paler and blurrier by every distribution measure, at twice the cost).
DEFAULT_GUIDANCE = 1.0


def drop_labels(y: torch.Tensor, p: float, generator: torch.Generator, null_label: int) -> torch.Tensor:
    """Replace each label by `null_label` with probability p, independently (a new tensor).

        u_i ~ U[0, 1) from `generator`;   y'_i = null_label if u_i < p else y_i

    Exactly one uniform number is drawn per label whatever p is, so the generator advances the
    same way for every p (a run's later random draws do not depend on p). p = 0 leaves y
    unchanged, p = 1 makes every label null. Labels that are already null stay null.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"the label drop probability must lie in [0, 1], got {p}")
    # Draw on the generator's device (a CPU generator for reproducibility), then move to y's device.
    u = torch.rand(y.shape, generator=generator, device=generator.device).to(y.device)
    return torch.where(u < p, torch.full_like(y, null_label), y)


def dropped(labels: Labels, p: float, generator: torch.Generator) -> Labels:
    """`drop_labels` on each kind on its own (types first, then styles, then species, one draw per
    label each)."""
    return Labels(None if labels.type is None else drop_labels(labels.type, p, generator, NULL_TYPE),
                  None if labels.style is None else drop_labels(labels.style, p, generator, NULL_STYLE),
                  None if labels.species is None else drop_labels(labels.species, p, generator, NULL_SPECIES))


def guided_x0(model: Callable[..., torch.Tensor], x: torch.Tensor, t: torch.Tensor,
              labels: Labels | None, scale: float) -> torch.Tensor:
    """Classifier-free guided x0 prediction for a batch x_t [B, ...] at steps t [B] with `labels`.

        x0_cond   = model(x_t, t, labels)
        x0_uncond = model(x_t, t, no label)
        x0_guided = x0_uncond + scale * (x0_cond - x0_uncond)

    Both predictions come from ONE forward pass over a batch of 2B: the first half carries the
    labels, the second half the null labels. Rows whose labels are already null get
    x0_cond = x0_uncond, hence x0_guided = x0_uncond for any scale.
    With labels None (an unconditional request) this is simply model(x_t, t); scale 1 is x0_cond
    and scale 0 is x0_uncond, each one pass over the B rows (half the cost).
    """
    if labels is None:
        return model(x, t)
    if scale == 1.0:
        return model(x, t, labels)
    if scale == 0.0:
        return model(x, t, labels.null())
    x0_cond, x0_uncond = model(torch.cat([x, x]), torch.cat([t, t]), labels.cat(labels.null())).chunk(2)
    return x0_uncond + scale * (x0_cond - x0_uncond)
