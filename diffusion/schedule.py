"""The DDPM noise schedule as a plain object: the linear betas and every closed form built on them.

Notation (Ho et al. 2020). Steps are indexed t = 0, ..., T-1 in code; x_t is the sample after
t + 1 noising steps, so index T-1 is the paper's x_T and "t = -1" is the clean data x_0.

    beta_t        linear from beta_start to beta_end over T steps
    alpha_t       = 1 - beta_t
    alpha_bar_t   = prod_{s <= t} alpha_s

Forward process, one step and in closed form:
    q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I)
    q(x_t | x_0)     = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
    =>  x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,   eps ~ N(0, I)

Posterior of one reverse step given the clean data (Ho et al., eq. 6-7):
    q(x_{t-1} | x_t, x_0) = N(mu_t, beta_tilde_t I)
    mu_t         = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) * x_0
                 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * x_t
    beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t
with alpha_bar_{-1} = 1 (so beta_tilde_0 = 0: the last step is deterministic).

Endpoints for other T. With T steps the noise added in total is roughly sum(beta) ~ T * mean(beta);
keeping beta_start and beta_end of T = 1000 while shrinking T leaves signal behind (T = 100:
alpha_bar_T ~ 0.36). Scaling the endpoints by 1000 / T (Nichol & Dhariwal 2021, as in the
improved-DDPM code) keeps alpha_bar_T near 0.
"""
from __future__ import annotations

import math

import torch

from plumbing.cli import UserError

# A schedule must end close enough to N(0, I): at most this much signal variance left at T.
MAX_ALPHA_BAR_T = 1e-2


class LinearSchedule:
    """Linear-beta DDPM schedule with its closed forms. Tensors live on the CPU in float64 and are
    gathered per batch (cast to the batch's dtype and device) by `_at`."""

    def __init__(self, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, scale_to_T: bool = True):
        if T < 2:
            raise UserError(f"schedule.T={T} must be at least 2")
        if scale_to_T:
            beta_start, beta_end = beta_start * 1000 / T, beta_end * 1000 / T
        if not 0 < beta_start <= beta_end < 1:
            raise UserError(f"schedule betas must satisfy 0 < beta_start <= beta_end < 1 (after scaling by 1000/T: "
                            f"{beta_start:.4g}, {beta_end:.4g}); lower schedule.beta_end or raise schedule.T")
        self.T = T
        self.beta_start, self.beta_end = beta_start, beta_end
        self.betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        self.alphas = 1.0 - self.betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)
        self.alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars[:-1]])
        # Posterior q(x_{t-1} | x_t, x_0): variance and the two mean coefficients (see module docstring).
        self.posterior_var = self.betas * (1.0 - self.alpha_bars_prev) / (1.0 - self.alpha_bars)
        self.posterior_coef_x0 = self.betas * self.alpha_bars_prev.sqrt() / (1.0 - self.alpha_bars)
        self.posterior_coef_xt = (1.0 - self.alpha_bars_prev) * self.alphas.sqrt() / (1.0 - self.alpha_bars)

    # -- closed forms -----------------------------------------------------------------------

    @staticmethod
    def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] shaped [B, 1, 1, ...] to broadcast against `like` ([B, ...])."""
        out = values[t.cpu()].to(device=like.device, dtype=like.dtype)
        return out.view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps  (a sample of q(x_t | x_0))."""
        return self._at(self.alpha_bars.sqrt(), t, x0) * x0 + self._at((1 - self.alpha_bars).sqrt(), t, x0) * noise

    def q_step(self, x_prev: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One forward step: x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps  (a sample of q(x_t | x_{t-1}))."""
        return self._at(self.alphas.sqrt(), t, x_prev) * x_prev + self._at(self.betas.sqrt(), t, x_prev) * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (variance broadcastable to the batch)."""
        mean = self._at(self.posterior_coef_x0, t, xt) * x0 + self._at(self.posterior_coef_xt, t, xt) * xt
        return mean, self._at(self.posterior_var, t, xt)

    def predict_eps(self, xt: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The noise implied by x_t and x_0: eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""
        return (xt - self._at(self.alpha_bars.sqrt(), t, xt) * x0) / self._at((1 - self.alpha_bars).sqrt(), t, xt)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio SNR(t) = alpha_bar_t / (1 - alpha_bar_t)."""
        return self.alpha_bars[t.cpu()] / (1.0 - self.alpha_bars[t.cpu()])

    def log_snr(self) -> torch.Tensor:
        """log SNR(t) for every t = 0..T-1 (float64): strictly decreasing in t, about 9.2 at t = 0 and
        -10.1 at t = T-1 for the default schedule."""
        return torch.log(self.alpha_bars) - torch.log1p(-self.alpha_bars)

    def t_from_log_snr(self, log_snr: torch.Tensor) -> torch.Tensor:
        """The step t whose log SNR(t) is nearest to each value (values outside the schedule's range
        map to t = 0 or t = T-1). Inverts `log_snr` on its grid: t_from_log_snr(log_snr()[t]) == t."""
        table = self.log_snr().flip(0)                  # increasing: table[i] = log SNR(T-1-i)
        value = log_snr.to(torch.float64).clamp(table[0], table[-1])
        right = torch.searchsorted(table, value).clamp(1, self.T - 1)
        nearer_left = (value - table[right - 1]) <= (table[right] - value)
        return (self.T - 1 - (right - nearer_left.long())).long()

    # -- diagnostics ------------------------------------------------------------------------

    def diagnostics(self, x0: torch.Tensor | None = None) -> dict:
        """How close q(x_T | x_0) is to N(0, I).

        alpha_bar_T and SNR_T = alpha_bar_T / (1 - alpha_bar_T) need no data. For data x_0, each
        dimension of q(x_T | x_0) is N(m, v) with m = sqrt(alpha_bar_T) x_0, v = 1 - alpha_bar_T, and
            KL(N(m, v) || N(0, 1)) = 1/2 (v + m^2 - 1 - log v),
        averaged here over the data (nats per dimension).
        """
        ab = float(self.alpha_bars[-1])
        out = {"T": self.T, "beta_start": self.beta_start, "beta_end": self.beta_end,
               "alpha_bar_T": ab, "snr_T": ab / (1 - ab)}
        if x0 is not None:
            v = 1 - ab
            m2 = ab * x0.double().pow(2)
            out["kl_per_dim"] = float((0.5 * (v + m2 - 1 - math.log(v))).mean())
            out["data_mean_square"] = float(x0.double().pow(2).mean())
        return out

    def check_ends_in_noise(self, x0: torch.Tensor | None = None, force: bool = False) -> dict:
        """Refuse a schedule whose x_T keeps more than MAX_ALPHA_BAR_T of the signal variance."""
        d = self.diagnostics(x0)
        if d["alpha_bar_T"] > MAX_ALPHA_BAR_T and not force:
            kl = f", KL(q(x_T|x_0) || N(0,I)) = {d['kl_per_dim']:.3g} nats/dim" if "kl_per_dim" in d else ""
            raise UserError(
                f"this schedule does not end in N(0, I): alpha_bar_T = {d['alpha_bar_T']:.3g}, "
                f"SNR_T = {d['snr_T']:.3g}{kl} (limit alpha_bar_T <= {MAX_ALPHA_BAR_T}); raise schedule.T, "
                "set schedule.scale_to_T=true, or force it with schedule.force=true")
        return d
