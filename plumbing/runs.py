"""The run folder: where a training run writes its config, log, curves, pictures and weights.

    checkpoints/<run_name>-<YYYYmmdd-HHMMSS>/
        config.yaml     the fully resolved config
        log.txt         everything the run printed, with timestamps
        loss.png        the loss curve
        metrics.json    wall time, img/s, final loss and stage-specific numbers
        *.png, *.gif    pictures (reconstruction grids, sample grids)
        <stage>.pt      the final weights (ae.pt, diffusion.pt)
        state-<step>.pt training-state checkpoints for --resume (plumbing/resume.py)
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import matplotlib
from tqdm import tqdm

from plumbing.checkpoint import save_atomic
from plumbing.cli import UserError
from plumbing.config import dump_yaml
from plumbing.device import machine_summary

CHECKPOINT_ROOT = Path("checkpoints")
# checkpoints/release/ holds the shipped weights (plumbing/release.py): committed, not a run folder.


def new_run_dir(out: str | None, run_name: str) -> Path:
    """`out` if given, else a new timestamped folder under checkpoints/; must be writable."""
    if out:
        path = Path(out)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = CHECKPOINT_ROOT / f"{run_name}-{stamp}"
        n = 1
        while path.exists():  # two runs started within the same second
            path = CHECKPOINT_ROOT / f"{run_name}-{stamp}-{n}"
            n += 1
    return writable_dir(path)


def open_run_dir(out: str | None, cfg, resume_dir: Path | None, is_main: bool) -> Path | None:
    """The run folder with the resolved config written into it: a resumed run's own folder, else
    `out` or a new one (see new_run_dir). Only the first process of a multi-process run writes
    anything: the others get None."""
    if not is_main:
        return None
    run_dir = writable_dir(resume_dir) if resume_dir is not None else new_run_dir(out, cfg.run_name)
    dump_yaml(cfg, run_dir / "config.yaml")
    return run_dir


def writable_dir(path: str | Path) -> Path:
    """Create `path` if needed and check that a file can be written in it (UserError if not)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write to folder {path} ({err.strerror}); pass a writable folder with --out")
    return path


def newest_run_file(filename: str, root: Path | None = None) -> Path | None:
    """The most recently written `<run>/<filename>` under `root` (default CHECKPOINT_ROOT), or None.
    The shipped weights (plumbing/release.py) are safetensors files, never a run's ae.pt or diffusion.pt."""
    root = CHECKPOINT_ROOT if root is None else root
    found = [p for p in root.glob(f"*/{filename}") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


class RunLog:
    """Print a line (without breaking tqdm bars) and append it, timestamped, to log.txt.
    Silent without a run folder: on every process but the first of a multi-process run
    (`open_run_dir` gives them None)."""

    def __init__(self, run_dir: Path | None):
        self.path = run_dir / "log.txt" if run_dir is not None else None
        self.start = time.time()

    def __call__(self, msg: str) -> None:
        if self.path is None:
            return

        tqdm.write(msg, file=sys.stdout)
        with open(self.path, "a") as f:
            f.write(f"[{time.time() - self.start:8.1f}s] {msg}\n")


def write_json(obj: dict, path: Path) -> None:
    """Write `obj` as indented JSON."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def training_metrics(steps: int, batch_size: int, steps_per_epoch: int, seconds: float, parameters: int,
                     device, bf16: bool) -> dict:
    """The metrics.json entries every trainer reports: training time (over every start of a
    resumed run), throughput, steps, epochs, model size, precision, and the machine (so that a
    report can tell whether two runs shared one)."""
    return {
        "train_seconds": round(seconds, 1),
        "train_img_per_s": round(steps * batch_size / max(seconds, 1e-9), 1),
        "steps": steps,
        "epochs_completed": round(steps / max(1, steps_per_epoch), 2),
        "parameters": parameters,
        "device": str(device),
        "bf16": bf16,
        "machine": machine_summary(device),
    }


def finish_run(run_dir: Path, checkpoint: dict, checkpoint_name: str, metrics: dict,
               curves: dict[str, list[float]], title: str) -> Path:
    """The end of every training run: the final checkpoint (atomically, so a crash here leaves no
    half-written weights), metrics.json and loss.png (each curve against the step)."""
    path = save_atomic(checkpoint, run_dir / checkpoint_name)
    write_json(metrics, run_dir / "metrics.json")
    n = max((len(v) for v in curves.values()), default=0)
    save_loss_curve(list(range(n)), curves, run_dir / "loss.png", title=title)
    return path


def save_loss_curve(steps: list[int], curves: dict[str, list[float]], path: Path, title: str) -> None:
    """Plot each curve against the step, raw (faint) and smoothed (EMA over ~2% of the steps)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the file-only backend

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name, values in curves.items():
        if not values:
            continue
        line, = ax.plot(steps[:len(values)], values, alpha=0.25, linewidth=0.8)
        decay = 1.0 - 1.0 / max(2.0, 0.02 * len(values))
        smooth, acc = [], values[0]
        for v in values:
            acc = decay * acc + (1 - decay) * v
            smooth.append(acc)
        ax.plot(steps[:len(values)], smooth, color=line.get_color(), label=name, linewidth=1.6)
    positive = all(v > 0 for vals in curves.values() for v in vals if math.isfinite(v))
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class TrainingBar:
    """The progress bar of a training run: over the time budget when train.max_minutes is set (what
    ends the run then; the epoch count would promise more than the budget gives), over the steps
    otherwise. The step and the given numbers (loss, epoch) go in its postfix."""

    def __init__(self, desc: str, total_steps: int, max_minutes: float, progress, disable: bool = False):
        self.budget = max_minutes * 60 if max_minutes > 0 else 0.0
        if self.budget:
            self.bar = tqdm(total=round(self.budget), initial=min(round(self.budget), int(progress.seconds_before)),
                            desc=f"{desc} ({max_minutes:g} min)", unit="s", dynamic_ncols=True, mininterval=1.0,
                            disable=disable, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}{postfix}]")
        else:
            self.bar = tqdm(total=total_steps, initial=progress.step, desc=desc, unit="step", dynamic_ncols=True,
                            mininterval=1.0, disable=disable)

    def step(self, progress, **postfix) -> None:
        """After an optimiser step: advance (by the seconds or by one step) and show `postfix`."""
        if self.budget:
            self.bar.update(max(0, min(round(self.budget), int(progress.seconds())) - self.bar.n))
        else:
            self.bar.update(1)
        self.bar.set_postfix(step=progress.step, **postfix, refresh=False)

    def __enter__(self) -> "TrainingBar":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
