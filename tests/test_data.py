"""sprites.dataset: compositing, decoding, the folder loader and its cache, the split, the batches."""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sprites.dataset as ds
from plumbing.cli import UserError
from plumbing.pictures import to_uint8
from sprites.dataset import (EpochBatches, composite_on_white, decode_sprite, holdout_split, load_artworks,
                             pixel_batch, to_unit_range)
from tests.helpers import N_SPRITES, make_sprite, write_sprites


def _copy_sprites(sprite_dir: Path, dest: Path, n: int | None = None) -> Path:
    dest.mkdir(parents=True)
    for p in sorted(sprite_dir.iterdir())[:n]:
        shutil.copy2(p, dest / p.name)
    return dest


# --- compositing and decoding ----------------------------------------------------------------

def test_composite_on_white_known_pixels():
    px = np.zeros((1, 4, 4), dtype=np.uint8)
    px[0, 0] = (200, 50, 10, 0)      # fully transparent: white whatever the colour
    px[0, 1] = (200, 50, 10, 255)    # opaque: the colour itself
    px[0, 2] = (0, 100, 200, 128)    # ~50% alpha: about halfway between colour and white
    px[0, 3] = (0, 0, 0, 255)        # opaque black stays black
    out = np.asarray(composite_on_white(Image.fromarray(px, "RGBA")))
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [200, 50, 10]
    a = 128 / 255
    expected = [a * c + (1 - a) * 255 for c in (0, 100, 200)]   # 127.0, 177.2, 227.4
    assert np.all(np.abs(out[0, 2].astype(float) - expected) <= 1.0), out[0, 2]
    assert out[0, 3].tolist() == [0, 0, 0]


def test_composite_of_modes_without_alpha_is_unchanged():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(composite_on_white(Image.fromarray(rgb, "RGB"))), rgb)
    gray = rng.integers(0, 256, size=(5, 6), dtype=np.uint8)
    out = np.asarray(composite_on_white(Image.fromarray(gray, "L")))
    assert out.shape == (5, 6, 3) and np.array_equal(out, np.repeat(gray[..., None], 3, axis=2))


def test_composite_palette_with_transparent_entry():
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))  # 0 = red, 1 = blue
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 0  # palette entry 0 is transparent
    out = np.asarray(composite_on_white(img))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [0, 0, 255]


def test_decode_sprite_sizes_and_dtype(tmp_path):
    p = tmp_path / "a.png"
    make_sprite(np.random.default_rng(3), 32).save(p)
    full = decode_sprite(p, 32)
    assert full.shape == (3, 32, 32) and full.dtype == np.uint8
    # at its own size there is no resampling: exactly the composite
    with Image.open(p) as img:
        assert np.array_equal(full, np.asarray(composite_on_white(img)).transpose(2, 0, 1))
    assert full[:, 0, 0].tolist() == [255, 255, 255]  # transparent corner -> white
    for size in (8, 16, 64):
        arr = decode_sprite(p, size)
        assert arr.shape == (3, size, size) and arr.dtype == np.uint8
        assert arr.flags["C_CONTIGUOUS"]
    # a downscaled copy keeps the overall colour (antialiased resize, not a random crop)
    small = decode_sprite(p, 8).astype(float)
    assert np.abs(small.mean(axis=(1, 2)) - full.astype(float).mean(axis=(1, 2))).max() < 6


def test_decode_sprite_raises_on_truncated_png(tmp_path):
    good = tmp_path / "good.png"
    make_sprite(np.random.default_rng(4), 32).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises((OSError, SyntaxError, ValueError)):
        decode_sprite(bad, 16)


# --- load_artworks ------------------------------------------------------------------------------

def test_load_sprites_shape_dtype_range(sprite_dir, tmp_path):
    data = load_artworks(sprite_dir, 16, tmp_path / "cache", holdout=0.1, split_seed=0)
    assert data.images.shape == (N_SPRITES, 3, 16, 16)
    assert data.images.dtype == torch.uint8
    assert sorted(data.names) == sorted(p.stem for p in sprite_dir.glob("*.png"))
    assert len(data.fingerprint) == 64 and int(data.fingerprint, 16) >= 0
    # backgrounds are white, sprites are not: the full uint8 range is used
    assert int(data.images.max()) == 255 and int(data.images.min()) < 60
    assert data.train().shape[0] + data.holdout().shape[0] == N_SPRITES
    x = to_unit_range(data.images)
    assert x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert float(x.max()) == 1.0
    assert torch.equal(to_uint8(x), data.images)  # exact inverse on the pixel grid


def test_to_unit_range_endpoints():
    x = to_unit_range(torch.tensor([0, 255], dtype=torch.uint8))
    assert x.tolist() == [-1.0, 1.0]
    assert to_uint8(torch.tensor([-5.0, 0.0, 5.0])).tolist() == [0, 128, 255]


