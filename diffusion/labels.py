"""What a conditional model is told about an image: its Pokemon type, its style, or both.

Two kinds of label, each an int64 tensor [B] or None:

    type   the index of the image's Type 1 in sprites.labels.TYPES (18 types); NULL_TYPE = 18 is
           "no label" (an unlabelled image, or a label dropped for classifier-free guidance)
    style  the index of the image's source in sprites.config.SOURCES (artwork, dream_world,
           sprite_front, sprite_back; shiny sprites count as their source); NULL_STYLE = 4

The U-Net (diffusion/unet.py) has one embedding per kind it was built with, each with one extra
row for its null label; a kind that is None means "no label" for the whole batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from diffusion.config import DiffusionConfig
from plumbing.cli import UserError
from sprites.config import SOURCES
from sprites.dataset import SpriteSet
from sprites.labels import (NULL_LABEL, TYPES, default_table_path, load_type_table, lookup_names, parse_type,
                            type_labels)

NULL_TYPE = NULL_LABEL         # 18
NULL_STYLE = len(SOURCES)      # 4


@dataclass
class Labels:
    """What the network is told about each image of a batch: `type` and `style` labels, each int64 [B]
    or None, and in training with augmentation the transform parameters `aug` [B, AUG_DIM]
    (diffusion/augment.py; None is "not augmented", as at sampling)."""

    type: torch.Tensor | None = None
    style: torch.Tensor | None = None
    aug: torch.Tensor | None = None

    def _map(self, fn) -> Labels:
        return Labels(*(None if v is None else fn(v) for v in (self.type, self.style, self.aug)))

    def __len__(self) -> int:
        given = next((v for v in (self.type, self.style, self.aug) if v is not None), None)
        return 0 if given is None else len(given)

    def null(self) -> Labels:
        """The same kinds, every label "no label" (the unconditional half of guidance); the
        augmentation parameters stay as they are."""
        return Labels(None if self.type is None else torch.full_like(self.type, NULL_TYPE),
                      None if self.style is None else torch.full_like(self.style, NULL_STYLE), self.aug)

    def cat(self, other: Labels) -> Labels:
        """This batch's labels followed by `other`'s (the same kinds)."""
        return Labels(*(None if a is None else torch.cat([a, b]) for a, b in
                        zip((self.type, self.style, self.aug), (other.type, other.style, other.aug))))

    def to(self, device) -> Labels:
        return self._map(lambda v: v.to(device))

    def index(self, rows) -> Labels:
        """The labels of some rows (a slice, index tensor or mask)."""
        return self._map(lambda v: v[rows])


def training_labels(cfg: DiffusionConfig, data: SpriteSet) -> Labels | None:
    """The labels of every image of the set, or None for an unconditional model: Type 1 from the type
    table (sprites/labels.py; unlabelled images get "no label") and the style (each image's source)."""
    types = styles = None
    if cfg.cond.labels != "none":
        table = load_type_table(cfg.cond.table or default_table_path(cfg.data.root))
        types = type_labels(lookup_names(data.stems, data.source, data.dex, table), table, "type1")
    if cfg.cond.style:
        styles = data.source.clone()
    return None if types is None and styles is None else Labels(types, styles)


def parse_style(name: str) -> int:
    """A style name (any case) -> its index in SOURCES, or a one-line error listing the valid ones."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in SOURCES:
        raise UserError(f"unknown style {name!r}; use one of {', '.join(SOURCES)}")
    return SOURCES.index(key)


def label_name(labels: Labels, i: int) -> str:
    """A readable name of row i's labels, e.g. 'Fire, artwork'."""
    parts = []
    if labels.type is not None:
        parts.append(TYPES[labels.type[i]] if labels.type[i] < NULL_TYPE else "no type")
    if labels.style is not None:
        parts.append(SOURCES[labels.style[i]] if labels.style[i] < NULL_STYLE else "no style")
    return ", ".join(parts)


def requested(types: list[str] | None, styles: list[str] | None, has_types: bool, has_styles: bool,
              n: int, default_style: str | None = "artwork") -> tuple[Labels | None, list[str]]:
    """The labels of a sampling request: n samples per combination of the requested types and styles
    ('all' for every one), and one row name per combination. A style-conditional model draws
    `default_style` when no style is asked for; asking a model for a kind it was not trained with is a
    one-line error."""
    if types and not has_types:
        raise UserError("this checkpoint was trained without type labels (cond.labels=none); drop --type, or "
                        "train with cond.labels=type1 (configs/ldm_types.yaml)")
    if styles and not has_styles:
        raise UserError("this checkpoint was trained without style labels (cond.style=false); drop --style, or "
                        "train with cond.style=true (configs/ldm_corpus.yaml)")
    if not styles and has_styles and default_style:
        styles = [default_style]
    type_ids = _choose(types, len(TYPES), parse_type)
    style_ids = _choose(styles, len(SOURCES), parse_style)
    if type_ids is None and style_ids is None:
        return None, []
    combos = [(ty, st) for ty in (type_ids or [None]) for st in (style_ids or [None])]
    labels = Labels(None if type_ids is None else torch.tensor([ty for ty, _ in combos]).repeat_interleave(n),
                    None if style_ids is None else torch.tensor([st for _, st in combos]).repeat_interleave(n))
    return labels, [label_name(labels, i * n) for i in range(len(combos))]


def _choose(names: list[str] | None, count: int, parse) -> list[int] | None:
    if not names:
        return None
    if any(str(name).lower() == "all" for name in names):
        return list(range(count))
    return [parse(name) for name in names]
