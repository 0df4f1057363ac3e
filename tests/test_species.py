"""Species as a condition: the Pokedex number of each image reaches the model, the checkpoint records
the species table, and sampling by name, number, at random and as a fusion works and fails as
documented (on the synthetic sprites, whose file stems 1-synth ... 24-synth are their numbers)."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffusion import trainer as dtrainer
from diffusion.config import DiffusionConfig
from diffusion.guidance import dropped
from diffusion.labels import (
    Labels,
    SpeciesKnown,
    fusion_weights,
    requested,
    sample_rows,
    species_record,
    training_labels,
)
from diffusion.pipeline import load_pipeline
from diffusion.unet import UNet
from plumbing.checkpoint import load_checkpoint
from plumbing.cli import UserError
from plumbing.config import load_config
from reports.species import own_species, read_asked, species_hits, spread
from sprites.dataset import load_artworks
from sprites.labels import NULL_SPECIES, NUM_SPECIES, load_species_table, parse_species, species_labels, species_name
from tests.helpers import REPO, TINY_DIFFUSION, subprocess_env

NAMES = ["Bulbasaur", "Ivysaur", "VenusaurMega Venusaur", "Charmander", "Charmeleon", "CharizardMega Charizard X",
         "Squirtle", "Wartortle", "Blastoise", "Caterpie", "Metapod", "Butterfree", "Weedle", "Kakuna", "Beedrill",
         "Pidgey", "Pidgeotto", "Pidgeot", "Rattata", "Raticate", "Spearow", "Fearow", "Ekans", "Arbok"]


def _write_species_table(path: Path, numbers: list[int]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["#", "Name", "Image_name", "Type 1", "Type 2"])
        for n in numbers:
            w.writerow([n, NAMES[n - 1], f"{n}-synth", "Fire" if n % 2 else "Water", ""])


@pytest.fixture(scope="module")
def species_run(sprite_dir, tmp_path_factory):
    """A tiny pixel-space model conditioned on style and species; numbers 1-22 are in the table (23 and
    24 are not: they train as "no species")."""
    root = tmp_path_factory.mktemp("species")
    data = root / "data" / "pokemon"
    shutil.copytree(sprite_dir, data)
    _write_species_table(root / "data" / "pokemon_stats.csv", list(range(1, 23)))
    cfg = load_config(DiffusionConfig, None, [f"data.root={data}", f"data.cache_dir={root / 'cache'}", "space=pixel",
                                              "cond.species=true", "cond.style=true", *TINY_DIFFUSION,
                                              "train.epochs=3", "train.sample_n=8"])
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("POKEMON_DATA", raising=False)
        result = dtrainer.train(cfg, str(root / "run"))
    return {"cfg": cfg, "run_dir": Path(result["run_dir"]), "root": root, "data": data}


# --- the species table ------------------------------------------------------------------------------

def test_species_name_drops_the_form_written_after_it():
    assert species_name("CharizardMega Charizard X") == "Charizard"
    assert species_name("DeoxysNormal Forme") == "Deoxys"
    assert species_name("Zygarde50% Forme") == "Zygarde"
    for kept in ("Mr. Mime", "Porygon2", "Porygon-Z", "Ho-oh", "Farfetch'd", "Nidoran♀", "Flabébé", "Mime Jr."):
        assert species_name(kept) == kept


def test_species_are_parsed_by_name_in_any_case_or_by_number(tmp_path):
    _write_species_table(tmp_path / "t.csv", list(range(1, 25)))
    table = load_species_table(tmp_path / "t.csv")
    assert table[3] == "Venusaur" and table[6] == "Charizard"
    assert parse_species("CHARMANDER", table) == 4 == parse_species(" charmander ", table) == parse_species("4", table)
    with pytest.raises(UserError, match=r"unknown species 'charmandr'; did you mean Charmander"):
        parse_species("charmandr", table)
    with pytest.raises(UserError, match="unknown Pokedex number 99"):
        parse_species("99", table)


def test_images_of_numbers_outside_the_table_get_no_species():
    table = {1: "Bulbasaur", 4: "Charmander"}
    labels = species_labels(torch.tensor([1, 4, 7, 0]), table)
    assert labels.tolist() == [0, 3, NULL_SPECIES, NULL_SPECIES]


# --- training ----------------------------------------------------------------------------------------

def test_every_image_carries_its_pokedex_number(species_run):
    cfg = species_run["cfg"]
    data = load_artworks(cfg.data.root, cfg.data.size, cfg.data.cache_dir, cfg.data.holdout, cfg.data.split_seed)
    labels = training_labels(cfg, data)
    assert labels.species.tolist() == [d - 1 if d <= 22 else NULL_SPECIES for d in data.dex.tolist()]
    assert "conditioning on the species" in (species_run["run_dir"] / "log.txt").read_text()


def test_checkpoint_records_the_species_table_and_the_trained_numbers(species_run):
    cfg = species_run["cfg"]
    ckpt = load_checkpoint(species_run["run_dir"] / "diffusion.pt", kind="diffusion")
    record = ckpt["labels"]
    assert record["species"]["3"] == "Venusaur" and len(record["species"]) == 22
    data = load_artworks(cfg.data.root, cfg.data.size, cfg.data.cache_dir, cfg.data.holdout, cfg.data.split_seed)
    held = set(data.dex[data.holdout_idx].tolist())
    assert record["trained_species"] == sorted(set(range(1, 23)) - held)
    assert ckpt["ema"]["species_emb.weight"].shape[0] == NUM_SPECIES + 1


def test_a_fine_tuned_model_keeps_the_species_its_starting_model_trained_on(species_run):
    cfg = species_run["cfg"]
    data = load_artworks(cfg.data.root, cfg.data.size, cfg.data.cache_dir, cfg.data.holdout, cfg.data.split_seed)
    held = sorted(set(data.dex[data.holdout_idx].tolist()) & set(range(1, 23)))
    assert held and not set(held) & set(species_record(cfg, data)["trained_species"])
    assert set(held) <= set(species_record(cfg, data, earlier=held)["trained_species"])


def test_species_dropout_leaves_the_type_and_style_draws_as_they_were():
    """Species labels are dropped after types and styles, so models without them train as before."""
    types, styles = torch.randint(0, 18, (64,)), torch.randint(0, 4, (64,))
    without = dropped(Labels(types, styles), 0.3, torch.Generator().manual_seed(5))
    with_species = dropped(Labels(types, styles, torch.randint(0, 700, (64,))), 0.3, torch.Generator().manual_seed(5))
    assert torch.equal(without.type, with_species.type) and torch.equal(without.style, with_species.style)
    assert (with_species.species == NULL_SPECIES).any()


def test_weights_on_one_species_are_that_species_and_a_fusion_mixes_two_embeddings():
    torch.manual_seed(0)
    net = UNet(3, [8, 16], 1, [1], num_species=NUM_SPECIES).eval()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 500])
    by_index = net(x, t, Labels(species=torch.tensor([3, 6])))
    one_hot = torch.nn.functional.one_hot(torch.tensor([3, 6]), NUM_SPECIES + 1).float()
    assert torch.allclose(net(x, t, Labels(species=one_hot)), by_index, atol=1e-5)
    w = fusion_weights(4, 7, 0.25)
    assert w[3] == 0.75 and w[6] == 0.25 and w.sum() == 1
    mixed = w @ net.species_emb.weight
    assert torch.allclose(mixed, 0.75 * net.species_emb.weight[3] + 0.25 * net.species_emb.weight[6])
    assert torch.allclose(net(x[:1], t[:1], Labels(species=fusion_weights(4, 7, 0.0)[None])), by_index[:1], atol=1e-5)


# --- sampling requests ----------------------------------------------------------------------------

def test_a_request_gives_rows_of_species_random_ones_and_fusions():
    known = SpeciesKnown({n: species_name(NAMES[n - 1]) for n in range(1, 25)}, trained=list(range(1, 21)))
    labels, rows = requested(None, None, False, True, 3, species=["bulbasaur", "random"],
                             fusions=[("charmander", "squirtle", 0.5)], known=known, seed=4)
    assert rows == ["Bulbasaur, artwork", "random species, artwork", "Charmander x Squirtle (0.50), artwork"]
    assert labels.species.shape == (9, NUM_SPECIES + 1) and labels.style.tolist() == [0] * 9
    drawn = labels.species[3:6].argmax(-1) + 1
    assert all(1 <= d <= 20 for d in drawn.tolist())  # random species come from the trained ones
    again, _ = requested(None, None, False, True, 3, species=["random"], known=known, seed=4)
    assert torch.equal(again.species + 1, drawn)  # the same seed draws the same species
    described = sample_rows(labels, 9, known)
    assert described[0] == {"pokedex": "1", "species": "Bulbasaur", "type": "", "style": "artwork"}
    assert described[8]["pokedex"] == "4+7" and described[8]["species"] == "Charmander x Squirtle (0.50)"
    default, rows = requested(None, None, False, True, 2, known=known, seed=4)  # nothing asked: random species
    assert rows == ["random species, artwork"] and torch.equal(default.species + 1, drawn[:2])
    by_type, _ = requested(["Fire"], None, True, True, 2, known=known)         # a type alone: no species
    assert by_type.species is None
    with pytest.warns(UserWarning, match=r"Arbok \(No. 24\) is held out"):
        requested(None, None, False, True, 1, species=["arbok"], known=known)
    with pytest.raises(UserError, match="trained without species labels"):
        requested(None, None, False, True, 1, species=["arbok"], known=None)


def test_the_python_api_takes_species_and_fusions(species_run):
    pipe = load_pipeline(species_run["run_dir"])
    assert pipe.conditional == {"type": False, "style": True, "species": True}
    a = pipe(n=2, seed=1, species="ivysaur", steps=3)
    b = pipe(n=2, seed=1, species=2, steps=3)
    assert [im.tobytes() for im in a] == [im.tobytes() for im in b]
    fused = pipe(n=2, seed=1, fuse=("ivysaur", "squirtle"), fuse_weight=0.5, steps=3)
    assert len(fused) == 2 and fused[0].size == (16, 16)
    with pytest.raises(ValueError, match="unknown species 'missingno'"):
        pipe(n=1, species="missingno")


# --- the command line ---------------------------------------------------------------------------------

def _sample(species_run, tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffusion.sample", "--ckpt", str(species_run["run_dir"]),
                           "--steps", "3", "--device", "cpu", *args], cwd=REPO, env=subprocess_env(tmp_path),
                          capture_output=True, text=True, timeout=300)


def test_cli_writes_a_row_per_species_and_labels_csv(species_run, tmp_path):
    out = tmp_path / "s"
    done = _sample(species_run, tmp_path, "--species", "bulbasaur", "--species", "Charmander", "--n", "3",
                   "--fuse", "ivysaur", "squirtle", "--fuse-weight", "0.3", "--out", str(out), "--seed", "2",
                   "--guidance", "2")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.glob("0*.png")) == [f"{i:04d}.png" for i in range(9)]
    assert (out / "grid.png").is_file()
    with open(out / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["species"] for r in rows] == ["Bulbasaur"] * 3 + ["Charmander"] * 3 + ["Ivysaur x Squirtle (0.30)"] * 3
    assert rows[0] == {"file": "0000.png", "pokedex": "1", "species": "Bulbasaur", "type": "", "style": "artwork",
                       "guidance": "2.0", "seed": "2"}
    assert rows[-1]["pokedex"] == "2+7"
    assert read_asked(out, 9) == [[1]] * 3 + [[4]] * 3 + [[2, 7]] * 3


def test_cli_bad_held_out_and_unsupported_species(species_run, tiny_runs, tmp_path):
    bad = _sample(species_run, tmp_path, "--species", "bulbasuar", "--out", str(tmp_path / "a"))
    assert bad.returncode == 2 and bad.stderr.strip() == ("error: unknown species 'bulbasuar'; did you mean "
                                                          "Bulbasaur?")
    cfg = species_run["cfg"]
    data = load_artworks(cfg.data.root, cfg.data.size, cfg.data.cache_dir, cfg.data.holdout, cfg.data.split_seed)
    held = sorted(set(data.dex[data.holdout_idx].tolist()) & set(range(1, 23)))[0]
    warned = _sample(species_run, tmp_path, "--species", str(held), "--n", "1", "--out", str(tmp_path / "b"))
    assert warned.returncode == 0
    assert f"warning: {species_name(NAMES[held - 1])} (No. {held}) is held out" in warned.stderr
    plain = subprocess.run([sys.executable, "-m", "diffusion.sample", "--ckpt", str(tiny_runs["pixel"]),
                            "--species", "bulbasaur", "--out", str(tmp_path / "c")], cwd=REPO,
                           env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2 and "trained without species labels" in plain.stderr


def test_the_shipped_model_draws_named_and_random_species(tmp_path):
    out = tmp_path / "release"
    done = subprocess.run([sys.executable, "-m", "diffusion.sample", "--ckpt", str(REPO / "checkpoints/release"),
                           "--species", "Charmander", "--species", "machop", "--n", "2", "--steps", "2",
                           "--out", str(out)], cwd=REPO, env=subprocess_env(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "warning: Machop (No. 66) is held out of this model's training data" in done.stderr  # the split
    with open(out / "labels.csv", newline="") as f:
        assert [r["pokedex"] for r in csv.DictReader(f)] == ["4", "4", "66", "66"]
    pipe = load_pipeline(REPO / "checkpoints/release")
    assert pipe.conditional == {"type": True, "style": True, "species": True}
    labels, rows = pipe.labels(None, None, 3, seed=0)  # no request: random species in the artwork style
    assert rows == ["random species, artwork"] and labels.species is not None


# --- the species measures -------------------------------------------------------------------------------

def test_species_hits_count_top1_top5_and_both_parents_of_fusions():
    classes = [1, 2, 3, 4, 5, 6, 7]
    probs = torch.tensor([[.5, .2, .1, .1, .05, .03, .02],   # asked 1: top-1
                          [.5, .2, .1, .1, .05, .03, .02],   # asked 5: in the top 5, not top-1
                          [.5, .2, .1, .1, .05, .03, .02],   # asked 7: neither
                          [.05, .03, .5, .2, .1, .1, .02]])  # fusion of 3 and 4: both in the top 5
    hits = species_hits(probs, classes, [[1], [5], [7], [3, 4]])
    assert hits["n"] == 3 and hits["top1"] == pytest.approx(1 / 3) and hits["top5"] == pytest.approx(2 / 3)
    assert hits["fusions"] == {"n": 1, "both_top5": 1.0, "either_top5": 1.0}
    assert hits["chance_top5"] == pytest.approx(5 / 7)


def test_own_species_memorisation_and_spread():
    gen = torch.Generator().manual_seed(0)
    train = (torch.rand(12, 3, 16, 16, generator=gen) * 255).to(torch.uint8)
    dex = torch.tensor([1] * 6 + [2] * 6)
    features = lambda x: x.flatten(1) / (x[0].numel() ** 0.5)  # noqa: E731 - RMS pixel distance
    copies = train[[0, 1]].float() / 127.5 - 1                 # two exact copies of species 1's images
    mem = own_species(copies, [[1], [1]], train, dex, threshold=0.05, features=features,
                      real_idx=torch.tensor([0, 6]))
    assert mem["rate"] == 1.0 and mem["median_distance"] == pytest.approx(0.0, abs=1e-6)
    assert mem["real_median_distance"] > 0.3  # a real image is far from the other (random) images of its species
    same = copies[:1].repeat(4, 1, 1, 1)                        # one picture drawn four times: no spread
    var = spread(torch.cat([same, copies]), [[2]] * 4 + [[1], [1]], train, dex, features)
    assert var["species"] == 2 and var["per_species"][2] == pytest.approx(0.0, abs=1e-6)
    assert var["per_species"][1] > 0.5
