"""Sets of known quality the measures are read against, and the training images a sample may copy.

    reference_rows           the pixel measures (reports/measures.py) of real held-out sprites, the
                             same blurred, and uniform noise: where a sample set falls between them
    creature_reference_rows  the creature measures (reports/creature.py) of real held-out artworks,
                             blurred, with their tiles shuffled, and noise
    every_training_image     what a model can have seen: the training artworks and every corpus image
                             of a Pokedex number that is not held out
    memorisation_all_sources memorisation (reports/measures.py) against all of those, mirrored too
"""
from __future__ import annotations



import torch

from reports.creature import block_shuffle, creature_scores
from reports.measures import evaluate, gaussian_blur, memorisation, mirrored_features
from reports.pokenet import PokeNet, predict
from sprites.config import SOURCES
from sprites.corpus import load_corpus

def reference_rows(train: torch.Tensor, holdout: torch.Tensor, seed: int = 0, fid: bool = True,
                   swd_patches: int = 8192) -> dict[str, dict]:
    """`evaluate` on three sets of known quality, each as large as the held-out set:

        holdout          real sprites the model never saw: the best a generator can do
        holdout_blurred  the same, Gaussian-blurred with sigma = 2 px at 64x64 (1 px at 32x32)
        noise            uniform noise in [-1, 1]: the bad end
    """
    gen = torch.Generator().manual_seed(seed)
    sigma = 2.0 * holdout.shape[-1] / 64
    sets = {
        "holdout": holdout,
        "holdout_blurred": gaussian_blur(holdout, sigma),
        "noise": torch.rand(holdout.shape, generator=gen) * 2 - 1,
    }
    return {name: evaluate(images, train, holdout, seed, fid, swd_patches) for name, images in sets.items()}


def creature_reference_rows(model: PokeNet, samples: torch.Tensor, train: torch.Tensor, held: torch.Tensor,
                            seed: int = 0, references: bool = True) -> dict[str, dict]:
    """`creature_scores` of the samples and of sets of known quality, all against the training artworks
    `train` (with the two-sample test against them too): real held-out artworks (`held`, never seen
    by PokeNet), the same blurred (sigma 2 px) and with their pixels shuffled within 8x8 tiles, and
    uniform noise as many as the samples (the samples alone without `references`)."""
    ref = predict(model, train, "cpu")[0]
    gen = torch.Generator().manual_seed(seed)
    sets = {"samples": samples}
    if references:
        sets.update({"held-out artworks": held, "held-out, blurred": gaussian_blur(held, 2.0),
                     "held-out, tiles shuffled": block_shuffle(held, 8, seed),
                     "noise": torch.rand(len(samples), *samples.shape[1:], generator=gen) * 2 - 1})
    return {name: creature_scores(model, images, train, ref, c2st_real=train, seed=seed) for name, images in sets.items()}


def every_training_image(sprites, corpus_dir: str | None, size: int, cache_dir: str | None):
    """(uint8 images, Pokedex numbers, names) of the training artworks and, with `corpus_dir`, every corpus
    image whose Pokedex number is not held out: what a corpus-trained model can have seen (sprites/mixture.py)."""
    names = [sprites.names[i] for i in sprites.train_idx.tolist()]
    images, dex = sprites.train(), sprites.dex[sprites.train_idx]
    if not corpus_dir:
        return images, dex, names
    corpus = load_corpus(corpus_dir, size, cache_dir)
    keep = ~torch.isin(corpus.dex, sprites.dex[sprites.holdout_idx])
    names += [f"{SOURCES[int(corpus.source[i])]}/{'shiny/' if corpus.shiny[i] else ''}{corpus.stems[i]}#"
              f"{corpus.frames[i]}" for i in torch.nonzero(keep).flatten().tolist()]
    return torch.cat([images, corpus.images[keep]]), torch.cat([dex, corpus.dex[keep]]), names


def memorisation_all_sources(samples: torch.Tensor, holdout: torch.Tensor, every: tuple) -> dict:
    """`memorisation` against every training image of every source (`every`: what `every_training_image`
    returns, with a corpus), with the names of the nearest images. A copy of a game sprite is a copy."""
    images, _, names = every
    result = memorisation(samples, None, holdout, train_features=mirrored_features(images))
    result["references"] = len(images)
    result["nearest_train_name"] = [names[i] for i in result["nearest_train_index"]]
    return result


