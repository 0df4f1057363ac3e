"""Training-state checkpoints: a stopped run (Ctrl-C, SIGTERM, a crash, even SIGKILL) continues with
`--resume RUN_DIR` from its newest state checkpoint, as if it had never stopped.

A state checkpoint, RUN_DIR/state-<step>.pt, holds everything the next optimiser step depends on:

    weights, EMA and optimiser (AdamW moments and step counts)      the trainer's `parts`
    step, epoch and the number of batches of that epoch done        Progress (the data order of an
                                                                    epoch is a pure function of
                                                                    (seed, epoch): sprites/dataset.py)
    every random generator: the trainer's CPU generator(s) (noise, posterior samples, label
    dropout), torch's global CPU generator (dropout), CUDA's (where used), Python's, NumPy's
    the loss history (for loss.png and metrics.json) and the training time so far
    the resolved config, the data fingerprint (and the LDM's AE record)

so on CPU a run killed at any step and resumed ends with weights bitwise identical to an
uninterrupted run (tests/test_resume.py). The learning rate is a pure function of the step unless a
time budget (`train.max_minutes`) compresses the schedule by wall time; then the budget counts the
training time of every start of the run together (the state stores it) and the run is not reproducible
bitwise, interrupted or not.

State checkpoints are written every `train.ckpt_every` steps and when SIGINT or SIGTERM arrives
(the current step finishes first), by process 0, atomically (plumbing/checkpoint.py: a crash while
writing never leaves a truncated file), keeping the newest `train.keep_last`. Weights that are no
longer finite are never written: the last good checkpoint stays the newest.

Resume reuses the run folder and the config stored in the state; command-line overrides may only
change keys that do not change the trained weights (logging, checkpointing, pictures, where the
data and the AE are: their content is checked against the fingerprints in the state).
"""
from __future__ import annotations

import random
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plumbing.checkpoint import FORMAT_VERSION, cpu_state_dict, load_checkpoint, save_atomic
from plumbing.cli import Stopped, UserError
from plumbing.config import apply_overrides, flatten, to_dict

STATE_PATTERN = re.compile(r"^state-(\d+)\.pt$")
# Keys every trainer lets a resume change: they decide what is logged and written, never the weights.
COMMON_RESUME_KEYS = {"train.log_every", "train.ckpt_every", "train.keep_last", "data.root", "data.cache_dir"}


@dataclass
class Progress:
    """Where training stands, besides weights and generators."""

    step: int = 0                    # optimiser steps done
    epoch: int = 0                   # epoch of the next step
    batch: int = 0                   # batches of that epoch done: where its data order continues
    history: dict[str, list[float]] = field(default_factory=dict)  # per-step losses, for loss.png
    seconds_before: float = 0.0      # training time of the earlier starts of the run
    started: float = field(default_factory=time.time)  # when this start of the run began training

    def start_clock(self) -> None:
        """Mark the start of this process's training loop."""
        self.started = time.time()

    def seconds(self) -> float:
        """Training time so far, over every start of the run (what a time budget counts)."""
        return self.seconds_before + time.time() - self.started

    def done_step(self) -> None:
        """Count one optimiser step of the current epoch."""
        self.step += 1
        self.batch += 1

    def next_epoch(self, epoch: int) -> None:
        """Move to the start of `epoch` (after the previous epoch's end-of-epoch work)."""
        self.epoch, self.batch = epoch, 0

    def to_dict(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "batch": self.batch, "history": self.history,
                "seconds": self.seconds()}

    @classmethod
    def from_dict(cls, d: dict) -> "Progress":
        return cls(step=d["step"], epoch=d["epoch"], batch=d["batch"],
                   history={k: list(v) for k, v in d["history"].items()}, seconds_before=d["seconds"])


# --- random generators ------------------------------------------------------------------------

def capture_rng(generators: dict[str, torch.Generator], device: torch.device) -> dict:
    """The state of every random generator a training step may draw from, as tensors and numbers
    (what `torch.load(weights_only=True)` reads back)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def restore_rng(state: dict, generators: dict[str, torch.Generator], device: torch.device) -> None:
    """Put every generator back where `capture_rng` found it."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    for name, g in generators.items():
        g.set_state(state["generators"][name])


