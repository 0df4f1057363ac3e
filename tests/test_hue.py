"""The hue measurement behind the type-conditioning evidence (reports/hue.py)."""
from __future__ import annotations

import torch

from reports.colour import hue_angles, hue_summary, total_variation


def _image(rgb: tuple[float, float, float], size: int = 4) -> torch.Tensor:
    """One flat image of a colour given in [0, 1], as [1, 3, size, size] in [-1, 1]."""
    return (torch.tensor(rgb).view(1, 3, 1, 1) * 2 - 1).expand(1, 3, size, size).clone()


def test_hue_of_primary_and_secondary_colours():
    for rgb, deg in [((1, 0, 0), 0), ((1, 1, 0), 60), ((0, 1, 0), 120), ((0, 1, 1), 180), ((0, 0, 1), 240),
                     ((1, 0, 1), 300), ((1, 0.5, 0), 30)]:
        h = hue_angles(_image(rgb))
        assert len(h) == 16 and torch.allclose(h, torch.full_like(h, float(deg)), atol=1e-4), (rgb, h[:1])


def test_background_and_grey_pixels_are_not_counted():
    assert len(hue_angles(_image((1, 1, 1)))) == 0          # white background
    assert len(hue_angles(_image((0.5, 0.5, 0.5)))) == 0    # grey has no hue
    assert len(hue_angles(_image((0.95, 0.97, 1.0)))) == 0  # near-white, bluish


def test_shares_and_total_variation():
    fire = torch.cat([_image((1, 0.3, 0)), _image((1, 0.8, 0))])
    water = torch.cat([_image((0, 0.3, 1)), _image((0.2, 0.5, 1))])
    f, w = hue_summary(fire), hue_summary(water)
    assert f["warm"] == 1.0 and f["blue"] == 0.0 and w["blue"] == 1.0 and w["warm"] == 0.0
    assert abs(sum(f["hist"]) - 1) < 1e-3
    assert total_variation(f["hist"], f["hist"]) == 0.0
    assert abs(total_variation(f["hist"], w["hist"]) - 1.0) < 1e-3
