"""What a conditional model is told about an image: its Pokemon type, its style, its species.

Three kinds of label, each an int64 tensor [B] or None:

    type     the index of the image's Type 1 in sprites.labels.TYPES (18 types); NULL_TYPE = 18 is
             "no label" (an unlabelled image, or a label dropped for classifier-free guidance)
    style    the index of the image's source in sprites.config.SOURCES (artwork, dream_world,
             sprite_front, sprite_back; shiny sprites count as their source); NULL_STYLE = 4
    species  the Pokedex number minus 1 (sprites/labels.py: 0..720, the numbers the type table
             names); NULL_SPECIES = 721. At sampling a row may instead give weights over the species
             classes, float [B, NULL_SPECIES + 1]: the network adds that mixture of species
             embeddings, sum_k w_k E[k] (a fusion of two species: (1 - a) E[p] + a E[q]).

The U-Net (diffusion/unet.py) has one embedding per kind it was built with, each with one extra
row for its null label; a kind that is None means "no label" for the whole batch.
"""
from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass

import torch

from diffusion.config import DiffusionConfig
from plumbing.cli import UserError
from sprites.config import SOURCES
from sprites.dataset import ImageSet
from sprites.labels import (NULL_LABEL, NULL_SPECIES, TYPES, SpeciesTable, default_table_path, load_species_table,
                            load_type_table, lookup_names, parse_species, parse_type, species_labels, type_labels)

NULL_TYPE = NULL_LABEL         # 18
NULL_STYLE = len(SOURCES)      # 4
# NULL_SPECIES = 721, from sprites.labels


@dataclass
class Labels:
    """What the network is told about each image of a batch: `type`, `style` and `species` labels,
    each int64 [B] or None (`species` may be float weights [B, NULL_SPECIES + 1] instead: module
    docstring)."""

    type: torch.Tensor | None = None
    style: torch.Tensor | None = None
    species: torch.Tensor | None = None

    def _parts(self) -> tuple:
        return self.type, self.style, self.species

    def _map(self, fn) -> Labels:
        return Labels(*(None if v is None else fn(v) for v in self._parts()))

    def __len__(self) -> int:
        given = next((v for v in self._parts() if v is not None), None)
        return 0 if given is None else len(given)

    def null(self) -> Labels:
        """The same kinds, every label "no label" (the unconditional half of guidance)."""
        return Labels(None if self.type is None else torch.full_like(self.type, NULL_TYPE),
                      None if self.style is None else torch.full_like(self.style, NULL_STYLE),
                      None if self.species is None else null_species_like(self.species))

    def cat(self, other: Labels) -> Labels:
        """This batch's labels followed by `other`'s (the same kinds)."""
        return Labels(*(None if a is None else torch.cat([a, b]) for a, b in zip(self._parts(), other._parts())))

    def to(self, device) -> Labels:
        return self._map(lambda v: v.to(device))

    def index(self, rows) -> Labels:
        """The labels of some rows (a slice, index tensor or mask)."""
        return self._map(lambda v: v[rows])


def null_species_like(species: torch.Tensor) -> torch.Tensor:
    """"No species" in the form of `species`: the null index, or one-hot weights on the null row."""
    if species.is_floating_point():
        return torch.nn.functional.one_hot(torch.full(species.shape[:1], NULL_SPECIES), NULL_SPECIES + 1).to(species)
    return torch.full_like(species, NULL_SPECIES)


def table_path(cfg: DiffusionConfig):
    """The type table of a config: pokemon_stats.csv beside the artwork folder (where the download puts it)."""
    return default_table_path(cfg.data.root)


def training_labels(cfg: DiffusionConfig, data: ImageSet) -> Labels | None:
    """The labels of every image of the set, or None for an unconditional model: Type 1 from the type
    table (sprites/labels.py; unlabelled images get "no label"), the style (each image's source) and
    the species (its Pokedex number, where the table names it)."""
    types = styles = species = None
    if cfg.cond.labels != "none":
        table = load_type_table(table_path(cfg))
        types = type_labels(lookup_names(data.stems, data.source, data.dex, table), table, "type1")
    if cfg.cond.style:
        styles = data.source.clone()
    if cfg.cond.species:
        species = species_labels(data.dex, load_species_table(table_path(cfg)))
    return None if types is None and styles is None and species is None else Labels(types, styles, species)