def test_messy_folder_skips_bad_files_and_converts_modes(sprite_dir, tmp_path):
    folder = _copy_sprites(sprite_dir, tmp_path / "messy", n=5)
    good = (folder / sorted(os.listdir(folder))[0]).read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "x.png").write_text("this is not a png\n")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("some notes\n")
    (folder / ".hidden.png").write_text("ignored silently")
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), "L").save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8), "RGB").convert("P").save(folder / "pal.png")
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8), "RGB").save(folder / "rgb.png")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_artworks(folder, 16, None)
    messages = [str(w.message) for w in caught]
    skipped = [m for m in messages if m.startswith("skipped")]
    converted = [m for m in messages if m.startswith("converted")]
    assert len(skipped) == 1 and "skipped 4 file(s)" in skipped[0], messages
    for name in ("truncated.png", "x.png", "empty.png", "notes.txt"):
        assert name in skipped[0]
    assert ".hidden.png" not in skipped[0]
    assert len(converted) == 1 and "converted 3 image(s)" in converted[0], messages

    assert data.images.shape == (8, 3, 16, 16)
    assert sorted(data.names) == sorted([p.stem for p in sorted(sprite_dir.glob("*.png"))[:5]] + ["gray", "pal", "rgb"])
    gray = data.images[data.names.index("gray")]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])  # grayscale -> equal RGB channels


