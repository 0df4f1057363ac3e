"""The linear DDPM schedule (diffusion/schedule.py): betas, closed forms checked against sampling and
brute-force Gaussian algebra, and the check that the forward process ends in N(0, I)."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from diffusion.schedule import MAX_ALPHA_BAR_T, LinearSchedule
from plumbing.cli import UserError
from diffusion.trainer import draw_t
from types import SimpleNamespace


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _full(n: int, t: int) -> torch.Tensor:
    return torch.full((n,), t, dtype=torch.long)


# --- betas and alpha_bars ----------------------------------------------------------------------

def test_default_schedule_is_linear_with_cumprod_alpha_bars():
    s = LinearSchedule()
    assert s.T == 1000 and s.betas.dtype == torch.float64 and s.betas.shape == (1000,)
    assert s.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert s.betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    diffs = s.betas.diff()
    assert torch.allclose(diffs, torch.full_like(diffs, (0.02 - 1e-4) / 999), rtol=1e-9, atol=0)
    assert torch.allclose(s.alphas, 1 - s.betas, rtol=0, atol=1e-15)
    # cumulative product, recomputed by an explicit loop
    expected, acc = [], 1.0
    for b in s.betas.tolist():
        acc *= 1 - b
        expected.append(acc)
    assert torch.allclose(s.alpha_bars, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
    assert bool((s.alpha_bars.diff() < 0).all())
    assert s.alpha_bars_prev[0].item() == 1.0
    assert torch.equal(s.alpha_bars_prev[1:], s.alpha_bars[:-1])


@pytest.mark.parametrize("T, start, end", [(100, 1e-3, 0.2), (250, 4e-4, 0.08), (1000, 1e-4, 0.02), (2000, 5e-5, 0.01)])
def test_endpoints_scaled_by_1000_over_T(T, start, end):
    s = LinearSchedule(T, scale_to_T=True)
    assert s.beta_start == pytest.approx(start, rel=1e-12) and s.beta_end == pytest.approx(end, rel=1e-12)
    assert s.betas[0].item() == pytest.approx(start, rel=1e-12)
    assert s.betas[-1].item() == pytest.approx(end, rel=1e-12)
    assert len(s.betas) == T


def test_unscaled_endpoints_are_kept():
    s = LinearSchedule(100, scale_to_T=False)
    assert s.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert s.betas[-1].item() == pytest.approx(0.02, rel=1e-12)


@pytest.mark.parametrize("kwargs", [dict(T=1), dict(T=10), dict(T=100, beta_start=0.01, beta_end=0.001, scale_to_T=False),
                                    dict(T=100, beta_start=0.0, scale_to_T=False)])
def test_invalid_schedules_are_user_errors(kwargs):
    # T=10 scaled: beta_end = 0.02 * 100 = 2 >= 1
    with pytest.raises(UserError):
        LinearSchedule(**kwargs)


def test_snr_matches_alpha_bars_and_decreases():
    s = LinearSchedule()
    t = torch.tensor([0, 10, 500, 999])
    ab = s.alpha_bars[t]
    assert torch.allclose(s.snr(t), ab / (1 - ab), rtol=1e-12)
    assert bool((s.snr(torch.arange(1000)).diff() < 0).all())


def test_t_from_log_snr_inverts_log_snr_and_picks_the_nearest_step():
    s = LinearSchedule()
    table = s.log_snr()
    assert torch.allclose(table.exp(), s.snr(torch.arange(1000)), rtol=1e-10)
    t = torch.arange(1000)
    assert torch.equal(s.t_from_log_snr(table), t)
    # Any value maps to the step with the nearest log SNR (brute force over all steps).
    values = torch.linspace(-12.0, 11.0, 2001, dtype=torch.float64)
    brute = (table[None, :] - values[:, None]).abs().argmin(dim=1)
    assert torch.equal(s.t_from_log_snr(values), brute)
    assert s.t_from_log_snr(torch.tensor([50.0, -50.0])).tolist() == [0, 999]


def test_log_snr_normal_t_sampling_has_the_configured_distribution():
    s = LinearSchedule()
    cfg = SimpleNamespace(log_snr_mean=1.0, log_snr_std=2.4)
    t = draw_t(s, 200_000, cfg, _gen(0))
    assert t.dtype == torch.long and int(t.min()) >= 0 and int(t.max()) <= 999
    drawn = s.log_snr()[t]
    # Away from the clamped ends the grid spacing (< 0.05 in log SNR) is far below the tolerance.
    assert abs(float(drawn.mean()) - 1.0) < 0.03 and abs(float(drawn.std()) - 2.4) < 0.03
    ks = stats.kstest(drawn.numpy(), stats.norm(1.0, 2.4).cdf).statistic
    assert ks < 0.01
    uniform = torch.randint(0, 1000, (200_000,), generator=_gen(0))  # Ho et al.'s t ~ Uniform{0..T-1}
    # The point of the log-normal: far fewer steps at SNR < 0.09 than under uniform t (about half).
    low = float(math.log(0.09))
    assert float((s.log_snr()[uniform] < low).double().mean()) > 0.45
    assert float((drawn < low).double().mean()) < 0.20


# --- forward process ----------------------------------------------------------------------------

@pytest.mark.parametrize("t", [0, 9, 250, 999])
def test_q_sample_moments(t):
    s = LinearSchedule()
    n = 200_000
    for x0_value in (0.8, -0.35):
        x0 = torch.full((n,), x0_value, dtype=torch.float64)
        noise = torch.randn(n, generator=_gen(t), dtype=torch.float64)
        xt = s.q_sample(x0, _full(n, t), noise)
        ab = s.alpha_bars[t].item()
        mean, var = math.sqrt(ab) * x0_value, 1 - ab
        # standard errors: sqrt(var / n) for the mean, var * sqrt(2 / n) for the variance; 5 sigma
        assert xt.mean().item() == pytest.approx(mean, abs=5 * math.sqrt(var / n))
        assert xt.var().item() == pytest.approx(var, abs=5 * var * math.sqrt(2 / n))


def test_q_sample_per_element_timesteps_and_dtype():
    s = LinearSchedule()
    x0 = torch.rand(4, 3, 5, 5) * 2 - 1
    noise = torch.randn(4, 3, 5, 5)
    t = torch.tensor([0, 1, 500, 999])
    xt = s.q_sample(x0, t, noise)
    assert xt.dtype == torch.float32 and xt.shape == x0.shape
    for i in range(4):
        ab = s.alpha_bars[t[i]].item()
        assert torch.allclose(xt[i], math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * noise[i], atol=1e-6)


@pytest.mark.parametrize("t", [0, 4, 30, 99])
def test_iterated_q_step_matches_q_sample(t):
    s = LinearSchedule(100)
    n = 200_000
    x0 = torch.full((n,), 0.6, dtype=torch.float64)
    gen = _gen(100 + t)
    x = x0
    for step in range(t + 1):
        x = s.q_step(x, _full(n, step), torch.randn(n, generator=gen, dtype=torch.float64))
    direct = s.q_sample(x0, _full(n, t), torch.randn(n, generator=gen, dtype=torch.float64))
    ab = s.alpha_bars[t].item()
    mean, var = math.sqrt(ab) * 0.6, 1 - ab
    for xs in (x, direct):
        assert xs.mean().item() == pytest.approx(mean, abs=5 * math.sqrt(var / n))
        assert xs.var().item() == pytest.approx(var, abs=5 * var * math.sqrt(2 / n))
    assert stats.ks_2samp(x.numpy(), direct.numpy()).pvalue > 0.01


def test_q_step_is_one_gaussian_step():
    s = LinearSchedule()
    x = torch.randn(6, 2, dtype=torch.float64)
    e = torch.randn(6, 2, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 500, 998, 999])
    out = s.q_step(x, t, e)
    b = s.betas[t].view(-1, 1)
    assert torch.allclose(out, (1 - b).sqrt() * x + b.sqrt() * e, rtol=1e-12)


# --- posterior ----------------------------------------------------------------------------------

def _brute_force_posterior(s: LinearSchedule, x0: torch.Tensor, xt: torch.Tensor, t: int):
    """Condition the joint Gaussian of (x_{t-1}, x_t) given x_0 on x_t (float64)."""
    ab_prev = s.alpha_bars[t - 1].item() if t > 0 else 1.0
    alpha, beta = 1 - s.betas[t].item(), s.betas[t].item()
    mu_a, s_aa = math.sqrt(ab_prev) * x0, 1 - ab_prev
    mu_b = math.sqrt(alpha) * mu_a
    s_ab = math.sqrt(alpha) * s_aa
    s_bb = alpha * s_aa + beta
    # the marginal of x_t built this way is q(x_t | x_0)
    assert s_bb == pytest.approx(1 - s.alpha_bars[t].item(), rel=1e-10)
    return mu_a + s_ab / s_bb * (xt - mu_b), s_aa - s_ab ** 2 / s_bb


@pytest.mark.parametrize("T", [1000, 50])
def test_posterior_matches_gaussian_conditioning(T):
    s = LinearSchedule(T)
    g = _gen(T)
    for t in sorted({0, 1, 2, T // 3, T // 2, T - 2, T - 1}):
        x0 = torch.rand(8, 3, 2, 2, generator=g, dtype=torch.float64) * 2 - 1
        xt = torch.randn(8, 3, 2, 2, generator=g, dtype=torch.float64) * 1.5
        mean, var = s.q_posterior(x0, xt, _full(8, t))
        want_mean, want_var = _brute_force_posterior(s, x0, xt, t)
        assert torch.allclose(mean, want_mean, rtol=1e-10, atol=1e-12), t
        assert var.shape == (8, 1, 1, 1)
        assert torch.allclose(var, torch.full_like(var, want_var), rtol=1e-9, atol=1e-15), t
        if t == 0:  # the last reverse step is deterministic and returns x_0
            assert float(var.max()) == 0.0
            assert torch.allclose(mean, x0, atol=1e-12)


def test_posterior_by_sampling():
    """Monte Carlo: among x_{t-1} ~ q(.|x_0), the step to x_t gives E[x_{t-1} | x_t] = mu_t (regression)."""
    s = LinearSchedule(100)
    t, n, x0v = 40, 400_000, 0.5
    g = _gen(7)
    x0 = torch.full((n,), x0v, dtype=torch.float64)
    x_prev = s.q_sample(x0, _full(n, t - 1), torch.randn(n, generator=g, dtype=torch.float64))
    xt = s.q_step(x_prev, _full(n, t), torch.randn(n, generator=g, dtype=torch.float64))
    # x_{t-1} | x_t is linear-Gaussian: regress x_{t-1} on x_t
    cov = torch.cov(torch.stack([x_prev, xt]))
    slope = (cov[0, 1] / cov[1, 1]).item()
    resid_var = (cov[0, 0] - cov[0, 1] ** 2 / cov[1, 1]).item()
    assert slope == pytest.approx(s.posterior_coef_xt[t].item(), rel=0.02)
    assert resid_var == pytest.approx(s.posterior_var[t].item(), rel=0.02)
    probe = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    mean, _ = s.q_posterior(torch.full((3,), x0v, dtype=torch.float64), probe, _full(3, t))
    fitted = x_prev.mean() + slope * (probe - xt.mean())
    assert torch.allclose(mean, fitted, atol=0.01)


# --- predict_eps ---------------------------------------------------------------------------------

def test_predict_eps_inverts_q_sample():
    s = LinearSchedule()
    g = _gen(3)
    t = torch.tensor([0, 1, 10, 100, 500, 998, 999, 250])
    x0 = torch.rand(8, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)
    xt = s.q_sample(x0, t, eps)
    assert torch.allclose(s.predict_eps(xt, x0, t), eps, rtol=0, atol=1e-9)
    # float32 too, away from t = 0 where 1/sqrt(1 - alpha_bar) amplifies rounding
    t32 = torch.tensor([50, 100, 500, 999])
    x32, e32 = x0[:4].float(), eps[:4].float()
    assert torch.allclose(s.predict_eps(s.q_sample(x32, t32, e32), x32, t32), e32, atol=1e-4)


# --- the end of the forward process --------------------------------------------------------------

def _sprite_like(n: int, seed: int) -> torch.Tensor:
    """Non-Gaussian data in [-1, 1] with a large mean: 70% white background (1.0), 30% uniform."""
    g = _gen(seed)
    x = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1
    return torch.where(torch.rand(n, generator=g, dtype=torch.float64) < 0.7, torch.ones_like(x), x)


def test_default_schedule_ends_in_standard_normal():
    s = LinearSchedule()
    n = 100_000
    x0 = _sprite_like(n, 0)
    xT = s.q_sample(x0, _full(n, s.T - 1), torch.randn(n, generator=_gen(1), dtype=torch.float64))
    ks = stats.kstest(xT.numpy(), "norm")
    assert ks.pvalue > 0.01 and ks.statistic < 0.01, ks


def test_unscaled_short_schedule_does_not_end_in_noise_by_ks():
    """The same KS test has power: with T=100 and unscaled betas, x_T keeps ~60% of the signal."""
    s = LinearSchedule(100, scale_to_T=False)
    n = 100_000
    x0 = _sprite_like(n, 0)
    xT = s.q_sample(x0, _full(n, s.T - 1), torch.randn(n, generator=_gen(1), dtype=torch.float64))
    ks = stats.kstest(xT.numpy(), "norm")
    assert ks.pvalue < 1e-6 and ks.statistic > 0.05, ks


def test_diagnostics_keys_and_values():
    s = LinearSchedule()
    d = s.diagnostics()
    assert set(d) == {"T", "beta_start", "beta_end", "alpha_bar_T", "snr_T"}
    ab = math.prod(1 - b for b in s.betas.tolist())
    assert d["T"] == 1000 and d["alpha_bar_T"] == pytest.approx(ab, rel=1e-9) and d["alpha_bar_T"] < 1e-4
    assert d["snr_T"] == pytest.approx(ab / (1 - ab), rel=1e-9)
    assert d["beta_start"] == pytest.approx(1e-4) and d["beta_end"] == pytest.approx(0.02)

    x0 = _sprite_like(10_000, 5).view(100, 1, 10, 10)
    d = s.diagnostics(x0)
    assert set(d) == {"T", "beta_start", "beta_end", "alpha_bar_T", "snr_T", "kl_per_dim", "data_mean_square"}
    assert d["data_mean_square"] == pytest.approx(float(x0.pow(2).mean()), rel=1e-12)
    # KL(N(sqrt(ab) x0, 1 - ab) || N(0, 1)) per element, by torch.distributions
    q = torch.distributions.Normal(math.sqrt(ab) * x0, math.sqrt(1 - ab))
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).mean().item()
    assert d["kl_per_dim"] == pytest.approx(kl, rel=1e-6)
    # to first order in alpha_bar_T: KL ~ alpha_bar_T * E[x0^2] / 2 (+ O(alpha_bar_T^2)), ~1.6e-5 nats here
    assert d["kl_per_dim"] == pytest.approx(0.5 * ab * d["data_mean_square"], rel=1e-3)
    assert 0 < d["kl_per_dim"] < 1e-4


def test_unscaled_T100_is_refused_unless_forced():
    s = LinearSchedule(100, scale_to_T=False)
    assert s.diagnostics()["alpha_bar_T"] == pytest.approx(0.3636, abs=2e-3)
    with pytest.raises(UserError) as err:
        s.check_ends_in_noise()
    assert "alpha_bar_T" in str(err.value) and "0.364" in str(err.value)
    assert "\n" not in str(err.value)
    x0 = _sprite_like(1000, 2)
    with pytest.raises(UserError, match="alpha_bar_T.*KL"):
        s.check_ends_in_noise(x0)
    d = s.check_ends_in_noise(x0, force=True)
    assert d["alpha_bar_T"] > MAX_ALPHA_BAR_T and d["kl_per_dim"] > 0.05


def test_scaled_T100_passes():
    s = LinearSchedule(100, scale_to_T=True)
    d = s.check_ends_in_noise(_sprite_like(1000, 2))
    assert d["alpha_bar_T"] < 1e-4 and d["kl_per_dim"] < 1e-4
    assert LinearSchedule().check_ends_in_noise()["alpha_bar_T"] < MAX_ALPHA_BAR_T


def test_threshold_is_alpha_bar_T_1e_2():
    # T = 300 unscaled: sum(beta) ~ 3.0, alpha_bar_T ~ e^-3 ~ 0.05 > 1e-2; T = 600: ~ e^-6 ~ 2.5e-3
    with pytest.raises(UserError):
        LinearSchedule(300, scale_to_T=False).check_ends_in_noise()
    assert LinearSchedule(600, scale_to_T=False).check_ends_in_noise()["alpha_bar_T"] < 1e-2


@pytest.mark.parametrize("mean", [0.0, 0.6])
def test_ks_yardstick_predicts_the_statistic_of_x_T(mean):
    """x_T of data with a mean keeps the shift sqrt(ab_T) mean(x_0) phi(0): a short schedule (ab_T ~ 0.01)
    makes it large enough to see; the measured KS lands near the expected value and under the limit."""
    from reports.noising import ks_yardstick, moments_and_ks

    s = LinearSchedule(T=100, scale_to_T=False, beta_end=0.09)
    ab = float(s.alpha_bars[-1])
    n = 400_000
    gen = torch.Generator().manual_seed(0)
    x0 = mean + 0.3 * torch.randn(n, generator=gen)
    xT = s.q_sample(x0, torch.full((n,), s.T - 1), torch.randn(n, generator=gen))
    ks = moments_and_ks(xT)["ks_vs_normal"]
    y = ks_yardstick(float(x0.mean()), ab, n)
    assert 0.005 < ab < 0.02 and y["shift"] == pytest.approx(math.sqrt(ab) * abs(float(x0.mean())) / math.sqrt(2 * math.pi))
    assert ks < y["limit"]
    if mean:  # the shift dominates the sampling term here: without it the yardstick would be passed
        assert y["shift"] > 10 / math.sqrt(n) and ks > 0.87 / math.sqrt(n) * 3
        assert abs(ks - y["shift"]) < 1.63 / math.sqrt(n)
