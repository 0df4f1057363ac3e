"""Pokemon types and species as class labels for conditional generation (the species: the end of this file).

The type table is `pokemon_stats.csv` (Kaggle's "Pokemon with stats", via
github.com/Mtingggg/pokemon_diffusion; see README.md "Data"). `python -m sprites.download` puts it
beside the sprite folder, so its default location is `<data.root>/../pokemon_stats.csv`
(`default_table_path`). The columns used are `Image_name`, `Type 1` and `Type 2`.

Classes: the 18 types in alphabetical order (`TYPES`), index 0 = Bug ... 17 = Water, and one
extra index `NULL_LABEL = 18` = "no label". NULL_LABEL is at the same time the U-Net's null class
of classifier-free guidance (diffusion/unet.py: `num_types` = 18, row 18 of the type embedding),
so unlabelled images are *kept* and train the unconditional model, exactly as a dropped label does
(diffusion/guidance.py).

Matching rule (exact): an image gets the row whose `Image_name` equals its file stem, character for
character (only surrounding whitespace of the CSV cell is stripped). No prefix, Pokedex-number or
case-insensitive fallback: a variant such as `6-mega-x` gets its own row (Fire/Dragon), never the
row of `6` (Fire/Flying), and an image without its own row gets NULL_LABEL.

What the real data give under this rule (919 PNGs, 808 table rows, checked on the local copy in
../shared/data/):
  * 805 of the 808 `Image_name`s are stems of images; 805 images are labelled, 114 unlabelled.
  * The 3 rows without an image are `201` (Unown), `493` (Arceus) and `555` (Darmanitan Standard
    Mode): the images of those Pokemon are called `201-f`, `493-normal` and `555-standard`.
  * Of the 114 unlabelled images, 100 are Pokedex numbers 722-821 (generation 7 and later; the
    table ends at 721) and have no row under any rule. The other 14 are variants of numbers
    the table does have:
        25-belle 25-libre 25-phd 25-pop-star 25-rock-star (cosplay Pikachu; table row `25`)
        201-f  493-normal  555-standard                    (the 3 rows without an image, above)
        521f 592f 593f 668f 678f                           (female forms, no hyphen)
        681                                                (table: `681-blade`, `681-shield`)
    A looser rule "same leading Pokedex number, when all rows of that number agree on both
    types" would label all 14, with their correct types (Pikachu Electric, Unown Psychic, ...),
    giving 819 labelled / 100 unlabelled. It is NOT used here: the exact rule is simple to state
    and cannot silently give a form another form's types (e.g. `6` vs `6-mega-x`).
  * `Type 1` counts over the 805 labelled images: Water 115, Normal 106, Bug 72, Grass 71,
    Psychic 55, Fire 50, Electric 44, Rock 44, Ground 32, Dragon 32, Dark 31, Poison 28,
    Fighting 27, Steel 27, Ghost 26, Ice 24, Fairy 17, Flying 4. Flying is mostly a second type
    (98 of the 808 rows have `Type 2` = Flying); 393 rows have no second type.
"""
from __future__ import annotations

import csv
import difflib
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from plumbing.cli import UserError

# The 18 types, alphabetical. The index of a type is its class label; never reorder this list
# (checkpoints store labels as indices).
TYPES: tuple[str, ...] = (
    "Bug", "Dark", "Dragon", "Electric", "Fairy", "Fighting", "Fire", "Flying", "Ghost",
    "Grass", "Ground", "Ice", "Normal", "Poison", "Psychic", "Rock", "Steel", "Water",
)
NULL_LABEL = len(TYPES)  # 18: "no label" (unlabelled image, or a label dropped for guidance)

TABLE_NAME = "pokemon_stats.csv"
REQUIRED_COLUMNS = ("Image_name", "Type 1", "Type 2")
WHICH = ("type1", "type2")
# The fix in every table error. Update it when a config key for the table's path exists.
GET_TABLE_HINT = (f"get it with scripts/get_data.sh (or python -m sprites.download), which saves it "
                  f"beside the sprite folder as <data.root>/../{TABLE_NAME}, or copy a {TABLE_NAME} there")

_BY_LOWER = {name.lower(): i for i, name in enumerate(TYPES)}

TypeTable = dict[str, tuple[str, str | None]]  # image stem -> (Type 1, Type 2 or None)


def default_table_path(data_root: str | Path) -> Path:
    """Where the download puts the type table: beside the sprite folder, `<data_root>/../pokemon_stats.csv`."""
    return Path(data_root).parent / TABLE_NAME


