"""plumbing.config: YAML + environment + `key=value` overrides into typed dataclasses."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from autoencoder.config import AEConfig
from diffusion.config import DiffusionConfig
from diffusion.denoiser import build_schedule
from plumbing.cli import UserError
from plumbing.config import dump_yaml, from_dict, load_config, to_dict
from reports.pokenet import PokeNetConfig
from diffusion.teacher import TeacherConfig, data_record

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("POKEMON_DATA", raising=False)


def test_defaults_without_file_or_overrides():
    cfg = load_config(AEConfig, None, [])
    assert cfg == AEConfig()
    assert cfg.data.root == "data/pokemon"


def test_overrides_of_each_type_apply():
    cfg = load_config(AEConfig, None, [
        "train.epochs=7",            # int
        "train.lr=0.005",            # float
        "data.hflip=false",          # bool
        "model.channels=[8, 16, 32, 64]",  # list[int]
        "model.blocks=[0, 1, 1, 2]",
        "run_name=my-run",           # str
        "data.frames=first",         # Literal
        "data.size=32",
    ])
    assert cfg.train.epochs == 7 and type(cfg.train.epochs) is int
    assert cfg.train.lr == 0.005 and type(cfg.train.lr) is float
    assert cfg.data.hflip is False
    assert cfg.model.channels == [8, 16, 32, 64]
    assert cfg.run_name == "my-run"
    assert cfg.data.frames == "first"
    # untouched keys keep their defaults
    assert cfg.train.batch_size == AEConfig().train.batch_size


def test_later_override_wins():
    cfg = load_config(AEConfig, None, ["train.epochs=3", "train.epochs=9"])
    assert cfg.train.epochs == 9


def test_int_given_for_float_key_becomes_float():
    cfg = load_config(AEConfig, None, ["train.lr=1"])
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float


@pytest.mark.parametrize("raw, expected", [("1e-3", 1e-3), ("2.5e-4", 2.5e-4), ("3E-2", 3e-2)])
def test_exponent_notation_is_a_float(raw, expected):
    # PyYAML reads `1e-3` (no dot) as a *string*; the config must still accept it as a float.
    cfg = load_config(AEConfig, None, [f"train.lr={raw}"])
    assert cfg.train.lr == pytest.approx(expected) and type(cfg.train.lr) is float


def test_exponent_string_in_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n  epochs: 3\n")
    cfg = load_config(AEConfig, path, [])
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.train.epochs == 3


def test_override_beats_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n")
    cfg = load_config(AEConfig, path, ["train.epochs=11"])
    assert cfg.train.epochs == 11


def test_unknown_key_names_key_and_suggests():
    with pytest.raises(UserError) as exc:
        load_config(AEConfig, None, ["train.epoch=5"])
    msg = str(exc.value)
    assert "train.epoch" in msg
    assert "did you mean 'train.epochs'" in msg


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  chanels: [8, 16]\n")
    with pytest.raises(UserError, match=r"model\.chanels.*did you mean 'model\.channels'"):
        load_config(AEConfig, path, [])


def test_unknown_section():
    with pytest.raises(UserError, match="optimizer"):
        load_config(AEConfig, None, ["optimizer.lr=1"])


@pytest.mark.parametrize("override, key", [
    ("train.epochs=abc", "train.epochs"),
    ("train.epochs=1.5", "train.epochs"),
    ("train.epochs=true", "train.epochs"),
    ("data.hflip=3", "data.hflip"),
    ("data.hflip=yes please", "data.hflip"),
    ("train.lr=fast", "train.lr"),
    ("train.lr=true", "train.lr"),
    ("model.channels=8", "model.channels"),
    ("model.channels=[8, x]", "model.channels[1]"),
    ("run_name=[a]", "run_name"),
    ("train.epochs=", "train.epochs"),
])
def test_wrong_type_is_a_user_error(override, key):
    with pytest.raises(UserError) as exc:
        load_config(AEConfig, None, [override])
    assert f"'{key}'" in str(exc.value)


def test_literal_choices_are_validated():
    with pytest.raises(UserError) as exc:
        load_config(AEConfig, None, ["data.frames=foo"])
    msg = str(exc.value)
    assert "data.frames" in msg and "'first'" in msg and "foo" in msg


def test_retired_keys_of_stored_configs_load_at_their_one_value_and_fail_at_another():
    """Configs stored by earlier runs and releases carry keys that every run now has at one value."""

    stored = asdict(DiffusionConfig())
    stored["ae"]["norm"], stored["train"]["weight_decay"], stored["cond"]["table"] = "channel", 0.0, None
    assert from_dict(DiffusionConfig, stored) == DiffusionConfig()
    stored["ae"]["norm"] = "global"
    with pytest.raises(UserError, match="'ae.norm' is no longer supported"):
        from_dict(DiffusionConfig, stored)
    with pytest.raises(UserError, match="unknown config key 'train.channels_last'"):
        load_config(DiffusionConfig, None, ["train.channels_last=true"])  # not a key a user can set


@pytest.mark.parametrize("item", ["train.epochs", "=5", "", "train.epochs 5"])
def test_malformed_override(item):
    with pytest.raises(UserError, match="section.key=value"):
        load_config(AEConfig, None, [item])


def test_section_given_a_value():
    with pytest.raises(UserError, match="'data' is a section"):
        load_config(AEConfig, None, ["data=5"])


def test_value_given_subkeys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\n")
    with pytest.raises(UserError, match="seed"):
        load_config(AEConfig, path, ["seed.x=1"])


def test_missing_and_invalid_config_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(AEConfig, tmp_path / "nope.yaml", [])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(AEConfig, bad, [])
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(AEConfig, notmap, [])


def test_empty_yaml_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_config(AEConfig, path, []) == AEConfig()


def test_pokemon_data_env_sets_root(monkeypatch, tmp_path):
    monkeypatch.setenv("POKEMON_DATA", "/some/where/sprites")
    cfg = load_config(AEConfig, None, [])
    assert cfg.data.root == "/some/where/sprites"
    # the environment also beats the YAML file ...
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  root: from/yaml\n")
    assert load_config(AEConfig, path, []).data.root == "/some/where/sprites"
    # ... and a command-line override beats the environment
    cfg = load_config(AEConfig, path, ["data.root=/from/cli"])
    assert cfg.data.root == "/from/cli"


def test_empty_pokemon_data_is_ignored(monkeypatch):
    monkeypatch.setenv("POKEMON_DATA", "")
    assert load_config(AEConfig, None, []).data.root == "data/pokemon"


SHIPPED = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))


def test_every_shipped_config_is_tested():
    assert {"ae.yaml", "ae_full.yaml", "ldm.yaml", "ldm_corpus.yaml", "ldm_full.yaml", "ldm_long.yaml",
            "ldm_species.yaml", "ldm_types.yaml", "pixel.yaml", "pixel32.yaml", "pixel_full.yaml",
            "pokenet.yaml", "teacher.yaml"} == set(SHIPPED)


@pytest.mark.parametrize("name", [n for n in SHIPPED if n.startswith("ae")])
def test_shipped_ae_configs_load(name):
    cfg = load_config(AEConfig, REPO / "configs" / name, [])
    assert isinstance(cfg, AEConfig)
    f = 2 ** (len(cfg.model.channels) - 1)
    assert cfg.data.size % f == 0
    assert cfg.train.epochs > 0


@pytest.mark.parametrize("name", [n for n in SHIPPED if n.startswith(("ldm", "pixel"))])
def test_shipped_diffusion_configs_load(name):
    cfg = load_config(DiffusionConfig, REPO / "configs" / name, [])
    assert cfg.space == ("pixel" if name.startswith("pixel") else "latent")
    assert cfg.schedule.T == (100 if name == "pixel32.yaml" else 1000) and cfg.train.epochs > 0
    assert (cfg.cond.labels == "type1") == (name in ("ldm_types.yaml", "ldm_corpus.yaml", "ldm_long.yaml",
                                                                  "ldm_species.yaml"))
    assert cfg.cond.species == (name == "ldm_species.yaml")
    # Every shipped schedule ends in N(0, I) (the seed's T = 100 only with the endpoints scaled).
    diagnostics = build_schedule(cfg).check_ends_in_noise()
    assert diagnostics["alpha_bar_T"] < 1e-4


def test_shipped_pokenet_config_loads():
    cfg = load_config(PokeNetConfig, REPO / "configs" / "pokenet.yaml", [])
    assert cfg.train.steps > 0 and cfg.data.mix.artwork > 0


def test_shipped_teacher_config_teaches_the_species_runs():
    """The teacher trains on the sources of configs/ldm_species.yaml at its size and split, with
    another seed than PokeNet's (the network that measures the samples)."""
    teacher = load_config(TeacherConfig, REPO / "configs" / "teacher.yaml", [])
    species = load_config(DiffusionConfig, REPO / "configs" / "ldm_species.yaml", [])
    assert data_record(teacher.data) == data_record(species.data)
    assert teacher.seed != load_config(PokeNetConfig, REPO / "configs" / "pokenet.yaml", []).seed