def test_truncated_rgb_png_is_not_counted_as_converted(sprite_dir, tmp_path):
    folder = _copy_sprites(sprite_dir, tmp_path / "f", n=3)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB").save(rgb)
    blob = rgb.read_bytes()
    (folder / "broken_rgb.png").write_bytes(blob[: len(blob) // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_artworks(folder, 16, None)
    assert len(data.names) == 3
    messages = [str(w.message) for w in caught]
    assert any("skipped 1 file(s)" in m for m in messages)
    assert not any(m.startswith("converted") for m in messages), messages


def test_empty_and_missing_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="empty"):
        load_artworks(empty, 16, None)
    (empty / ".DS_Store").write_text("x")  # hidden files do not count
    with pytest.raises(UserError, match="empty"):
        load_artworks(empty, 16, None)
    with pytest.raises(UserError, match="does not exist") as exc:
        load_artworks(tmp_path / "nope", 16, None)
    assert "POKEMON_DATA" in str(exc.value)


def test_folder_without_any_usable_image(tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.png").write_text("nope")
    (folder / "b.txt").write_text("nope")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserError, match="no usable image"):
            load_artworks(folder, 16, None)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("size", [0, 4, 24, 100])
def test_unsupported_sizes(sprite_dir, size):
    with pytest.raises(UserError, match=f"data.size={size}"):
        load_artworks(sprite_dir, size, None)


# --- the on-disk cache -------------------------------------------------------------------------

def _count_decodes(monkeypatch):
    calls = []
    real = ds.decode_sprite

    def counting(path, size):
        calls.append(Path(path).name)
        return real(path, size)

    monkeypatch.setattr(ds, "decode_sprite", counting)
    return calls


def test_cache_is_written_and_reused(sprite_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    calls = _count_decodes(monkeypatch)
    first = load_artworks(sprite_dir, 16, cache)
    assert len(calls) == N_SPRITES
    files = list(cache.glob("sprites_16px_*.pt"))
    assert len(files) == 1
    assert not list(cache.glob("*.tmp"))

    def must_not_decode(path, size):
        raise RuntimeError("decoded although the cache is valid")

    monkeypatch.setattr(ds, "decode_sprite", must_not_decode)
    second = load_artworks(sprite_dir, 16, cache)
    assert torch.equal(second.images, first.images)
    assert second.names == first.names and second.fingerprint == first.fingerprint
    assert torch.equal(second.holdout_idx, first.holdout_idx)
    # a different size is a different cache entry (and must decode)
    with pytest.raises(RuntimeError, match="decoded although"):
        load_artworks(sprite_dir, 8, cache)


def test_cache_invalidated_when_a_file_is_added(sprite_dir, tmp_path, monkeypatch):
    folder = _copy_sprites(sprite_dir, tmp_path / "d")
    cache = tmp_path / "cache"
    first = load_artworks(folder, 16, cache)
    write_sprites(tmp_path / "extra", n=1, seed=99)
    shutil.copy2(tmp_path / "extra" / "1-synth.png", folder / "zz-new.png")
    calls = _count_decodes(monkeypatch)
    second = load_artworks(folder, 16, cache)
    assert len(calls) == N_SPRITES + 1
    assert second.images.shape[0] == first.images.shape[0] + 1
    assert "zz-new" in second.names and second.fingerprint != first.fingerprint
    assert len(list(cache.glob("sprites_16px_*.pt"))) == 2


def test_cache_invalidated_when_a_file_changes(sprite_dir, tmp_path, monkeypatch):
    folder = _copy_sprites(sprite_dir, tmp_path / "d")
    cache = tmp_path / "cache"
    first = load_artworks(folder, 16, cache)
    target = sorted(folder.glob("*.png"))[3]
    st = target.stat()
    make_sprite(np.random.default_rng(1234), 32).save(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # a later modification time
    calls = _count_decodes(monkeypatch)
    second = load_artworks(folder, 16, cache)
    assert len(calls) == N_SPRITES
    i = second.names.index(target.stem)
    assert not torch.equal(second.images[i], first.images[first.names.index(target.stem)])
    assert second.fingerprint != first.fingerprint


def test_no_cache_dir_writes_nothing(sprite_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    load_artworks(sprite_dir, 16, None)
    assert list(tmp_path.iterdir()) == []


# --- the held-out split --------------------------------------------------------------------------

NAMES = [f"{i}-mon" for i in range(1, 201)]


def test_holdout_split_deterministic_disjoint_complete():
    train, hold = holdout_split(NAMES, 0.05, seed=0)
    train2, hold2 = holdout_split(NAMES, 0.05, seed=0)
    assert torch.equal(train, train2) and torch.equal(hold, hold2)
    assert train.dtype == torch.long and hold.dtype == torch.long
    assert len(hold) == 10  # round(0.05 * 200)
    assert set(train.tolist()).isdisjoint(hold.tolist())
    assert sorted(train.tolist() + hold.tolist()) == list(range(len(NAMES)))
    other = holdout_split(NAMES, 0.05, seed=1)[1]
    assert set(other.tolist()) != set(hold.tolist())


def test_holdout_split_depends_on_names_not_listing_order():
    _, hold = holdout_split(NAMES, 0.05, seed=3)
    held = {NAMES[i] for i in hold.tolist()}
    shuffled = list(NAMES)
    np.random.default_rng(0).shuffle(shuffled)
    _, hold_s = holdout_split(shuffled, 0.05, seed=3)
    assert {shuffled[i] for i in hold_s.tolist()} == held


@pytest.mark.parametrize("n, fraction, expected", [(919, 0.05, 46), (24, 0.05, 1), (2, 0.05, 1),
                                                    (1, 0.05, 0), (50, 0.0, 0), (40, 0.25, 10)])
def test_holdout_split_sizes(n, fraction, expected):
    train, hold = holdout_split([f"n{i}" for i in range(n)], fraction, seed=0)
    assert len(hold) == expected and len(train) == n - expected


# --- epoch batches ---------------------------------------------------------------------------

@pytest.fixture
def images():
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (20, 3, 4, 5), generator=gen, dtype=torch.uint8)


def _epoch(batches, e):
    return [(idx.clone(), flip.clone()) for idx, flip in batches.epoch(e)]


def _cat(pairs, k):
    return torch.cat([pair[k] for pair in pairs])


def test_epoch_batches_deterministic_per_seed_and_epoch():
    a = EpochBatches(20, 6, seed=1)
    b = EpochBatches(20, 6, seed=1)
    assert len(a) == 3  # 20 // 6, the incomplete last batch is dropped
    e0a, e0b = _epoch(a, 0), _epoch(b, 0)
    assert len(e0a) == 3
    for (ia, fa), (ib, fb) in zip(e0a, e0b):
        assert torch.equal(ia, ib) and torch.equal(fa, fb)
    e0_again = _epoch(a, 0)  # replaying epoch 0 (a resumed run) gives the same data and flips
    assert torch.equal(_cat(e0a, 0), _cat(e0_again, 0)) and torch.equal(_cat(e0a, 1), _cat(e0_again, 1))
    e1 = _epoch(a, 1)
    assert not torch.equal(_cat(e0a, 0), _cat(e1, 0))
    other_seed = _epoch(EpochBatches(20, 6, seed=2), 0)
    assert not torch.equal(_cat(e0a, 0), _cat(other_seed, 0))


def test_epoch_batches_cover_each_image_once_with_flips():
    batches = EpochBatches(20, 5, seed=0, hflip=True)
    flips = []
    for e in range(3):
        seen = []
        for idx, flip in batches.epoch(e):
            assert idx.dtype == torch.long and idx.shape == (5,)
            assert flip.dtype == torch.bool and flip.shape == (5,)
            seen += idx.tolist()
            flips += flip.tolist()
        assert sorted(seen) == list(range(20))  # a permutation: each image once per epoch
    assert 10 < sum(flips) < 50  # about half of 60 decisions


def test_epoch_batches_without_flips():
    for e in range(3):
        for _, flip in EpochBatches(20, 4, seed=0, hflip=False).epoch(e):
            assert not flip.any()


def test_pixel_batch_mirrors_where_flagged(images):
    original = images.clone()
    idx = torch.tensor([3, 0, 7, 7])
    flip = torch.tensor([True, False, True, False])
    x = pixel_batch(images, idx, flip)
    assert x.shape == (4, 3, 4, 5) and x.dtype == torch.float32
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert torch.equal(x[0], to_unit_range(images[3]).flip(-1))   # left-right mirror (width axis)
    assert torch.equal(x[1], to_unit_range(images[0]))
    assert torch.equal(x[2], to_unit_range(images[7]).flip(-1))
    assert torch.equal(x[3], to_unit_range(images[7]))
    assert not torch.equal(x[2], x[3])
    assert torch.equal(images, original)  # flipping never alters the stored images


def test_batch_larger_than_data():
    with pytest.raises(UserError, match="train.batch_size=21"):
        EpochBatches(20, 21, seed=0)
