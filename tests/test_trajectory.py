"""reports.trajectory: the x0 predictions along a DDIM run, with analytic denoisers and on the tiny runs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.samplers import ddim_sample, x0_trajectory
from diffusion.schedule import LinearSchedule
from plumbing.cli import UserError
from reports import trajectory
from tests.test_sampling import S, gaussian_denoiser

CPU = torch.device("cpu")


def test_an_oracle_denoiser_predicts_its_x0_at_every_recorded_step_and_the_run_lands_on_it():
    sch = LinearSchedule(1000)
    target = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    x, kept = x0_trajectory(lambda x, t: target, sch, tuple(target.shape), torch.Generator().manual_seed(1),
                                       CPU, clip=False, steps=50, rows=6)
    ts = [t for t, _ in kept]
    assert ts[0] == 999 and ts[-1] == 0
    assert len(ts) == 6 and ts == sorted(ts, reverse=True)
    for _, x0_hat in kept:
        assert torch.equal(x0_hat, target)
    torch.testing.assert_close(x, target)  # DDIM with the true x_0 returns it (diffusion/samplers.py)


def test_the_recording_does_not_change_the_run_and_its_last_row_is_the_sample():
    sch = LinearSchedule(1000)
    shape = (4, 3, 8, 8)
    denoise = gaussian_denoiser(sch)
    x, kept = x0_trajectory(denoise, sch, shape, torch.Generator().manual_seed(7), CPU, clip=False,
                                       steps=25, rows=5)
    plain, _ = ddim_sample(denoise, sch, shape, torch.Generator().manual_seed(7), CPU, clip=False, steps=25)
    assert torch.equal(x, plain)
    assert kept[-1][0] == 0 and torch.equal(kept[-1][1], x)  # t = 0, ab_prev = 1: x_0 = x0_hat


def test_under_much_noise_the_exact_denoiser_predicts_the_mean_and_commits_as_the_noise_falls():
    """Gaussian data N(m, s^2): E[x_0 | x_t] = m + a s^2 / (a^2 s^2 + b^2) (x_t - a m), whose spread
    over samples, a s^2 / sqrt(a^2 s^2 + b^2) when x_t has its true marginal, is ~0 at t = T-1 (every
    sample predicts the data mean: the blurred average) and grows to s at t = 0 (the final sample)."""
    sch = LinearSchedule(1000)
    x, kept = x0_trajectory(gaussian_denoiser(sch), sch, (4096, 1, 1, 1), torch.Generator().manual_seed(0),
                                       CPU, clip=False, steps=50, rows=6)
    spreads = [float(x0_hat.std()) for _, x0_hat in kept]
    ab = sch.alpha_bars.double()
    for (t, _), spread in zip(kept, spreads):
        a2 = float(ab[t])
        expected = a2 ** 0.5 * S ** 2 / (a2 * S ** 2 + 1 - a2) ** 0.5
        assert spread == pytest.approx(expected, rel=0.08, abs=2e-3), t
    assert spreads[0] < 0.01 * S and spreads == sorted(spreads) and spreads[-1] == pytest.approx(S, rel=0.08)


def run(tiny_runs, tmp_path, kind: str, *extra: str):
    out = tmp_path / f"trajectory-{kind}"
    trajectory.main(["--ckpt", str(tiny_runs[kind] / "diffusion.pt"), "--device", "cpu", "--out", str(out), *extra])
    return out


@pytest.mark.parametrize("kind", ["ldm", "pixel"])
def test_trajectory_writes_one_labelled_row_per_recorded_step(tiny_runs, tmp_path, kind):
    out = run(tiny_runs, tmp_path, kind, "--n", "3", "--rows", "4", "--steps", "10")
    stats = json.loads((out / "trajectory.json").read_text())
    assert stats["space"] == ("latent" if kind == "ldm" else "pixel") and stats["n"] == 3
    ts = [r["t"] for r in stats["rows"]]
    assert len(ts) == 4 and ts[0] == 99 and ts[-1] == 0 and ts == sorted(ts, reverse=True)  # tiny runs: T = 100
    snrs = [r["snr"] for r in stats["rows"]]
    assert snrs == sorted(snrs) and snrs[0] > 0
    rms = [r["rms_to_final"] for r in stats["rows"]]
    assert rms[-1] == 0 and all(np.isfinite(rms)) and rms[0] > 0
    img = np.asarray(Image.open(out / "trajectory.png"))
    tile = 2 * 16 + 2  # data.size of the tiny runs at twice the size, plus the grid's padding
    assert img.shape[0] == 2 + 4 * tile
    assert img.shape[1] > 2 + 3 * tile  # the label margin on the left


def test_trajectory_is_deterministic_per_seed(tiny_runs, tmp_path):
    png = lambda d: np.asarray(Image.open(d / "trajectory.png"))  # noqa: E731
    a = run(tiny_runs, tmp_path / "a", "pixel", "--n", "2", "--rows", "3", "--steps", "8", "--seed", "5")
    b = run(tiny_runs, tmp_path / "b", "pixel", "--n", "2", "--rows", "3", "--steps", "8", "--seed", "5")
    c = run(tiny_runs, tmp_path / "c", "pixel", "--n", "2", "--rows", "3", "--steps", "8", "--seed", "6")
    assert np.array_equal(png(a), png(b)) and not np.array_equal(png(a), png(c))


def test_trajectory_refuses_fewer_than_two_rows(tiny_runs, tmp_path):
    with pytest.raises(UserError, match="--rows 1: at least 2 rows are needed"):
        run(tiny_runs, tmp_path, "pixel", "--rows", "1")
