"""The training loop both trainers share (autoencoder/trainer.py, diffusion/trainer.py): everything
that is the same for every model, so that a trainer only says what one step computes.

    for each epoch, from where the run stands (a resumed run: its epoch and batch):
        for each batch (idx, flip) of the epoch:
            lr = the schedule's rate at this step (plumbing/optim.py) on process 0's clock (`seconds`, the same
                 on every process); none left: stop (time or step budget)
            loss, logged = objective(idx, flip)        the trainer's forward pass and loss
            the divergence guard reads logged[guard_key] (plumbing/guard.py): stop before a bad update
            logged |= update(loss)                      the trainer's backward pass, optimiser, EMA
            history, progress bar, a log line every train.log_every steps
            state checkpoint when due; stop after the step on SIGINT / SIGTERM (plumbing/resume.py)
        every `every` epochs (not after the last): at_epoch(epoch), the trainer's grids or evaluations
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from plumbing.guard import DivergenceGuard
from plumbing.optim import scheduled_lr, set_learning_rate
from plumbing.resume import Progress, StopSignals, TrainingState
from plumbing.runs import RunLog, TrainingBar

Objective = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, dict[str, float]]"]


@dataclass
class Loop:
    name: str                        # the progress bar's label
    train: Any                       # the trainer's train section: epochs, log_every, max_minutes, the lr schedule
    batches: Any                     # .epoch(e, start=b) -> (idx, flip) of each batch of epoch e from batch b on
    total_steps: int                 # the schedule's length (the run stops there)
    progress: Progress
    state: TrainingState
    procs: Any                       # plumbing/distributed.py's Processes
    log: RunLog
    optimizer: torch.optim.Optimizer  # whose learning rate follows the schedule
    run_dir: Path | None
    guard_key: str                   # the logged number the divergence guard watches
    guard_can_init: bool = False     # the guard's hint may point at train.init
    seconds: float = 0.0             # training time at this step on process 0's clock, shared by every process
                                     # (one learning rate and one last step under a time budget)

    def run(self, objective: Objective, update: Callable[[torch.Tensor], dict | None],
            describe: Callable[[dict], tuple[str, dict]], every: int = 0,
            at_epoch: Callable[[int], None] | None = None) -> bool:
        """Train until the epochs, the step budget or the time budget end; True when a budget did.
        `describe(logged)` gives the log line's text and the progress bar's fields of a step."""
        progress, train = self.progress, self.train
        guard = DivergenceGuard()
        guard.replay(progress.history.get(self.guard_key, []))  # a resumed run's guard stands where it stood
        stopped_early = False
        progress.start_clock()
        bar = TrainingBar(self.name, self.total_steps, train.max_minutes, progress, not self.procs.is_main)
        # Ctrl-C / SIGTERM: finish the step, write a state checkpoint, exit (the bar closes on any exit).
        with StopSignals() as stop, bar:
            for epoch in range(progress.epoch, train.epochs):
                for idx, flip in self.batches.epoch(epoch, start=progress.batch):
                    self.seconds = self.procs.first(progress.seconds())
                    lr = scheduled_lr(train, progress.step, self.total_steps, self.seconds)
                    if lr is None or progress.step >= self.total_steps:  # the time or step budget is used up
                        stopped_early = True
                        break
                    set_learning_rate(self.optimizer, lr)
                    loss, logged = objective(idx, flip)
                    # a non-finite or diverging loss stops the run before it updates the weights
                    guard.check(logged[self.guard_key], progress.step + 1, self.run_dir, train.lr, self.log,
                                can_init=self.guard_can_init)
                    logged.update(update(loss) or {})
                    for key, value in logged.items():
                        progress.history.setdefault(key, []).append(value)
                    progress.done_step()
                    text, fields = describe(logged)
                    bar.step(progress, epoch=epoch, **fields)
                    if progress.step % train.log_every == 0:
                        self.log(f"epoch {epoch} step {progress.step}/{self.total_steps} {text} "
                                 f"lr {self.optimizer.param_groups[0]['lr']:.2e}")
                    self.state.end_of_step(progress, stop, self.procs, self.log)  # checkpoint when due; stop on a signal
                if stopped_early:
                    break
                if at_epoch and self.procs.is_main and every and (epoch + 1) % every == 0 and epoch + 1 < train.epochs:
                    at_epoch(epoch)
                progress.next_epoch(epoch + 1)
        if stopped_early:
            max_steps = getattr(train, "max_steps", 0)
            budget = (f"step budget of {max_steps}" if max_steps and progress.step >= self.total_steps
                      else f"time budget of {train.max_minutes} min")
            self.log(f"{budget} reached after {progress.step} steps")
        return stopped_early
