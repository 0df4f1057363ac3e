"""The divergence guard of both trainers: a run whose loss leaves its level stops itself.

A diverging run rarely ends in NaN. The corpus LDM at train.lr=2e-3 went from a loss of 0.25 to
0.89 within 50 steps at step 5,050 and trained on at 0.7-0.8 for 70 more minutes; its samples were
blobs and only the log showed why (docs/training.md). The guard watches two exponential moving
averages of the per-step loss L_n:

    fast_n = fast_{n-1} + (L_n - fast_{n-1}) / FAST      (the last ~50 steps)
    slow_n = slow_{n-1} + (L_n - slow_{n-1}) / SLOW      (the last ~1,000 steps: the run's level)

and fires at step n when fast > FACTOR * slow held for PATIENCE steps in a row (n > WARMUP, so
the first steps' falling loss and a fine-tuning start settle first), or at once when L_n is not
finite. The rule and its evidence (it never fires on the healthy runs of docs/results.md; it
catches a doubling within PATIENCE + ~20 steps) are in docs/training.md.

On firing the trainer stops: one line names the step where the loss left its level, the last
state checkpoint written before that step, and what to change. It does not roll back and go on at
a lower rate by itself: that would be a different run than the config says, and the user should
choose the new rate (resuming from the good state with a lower train.lr is one command).
The guard's state is a function of the loss history alone, so a resumed run rebuilds it exactly
(`replay`).
"""
from __future__ import annotations

import math
from pathlib import Path

from plumbing.cli import UserError
from plumbing.resume import state_files, state_step

FAST = 50          # steps of the fast average
SLOW = 1000        # steps of the slow average (the level)
FACTOR = 2.0       # how far above its level the fast average must be
PATIENCE = 100     # for how many steps in a row
WARMUP = 500       # steps before the guard watches


class Diverged(UserError):
    """The loss left its level (or stopped being finite): the run stopped itself."""


class DivergenceGuard:
    """Feed it every step's loss with `step(loss)`; it returns the step at which the loss left its
    level once the rule above fires, else None."""

    def __init__(self, fast: int = FAST, slow: int = SLOW, factor: float = FACTOR, patience: int = PATIENCE,
                 warmup: int = WARMUP):
        self.fast_n, self.slow_n, self.factor, self.patience, self.warmup = fast, slow, factor, patience, warmup
        self.fast = self.slow = None
        self.steps = 0
        self.high_since: int | None = None

    def step(self, loss: float) -> int | None:
        """Take the loss of the next step; the first step of the high stretch when the guard fires."""
        self.steps += 1
        if not math.isfinite(loss):
            return self.steps
        if self.fast is None:
            self.fast = self.slow = loss
        self.fast += (loss - self.fast) / self.fast_n
        self.slow += (loss - self.slow) / self.slow_n
        if self.steps <= self.warmup or self.fast <= self.factor * self.slow:
            self.high_since = None
            return None
        if self.high_since is None:
            self.high_since = self.steps
        return self.high_since if self.steps - self.high_since + 1 >= self.patience else None

    def check(self, loss: float, step: int, run_dir: Path | None, lr: float, log, can_init: bool = False) -> None:
        """`step` for a trainer: on firing, log the one-line `diverged` error in the run's log and raise it."""
        fired = self.step(loss)
        if fired:
            err = diverged(self, fired, step, loss, run_dir, lr, can_init)
            log(f"stopped: {err}")
            raise err

    def replay(self, losses: list[float]) -> int | None:
        """Feed a loss history (a resumed run's), returning where the guard fired in it, if it did."""
        fired = None
        for loss in losses:
            fired = self.step(loss) or fired
        return fired

    def describe(self) -> str:
        return (f"its mean over the last ~{self.fast_n} steps ({self.fast:.4f}) stayed above {self.factor:g} times its "
                f"level over the last ~{self.slow_n} ({self.slow:.4f}) for {self.patience} steps")


def last_good_state(run_dir: Path | None, before_step: int) -> Path | None:
    """The newest state-<step>.pt of a run folder written before `before_step`."""
    if run_dir is None or not Path(run_dir).is_dir():
        return None
    found = [p for p in state_files(run_dir) if state_step(p) < before_step]
    return found[-1] if found else None


def diverged(guard: DivergenceGuard, start: int, step: int, loss: float, run_dir: Path | None, lr: float,
             can_init: bool = False) -> Diverged:
    """The one-line error of a run the guard stopped at `step` (the loss left its level at `start`).
    `can_init`: the trainer starts from a state file with train.init (the LDM's)."""
    good = last_good_state(run_dir, start)
    what = (f"the loss became {loss} at step {step}" if not math.isfinite(loss)
            else f"the loss diverged from step {start} on: {guard.describe()}")
    fix = f"start a new run with a lower train.lr (now {lr:g}, e.g. {lr / 2:g})"
    if good and can_init:
        fix += f", or go on from the last good state at that rate with train.init={good} train.lr={lr / 2:g}"
    return Diverged(f"{what}; last good state checkpoint: {good or 'none'}; {fix}")
