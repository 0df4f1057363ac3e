"""Train PokeNet, evaluate weights, or ship a run's weights (the network and its data: reports/pokenet.py).

    python -m reports.train_pokenet [--config configs/pokenet.yaml] [--out DIR] [section.key=value ...]   train
    python -m reports.train_pokenet --evaluate [WEIGHTS]   top-1 / top-5 of weights on the validation artworks
    python -m reports.train_pokenet --ship RUN_DIR         copy a run's weights to checkpoints/pokenet/
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from plumbing.cli import run_main
from plumbing.config import load_config
from reports.pokenet import (SHIPPED_DIR, SHIPPED_NAME, PokeNetConfig, load_pokenet, ship, train, validate,
                             validation_artworks)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m reports.train_pokenet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/pokenet.yaml")
    p.add_argument("--out", default=None, help="run folder (default: checkpoints/pokenet-<time>)")
    p.add_argument("--evaluate", nargs="?", const=str(SHIPPED_DIR / SHIPPED_NAME), default=None, metavar="WEIGHTS",
                   help="print the validation accuracy of weights (default: the shipped ones)")
    p.add_argument("--ship", default=None, metavar="RUN_DIR", help=f"copy a run's weights to {SHIPPED_DIR}/")
    p.add_argument("--data", default="data/pokemon", help="the artworks, for --evaluate (default: data/pokemon)")
    p.add_argument("--trust-pokenet", action="store_true", help="evaluate weights whose sha256 is not a known one")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.max_minutes=5")
    args = p.parse_args(argv)
    if args.ship:
        record = ship(Path(args.ship))
        print(json.dumps(record, indent=2))
        return
    if args.evaluate:
        model, ckpt = load_pokenet(args.evaluate, args.trust_pokenet)
        images, labels = validation_artworks(ckpt, args.data)
        val = validate(model, images, labels)
        print(f"{args.evaluate}: {val['colour']['n']} validation artworks of species seen in other styles: top-1 "
              f"{val['colour']['top1']:.3f}, top-5 {val['colour']['top5']:.3f} in colour; top-1 {val['grey']['top1']:.3f}, "
              f"top-5 {val['grey']['top5']:.3f} in grey")
        return
    train(load_config(PokeNetConfig, args.config, args.overrides), args.out)


if __name__ == "__main__":
    run_main(main)