def test_pixel32_is_the_seed_setting_of_pixel_yaml():
    """configs/pixel32.yaml differs from configs/pixel.yaml only in size, T, attention and the run name."""

    base = to_dict(load_config(DiffusionConfig, REPO / "configs" / "pixel.yaml", []))
    seed = to_dict(load_config(DiffusionConfig, REPO / "configs" / "pixel32.yaml", []))
    differ = {f"{section}.{key}" for section in base if isinstance(base[section], dict)
              for key in base[section] if base[section][key] != seed[section][key]}
    differ |= {key for key in base if not isinstance(base[key], dict) and base[key] != seed[key]}
    assert differ == {"data.size", "schedule.T", "model.attention_levels", "run_name"}
    assert seed["data"]["size"] == 32 and seed["schedule"]["T"] == 100 and seed["schedule"]["scale_to_T"]


def test_size_not_divisible_by_downsampling_factor():
    # channels of length 4 -> f = 8; 36 is not a multiple of 8
    with pytest.raises(UserError, match=r"data.size=36.*downsampling factor 8"):
        load_config(AEConfig, None, ["data.size=36", "model.channels=[8,16,32,64]"])
    # the same size with f = 4 is fine (36 = 4 * 9)
    assert load_config(AEConfig, None, ["data.size=36", "model.channels=[8,16,32]"]).data.size == 36


