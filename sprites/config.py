"""The `data` section shared by every stage's config."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataConfig:
    root: str = "data/pokemon"       # folder of PNGs; POKEMON_DATA=DIR overrides the YAML
    size: int = 64                   # images are resized to size x size
    cache_dir: str = "data/cache"    # decoded tensors are cached here
    holdout: float = 0.05            # fraction held out for every reconstruction/eval number (> 0)
    split_seed: int = 0              # the held-out split depends on this seed only
    hflip: bool = True               # random horizontal flips during training
