"""The reverse-process samplers (diffusion/samplers.py) with analytic denoisers.

For data x_0 ~ N(m, s^2) (independent per dimension) and x_t = a x_0 + b eps (a^2 = alpha_bar_t,
b^2 = 1 - alpha_bar_t), the exact posterior-mean denoiser is
    E[x_0 | x_t] = m + a s^2 / (a^2 s^2 + b^2) * (x_t - a m),
which is affine in x_t; every sampler step is then affine in x_t plus Gaussian noise, so the exact
distribution of the samples is Gaussian with a mean and variance computed by a scalar recursion
(written here independently, from the formulas in the module docstrings, in float64).
"""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from diffusion.samplers import ddim_sample, ddim_timesteps, ddpm_sample
from diffusion.schedule import LinearSchedule

CPU = torch.device("cpu")
M, S = 0.3, 0.5


def gaussian_denoiser(schedule: LinearSchedule, m: float = M, s: float = S):
    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = schedule.alpha_bars[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        a = ab.sqrt()
        return m + a * s * s / (ab * s * s + 1 - ab) * (x - a * m)
    return denoise


def _exact_moments(schedule: LinearSchedule, taus: list[int], eta: float, m: float = M, s: float = S,
                   start: tuple[float, float] = (0.0, 1.0)):
    """Mean and variance of the sampler output for Gaussian data and the exact denoiser.

    Each step: x0_hat = k x + c;  x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat
    + sigma z with eps_hat = (x - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t); for eta = 1 over all steps this
    is the DDPM posterior step (sigma^2 = beta_tilde_t). `start`: the mean and variance of the
    sampler's input (N(0, 1) for x_T).
    """
    ab = schedule.alpha_bars.tolist()
    mean, var = start
    for i, t in enumerate(taus):
        ab_t = ab[t]
        ab_prev = ab[taus[i + 1]] if i + 1 < len(taus) else 1.0
        a, b2 = math.sqrt(ab_t), 1 - ab_t
        k = a * s * s / (ab_t * s * s + b2)
        c = m * (1 - k * a)
        sigma2 = eta ** 2 * (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
        d = math.sqrt(max(0.0, 1 - ab_prev - sigma2) / b2)
        # x_prev = sqrt(ab_prev) (k x + c) + d (x - a (k x + c)) + sigma z
        slope = math.sqrt(ab_prev) * k + d * (1 - a * k)
        offset = (math.sqrt(ab_prev) - d * a) * c
        mean, var = slope * mean + offset, slope ** 2 * var + sigma2
    return mean, var


def _ddpm_moments_by_posterior(schedule: LinearSchedule, m: float = M, s: float = S):
    """The same for DDPM, written with the posterior coefficients of Ho et al. eq. 7 instead."""
    ab, betas = schedule.alpha_bars.tolist(), schedule.betas.tolist()
    mean, var = 0.0, 1.0
    for t in range(schedule.T - 1, -1, -1):
        ab_prev = ab[t - 1] if t > 0 else 1.0
        a, b2 = math.sqrt(ab[t]), 1 - ab[t]
        k = a * s * s / (ab[t] * s * s + b2)
        c = m * (1 - k * a)
        c0 = math.sqrt(ab_prev) * betas[t] / (1 - ab[t])
        c1 = math.sqrt(1 - betas[t]) * (1 - ab_prev) / (1 - ab[t])
        v = betas[t] * (1 - ab_prev) / (1 - ab[t])
        mean, var = (c0 * k + c1) * mean + c0 * c, (c0 * k + c1) ** 2 * var + v
    return mean, var


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_moments(x: torch.Tensor, mean: float, var: float, sigmas: float = 5.0):
    n = x.numel()
    x = x.double().flatten()
    assert x.mean().item() == pytest.approx(mean, abs=sigmas * math.sqrt(var / n))
    assert x.var().item() == pytest.approx(var, abs=sigmas * var * math.sqrt(2 / n))


# --- DDPM and DDIM(eta=1, all steps) ------------------------------------------------------------

def test_recursions_agree():
    """The two independent derivations of DDPM's output distribution agree (a check on the oracle)."""
    sch = LinearSchedule(50)
    a = _exact_moments(sch, list(range(49, -1, -1)), eta=1.0)
    b = _ddpm_moments_by_posterior(sch)
    assert a == pytest.approx(b, rel=1e-10)


@pytest.fixture(scope="module")
def t50_samples():
    sch = LinearSchedule(50, scale_to_T=True)
    den = gaussian_denoiser(sch)
    n = 20_000
    ddpm, _ = ddpm_sample(den, sch, (n, 1), _gen(1), CPU, clip=False)
    ddim, _ = ddim_sample(den, sch, (n, 1), _gen(2), CPU, clip=False, steps=50, eta=1.0)
    return sch, ddpm, ddim


def test_ddpm_matches_exact_distribution(t50_samples):
    sch, ddpm, _ = t50_samples
    mean, var = _ddpm_moments_by_posterior(sch)
    _assert_moments(ddpm, mean, var)
    ks = stats.kstest(ddpm.flatten().numpy(), "norm", args=(mean, math.sqrt(var)))
    assert ks.pvalue > 0.01, ks


def test_ddim_eta1_all_steps_matches_ddpm_in_distribution(t50_samples):
    sch, ddpm, ddim = t50_samples
    assert ddim_timesteps(50, 50) == list(range(49, -1, -1))
    n = ddpm.numel()
    sd = ddpm.std().item()
    assert ddim.mean().item() == pytest.approx(ddpm.mean().item(), abs=5 * sd * math.sqrt(2 / n))
    assert ddim.std().item() == pytest.approx(sd, rel=5 * math.sqrt(1 / n))
    assert stats.ks_2samp(ddpm.flatten().numpy(), ddim.flatten().numpy()).pvalue > 0.01
    mean, var = _exact_moments(sch, ddim_timesteps(50, 50), eta=1.0)
    _assert_moments(ddim, mean, var)


@pytest.mark.parametrize("denoiser", ["gaussian", "nonlinear"])
def test_ddim_eta1_all_steps_equals_ddpm_for_the_same_seed(denoiser):
    """Same noise draws in the same order, algebraically the same step: the same samples."""
    sch = LinearSchedule(50)
    den = gaussian_denoiser(sch) if denoiser == "gaussian" else (lambda x, t: torch.tanh(1.5 * x) * 0.9 + 0.05)
    a, _ = ddpm_sample(den, sch, (64, 3, 4, 4), _gen(11), CPU, clip=False)
    b, _ = ddim_sample(den, sch, (64, 3, 4, 4), _gen(11), CPU, clip=False, steps=50, eta=1.0)
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_ddpm_with_exact_denoiser_recovers_the_data_distribution():
    """T = 1000: DDPM samples are N(m, s^2) up to the small error of the fixed posterior variance."""
    sch = LinearSchedule()
    n = 50_000
    x, _ = ddpm_sample(gaussian_denoiser(sch), sch, (n, 1), _gen(5), CPU, clip=False)
    assert torch.isfinite(x).all()
    assert x.mean().item() == pytest.approx(M, abs=0.01)
    assert x.std().item() == pytest.approx(S, rel=0.02)
    mean, var = _ddpm_moments_by_posterior(sch)
    _assert_moments(x, mean, var)


def test_ddim_deterministic_with_exact_denoiser_matches_its_affine_map():
    sch = LinearSchedule(100)
    taus = ddim_timesteps(100, 20)
    x, _ = ddim_sample(gaussian_denoiser(sch), sch, (20_000, 1), _gen(8), CPU, clip=False, steps=20, eta=0.0)
    mean, var = _exact_moments(sch, taus, eta=0.0)
    _assert_moments(x, mean, var)
    # the probability-flow map carries N(0, 1) to about the data mean (its std is ~13% low with 20 steps)
    assert mean == pytest.approx(M, abs=0.01)


# --- DDIM from a given x_t0 (start=...) -----------------------------------------------------------

@pytest.mark.parametrize("t0,steps", [(0, 1), (37, 5), (199, 10), (999, 50)])
def test_ddim_start_with_the_true_x0_follows_the_same_noise_back_to_x0(t0, steps):
    """Oracle prediction x0_hat = x_0 and eta = 0: eps_hat is the noise that made x_t0, so each recorded
    x_t is q_sample(x_0, t, eps) with that same eps, and the result is x_0 itself."""
    sch = LinearSchedule()
    x0 = torch.randn(6, 2, 3, 3, generator=_gen(3))
    eps = torch.randn(x0.shape, generator=_gen(4))
    xt = sch.q_sample(x0, torch.full((6,), t0), eps)
    oracle = lambda x, t: x0  # noqa: E731
    seen = []

    def denoise(x, t):
        seen.append(int(t[0]))
        return oracle(x, t)

    out, rec = ddim_sample(denoise, sch, tuple(x0.shape), _gen(0), CPU, clip=False, steps=steps,
                           start=(t0, xt), frames=steps + 1)
    assert seen == ddim_timesteps(t0 + 1, steps) and seen[0] == t0 and seen[-1] == 0
    assert torch.allclose(out, x0, atol=1e-5)
    for t_label, x in rec[1:-1]:  # labels are t + 1 (x_T is labelled T)
        assert torch.allclose(x, sch.q_sample(x0, torch.full((6,), t_label - 1), eps), atol=1e-5)
    assert torch.equal(rec[0][1], xt)


def test_ddim_start_matches_the_exact_affine_map_from_the_marginal_at_t0():
    """Gaussian data, exact denoiser: starting from x_t0 ~ q(x_t0) = N(a m, a^2 s^2 + b^2) the output
    moments follow the scalar recursion over t0, ..., 0, and approach the data N(m, s^2)."""
    sch = LinearSchedule()
    t0, n = 300, 40_000
    ab = float(sch.alpha_bars[t0])
    x0 = M + S * torch.randn(n, 1, generator=_gen(6))
    xt = sch.q_sample(x0, torch.full((n,), t0), torch.randn(n, 1, generator=_gen(7)))
    x, _ = ddim_sample(gaussian_denoiser(sch), sch, (n, 1), _gen(8), CPU, clip=False, steps=15, start=(t0, xt))
    mean, var = _exact_moments(sch, ddim_timesteps(t0 + 1, 15), eta=0.0,
                               start=(math.sqrt(ab) * M, ab * S * S + 1 - ab))
    _assert_moments(x, mean, var)
    # near the data N(m, s^2); 15 coarse deterministic steps shrink the std a little (0.472 against 0.5)
    assert mean == pytest.approx(M, abs=0.01) and math.sqrt(var) == pytest.approx(S, rel=0.1)


def test_ddim_start_step_outside_the_schedule_is_refused():
    sch = LinearSchedule(100)
    with pytest.raises(ValueError, match="0..99"):
        ddim_sample(lambda x, t: x, sch, (2, 1), _gen(0), CPU, clip=False, start=(100, torch.zeros(2, 1)))


# --- DDIM determinism and timesteps -------------------------------------------------------------

def test_ddim_eta0_deterministic_given_seed():
    sch = LinearSchedule(100)
    den = lambda x, t: torch.tanh(x) * 0.8  # noqa: E731
    a, _ = ddim_sample(den, sch, (4, 3, 8, 8), _gen(0), CPU, clip=True, steps=10, eta=0.0)
    b, _ = ddim_sample(den, sch, (4, 3, 8, 8), _gen(0), CPU, clip=True, steps=10, eta=0.0)
    c, _ = ddim_sample(den, sch, (4, 3, 8, 8), _gen(1), CPU, clip=True, steps=10, eta=0.0)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-3)


def test_ddim_eta0_draws_only_the_initial_noise():
    """eta = 0: x_T is the only random draw; the output is a function of x_T alone."""
    sch = LinearSchedule(100)
    seen = []

    def den(x, t):
        seen.append(x.clone())
        return torch.tanh(x)

    g = _gen(3)
    ddim_sample(den, sch, (2, 1, 4, 4), g, CPU, clip=False, steps=7, eta=0.0)
    assert torch.equal(seen[0], torch.randn((2, 1, 4, 4), generator=_gen(3)))
    after = torch.randn(5, generator=g)
    g2 = _gen(3)
    torch.randn((2, 1, 4, 4), generator=g2)
    assert torch.equal(after, torch.randn(5, generator=g2))


@pytest.mark.parametrize("T, steps", [(1000, 50), (1000, 1000), (100, 7), (100, 99), (100, 100), (50, 2),
                                      (10, 3), (1000, 333)])
def test_ddim_timesteps(T, steps):
    taus = ddim_timesteps(T, steps)
    assert len(taus) == steps
    assert len(set(taus)) == len(taus)
    assert all(a > b for a, b in zip(taus, taus[1:]))
    assert taus[0] == T - 1 and taus[-1] == 0
    assert all(isinstance(t, int) for t in taus)


def test_ddim_timesteps_more_steps_than_T_collapse_to_all_steps():
    assert ddim_timesteps(20, 45) == list(range(19, -1, -1))


def test_ddim_single_step_returns_the_prediction():
    sch = LinearSchedule(100)
    assert ddim_timesteps(100, 1) == [99]
    x, _ = ddim_sample(lambda x, t: torch.full_like(x, 0.25), sch, (3, 2), _gen(0), CPU, clip=False, steps=1)
    assert torch.allclose(x, torch.full_like(x, 0.25))


def test_denoiser_receives_the_right_timesteps():
    sch = LinearSchedule(100)
    calls = []

    def den(x, t):
        assert t.dtype == torch.long and t.shape == (x.shape[0],) and bool((t == t[0]).all())
        calls.append(int(t[0]))
        return torch.zeros_like(x)

    ddpm_sample(den, sch, (3, 1, 2, 2), _gen(0), CPU, clip=False)
    assert calls == list(range(99, -1, -1))
    calls.clear()
    ddim_sample(den, sch, (3, 1, 2, 2), _gen(0), CPU, clip=False, steps=12)
    assert calls == ddim_timesteps(100, 12)


# --- clipping ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["ddpm", "ddim0", "ddim1"])
def test_clip_keeps_x0_prediction_in_range(sampler):
    sch = LinearSchedule(50)
    far = lambda x, t: torch.full_like(x, 5.0)  # noqa: E731
    seen = []

    def spy(x, t):
        seen.append(x)
        return far(x, t)

    def run(den, clip):
        if sampler == "ddpm":
            return ddpm_sample(den, sch, (8, 3, 4, 4), _gen(0), CPU, clip=clip)[0]
        eta = 0.0 if sampler == "ddim0" else 1.0
        return ddim_sample(den, sch, (8, 3, 4, 4), _gen(0), CPU, clip=clip, steps=10, eta=eta)[0]

    clipped = run(spy, True)
    assert clipped.min() >= -1 - 1e-5 and clipped.max() <= 1 + 1e-5
    assert torch.allclose(clipped, torch.ones_like(clipped), atol=1e-4)  # the last step returns x0_hat = 1
    unclipped = run(far, False)
    assert torch.allclose(unclipped, torch.full_like(unclipped, 5.0), atol=1e-3)


# --- frames ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("frames", [1, 2, 5, 10])
def test_ddpm_frames(frames):
    sch = LinearSchedule(25)
    x, rec = ddpm_sample(lambda x, t: torch.tanh(x), sch, (2, 1, 3, 3), _gen(4), CPU, clip=True, frames=frames)
    # x_T, then the requested number of frames along the reverse process, the last one x_0
    assert len(rec) == frames + 1
    ts = [t for t, _ in rec]
    assert ts[0] == 25 and ts[-1] == 0
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert torch.equal(rec[0][1], torch.randn((2, 1, 3, 3), generator=_gen(4)))
    assert torch.equal(rec[-1][1], x)
    assert all(xt.shape == (2, 1, 3, 3) for _, xt in rec)


@pytest.mark.parametrize("frames", [1, 3, 8])
def test_ddim_frames(frames):
    sch = LinearSchedule(100)
    x, rec = ddim_sample(lambda x, t: torch.tanh(x), sch, (2, 1, 3, 3), _gen(4), CPU, clip=True, steps=8,
                         frames=frames)
    assert len(rec) == frames + 1
    ts = [t for t, _ in rec]
    assert ts[0] == 100 and ts[-1] == 0 and all(a > b for a, b in zip(ts, ts[1:]))
    assert torch.equal(rec[-1][1], x)


def test_no_frames_by_default():
    sch = LinearSchedule(25)
    assert ddpm_sample(lambda x, t: x, sch, (1, 1), _gen(0), CPU, clip=False)[1] == []
    assert ddim_sample(lambda x, t: x, sch, (1, 1), _gen(0), CPU, clip=False, steps=4)[1] == []


def test_frames_do_not_change_the_samples():
    sch = LinearSchedule(30)
    den = lambda x, t: torch.tanh(x)  # noqa: E731
    a, _ = ddpm_sample(den, sch, (3, 1, 2, 2), _gen(9), CPU, clip=True)
    b, _ = ddpm_sample(den, sch, (3, 1, 2, 2), _gen(9), CPU, clip=True, frames=7)
    assert torch.equal(a, b)


def test_progress_is_updated_once_per_step():
    class Counter:
        n = 0

        def update(self, k):
            self.n += k

    sch = LinearSchedule(30)
    c = Counter()
    ddpm_sample(lambda x, t: x, sch, (1, 1), _gen(0), CPU, clip=False, progress=c)
    assert c.n == 30
    c = Counter()
    ddim_sample(lambda x, t: x, sch, (1, 1), _gen(0), CPU, clip=False, steps=9, progress=c)
    assert c.n == 9
