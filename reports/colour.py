"""Hue statistics of images: what the colour of a sprite says about its type (the command is
`python -m reports.hue`, which asks whether type conditioning works).

No pretrained network is needed: the colour of a sprite says a lot about its type (Fire is warm,
Water blue, Grass green). For each image, the foreground pixels (not near-white background, not
grey) are converted to hue angles, h in [0, 360):

    with M = max(R, G, B), m = min(R, G, B), C = M - m (chroma), pixels in [0, 1]:
        h = 60 * ((G - B) / C mod 6)   if M = R
        h = 60 * ((B - R) / C + 2)     if M = G
        h = 60 * ((R - G) / C + 4)     if M = B
    a pixel counts when its saturation C / M >= 0.25 and it is not background (m < 0.92).

A set of images gives a normalised histogram of the hues of all its counted pixels (12 bins of 30
degrees) and three shares: warm (h < 60 or h >= 330: red, orange, yellow), green (75 <= h < 165)
and blue (180 <= h < 260). The distance between two sets is the total variation distance of their
hue histograms, TV(p, q) = 1/2 sum_k |p_k - q_k| (0: same hues, 1: disjoint).

Limits: hue ignores shape; types that share colours (Normal, Flying, Steel) cannot be told apart
this way, and a model that only learned colour would pass. The real-type rows are the reference.
"""
from __future__ import annotations

import torch

BINS = 12
SATURATION_MIN = 0.25
BACKGROUND_MIN = 0.92  # a pixel whose darkest channel is above this is white background


def hue_angles(images: torch.Tensor) -> torch.Tensor:
    """Hue (degrees) of every counted foreground pixel of images [N, 3, H, W] in [-1, 1] (see above)."""
    x = ((images.float().clamp(-1, 1) + 1) / 2).permute(1, 0, 2, 3).reshape(3, -1)
    r, g, b = x
    hi, _ = x.max(dim=0)
    lo, _ = x.min(dim=0)
    chroma = hi - lo
    keep = (lo < BACKGROUND_MIN) & (chroma >= SATURATION_MIN * hi.clamp_min(1e-6)) & (chroma > 1e-6)
    r, g, b, hi, c = r[keep], g[keep], b[keep], hi[keep], chroma[keep]
    h = torch.where(hi == r, torch.remainder((g - b) / c, 6.0),
                    torch.where(hi == g, (b - r) / c + 2.0, (r - g) / c + 4.0))
    return 60.0 * h


def hue_summary(images: torch.Tensor) -> dict:
    """Normalised hue histogram and the warm / green / blue shares of a set of images."""
    h = hue_angles(images)
    n = max(1, len(h))
    hist = torch.histc(h, bins=BINS, min=0.0, max=360.0) / n
    return {
        "pixels": len(h),
        "hist": [round(float(v), 4) for v in hist],
        "warm": float(((h < 60) | (h >= 330)).sum()) / n,
        "green": float(((h >= 75) & (h < 165)).sum()) / n,
        "blue": float(((h >= 180) & (h < 260)).sum()) / n,
    }


def total_variation(p: list[float], q: list[float]) -> float:
    """TV(p, q) = 1/2 sum_k |p_k - q_k| of two normalised histograms."""
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q))


def markdown_table(rows: list[dict]) -> str:
    """The rows of hue.json as a Markdown table (hue.md; reports.compare includes it)."""
    lines = ["| type | set | warm | green | blue | TV to this type | TV to other types |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['type']} | {r['set']} | {r['warm']:.2f} | {r['green']:.2f} | {r['blue']:.2f} | "
                     f"{r['tv_to_type']:.3f} | {r['tv_to_other']:.3f} |")
    return "\n".join(lines)


