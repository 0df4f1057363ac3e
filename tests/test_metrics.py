"""The sample-quality metrics (reports/metrics.py) on synthetic sprites with known answers."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from plumbing.cli import run_main
from reports import measures as M
from reports import metrics
from reports import reference as R
from sprites.dataset import composite_on_white, to_unit_range
from tests.helpers import REPO, make_sprite, subprocess_env
from plumbing.config import load_config
from plumbing.pictures import save_image
from reports.pokenet import PokeNetConfig, train
from sprites.corpus import load_corpus
from sprites.dataset import load_artworks
from tests.helpers import write_corpus, write_sprites

FAST_SWD = dict(n_patches=1024, directions=32, repeats=2)   # fewer patches: a higher noise floor, much faster


def sprites(n: int, seed: int, px: int = 32) -> torch.Tensor:
    """n synthetic sprites (tests/helpers.make_sprite) composited on white, float in [-1, 1]."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(composite_on_white(make_sprite(rng, px))).transpose(2, 0, 1) for _ in range(n)]
    return to_unit_range(torch.from_numpy(np.stack(arrays)))


def noise(n: int, px: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, px, px, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def real() -> torch.Tensor:
    return sprites(160, seed=1)


# --- sliced Wasserstein ---------------------------------------------------------------------------

def test_swd_identical_near_zero_same_generator_low_noise_far(real):
    same = M.sliced_wasserstein(real, real, **FAST_SWD)
    fresh = M.sliced_wasserstein(sprites(160, seed=2), real, **FAST_SWD)
    bad = M.sliced_wasserstein(noise(160), real, **FAST_SWD)
    assert set(same) == {"32px", "16px", "mean"}
    assert same["mean"] < 0.1 * bad["mean"]    # only the patch-sampling noise floor
    assert fresh["mean"] < 0.25 * bad["mean"]
    assert bad["mean"] > 100                   # x 1e3, as in Karras et al.


def test_swd_is_deterministic_per_seed_and_has_three_levels_at_64px():
    a, b = sprites(24, seed=3, px=64), sprites(24, seed=4, px=64)
    first = M.sliced_wasserstein(a, b, seed=5, **FAST_SWD)
    assert first == M.sliced_wasserstein(a, b, seed=5, **FAST_SWD)
    assert first != M.sliced_wasserstein(a, b, seed=6, **FAST_SWD)
    assert list(first) == ["64px", "32px", "16px", "mean"]


def test_laplacian_pyramid_levels_add_back_to_the_image():
    x = sprites(2, seed=7, px=64)
    levels = M.laplacian_pyramid(x)
    assert [lv.shape[-1] for lv in levels] == [64, 32, 16]
    rebuilt = levels[-1]
    for band in reversed(levels[:-1]):   # G_i = L_i + up(G_{i+1})
        rebuilt = band + M.pyramid_up(rebuilt)
    assert torch.allclose(rebuilt, x, atol=1e-5)


# --- precision and recall -------------------------------------------------------------------------

def test_precision_recall_identical_sets_are_one_noise_is_zero(real):
    same = M.precision_recall(real, real)
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    bad = M.precision_recall(real, noise(160))
    assert bad["precision"] == 0.0 and bad["recall"] == 0.0
    fresh = M.precision_recall(real, sprites(160, seed=2))
    assert fresh["precision"] > 0.5 and fresh["recall"] > 0.5


def test_precision_recall_needs_more_than_k_images(real):
    with pytest.raises(ValueError, match="more than 3"):
        M.precision_recall(real, real[:3])


def test_projected_features_keep_distances_roughly():
    x = sprites(20, seed=8)
    full = M.pairwise_distances(M.pixel_features(x), M.pixel_features(x))
    proj = M.pairwise_distances(M.pixel_features(x, proj_dim=256), M.pixel_features(x, proj_dim=256))
    off = ~torch.eye(20, dtype=torch.bool)
    ratio = proj[off] / full[off]
    assert 0.8 < ratio.median() < 1.2 and ratio.min() > 0.6
    assert torch.equal(M.pixel_features(x, proj_dim=256), M.pixel_features(x, proj_dim=256))


# --- memorisation and diversity -------------------------------------------------------------------

def test_copies_are_memorised_fresh_sprites_are_not(real):
    holdout = sprites(40, seed=9)
    copies = torch.cat([real[:20], real[20:40].flip(-1)])   # plain and mirrored copies
    flagged = M.memorisation(copies, real, holdout)
    assert flagged["rate"] == 1.0
    assert flagged["nearest_train_index"] == list(range(40))
    assert flagged["nearest_is_mirrored"] == [False] * 20 + [True] * 20
    assert flagged["median_nn_distance"] < 1e-6
    fresh = M.memorisation(sprites(64, seed=10), real, holdout)
    assert fresh["rate"] <= 0.05
    assert fresh["threshold"] > 0 and fresh["holdout_duplicates"] == 0


def test_held_out_twins_of_training_images_do_not_set_the_threshold(real):
    holdout = torch.cat([real[:3], sprites(40, seed=9)])   # 3 held-out images that are in train too
    result = M.memorisation(sprites(8, seed=11), real, holdout)
    assert result["holdout_duplicates"] == 3
    assert result["threshold"] == M.memorisation(sprites(8, seed=11), real, holdout[3:])["threshold"]


def test_diversity_of_one_repeated_image_is_zero(real):
    assert M.diversity(real[:1].repeat(10, 1, 1, 1)) == 0.0
    assert M.diversity(real) > 0.1
    pair = real[:2]
    expected = M.pairwise_distances(M.pixel_features(pair[:1]), M.pixel_features(pair[1:])).item()
    assert M.diversity(pair) == pytest.approx(expected)   # mean over the ordered pairs (a, b) and (b, a)


# --- FID / KID -----------------------------------------------------------------------------------

def test_fid_kid_without_cached_weights_is_none_with_a_note(real, empty_torch_home):
    out = M.fid_kid(real, real[:10])   # TORCH_HOME points at an empty folder (tests/conftest.py)
    assert out["fid"] is None and out["kid"] is None
    assert out["note"].startswith("not computed: ")
    assert str(empty_torch_home / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth") in out["note"]
    assert not (empty_torch_home / "hub").exists()   # nothing was downloaded or created


def test_fid_kid_without_the_package_is_none_with_a_note(real, monkeypatch):
    real_find_spec = M.importlib.util.find_spec
    monkeypatch.setattr(M.importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch_fidelity" else real_find_spec(name, *a))
    out = M.fid_kid(real, real[:10])
    assert out["fid"] is None and "pip install" in out["note"]


def test_fid_kid_with_a_broken_weights_file_is_none_with_a_note(real, tmp_path, monkeypatch):
    pytest.importorskip("torch_fidelity")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    weights = M.inception_weights_path()
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"not a checkpoint")
    out = M.fid_kid(real[:8], real[8:16])
    assert out["fid"] is None and out["kid"] is None
    assert "not computed" in out["note"] and "download" in out["note"]


# --- the calibration rows and the command ----------------------------------------------------------

def test_reference_rows_order_best_to_worst(real):
    rows = R.reference_rows(real[:120], real[120:], fid=False, swd_patches=1024)
    assert list(rows) == ["holdout", "holdout_blurred", "noise"]
    hold, blur, bad = rows["holdout"], rows["holdout_blurred"], rows["noise"]
    assert hold["swd"]["mean"] < blur["swd"]["mean"] < bad["swd"]["mean"]
    assert hold["swd"]["32px"] < 0.5 * blur["swd"]["32px"]   # blur lives in the finest band
    assert hold["precision"] > 0.5 and bad["precision"] == 0.0
    assert bad["memorisation"]["rate"] == 0.0 and bad["fid"] is None and "switched off" in bad["fid_kid_note"]


def test_command_writes_json_and_prints_a_table(tmp_path, sprite_dir):
    samples = tmp_path / "samples"
    samples.mkdir()
    for i, img in enumerate(sprites(8, seed=12)):
        save_image(img, samples / f"{i:04d}.png")
    save_image(sprites(1, seed=13, px=64)[0], samples / "grid.png")   # not a sample: ignored
    out = tmp_path / "m.json"
    args = ["--samples", str(samples), "--data", str(sprite_dir), "--holdout", "0.25",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-pokenet"]
    proc = subprocess.run([sys.executable, "-m", "reports.metrics", *args], cwd=REPO, env=subprocess_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["samples"]["n"] == 8 and result["settings"]["size"] == 32
    assert set(result["reference"]) == {"holdout", "holdout_blurred", "noise"}
    assert result["samples"]["fid"] is None and result["samples"]["fid_kid_note"].startswith("not computed")
    assert len(result["samples"]["memorisation"]["nearest_train_name"]) == 8
    for name in ("samples", "holdout", "holdout_blurred", "noise"):
        assert any(line.startswith(name) for line in proc.stdout.splitlines())


def test_without_reference_rows_the_command_measures_the_samples_alone(tmp_path, sprite_dir, capsys):
    samples = tmp_path / "samples"
    samples.mkdir()
    for i, img in enumerate(sprites(8, seed=12)):
        save_image(img, samples / f"{i:04d}.png")
    run_main(metrics.main, ["--samples", str(samples), "--data", str(sprite_dir), "--holdout", "0.25", "--cache-dir",
                            str(tmp_path / "cache"), "--no-pokenet", "--no-fid", "--no-reference"])
    result = json.loads((samples / "metrics.json").read_text())
    assert result["reference"] == {} and result["samples"]["n"] == 8
    assert not any(line.startswith("holdout") for line in capsys.readouterr().out.splitlines())


def test_command_on_an_empty_folder_is_one_line_error(tmp_path, sprite_dir, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:
        run_main(metrics.main, ["--samples", str(tmp_path / "empty"), "--data", str(sprite_dir)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no numbered sample PNGs")


def test_command_prints_the_creature_measures_with_a_pokenet(tmp_path):
    """A tiny PokeNet trained on synthetic artworks and a synthetic corpus, then the command on its samples."""

    art, corpus = tmp_path / "art", write_corpus(tmp_path / "corpus")
    write_sprites(art, n=24)
    cfg = load_config(PokeNetConfig, None, [
        "device=cpu", f"data.root={art}", f"data.corpus={corpus}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.size=16", "data.val_species=0.3", "model.widths=[8,16]", "model.stem=8", "train.steps=30",
        "train.max_minutes=0", "train.batch_size=16", "train.warmup_steps=5"])
    run = train(cfg, str(tmp_path / "pokenet"))
    samples = tmp_path / "samples"
    samples.mkdir()
    for i, img in enumerate(sprites(12, seed=12, px=16)):
        save_image(img, samples / f"{i:04d}.png")
    out = tmp_path / "m.json"
    args = ["--samples", str(samples), "--data", str(art), "--cache-dir", str(tmp_path / "cache"), "--holdout", "0.25",
            "--out", str(out), "--no-fid", "--pokenet", str(tmp_path / "pokenet" / "pokenet.pt")]
    proc = subprocess.run([sys.executable, "-m", "reports.metrics", *args], cwd=REPO, env=subprocess_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--trust-pokenet" in proc.stderr  # not the shipped weights
    proc = subprocess.run([sys.executable, "-m", "reports.metrics", *args, "--trust-pokenet"], cwd=REPO,
                          env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    creature = json.loads(out.read_text())["creature"]
    assert set(creature) == {"samples", "held-out artworks", "held-out, blurred", "held-out, tiles shuffled", "noise"}
    assert creature["samples"]["n"] == 12 and creature["held-out artworks"]["n"] == run["validation_artworks"]
    for row in creature.values():
        assert 0 <= row["recognised"] <= 1 and row["frechet_pokenet"] >= 0
        assert row["c2st"] is None or 0 <= row["c2st"] <= 1
    assert 0 <= creature["samples"]["c2st"] <= 1  # 12 samples against the training artworks
    assert "creature measures" in proc.stdout and "tiles shuffled" in proc.stdout


def test_memorisation_against_every_source_catches_a_copied_game_sprite(tmp_path):
    """Samples that copy corpus frames are memorised against every source, not against the artworks;
    precomputed mirrored features give the same answer as the images themselves."""

    art, corpus_dir = tmp_path / "art", write_corpus(tmp_path / "corpus")
    write_sprites(art, px=32)
    sprites = load_artworks(art, 32, tmp_path / "cache", 0.25, 0)
    holdout = to_unit_range(sprites.holdout())
    corpus = load_corpus(corpus_dir, 32, tmp_path / "cache")
    held = torch.isin(corpus.dex, sprites.dex[sprites.holdout_idx])
    copies = to_unit_range(corpus.images[~held][:8])
    every = R.memorisation_all_sources(copies, holdout, R.every_training_image(sprites, str(corpus_dir), 32,
                                                                               str(tmp_path / "cache")))
    assert every["rate"] == 1.0 and all("/" in name for name in every["nearest_train_name"])
    assert every["references"] == len(sprites.train_idx) + int((~held).sum())
    only_art = M.memorisation(copies, to_unit_range(sprites.train()), holdout)
    assert only_art["rate"] < 1.0
    train = to_unit_range(sprites.train())
    direct = M.memorisation(copies, train, holdout)
    via = M.memorisation(copies, None, holdout, train_features=M.mirrored_features(sprites.train()))
    assert direct["nn_distance"] == pytest.approx(via["nn_distance"]) and direct["rate"] == via["rate"]