def parse_type(name: str) -> int:
    """A type name (any case, surrounding spaces ignored) -> its index in TYPES.

    >>> parse_type("fire"), parse_type(" Water ")
    (6, 17)
    """
    index = _BY_LOWER.get(str(name).strip().lower())
    if index is None:
        raise UserError(f"unknown Pokemon type {name!r}; use one of {', '.join(TYPES)} (any case)")
    return index


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a CSV file, with every problem as a UserError."""
    if not path.is_file():
        raise UserError(f"type table {path} not found; {GET_TABLE_HINT}")
    try:
        # utf-8-sig: a byte-order mark (Excel exports) would otherwise become part of the first column name
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error, OSError) as err:
        raise UserError(f"type table {path} is not a readable CSV file ({err}); {GET_TABLE_HINT}")
    return header, rows


def _canonical_type(value: str, path: Path, line: int) -> str:
    """A type name from the table -> its spelling in TYPES, or a UserError naming file and line."""
    index = _BY_LOWER.get(value.strip().lower())
    if index is None:
        raise UserError(f"type table {path}, line {line}: unknown type {value!r} (valid: {', '.join(TYPES)}); "
                        f"the file is not the expected {TABLE_NAME}, {GET_TABLE_HINT}")
    return TYPES[index]


def load_type_table(csv_path: str | Path) -> TypeTable:
    """Read the type table: image stem -> (Type 1, Type 2 or None).

    Type names are returned in the spelling of TYPES. Rows with an empty `Image_name` are ignored.
    Raises UserError (one line, with where to get the file) when the file is missing, unreadable,
    lacks the columns Image_name, Type 1, Type 2, has a row without Type 1 or with an unknown type,
    gives one image two different type pairs, or has no rows.
    """
    path = Path(csv_path)
    header, rows = _read_rows(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise UserError(f"type table {path} has no column(s) {', '.join(missing)} (it needs "
                        f"{', '.join(REQUIRED_COLUMNS)}); it is not the expected {TABLE_NAME}, {GET_TABLE_HINT}")
    table: TypeTable = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        stem = (row.get("Image_name") or "").strip()
        if not stem:
            continue
        first = (row.get("Type 1") or "").strip()
        if not first:
            raise UserError(f"type table {path}, line {line}: {stem!r} has no Type 1; {GET_TABLE_HINT}")
        second = (row.get("Type 2") or "").strip()
        types = (_canonical_type(first, path, line), _canonical_type(second, path, line) if second else None)
        if stem in table and table[stem] != types:
            raise UserError(f"type table {path}, line {line}: {stem!r} appears twice with different types "
                            f"{table[stem]} and {types}; fix the file or {GET_TABLE_HINT}")
        table[stem] = types
    if not table:
        raise UserError(f"type table {path} has no rows with an Image_name; {GET_TABLE_HINT}")
    return table


def type_labels(names: Sequence[str], table: TypeTable, which: str = "type1") -> torch.Tensor:
    """Class label of each image stem in `names`, in the same order: int64 [len(names)].

        label(stem) = TYPES.index(table[stem][k])   if stem is a key of `table` (exact match)
                    = NULL_LABEL                     otherwise (the image is kept, unlabelled)

    with k = 0 for which="type1" and k = 1 for which="type2". With "type2", a Pokemon with a
    single type also gets NULL_LABEL (there is no second type to condition on).
    """
    if which not in WHICH:
        raise UserError(f"unknown type column {which!r}; use one of {', '.join(WHICH)}")
    k = WHICH.index(which)
    labels = []
    for stem in names:
        types = table.get(stem)
        name = types[k] if types is not None else None
        labels.append(_BY_LOWER[name.lower()] if name is not None else NULL_LABEL)
    return torch.tensor(labels, dtype=torch.long)


def lookup_names(stems: Sequence[str], sources: torch.Tensor, dex: torch.Tensor, table: TypeTable) -> list[str]:
    """The table row each image is looked up by: an artwork (source 0) by its file stem, exactly (the
    rule above); a corpus image (sprites/corpus.py) by its stem when the table has that row, else by
    its Pokedex number, so a form without a row of its own (201-a, 493-fire, 3f) gets its species'
    default form's types (Arceus' plates are all Normal then, Rotom's appliances Electric/Ghost)."""
    return [stem if int(src) == 0 or stem in table else str(int(number))
            for stem, src, number in zip(stems, sources, dex)]


