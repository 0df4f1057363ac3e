"""Writing pictures: tensors in [-1, 1] to uint8 pixels, image grids (PNG) and animations (GIF)."""
from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from matplotlib import font_manager
from PIL import Image, ImageDraw, ImageFont


def to_uint8(batch: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 pixels on the CPU (values outside the range are clipped); the inverse
    of sprites.dataset.to_unit_range."""
    return ((batch.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).cpu()


def grid_array(images: torch.Tensor, nrow: int, pad: int = 2, upscale: int = 1) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> uint8 [rows*(H+pad)+pad, nrow*(W+pad)+pad, 3] on white."""
    images = to_uint8(images)
    if upscale > 1:
        images = images.repeat_interleave(upscale, dim=2).repeat_interleave(upscale, dim=3)
    n, _, h, w = images.shape
    nrow = max(1, min(nrow, n))
    rows = (n + nrow - 1) // nrow
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y:y + h, x:x + w] = images[i].permute(1, 2, 0).numpy()
    return canvas


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, upscale: int = 1) -> Path:
    path = Path(path)
    Image.fromarray(grid_array(images, nrow, upscale=upscale)).save(path)
    return path


def label_rows(grid: np.ndarray, labels: list[str], row_height: int, pad: int = 2) -> np.ndarray:
    """Prepend a white margin to a grid with one text label per row, so that a grid with one row per
    class (or per noise level) says which row is which. The font is the DejaVu Sans that matplotlib
    ships (PIL's built-in font draws a space 2 pixels wide: "held-outsprite")."""
    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 12)
    width = 8 + max(int(font.getlength(text)) for text in labels)
    canvas = Image.new("RGB", (width + grid.shape[1], grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid), (width, 0))
    draw = ImageDraw.Draw(canvas)
    for r, text in enumerate(labels):
        y = pad + r * (row_height + pad) + row_height // 2
        draw.text((4, y), text, fill=(0, 0, 0), font=font, anchor="lm")
    return np.asarray(canvas)


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """One [3, H, W] image in [-1, 1] -> PNG."""
    path = Path(path)
    Image.fromarray(to_uint8(image).permute(1, 2, 0).numpy()).save(path)
    return path


def save_gif(frames: list[np.ndarray], path: str | Path, seconds_per_frame: float = 0.08,
             hold_last: float = 1.5) -> Path:
    """uint8 HxWx3 frames -> a looping GIF; the last frame is held for `hold_last` seconds."""
    path = Path(path)
    durations_ms = [round(1000 * seconds_per_frame)] * (len(frames) - 1) + [round(1000 * hold_last)]
    iio.imwrite(path, np.stack(frames), extension=".gif", duration=durations_ms, loop=0)
    return path


def thin_gif(path: Path) -> int:
    """Keep every other frame of a GIF (the last one always), each shown twice as long; returns the
    new number of frames."""
    frames = iio.imread(path, index=None)[..., :3]
    kept = list(frames[::2]) + ([] if (len(frames) - 1) % 2 == 0 else [frames[-1]])
    step_ms = iio.immeta(path).get("duration", 80)
    save_gif(kept, path, seconds_per_frame=2 * step_ms / 1000)
    return len(kept)


def fit_budget(folder: Path, names: list[str], budget_mb: float, min_frames: int = 5) -> tuple[float, dict]:
    """Thin the largest GIF of `names` in `folder` (`thin_gif`) until they take at most `budget_mb` or
    no GIF has more than `min_frames` frames; returns (MB in all, {GIF: its frame count after thinning})."""
    def total() -> float:
        return sum((folder / name).stat().st_size for name in names) / 1e6

    thinned = {}
    while total() > budget_mb:
        gifs = [n for n in names if n.endswith(".gif") and Image.open(folder / n).n_frames > min_frames]
        if not gifs:
            break
        largest = max(gifs, key=lambda n: (folder / n).stat().st_size)
        thinned[largest] = thin_gif(folder / largest)
    return total(), thinned
