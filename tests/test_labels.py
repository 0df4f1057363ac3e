"""Type labels from the type table (sprites/labels.py): a synthetic CSV, and the real one when present.

The real-table test needs POKEMON_DATA (the sprite folder, with pokemon_stats.csv beside it); the
value is read at import time, before the hermetic fixture (conftest.py) removes the variable.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from plumbing.cli import UserError
from sprites.dataset import IMAGE_SUFFIXES, list_image_files
from sprites.labels import (NULL_LABEL, TYPES, default_table_path, label_counts, load_type_table,
                            parse_type, type_labels)
from diffusion.labels import NULL_STYLE, label_name, parse_style, requested
from sprites.labels import lookup_names

REAL = os.environ.get("POKEMON_DATA")

HEADER = "#,Name,Image_name,Type 1,Type 2,Total,HP\n"
ROWS = [
    "6,Charizard,6,Fire,Flying,534,78",
    "6,CharizardMega Charizard X,6-mega-x,Fire,Dragon,634,78",
    "6,CharizardMega Charizard Y,6-mega-y,Fire,Flying,634,78",
    "25,Pikachu,25,Electric,,320,35",
    "681,AegislashBlade Forme,681-blade,Steel,Ghost,520,60",
]


def write_csv(folder: Path, text: str, name: str = "pokemon_stats.csv") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def table(tmp_path):
    return load_type_table(write_csv(tmp_path, HEADER + "\n".join(ROWS) + "\n"))


def test_types_are_the_18_in_alphabetical_order():
    assert len(TYPES) == 18 == NULL_LABEL
    assert list(TYPES) == sorted(TYPES)
    assert TYPES[0] == "Bug" and TYPES[-1] == "Water"


def test_table_maps_each_stem_to_its_own_row(table):
    assert table["6"] == ("Fire", "Flying")
    assert table["6-mega-x"] == ("Fire", "Dragon")  # the variant's row, not the base form's
    assert table["25"] == ("Electric", None)        # empty Type 2 -> None
    assert len(table) == len(ROWS)


def test_labels_follow_names_order_and_keep_unlabelled(table):
    names = ["6-mega-x", "25-belle", "25", "681", "681-blade", "6", "722"]
    fire, electric, steel = parse_type("fire"), parse_type("electric"), parse_type("steel")
    labels = type_labels(names, table)
    assert labels.dtype == torch.long
    # exact stem match only: 25-belle and 681 have no row of their own, 722 none at all
    assert labels.tolist() == [fire, NULL_LABEL, electric, NULL_LABEL, steel, fire, NULL_LABEL]
    second = type_labels(names, table, which="type2")
    assert second.tolist() == [parse_type("Dragon"), NULL_LABEL, NULL_LABEL, NULL_LABEL,
                               parse_type("Ghost"), parse_type("Flying"), NULL_LABEL]
    with pytest.raises(UserError, match="type1"):
        type_labels(names, table, which="type3")


def test_parse_type_is_case_insensitive_and_lists_valid_names():
    assert parse_type("Fire") == parse_type("FIRE") == parse_type(" fire ") == TYPES.index("Fire")
    assert [parse_type(t.lower()) for t in TYPES] == list(range(18))
    with pytest.raises(UserError, match="Bug, Dark, .*Water") as err:
        parse_type("Sound")
    assert "\n" not in str(err.value)


def test_label_counts(table):
    counts = label_counts(type_labels(["6", "6-mega-x", "25", "nobody"], table))
    assert list(counts) == list(TYPES) + ["unlabelled"]
    assert counts["Fire"] == 2 and counts["Electric"] == 1 and counts["unlabelled"] == 1
    assert sum(counts.values()) == 4 and counts["Water"] == 0
    with pytest.raises(ValueError):
        label_counts([0, NULL_LABEL + 1])


def test_csv_with_byte_order_mark_and_spaces(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffImage_name, Type 1 ,Type 2\n 7 , water ,\n".encode("utf-8"))
    assert load_type_table(path) == {"7": ("Water", None)}


@pytest.mark.parametrize("text, message", [
    ("#,Name,Image_name,Type 2\n1,Bulbasaur,1,Poison\n", "no column"),   # no Type 1 column
    ("", "no column"),                                                  # empty file
    ("a;b;c\n1;2;3\n", "no column"),                                    # not this CSV at all
    (HEADER + "1,Bulbasaur,1,Grass,Sound,1,1\n", "unknown type 'Sound'"),
    (HEADER + "1,Bulbasaur,1,,Poison,1,1\n", "no Type 1"),
    (HEADER + "1,Bulbasaur,1,Grass,,1,1\n1,Bulbasaur,1,Fire,,1,1\n", "twice"),
    (HEADER, "no rows"),
])
def test_bad_csv_is_a_one_line_user_error(tmp_path, text, message):
    with pytest.raises(UserError, match=message) as err:
        load_type_table(write_csv(tmp_path, text))
    assert "\n" not in str(err.value)
    assert "get_data.sh" in str(err.value)


def test_missing_or_unreadable_table_says_where_to_get_it(tmp_path):
    with pytest.raises(UserError, match=r"not found.*scripts/get_data\.sh.*sprites\.download") as err:
        load_type_table(tmp_path / "nope.csv")
    assert "\n" not in str(err.value)
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x81 not text")
    with pytest.raises(UserError, match="not a readable CSV"):
        load_type_table(tmp_path / "binary.csv")


def test_default_table_path_is_beside_the_sprite_folder():
    assert default_table_path("data/pokemon") == Path("data/pokemon_stats.csv")


@pytest.mark.skipif(not REAL or not default_table_path(REAL).is_file(),
                    reason="POKEMON_DATA not set to the sprite folder (with pokemon_stats.csv beside it)")
def test_real_table_labels_805_of_919_images():
    names = [p.stem for p in list_image_files(Path(REAL)) if p.suffix.lower() in IMAGE_SUFFIXES]
    assert len(names) == 919
    table = load_type_table(default_table_path(REAL))
    labels = type_labels(names, table)
    counts = label_counts(labels)
    assert counts["unlabelled"] == 114
    assert int((labels != NULL_LABEL).sum()) == 805
    # the Type 1 counts of data/README.md
    assert (counts["Water"], counts["Normal"], counts["Flying"], counts["Fairy"]) == (115, 106, 4, 17)
    by_name = dict(zip(names, labels.tolist()))
    assert by_name["6-mega-x"] == parse_type("Fire") and table["6-mega-x"] == ("Fire", "Dragon")
    assert by_name["25-belle"] == NULL_LABEL and by_name["722"] == NULL_LABEL


# --- sampling requests: types and styles (diffusion/labels.py) ------------------------------------------

def test_requested_labels_per_type_and_style():
    labels, rows = requested(["Fire", "water"], ["all"], True, True, 2)
    assert len(labels) == 2 * 4 * 2 and rows[0] == "Fire, artwork" and rows[-1] == "Water, sprite_back"
    assert labels.type.tolist()[:4] == [6, 6, 6, 6] and labels.style.tolist()[:4] == [0, 0, 1, 1]
    labels, rows = requested(None, None, False, True, 3)  # a style model draws artworks by default
    assert labels.type is None and labels.style.tolist() == [0, 0, 0] and rows == ["artwork"]
    assert requested(None, None, False, False, 3) == (None, [])
    assert parse_style("Dream World") == 1 and parse_style("sprite-back") == 3
    with pytest.raises(UserError, match="artwork, dream_world, sprite_front, sprite_back"):
        parse_style("oil")
    with pytest.raises(UserError, match="without style labels"):
        requested(None, ["artwork"], True, False, 1)
    with pytest.raises(UserError, match="without type labels"):
        requested(["Fire"], None, False, True, 1)
    null = labels.null()
    assert (null.style == NULL_STYLE).all() and label_name(null, 0) == "no style"


def test_corpus_images_take_their_species_row_when_the_form_has_none():
    table = {"6": ("Fire", "Flying"), "6-mega-x": ("Fire", "Dragon"), "386-attack": ("Psychic", None)}
    names = lookup_names(["6", "6-mega-x", "3f", "201-a", "386-attack", "6f"], torch.tensor([0, 0, 2, 2, 2, 0]),
                         torch.tensor([6, 6, 3, 201, 386, 6]), table)
    # artworks (source 0) exactly by stem; corpus images by stem, else by Pokedex number
    assert names == ["6", "6-mega-x", "3", "201", "386-attack", "6f"]