def label_counts(labels: torch.Tensor | Sequence[int]) -> dict[str, int]:
    """How many images carry each label, for logging: {"Bug": n, ..., "Water": n, "unlabelled": n}.

    Every type is listed (in TYPES order), also those with count 0, then NULL_LABEL as "unlabelled".
    """
    labels = torch.as_tensor(labels, dtype=torch.long).flatten()
    if len(labels) and (labels.min() < 0 or labels.max() > NULL_LABEL):
        raise ValueError(f"labels must lie in 0..{NULL_LABEL}, got {labels.min()}..{labels.max()}")
    counts = torch.bincount(labels, minlength=NULL_LABEL + 1)
    return {**{name: int(counts[i]) for i, name in enumerate(TYPES)}, "unlabelled": int(counts[NULL_LABEL])}


# --- Species: the Pokedex number of an image, named from the same table --------------------------
#
# A species label is the image's Pokedex number (artwork file stems and corpus file names lead with
# it; sprites/dataset.py `pokedex_number`). Class index k = number - 1 for the numbers 1..NUM_SPECIES
# that the type table names (generations 1-6); index NUM_SPECIES is "no label", given to every image
# whose number the table does not name (the artworks 722-821) and to dropped labels.
NUM_SPECIES = 721
NULL_SPECIES = NUM_SPECIES

SpeciesTable = dict[int, str]  # Pokedex number -> species name, e.g. 25 -> "Pikachu"


def species_name(row_name: str) -> str:
    """The species of a table row's Name: forms are written straight after it ("DeoxysNormal Forme",
    "VenusaurMega Venusaur", "Zygarde50% Forme"), so the name ends where a lower-case letter is
    followed by a capital or by a percentage.

    >>> species_name("CharizardMega Charizard X"), species_name("Mr. Mime"), species_name("Porygon2")
    ('Charizard', 'Mr. Mime', 'Porygon2')
    """
    return re.sub(r"(?<=[a-zé])(?:[A-Z]|\d+%).*$", "", row_name.strip())


def load_species_table(csv_path: str | Path) -> SpeciesTable:
    """Pokedex number -> species name, from the rows of the type table whose `#` column is a number
    (every form of a number names the same species; the first row of each number is used)."""
    path = Path(csv_path)
    header, rows = _read_rows(path)
    if "#" not in header or "Name" not in header:
        raise UserError(f"type table {path} has no '#' and 'Name' columns, which name the species; {GET_TABLE_HINT}")
    table: SpeciesTable = {}
    for row in rows:
        number, name = (row.get("#") or "").strip(), (row.get("Name") or "").strip()
        if number.isdigit() and name and 1 <= int(number) <= NUM_SPECIES:
            table.setdefault(int(number), species_name(name))
    if not table:
        raise UserError(f"type table {path} names no species (numbers 1..{NUM_SPECIES} in its '#' column); "
                        f"{GET_TABLE_HINT}")
    return table


def species_labels(dex: torch.Tensor, table: SpeciesTable) -> torch.Tensor:
    """Class index of each image's Pokedex number: number - 1 where the table names it, else NULL_SPECIES."""
    named = torch.tensor(sorted(table), dtype=torch.long)
    return torch.where(torch.isin(dex, named), dex - 1, torch.full_like(dex, NULL_SPECIES))


def species_key(name: str) -> str:
    """How a species name is matched: lower case, letters and digits only (Nidoran♀ -> nidoranf,
    Mr. Mime -> mrmime, Flabébé -> flabebe)."""
    name = str(name).strip().lower().replace("♀", "f").replace("♂", "m").replace("é", "e")
    return re.sub(r"[^a-z0-9]", "", name)


def parse_species(name: str | int, table: SpeciesTable) -> int:
    """A species name (any case, spaces and punctuation ignored) or Pokedex number -> its number, or a
    one-line error naming the closest names."""
    text = str(name).strip()
    if text.isdigit():
        if int(text) not in table:
            raise UserError(f"unknown Pokedex number {text}; this model knows the numbers 1..{max(table)}")
        return int(text)
    by_key = {species_key(v): k for k, v in table.items()}
    if species_key(text) in by_key:
        return by_key[species_key(text)]
    close = difflib.get_close_matches(species_key(text), list(by_key), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(table[by_key[k]] for k in close)}?" if close else "give a Pokemon's name or number"
    raise UserError(f"unknown species {name!r}; {hint}")
