"""Type-conditional training and sampling end to end (classifier-free guidance), on the synthetic
sprites with a small made-up type table: labels reach the model, label dropout happens, and the
sampling CLI's --type / --guidance work and fail as documented."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion import trainer as dtrainer
from diffusion.config import DiffusionConfig
from diffusion.labels import Labels, training_labels
from diffusion.denoiser import make_denoiser, num_types
from diffusion.pipeline import load_diffusion
from diffusion.samplers import ddim_sample
from plumbing.checkpoint import load_checkpoint
from plumbing.config import load_config
from sprites.labels import NULL_LABEL, TYPES
from tests.helpers import REPO, TINY_DIFFUSION, subprocess_env
from plumbing.cli import UserError
from reports import comparison
from reports import hue
from sprites.dataset import load_artworks
import json

# Every third synthetic sprite is unlabelled; the others alternate Fire / Water / Grass.
TABLE_TYPES = ["Fire", "Water", "Grass"]


def _write_table(path: Path, stems: list[str]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["#", "Name", "Image_name", "Type 1", "Type 2"])
        for i, stem in enumerate(stems):
            if i % 3 == 2:
                continue
            w.writerow([i + 1, f"Synth{i}", stem, TABLE_TYPES[i % 3], ""])


@pytest.fixture(scope="module")
def cond_run(sprite_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("cond")
    data = root / "data" / "pokemon"
    shutil.copytree(sprite_dir, data)
    _write_table(root / "data" / "pokemon_stats.csv", sorted(p.stem for p in data.glob("*.png")))
    cfg = load_config(DiffusionConfig, None, [f"data.root={data}", f"data.cache_dir={root / 'cache'}", "space=pixel",
                                              "cond.labels=type1", "cond.drop_prob=0.2", *TINY_DIFFUSION,
                                              "train.epochs=4"])
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("POKEMON_DATA", raising=False)
        result = dtrainer.train(cfg, str(root / "run"))
    return {"cfg": cfg, "run_dir": Path(result["run_dir"]), "root": root}


def test_table_beside_the_data_folder_gives_the_labels(cond_run):
    cfg = cond_run["cfg"]
    data = load_artworks(cfg.data.root, cfg.data.size, cfg.data.cache_dir, cfg.data.holdout, cfg.data.split_seed)
    labels = training_labels(cfg, data).type
    assert len(labels) == len(data.names)
    fire = TYPES.index("Fire")
    by_name = dict(zip(data.names, labels.tolist()))
    stems = sorted(data.names)
    assert by_name[stems[0]] == fire and by_name[stems[2]] == NULL_LABEL  # unlabelled -> "no label", kept
    log = (cond_run["run_dir"] / "log.txt").read_text()
    assert "conditioning on Type 1" in log and "label dropout 0.2" in log


def test_conditional_checkpoint_has_a_type_embedding(cond_run):
    pipe = load_diffusion(cond_run["run_dir"] / "diffusion.pt", "cpu")
    assert pipe.model.type_emb is not None and pipe.model.type_emb.num_embeddings == len(TYPES) + 1
    assert pipe.model.style_emb is None and num_types(pipe.cfg) == len(TYPES)
    assert pipe.conditional == {"type": True, "style": False, "species": False}
    assert load_checkpoint(cond_run["run_dir"] / "diffusion.pt")["labels"] == {"types": list(TYPES), "styles": []}


def test_guidance_scales_in_the_sampler(cond_run):
    """Guidance 1 samples the conditional model, 0 the unconditional one (labels then do not matter)."""
    pipe = load_diffusion(cond_run["run_dir"] / "diffusion.pt", "cpu")
    shape = (3, *pipe.space.shape)

    def run(labels, scale):
        den = make_denoiser(pipe.model, torch.device("cpu"), False, labels, scale)
        return ddim_sample(den, pipe.schedule, shape, torch.Generator().manual_seed(0), "cpu", True, steps=4)[0]

    fire, water = Labels(torch.full((3,), TYPES.index("Fire"))), Labels(torch.full((3,), TYPES.index("Water")))
    null = Labels(torch.full((3,), NULL_LABEL))
    assert torch.allclose(run(fire, 0.0), run(water, 0.0), atol=1e-5)
    assert torch.allclose(run(fire, 0.0), run(null, 1.0), atol=1e-5)
    assert not torch.allclose(run(fire, 3.0), run(water, 3.0), atol=1e-4)


def _sample(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffusion.sample", *args], cwd=REPO, env=subprocess_env(tmp_path),
                          capture_output=True, text=True, timeout=180)


def test_cli_type_sampling_is_deterministic(cond_run, tmp_path):
    ckpt = str(cond_run["run_dir"] / "diffusion.pt")
    common = ["--ckpt", ckpt, "--n", "2", "--steps", "3", "--seed", "1", "--type", "fire", "--type", "Water",
              "--guidance", "2"]
    outs = []
    for k in range(2):
        proc = _sample([*common, "--out", str(tmp_path / f"s{k}")], tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Fire; Water, guidance 2.0" in proc.stdout
        outs.append([np.asarray(Image.open(tmp_path / f"s{k}" / f"{i:04d}.png")) for i in range(4)])
    assert all(np.array_equal(a, b) for a, b in zip(*outs))
    assert not (tmp_path / "s0" / "0004.png").exists()  # 2 types x --n 2


def test_cli_type_all_gives_one_row_per_type(cond_run, tmp_path):
    proc = _sample(["--ckpt", str(cond_run["run_dir"] / "diffusion.pt"), "--n", "2", "--steps", "2", "--type", "all",
                    "--out", str(tmp_path / "all")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    grid = Image.open(tmp_path / "all" / "grid.png")
    tile = Image.open(tmp_path / "all" / "0000.png").size[0]
    assert len(list((tmp_path / "all").glob("0*.png"))) == 2 * len(TYPES)
    assert grid.size[1] > grid.size[0] and grid.size[1] >= len(TYPES) * tile  # 18 rows of 2
    images_width = 2 * (tile + 2) + 2
    assert grid.size[0] > images_width  # a margin on the left carries the type names
    margin = np.asarray(grid.convert("L"))[:, : grid.size[0] - images_width]
    assert (margin < 128).any()  # dark text in it


def test_cli_unknown_type_lists_the_valid_ones(cond_run, tmp_path):
    proc = _sample(["--ckpt", str(cond_run["run_dir"] / "diffusion.pt"), "--type", "Plasma", "--out",
                    str(tmp_path / "x")], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Plasma" in lines[0] and "Fire" in lines[0] and "Water" in lines[0]


def test_cli_type_on_an_unconditional_checkpoint(sprite_dir, tmp_path):
    cfg = load_config(DiffusionConfig, None, [f"data.root={sprite_dir}", f"data.cache_dir={tmp_path / 'cache'}",
                                              "space=pixel", *TINY_DIFFUSION, "train.epochs=1"])
    run = Path(dtrainer.train(cfg, str(tmp_path / "run"))["run_dir"])
    proc = _sample(["--ckpt", str(run / "diffusion.pt"), "--type", "Fire", "--out", str(tmp_path / "x")], tmp_path)
    assert proc.returncode == 2
    assert "without type labels" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_type_table_is_a_user_error(sprite_dir, tmp_path):
    data = tmp_path / "alone" / "pokemon"  # no pokemon_stats.csv beside it
    shutil.copytree(sprite_dir, data)
    cfg = load_config(DiffusionConfig, None, [f"data.root={data}", f"data.cache_dir={tmp_path / 'cache'}",
                                              "space=pixel", "cond.labels=type1", *TINY_DIFFUSION])
    with pytest.raises(UserError, match="pokemon_stats.csv"):
        dtrainer.train(cfg, str(tmp_path / "run"))


def test_hue_report_runs_on_a_conditional_checkpoint(cond_run, tmp_path, monkeypatch):
    monkeypatch.delenv("POKEMON_DATA", raising=False)
    out = tmp_path / "hue"
    hue.main(["--ckpt", str(cond_run["run_dir"] / "diffusion.pt"), "--types", "Fire", "Water", "--guidance", "0",
              "2", "--n", "2", "--steps", "2", "--out", str(out)])
    rows = json.loads((out / "hue.json").read_text())["rows"]
    assert [r["set"] for r in rows[:4]] == ["real, this type", "real, other types", "samples, guidance 0",
                                            "samples, guidance 2"]
    assert len(rows) == 8 and (out / "fire_guidance2.png").is_file() and "| Fire |" in (out / "hue.md").read_text()


def test_report_type_grid_has_one_row_per_type(cond_run, tmp_path):
    loaded = load_diffusion(cond_run["run_dir"] / "diffusion.pt", "cpu")
    info = comparison.type_grid(loaded, 2, 0, tmp_path / "types.png")
    assert info["types"] == list(TYPES) and info["guidance"] == cond_run["cfg"].cond.guidance
    grid = Image.open(tmp_path / "types.png")
    assert grid.size == (2 + comparison.TYPE_ROW * 18, 2 + len(TYPES) * 18)  # 16 px tiles, 2 px padding