# --- writing and reading state checkpoints ----------------------------------------------------

def state_step(path: Path) -> int:
    """The step of a state checkpoint, from its name state-<step>.pt."""
    return int(STATE_PATTERN.match(Path(path).name).group(1))


def state_files(run_dir: Path) -> list[Path]:
    """The state checkpoints of a run folder, oldest step first."""
    return sorted((p for p in Path(run_dir).iterdir() if STATE_PATTERN.match(p.name)), key=state_step)


def run_points(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, file) of every training state of a diffusion run, then its diffusion.pt (at its recorded steps):
    the points along a run that reports.species_trend and reports.shape_error measure."""
    points = [(state_step(p), p) for p in state_files(run_dir)] if run_dir.is_dir() else []
    final = run_dir / "diffusion.pt"
    if final.is_file():
        steps = load_checkpoint(final, kind="diffusion", map_location="cpu")["metrics"].get("steps")
        if steps is not None and (not points or steps > points[-1][0]):
            points.append((int(steps), final))
    return points


class TrainingState:
    """The state checkpoints of one run.

    `parts` names the objects whose `state_dict()` goes into each checkpoint (modules, optimisers,
    the EMA); `generators` the trainer's own random generators; `extra` entries (data fingerprint,
    AE record) are stored as they are. Only process 0 writes (`enabled`).
    """

    def __init__(self, run_dir: Path | None, kind: str, command: str, cfg: Any, parts: dict[str, Any],
                 generators: dict[str, torch.Generator], device: torch.device, every: int, keep_last: int,
                 enabled: bool = True, extra: dict | None = None):
        self.run_dir, self.kind, self.command, self.cfg = run_dir, kind, command, cfg
        self.parts, self.generators, self.device = parts, generators, device
        self.every, self.keep_last, self.enabled = every, keep_last, enabled
        self.extra = extra or {}
        self.last_saved: Path | None = None
        self.last_saved_step = -1

    def due(self, step: int) -> bool:
        """Whether a periodic state checkpoint is due after `step` steps."""
        return self.every > 0 and step % self.every == 0

    def save(self, progress: Progress) -> Path | None:
        """Write state-<step>.pt atomically (process 0), then delete all but the newest keep_last.

        Weights that are not finite are refused (UserError naming the step), so a diverged run
        never replaces its last good checkpoint."""
        if progress.step == self.last_saved_step:
            return self.last_saved
        self.last_saved_step = progress.step
        if not self.enabled:
            return None
        state = {"kind": self.kind, "format": FORMAT_VERSION, "command": self.command, "config": to_dict(self.cfg),
                 "progress": progress.to_dict(), "rng": capture_rng(self.generators, self.device), **self.extra}
        for name, part in self.parts.items():
            if part is None:
                state[name] = None
                continue
            sd = part.state_dict()
            if isinstance(part, torch.nn.Module):
                sd = cpu_state_dict(sd)
                bad = [k for k, v in sd.items() if v.dtype.is_floating_point and not torch.isfinite(v).all()]
                if bad:
                    raise UserError(f"the weights ({name}.{bad[0]}) are not finite after step {progress.step}; "
                                    f"the last good state checkpoint is {self.last_saved or 'none'}: lower train.lr "
                                    "and start a new run")
            state[name] = sd
        path = save_atomic(state, self.run_dir / f"state-{progress.step:08d}.pt")
        for old in state_files(self.run_dir)[:-self.keep_last]:
            old.unlink(missing_ok=True)
        self.last_saved = path
        return path

    def restore(self, resumed: "Resumed") -> Progress:
        """Load every part and generator from a resumed run's state checkpoint; return its Progress."""
        state = resumed.state
        for name, part in self.parts.items():
            if part is not None:
                part.load_state_dict(state[name])
        restore_rng(state["rng"], self.generators, self.device)
        progress = Progress.from_dict(state["progress"])
        self.last_saved, self.last_saved_step = resumed.path, progress.step
        return progress

    def end_of_step(self, progress: Progress, stop: "StopSignals", procs, log) -> None:
        """What every trainer does after each optimiser step: the periodic state checkpoint when it
        is due, and, once a stop signal has arrived on any
        process (`procs.max` agrees on it), the final state checkpoint and the `Stopped` raised."""
        if self.due(progress.step):
            self.save(progress)
        signum = procs.max(stop.requested)
        if signum:
            raise self.stop(progress, signum, procs.barrier, log)

    def stop(self, progress: Progress, signum: int, barrier, log) -> Stopped:
        """After a stop signal: write the state checkpoint (unless this step's is written), wait for
        it on every process (`barrier`), log, and return the `Stopped` to raise, whose message says
        how to continue (empty on processes other than the first)."""
        path = self.save(progress)
        barrier()
        if not self.enabled:
            return Stopped("", signum)
        message = (f"stopped by {signal.Signals(signum).name} after step {progress.step}, state saved in {path}; "
                   f"continue with: {self.command} --resume {self.run_dir}")
        log(message)
        return Stopped(message, signum)


