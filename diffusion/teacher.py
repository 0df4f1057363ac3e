"""The teacher of representation alignment (loss.align, diffusion/align.py): an image encoder the
project trains itself, whose spatial features of every clean training image the U-Net's hidden
state learns to predict. The command is `python -m diffusion.train_teacher`.

Why a teacher of our own: REPA's teachers (DINOv2 and the like) cannot be downloaded here and were
trained on photographs. PokeNet (reports/pokenet.py) knows Pokemon but measures the samples, so it
must not also shape them. The teacher is a separate network with its own seed, its own architecture
(plain strided convolutions with GroupNorm and GELU, where PokeNet is a residual network with batch
norm) and its own data: the training split of the diffusion run's sources (sprites/mixture.py), so it
never sees a held-out species. Its objective is to name the species from a 64-dim map at 8x8
positions, averaged: every position has to carry what it contributes to the name, which is the
spatial structure that alignment transfers (iREPA: the structure, not the accuracy, predicts the gain).
Views that change colour but keep the species (sprites/views.py) make it use shapes.

    Teacher(x) -> logits;   Teacher.features(x) -> y [B, D, 8, 8] for 64x64 images in [-1, 1]

`TeacherFeatures` holds y of every training image and its mirror image, computed once and cached
beside the latent cache, keyed by the teacher's sha256 and the training images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from plumbing.checkpoint import (FORMAT_VERSION, cpu_state_dict, file_sha256, half_precision, load_checkpoint,
                                 read_cache, save_atomic)
from plumbing.cli import UserError
from plumbing.classify import fit_classifier, write_classifier_run
from plumbing.config import dump_yaml, to_dict
from plumbing.device import pick_device, seed_everything
from plumbing.optim import adamw
from plumbing.runs import RunLog, new_run_dir, write_json
from sprites.config import DataConfig, SourceShares
from sprites.dataset import to_unit_range
from sprites.mixture import load_data, training_batches
from sprites.views import augment

COMMAND = "python -m diffusion.train_teacher"
SHIPPED_DIR = Path("checkpoints/teacher")
SHIPPED_NAME = "teacher.pt"


@dataclass
class TeacherModel:
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])  # stages at 32, 16, 8 px
    features: int = 64               # D: channels of the feature map y


@dataclass
class TeacherTrain:
    batch_size: int = 64
    steps: int = 1500                # optimiser steps (a step count: the same teacher on every machine)
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_steps: int = 200
    lr_min_ratio: float = 0.02
    max_minutes: float = 0.0         # a time budget (0: train.steps decides)
    label_smoothing: float = 0.1
    shift: float = 0.08              # the views (sprites/views.py): translation, zoom out, grey, colour swap
    min_scale: float = 0.85
    grey_prob: float = 0.2
    swap_prob: float = 0.2
    log_every: int = 100


@dataclass
class TeacherConfig:
    seed: int = 1                    # not PokeNet's 0
    device: str = "auto"
    run_name: str = "teacher"
    # The diffusion run's data section: the teacher trains on its training split (same size, sources,
    # held-out species). Default: the four sources of configs/ldm_species.yaml.
    data: DataConfig = field(default_factory=lambda: DataConfig(mix=SourceShares(0.4, 0.2, 0.2, 0.2)))
    model: TeacherModel = field(default_factory=TeacherModel)
    train: TeacherTrain = field(default_factory=TeacherTrain)


class Teacher(nn.Module):
    """64x64 RGB in [-1, 1] -> species logits; `features` -> the map y [B, D, 8, 8] before pooling.
    Each stage: a stride-2 conv (halves the side) and a conv, each followed by GroupNorm and GELU."""

    def __init__(self, classes: int, widths: list[int], dim: int):
        super().__init__()
        layers, c = [], 3
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, 2, 1), nn.GroupNorm(8, w), nn.GELU(),
                       nn.Conv2d(w, w, 3, 1, 1), nn.GroupNorm(8, w), nn.GELU()]
            c = w
        layers.append(nn.Conv2d(c, dim, 1))
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(dim, classes)
        self.dim = dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def data_record(d: DataConfig) -> dict:
    """What a teacher's features are valid for: the image size, the sources and the held-out split."""
    return {"size": d.size, "sources": sorted(d.mix.shares()), "holdout": d.holdout, "split_seed": d.split_seed,
            "frames": d.frames, "frame_stride": d.frame_stride, "shiny": d.shiny}