def species_record(cfg: DiffusionConfig, data: ImageSet, earlier: list[int] = ()) -> dict:
    """What a species model's checkpoint records: the species table {number: name} and the numbers
    it trained on: those of this run's training images (the split's held-out numbers are missing)
    and `earlier`, those of the model a fine-tuning run started from."""
    table = load_species_table(table_path(cfg))
    trained = sorted((set(data.dex[data.train_idx].tolist()) | set(earlier)) & set(table))
    return {"species": {str(k): v for k, v in sorted(table.items())}, "trained_species": trained}


def parse_style(name: str) -> int:
    """A style name (any case) -> its index in SOURCES, or a one-line error listing the valid ones."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in SOURCES:
        raise UserError(f"unknown style {name!r}; use one of {', '.join(SOURCES)}")
    return SOURCES.index(key)


def label_name(labels: Labels, i: int, table: SpeciesTable | None = None, species: str | None = None) -> str:
    """A readable name of row i's labels, e.g. 'Charmander, Fire, artwork'; `species` names the species
    part instead of row i's own (a row of random species)."""
    parts = [species or species_name_of(labels.species[i], table)] if labels.species is not None else []
    if labels.type is not None:
        parts.append(TYPES[labels.type[i]] if labels.type[i] < NULL_TYPE else "no type")
    if labels.style is not None:
        parts.append(SOURCES[labels.style[i]] if labels.style[i] < NULL_STYLE else "no style")
    return ", ".join(parts)


def species_name_of(species: torch.Tensor, table: SpeciesTable | None) -> str:
    """The name of one sample's species label: 'Charmander', 'Charmander x Squirtle (0.50)' for
    weights on two species, 'no species' for the null class."""
    def name(k: int) -> str:
        return "no species" if k == NULL_SPECIES else (table or {}).get(k + 1, f"No. {k + 1}")

    if not species.is_floating_point():
        return name(int(species))
    parts = torch.nonzero(species > 0).flatten().tolist()
    if len(parts) == 1:
        return name(parts[0])
    return " x ".join(name(k) for k in parts) + f" ({float(species[parts[-1]]):.2f})"


def sample_rows(labels: Labels | None, n: int, known: SpeciesKnown | None) -> list[dict]:
    """What each of n samples was asked for: Pokedex number ('4+7' for a fusion, '' without a species),
    species name, type and style ('' where not given)."""
    rows = []
    for i in range(n):
        number, name, type_, style = "", "", "", ""
        if labels is not None and labels.species is not None:
            s = labels.species[i]
            ks = torch.nonzero(s > 0).flatten().tolist() if s.is_floating_point() else [int(s)]
            number = "+".join(str(k + 1) for k in ks if k != NULL_SPECIES)
            name = species_name_of(s, known.table if known else None)
        if labels is not None and labels.type is not None and labels.type[i] < NULL_TYPE:
            type_ = TYPES[labels.type[i]]
        if labels is not None and labels.style is not None and labels.style[i] < NULL_STYLE:
            style = SOURCES[labels.style[i]]
        rows.append({"pokedex": number, "species": name, "type": type_, "style": style})
    return rows


def write_labels_csv(path, files: list[str], labels: Labels | None, known: SpeciesKnown | None,
                     guidance: float, seed: int) -> None:
    """labels.csv beside sampled PNGs: file, pokedex, species, type, style, guidance, seed, one row each."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["file", "pokedex", "species", "type", "style", "guidance", "seed"])
        writer.writeheader()
        for file, row in zip(files, sample_rows(labels, len(files), known)):
            writer.writerow({"file": file, **row, "guidance": guidance, "seed": seed})


def fusion_weights(a: int, b: int, weight: float) -> torch.Tensor:
    """Weights over the species classes of a fusion of Pokedex numbers a and b: (1 - weight) on a,
    weight on b (module docstring)."""
    if not 0.0 <= weight <= 1.0:
        raise UserError(f"the fusion weight {weight} must lie in [0, 1] (0: all the first species, 1: all the second)")
    w = torch.zeros(NULL_SPECIES + 1)
    w[a - 1] += 1.0 - weight
    w[b - 1] += weight
    return w


@dataclass
class SpeciesKnown:
    """What a species model knows: its species table {number: name} and the numbers it trained on."""

    table: SpeciesTable
    trained: list[int]

    @classmethod
    def from_record(cls, record: dict) -> SpeciesKnown | None:
        """From a checkpoint's "labels" record (diffusion/train.py); None for a model without species."""
        if not record.get("species"):
            return None
        return cls({int(k): v for k, v in record["species"].items()}, [int(k) for k in record["trained_species"]])

    def parse(self, name: str | int) -> int:
        """A requested species -> its Pokedex number; a warning for one the model never trained on."""
        number = parse_species(name, self.table)
        if number not in self.trained:
            warnings.warn(f"{self.table[number]} (No. {number}) is held out of this model's training data (the split by "
                          "Pokedex number): its samples show an untrained label", UserWarning, stacklevel=2)
        return number

    def random(self, n: int, seed: int) -> torch.Tensor:
        """n Pokedex numbers drawn uniformly from the trained ones, from `seed`."""
        gen = torch.Generator().manual_seed(seed)
        return torch.tensor(self.trained)[torch.randint(len(self.trained), (n,), generator=gen)]


