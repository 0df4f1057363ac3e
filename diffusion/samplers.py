"""Reverse-process samplers for an x0-predicting network.

`denoise(x_t, t) -> x0_hat` is the network (EMA weights, guidance included when conditional).
Both samplers start from x_T ~ N(0, I) drawn from a seeded CPU generator, so a seed gives the same
images on any device.

Ancestral DDPM (Ho et al. 2020), all T steps: plug the prediction into the posterior,
    x_{t-1} ~ q(x_{t-1} | x_t, x0_hat) = N(mu_t(x_t, x0_hat), beta_tilde_t I)
(mu_t and beta_tilde_t in diffusion/schedule.py); x0_hat is clipped to [-1, 1] only where the data
range is known (pixels).

DDIM (Song et al. 2021), a subsequence tau of S steps: with the implied noise
    eps_hat = (x_t - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t)
    sigma   = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev)
    x_prev  = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z
eta = 0 is deterministic; eta = 1 with all T steps has sigma^2 = beta_tilde_t and the same
distribution as ancestral DDPM.

DDIM can also start part-way, from a given x_{t0} at step t0 instead of x_T ~ N(0, I) (`start`;
SDEdit, Meng et al. 2022): the subsequence then runs from t0 down to 0. With the true x_0 as the
prediction and eta = 0, eps_hat is the very noise that made x_{t0}, so every step lands on
x_prev = sqrt(ab_prev) x_0 + sqrt(1 - ab_prev) eps and the last one on x_0 itself (the restoration
diagnostic of reports/restore.py measures how far a trained model falls short of that).

`x0_trajectory` runs DDIM and keeps the network's x0 predictions at chosen steps: where a sample's
layout is decided (reports/trajectory.py).
"""
from __future__ import annotations

from typing import Callable

import torch

from diffusion.schedule import LinearSchedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def frame_steps(n_steps: int, frames: int) -> set[int]:
    """Indices (0 = first reverse step) at which to record x_t, evenly spaced, last one included."""
    if frames <= 0:
        return set()
    if frames == 1:
        return {n_steps - 1}
    return {round(i * (n_steps - 1) / (frames - 1)) for i in range(frames)}


@torch.no_grad()
def ddpm_sample(denoise: Denoiser, schedule: LinearSchedule, shape: tuple, generator: torch.Generator,
                device: torch.device, clip: bool, frames: int = 0, progress=None, on_frame=None):
    """Ancestral sampling over all T steps. Returns (x_0 [N, ...], recorded [(t, x_t), ...]);
    `on_frame(t, x_t)` is called with each recorded x_t as it is made (a page showing the process live)."""
    x = torch.randn(shape, generator=generator).to(device)
    record = frame_steps(schedule.T, frames)
    recorded = []
    if frames:
        _record(recorded, schedule.T, x, on_frame)
    for i, t in enumerate(range(schedule.T - 1, -1, -1)):
        tt = torch.full((shape[0],), t, dtype=torch.long, device=device)
        x0_hat = denoise(x, tt).float()
        if clip:
            x0_hat = x0_hat.clamp(-1, 1)
        mean, var = schedule.q_posterior(x0_hat, x, tt)
        noise = torch.randn(shape, generator=generator).to(device)
        x = mean + var.sqrt() * noise if t > 0 else mean  # beta_tilde_0 = 0: last step adds no noise
        if i in record:
            _record(recorded, t, x, on_frame)
        if progress is not None:
            progress.update(1)
    return x, recorded


def _record(recorded: list, t: int, x: torch.Tensor, on_frame) -> None:
    recorded.append((t, x.cpu()))
    if on_frame is not None:
        on_frame(*recorded[-1])


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """S step indices from T-1 down to 0, evenly spaced (rounded, unique). For a start at step t0
    the same call with T = t0 + 1 gives t0, ..., 0."""
    taus = torch.linspace(T - 1, 0, steps).round().long().tolist()
    return sorted(set(taus), reverse=True)


@torch.no_grad()
def ddim_sample(denoise: Denoiser, schedule: LinearSchedule, shape: tuple, generator: torch.Generator,
                device: torch.device, clip: bool, steps: int = 50, eta: float = 0.0, frames: int = 0,
                progress=None, start: tuple[int, torch.Tensor] | None = None, on_frame=None):
    """DDIM sampling over `steps` steps. Returns (x_0, recorded [(t, x_t), ...]); `on_frame(t, x_t)` as
    in `ddpm_sample`.

    start=(t0, x_t0): begin at step t0 from the given x_t0 (of shape `shape`) instead of drawing
    x_T ~ N(0, I); the `steps` steps then run from t0 down to 0."""
    if start is None:
        taus = ddim_timesteps(schedule.T, steps)
        x = torch.randn(shape, generator=generator).to(device)
    else:
        t0, x = start
        if not 0 <= t0 < schedule.T:
            raise ValueError(f"a DDIM start step must lie in 0..{schedule.T - 1}, got {t0}")
        taus = ddim_timesteps(t0 + 1, steps)
        x = x.to(device)
    record = frame_steps(len(taus), frames)
    recorded = []
    if frames:
        _record(recorded, taus[0] + 1, x, on_frame)
    ab = schedule.alpha_bars
    for i, t in enumerate(taus):
        t_prev = taus[i + 1] if i + 1 < len(taus) else -1
        ab_t = float(ab[t])
        ab_prev = float(ab[t_prev]) if t_prev >= 0 else 1.0
        tt = torch.full((shape[0],), t, dtype=torch.long, device=device)
        x0_hat = denoise(x, tt).float()
        if clip:
            x0_hat = x0_hat.clamp(-1, 1)
        eps_hat = (x - ab_t ** 0.5 * x0_hat) / (1 - ab_t) ** 0.5
        sigma = eta * ((1 - ab_prev) / (1 - ab_t)) ** 0.5 * (1 - ab_t / ab_prev) ** 0.5
        x = ab_prev ** 0.5 * x0_hat + max(0.0, 1 - ab_prev - sigma ** 2) ** 0.5 * eps_hat
        if sigma > 0:
            x = x + sigma * torch.randn(shape, generator=generator).to(device)
        if i in record:
            _record(recorded, t_prev + 1 if t_prev >= 0 else 0, x, on_frame)
        if progress is not None:
            progress.update(1)
    return x, recorded


def x0_trajectory(denoise: Denoiser, schedule: LinearSchedule, shape: tuple, generator: torch.Generator,
                  device: torch.device, clip: bool, steps: int, rows: int) -> tuple[torch.Tensor, list]:
    """(x_0 of a DDIM run (eta = 0), [(t, x0_hat at step t on the CPU), ...] at `rows` of its steps).

    The run is `ddim_sample` itself; a wrapper around the denoiser keeps the
    predictions it makes at the chosen steps (clipped as the sampler clips them), so the samples are
    exactly those of `diffusion.sample` with the same seed and steps (in float32)."""
    taus = ddim_timesteps(schedule.T, steps)
    chosen = {taus[i] for i in frame_steps(len(taus), rows)}  # as the sampler picks its GIF frames
    kept = []

    def recording(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0_hat = denoise(x, t)
        step = int(t[0])
        if step in chosen:
            kept.append((step, (x0_hat.float().clamp(-1, 1) if clip else x0_hat.float()).cpu()))
        return x0_hat

    x, _ = ddim_sample(recording, schedule, shape, generator, device, clip, steps=steps)
    return x, kept
