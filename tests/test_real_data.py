"""Tests on the real 919 sprites, where the real data is the point (skipped without POKEMON_DATA).

CI sets POKEMON_DATA=../shared/data/pokemon (see .ci/run). The value is read at import time,
before the hermetic fixture removes the variable for every other test.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from scipy import stats

from diffusion.schedule import LinearSchedule
from sprites.dataset import load_artworks, to_unit_range
from sprites.artworks import EXPECTED_COUNT, EXPECTED_FINGERPRINT

REAL = os.environ.get("POKEMON_DATA")
pytestmark = pytest.mark.skipif(not REAL or not Path(REAL).is_dir(), reason="POKEMON_DATA not set to the sprite folder")


@pytest.fixture(scope="module")
def real32(tmp_path_factory):
    return load_artworks(REAL, 32, tmp_path_factory.mktemp("cache"))


def test_all_sprites_load_with_the_known_fingerprint(real32):
    assert real32.images.shape == (EXPECTED_COUNT, 3, 32, 32)
    assert real32.fingerprint == EXPECTED_FINGERPRINT
    # about 5% held out, disjoint from training
    assert len(real32.holdout_idx) == round(0.05 * EXPECTED_COUNT)
    assert not set(real32.holdout_idx.tolist()) & set(real32.train_idx.tolist())


def test_sprites_are_on_white(real32):
    """Compositing onto white: the corner pixels of every sprite are (nearly) white."""
    corners = real32.images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners >= 250).float().mean() > 0.99


def test_forward_process_ends_in_standard_normal_on_real_pixels(real32):
    """x_T of the default schedule over the real RGB values passes a KS test against N(0, 1),
    although the data themselves are far from Gaussian (a spike at white)."""
    x0 = to_unit_range(real32.images[:300])
    sch = LinearSchedule()
    gen = torch.Generator().manual_seed(0)
    xT = sch.q_sample(x0, torch.full((len(x0),), sch.T - 1), torch.randn(x0.shape, generator=gen))
    sample = xT.flatten()[torch.randperm(xT.numel(), generator=gen)[:200_000]].numpy()
    data = x0.flatten()[:200_000].numpy()
    assert stats.kstest(data, "norm").statistic > 0.3          # the data are not Gaussian
    result = stats.kstest(sample, "norm")
    assert result.statistic < 0.005 and result.pvalue > 0.01  # x_T is
