"""The run folder: where a training run writes its config, log, curves, pictures and weights.

    checkpoints/<run_name>-<YYYYmmdd-HHMMSS>/
        config.yaml     the fully resolved config
        log.txt         everything the run printed, with timestamps
        loss.png        the loss curve
        metrics.json    wall time, img/s, final loss and stage-specific numbers
        *.png, *.gif    pictures (reconstruction grids, sample grids)
        <stage>.pt      the final weights (ae.pt, ldm.pt)
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from plumbing.cli import UserError

CHECKPOINT_ROOT = Path("checkpoints")
# checkpoints/release/ holds the shipped weights (diffusion/release.py): committed, not a run folder.
RELEASE_NAME = "release"
RELEASE_AE, RELEASE_LDM = "ae.pt", "ldm.pt"


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
    The shipped weights in <root>/release/ are not a run folder and are never picked here."""
    root = CHECKPOINT_ROOT if root is None else root
    found = [p for p in root.glob(f"*/{filename}") if p.is_file() and p.parent.name != RELEASE_NAME]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def release_dir() -> Path:
    """Where the shipped weights live: checkpoints/release/ (ae.pt, ldm.pt, release.json)."""
    return CHECKPOINT_ROOT / RELEASE_NAME


class RunLog:
    """Print a line (without breaking tqdm bars) and append it, timestamped, to log.txt."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "log.txt"
        self.start = time.time()

    def __call__(self, msg: str) -> None:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stdout)
        with open(self.path, "a") as f:
            f.write(f"[{time.time() - self.start:8.1f}s] {msg}\n")


def write_json(obj: dict, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_loss_curve(steps: list[int], curves: dict[str, list[float]], path: Path, title: str) -> None:
    """Plot each curve against the step, raw (faint) and smoothed (EMA over ~2% of the steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