@pytest.mark.parametrize("override, fragment", [
    ("train.epochs=0", "train.epochs"),
    ("train.batch_size=-1", "train.batch_size"),
    ("model.channels=[]", "model.channels"),
    ("model.channels=[8,0]", "model.channels"),
    ("data.holdout=0.5", "data.holdout"),
    ("train.lr=0", "train.lr"),
    ("model.blocks=[1,1]", "model.blocks"),       # three levels need three counts
    ("model.blocks=[1,-1,1]", "model.blocks"),
])
def test_cross_key_validation(override, fragment):
    with pytest.raises(UserError, match=fragment.replace(".", r"\.")):
        load_config(AEConfig, None, [override])


@pytest.mark.parametrize("override, fragment", [
    ("train.log_snr_std=0", "train.log_snr_std"),
    ("train.t_sampling=lognormal", "train.t_sampling"),
    ("train.ema_decay=1.0", "train.ema_decay"),
])
def test_diffusion_training_keys_are_checked(override, fragment):
    with pytest.raises(UserError, match=fragment.replace(".", r"\.")):
        load_config(DiffusionConfig, None, [override])


def test_round_trip_through_dict_and_yaml(tmp_path):
    cfg = load_config(AEConfig, None, ["train.lr=1e-4", "model.channels=[4,8]", "model.blocks=[1,1]", "data.size=32", "seed=5"])
    assert from_dict(AEConfig, to_dict(cfg)) == cfg
    path = tmp_path / "config.yaml"
    dump_yaml(cfg, path)
    assert load_config(AEConfig, path, []) == cfg


def test_from_dict_checks_types():
    tree = to_dict(AEConfig())
    tree["train"]["epochs"] = "many"
    with pytest.raises(UserError, match="train.epochs"):
        from_dict(AEConfig, tree)