def requested(types: list[str] | None, styles: list[str] | None, has_types: bool, has_styles: bool,
              n: int, default_style: str | None = "artwork", species: list[str] | None = None,
              fusions: list[tuple[str, str, float]] | None = None, known: SpeciesKnown | None = None,
              seed: int = 0, default_species: str | None = "random") -> tuple[Labels | None, list[str]]:
    """The labels of a sampling request and one row name per row of n samples.

    Rows: every combination of the requested species entries, types and styles ('all' for every
    type or style). A species entry is a name or Pokedex number (n samples of it), 'random' (n
    samples, each of a species drawn from the trained ones with `seed`), or a fusion (a, b, weight).
    A style-conditional model draws `default_style` when no style is asked for, and a species model
    `default_species` ('random': a species per sample) when no species, fusion or type is asked for
    (docs/results.md: what the shipped model draws best); asking a model for a kind it was not
    trained with is a one-line error."""
    if types and not has_types:
        raise UserError("this checkpoint was trained without type labels (cond.labels=none); drop --type, or "
                        "train with cond.labels=type1 (configs/ldm_types.yaml)")
    if styles and not has_styles:
        raise UserError("this checkpoint was trained without style labels (cond.style=false); drop --style, or "
                        "train with cond.style=true (configs/ldm_corpus.yaml)")
    if (species or fusions) and known is None:
        raise UserError("this checkpoint was trained without species labels (cond.species=false); drop --species and "
                        "--fuse, or train with cond.species=true (configs/ldm_species.yaml)")
    if not styles and has_styles and default_style:
        styles = [default_style]
    if known is not None and not species and not fusions and not types and default_species:
        species = [default_species]
    type_ids = _choose(types, len(TYPES), parse_type)
    style_ids = _choose(styles, len(SOURCES), parse_style)
    species_rows = _species_rows(species, fusions, known, n, seed)
    if type_ids is None and style_ids is None and species_rows is None:
        return None, []
    combos = [(sp, ty, st) for sp in (species_rows or [None]) for ty in (type_ids or [None])
              for st in (style_ids or [None])]
    labels = Labels(None if type_ids is None else torch.tensor([ty for _, ty, _ in combos]).repeat_interleave(n),
                    None if style_ids is None else torch.tensor([st for _, _, st in combos]).repeat_interleave(n),
                    None if species_rows is None else torch.cat([sp[0] for sp, _, _ in combos]))
    return labels, [label_name(labels, i * n, known.table if known else None, sp[1] if sp else None)
                    for i, (sp, _, _) in enumerate(combos)]


def _species_rows(species: list[str] | None, fusions, known: SpeciesKnown | None, n: int,
                  seed: int) -> list[tuple[torch.Tensor, str | None]] | None:
    """(n species labels, row name or None: named after its species) per requested species entry; the
    labels are int, or weights over the species where any fusion is asked for. None: no species asked."""
    if not species and not fusions:
        return None
    rows = []
    for name in species or []:
        if str(name).strip().lower() == "random":
            rows.append((known.random(n, seed) - 1, "random species"))
        else:
            rows.append((torch.full((n,), known.parse(name) - 1), None))
    if fusions:
        one_hot = torch.eye(NULL_SPECIES + 1)
        rows = [(one_hot[row], name) for row, name in rows]
        rows += [(fusion_weights(known.parse(a), known.parse(b), w).expand(n, -1).clone(), None) for a, b, w in fusions]
    return rows


def _choose(names: list[str] | None, count: int, parse) -> list[int] | None:
    if not names:
        return None
    if any(str(name).lower() == "all" for name in names):
        return list(range(count))
    return [parse(name) for name in names]
