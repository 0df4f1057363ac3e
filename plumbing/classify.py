"""The training loop of a species classifier, shared by PokeNet (reports/pokenet.py, which measures the
samples) and the alignment teacher (diffusion/teacher.py): two different networks, one recipe.

    for each batch (idx, flip) of the mixture, until train.steps:
        lr = warm-up + cosine at this step (plumbing/optim.py)
        x = view(idx, flip): the images in [-1, 1], each seen in a species-keeping way (sprites/views.py)
        loss = cross-entropy(logits(x), species, label smoothing)     a non-finite loss stops with one line
        AdamW step
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch
from torch.nn import functional as F
from tqdm import tqdm

from plumbing.checkpoint import save_atomic
from plumbing.cli import UserError
from plumbing.optim import scheduled_lr, set_learning_rate
from plumbing.runs import RunLog, save_loss_curve, write_json


def fit_classifier(name: str, logits_of: Callable[[torch.Tensor], torch.Tensor],
                   view: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], labels: torch.Tensor, batches, t,
                   opt: torch.optim.Optimizer, device, log: RunLog) -> tuple[list[float], list[float], float]:
    """Train for `t.steps` steps (`t`: a classifier's train config: steps, the lr schedule, label_smoothing,
    log_every) on the images `view(idx, flip)` gives for the batches of `batches.epoch(e)`, whose class
    indices are `labels[idx]`. Returns (loss of each step, top-1 hit rate of each step's batch, seconds)."""
    losses, hits, step, epoch, start = [], [], 0, 0, time.time()
    with tqdm(total=t.steps, desc=name, unit="step", dynamic_ncols=True, mininterval=1.0) as bar:
        done = False
        while not done:
            for idx, flip in batches.epoch(epoch):
                lr = scheduled_lr(t, step, t.steps, time.time() - start)
                if lr is None or step >= t.steps:  # the steps or the time budget are used up
                    done = True
                    break
                set_learning_rate(opt, lr)
                logits = logits_of(view(idx, flip).to(device))
                y = labels[idx].to(device)
                loss = F.cross_entropy(logits, y, label_smoothing=t.label_smoothing)
                if not math.isfinite(loss.item()):
                    raise UserError(f"{name}'s loss became {loss.item()} at step {step + 1}; lower train.lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
                hits.append(float((logits.argmax(-1) == y).float().mean()))
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                if step % t.log_every == 0:
                    log(f"step {step} loss {losses[-1]:.4f} lr {lr:.2e}")
            epoch += 1
    return losses, hits, time.time() - start


def write_classifier_run(ckpt: dict, losses: list[float], path: Path, title: str) -> None:
    """A trained classifier's run folder: its checkpoint at `path` (atomically), metrics.json (the
    checkpoint's "metrics") and loss.png beside it."""
    save_atomic(ckpt, path)
    write_json(ckpt["metrics"], path.parent / "metrics.json")
    save_loss_curve(list(range(len(losses))), {"cross-entropy (label smoothing)": losses}, path.parent / "loss.png",
                    title=title)