def train(cfg: TeacherConfig, out: str | None = None) -> dict:
    """Train the teacher into a run folder (teacher.pt, metrics.json, loss.png, log.txt)."""
    device = pick_device(cfg.device)
    gen = seed_everything(cfg.seed)
    data = load_data(cfg.data)
    train_idx = data.train_idx
    classes = sorted(set(data.dex[train_idx].tolist()))
    index = {dex: i for i, dex in enumerate(classes)}
    labels = torch.tensor([index[int(d)] for d in data.dex[train_idx]])
    images = data.train()
    batches = training_batches(data, cfg.data, cfg.train.batch_size, cfg.seed)
    run_dir = new_run_dir(out, cfg.run_name)
    dump_yaml(cfg, run_dir / "config.yaml")
    log = RunLog(run_dir)
    model = Teacher(len(classes), cfg.model.widths, cfg.model.features).to(device)
    opt = adamw(model.parameters(), cfg.train.lr, device, weight_decay=cfg.train.weight_decay)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"run folder {run_dir} | {len(images):,} training images of {len(classes)} species "
        f"(sources {', '.join(cfg.data.mix.shares())}) | teacher {n_params / 1e6:.2f}M parameters")
    t = cfg.train

    def view(idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:  # each image seen in a species-keeping way
        return augment(to_unit_range(images[idx]), flip, t.shift, t.min_scale, gen, t.grey_prob, t.swap_prob)

    losses, hits, seconds = fit_classifier("teacher", model, view, labels, batches, t, opt, device, log)
    step = len(losses)
    last = hits[-200:]
    metrics = {"steps": step, "train_seconds": round(seconds, 1), "img_per_s": round(step * t.batch_size / seconds, 1),
               "parameters": n_params, "classes": len(classes), "training_images": len(images),
               "final_loss": losses[-1], "train_top1_last_200_steps": round(sum(last) / max(1, len(last)), 4)}
    ckpt = {"kind": "teacher", "format": FORMAT_VERSION, "config": to_dict(cfg), "classes": classes,
            "data": data_record(cfg.data), "data_fingerprint": data.fingerprint, "model": cpu_state_dict(model),
            "metrics": metrics}
    write_classifier_run(ckpt, losses, run_dir / SHIPPED_NAME, "Alignment teacher training")
    log(f"{step} steps in {seconds / 60:.1f} min ({metrics['img_per_s']} img/s); training top-1 over the last "
        f"200 steps {metrics['train_top1_last_200_steps']:.3f}")
    return {"run_dir": str(run_dir), **metrics}


def ship(run_dir: Path, dest: Path = SHIPPED_DIR) -> dict:
    """Copy a run's teacher in float16 to `dest`, with teacher.json (command, seed, data, sha256)."""
    src = run_dir / SHIPPED_NAME if run_dir.is_dir() else run_dir
    ckpt = load_checkpoint(src, kind="teacher")
    save_atomic({**ckpt, "model": half_precision(ckpt["model"])}, dest / SHIPPED_NAME)
    record = {"file": SHIPPED_NAME, "sha256": file_sha256(dest / SHIPPED_NAME), "command": f"{COMMAND} (configs/teacher.yaml)",
              "seed": ckpt["config"]["seed"], "data": ckpt["data"], "data_fingerprint": ckpt["data_fingerprint"],
              "training": ckpt["metrics"], "size_mb": round((dest / SHIPPED_NAME).stat().st_size / 1e6, 2)}
    write_json(record, dest / "teacher.json")
    return record


def load_teacher(path: str | Path, data: DataConfig, device="cpu") -> tuple[Teacher, dict]:
    """The teacher in eval mode and its checkpoint, for a run on `data`: one line naming the teacher
    command when there is none, or when it was trained on another image size, other sources or
    another held-out split."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"loss.align needs a teacher, and {path} does not exist; train one with {COMMAND} "
                        f"(it ships in {SHIPPED_DIR / SHIPPED_NAME}), or set loss.teacher=PATH")
    ckpt = load_checkpoint(path, kind="teacher")
    mine, theirs = data_record(data), ckpt["data"]
    if not set(mine["sources"]) <= set(theirs["sources"]):
        raise UserError(f"the teacher {path} was trained on the sources {theirs['sources']}, this run uses "
                        f"{mine['sources']}; train a teacher on them with {COMMAND} data.mix...=... (the run's data section)")
    for key in ("size", "holdout", "split_seed", "frames", "frame_stride", "shiny"):
        if mine[key] != theirs[key]:
            raise UserError(f"the teacher {path} was trained with data.{key}={theirs[key]}, this run has "
                            f"data.{key}={mine[key]}; train a teacher with {COMMAND} data.{key}={mine[key]}")
    m = ckpt["config"]["model"]
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the run's random draws as they are
        model = Teacher(len(ckpt["classes"]), m["widths"], m["features"])
    model.load_state_dict({k: v.float() for k, v in ckpt["model"].items()})
    return model.to(device).eval().requires_grad_(False), ckpt


def features_cache(cache_dir: str | None, teacher_sha256: str, images_key: str) -> Path | None:
    """Where the teacher's features of a run's training images are kept: <cache_dir>/teacher_<teacher>_<images>.pt."""
    return None if not cache_dir else Path(cache_dir) / f"teacher_{teacher_sha256[:16]}_{images_key[:16]}.pt"


class TeacherFeatures:
    """y of every training image and of its mirror image, [2 (plain, mirrored), N, D, 8, 8] in float16."""

    def __init__(self, maps: torch.Tensor):
        self.maps = maps
        self.dim = maps.shape[2]

    def batch(self, idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """y of the training images idx, mirrored where `flip`."""
        return self.maps[flip.long(), idx]


@torch.no_grad()
def teacher_features(path: str | Path, data: DataConfig, images_uint8: torch.Tensor, images_key: str,
                     device="cpu", batch_size: int = 256) -> TeacherFeatures:
    """The teacher's features of the training images, read from the cache when it holds this teacher's
    features of these images (its name has both keys; a stale or damaged file is rebuilt), else
    computed once, with a progress bar, and cached."""
    cache = features_cache(data.cache_dir, file_sha256(path), images_key)
    maps = read_cache(cache)
    if isinstance(maps, torch.Tensor) and maps.shape[:2] == (2, len(images_uint8)):
        return TeacherFeatures(maps)
    model, _ = load_teacher(path, data, device)
    out = []
    with tqdm(total=2 * len(images_uint8), desc="teacher features (each image and its mirror image)", unit="img",
              disable=len(images_uint8) < 2048) as bar:
        for flip in (False, True):
            parts = []
            for i in range(0, len(images_uint8), batch_size):
                x = to_unit_range(images_uint8[i:i + batch_size]).to(device)
                parts.append(model.features(x.flip(-1) if flip else x).half().cpu())
                bar.update(len(x))
            out.append(torch.cat(parts))
    maps = torch.stack(out)
    if cache is not None:
        save_atomic(maps, cache)
    return TeacherFeatures(maps)
