"""Writing pictures: image grids (PNG) and animations (GIF) from tensors in [-1, 1]."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def grid_array(images: torch.Tensor, nrow: int, pad: int = 2, upscale: int = 1) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> uint8 [rows*(H+pad)+pad, nrow*(W+pad)+pad, 3] on white."""
    images = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
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
    from matplotlib import font_manager
    from PIL import ImageDraw, ImageFont

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
    arr = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    Image.fromarray(arr.permute(1, 2, 0).numpy()).save(path)
    return path


def save_gif(frames: list[np.ndarray], path: str | Path, seconds_per_frame: float = 0.08,
             hold_last: float = 1.5) -> Path:
    """uint8 HxWx3 frames -> a looping GIF; the last frame is held for `hold_last` seconds."""
    import imageio.v3 as iio

    path = Path(path)
    durations_ms = [round(1000 * seconds_per_frame)] * (len(frames) - 1) + [round(1000 * hold_last)]
    iio.imwrite(path, np.stack(frames), extension=".gif", duration=durations_ms, loop=0)
    return path