@dataclass
class Resumed:
    """An interrupted run to continue: its folder, newest state checkpoint and that checkpoint."""

    run_dir: Path
    path: Path
    state: dict


def open_resume(run_dir: str | Path, kind: str, command: str, final_name: str) -> Resumed:
    """Check that `run_dir` is an unfinished run of `command` and load its newest state checkpoint.
    Leftover temporary files of a write that was killed are removed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist; pass the folder of an interrupted run "
                        "(checkpoints/<name>-<time>) to --resume")
    if (run_dir / final_name).is_file():
        raise UserError(f"run {run_dir} has finished ({final_name} is written); nothing to resume, "
                        "start a new run without --resume")
    files = state_files(run_dir)
    if not files:
        raise UserError(f"{run_dir} holds no training-state checkpoint (state-*.pt): it is not a run folder "
                        f"of {command}, or the run stopped before its first one (train.ckpt_every); start a new run")
    for tmp in run_dir.glob(".state-*.tmp"):
        tmp.unlink(missing_ok=True)
    path = files[-1]
    try:
        state = load_checkpoint(path)
    except UserError as err:
        older = f"delete it to resume from {files[-2].name}" if len(files) > 1 else "start a new run"
        raise UserError(f"{err}; {older}") from None
    if state["kind"] != kind:
        raise UserError(f"{run_dir} is a run folder of {state.get('command', state['kind'])}, not of {command}; "
                        f"resume it with {state.get('command', 'its own trainer')} --resume {run_dir}")
    return Resumed(run_dir, path, state)


def resume_config(schema: type, resumed: Resumed, overrides: list[str], allowed: set[str]):
    """The run's stored config with the command line's overrides (and POKEMON_DATA) applied, where
    they only touch `allowed` keys; any other change is refused naming the key."""
    stored = resumed.state["config"]
    cfg = apply_overrides(schema, stored, overrides)
    before, after = flatten(stored), flatten(to_dict(cfg))
    for key, value in after.items():
        if key not in allowed and before.get(key) != value:
            raise UserError(f"--resume continues with the run's own config: {key} was {before.get(key)!r} and "
                            f"cannot become {value!r}; drop the override or start a new run "
                            f"(may change: {', '.join(sorted(allowed))})")
    return cfg


def check_fingerprint(resumed: Resumed | None, fingerprint: str, root: str) -> None:
    """On resume, the data must be the images the run was trained on (UserError otherwise)."""
    if resumed is not None and resumed.state["data_fingerprint"] != fingerprint:
        raise UserError(f"the images in {root} are not the ones run {resumed.run_dir} was trained on (data "
                        f"fingerprint {fingerprint[:12]}, the run's {resumed.state['data_fingerprint'][:12]}); "
                        "point data.root at the original images")


# --- stopping on a signal ---------------------------------------------------------------------

class StopSignals:
    """While active, SIGINT (Ctrl-C) and SIGTERM (what schedulers and torchrun send) only set
    `requested` to the signal's number; the training loop finishes its step, writes a state
    checkpoint and stops. Every further signal does the same (torchrun forwards the one it got to
    its workers, which may already have had it from the terminal); SIGKILL still ends the process
    at once. Only installable in the main thread; elsewhere signals keep their handlers."""

    def __init__(self):
        self.requested = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        self.requested = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
