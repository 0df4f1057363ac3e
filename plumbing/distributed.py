"""Several training processes acting as one: ranks, devices, the split of each batch, reductions.

    torchrun --nproc_per_node=4 -m diffusion.train --config configs/ldm_full.yaml

torchrun starts N copies of a trainer with RANK, LOCAL_RANK and WORLD_SIZE in their environment.
Each copy builds the same model from the same seed, wraps it in DistributedDataParallel (NCCL on
CUDA, gloo on CPU), draws the same *global* batch of the config's `train.batch_size` (indices,
flips, posterior and diffusion noise) from the same generators, and trains on its own rows of it:
process r of N takes rows [r B/N, (r+1) B/N). Every loss is a mean over the batch, DDP averages the
gradients over processes, and GroupNorm has no batch statistics, so the averaged gradient is the
full-batch gradient: N processes follow the 1-process run up to floating-point rounding, and the
weights, the optimiser and the EMA stay the same on every process. Process 0 alone logs, writes
checkpoints and draws sample grids.

What every process must decide alike is decided once: a time budget follows process 0's clock
(`Processes.first`, each step), a stop signal that reached any process stops all after the same step
(`Processes.max`), the logged loss the divergence guard sees is the mean over the processes
(`Processes.mean`). Dropout is the exception: each process draws its own dropout noise, from
(seed, rank, step) (`Processes.seed_dropout`), so with dropout N processes do not repeat the
1-process run's numbers; they repeat their own N-process run, resumed or not.

At startup the processes meet through torchrun's key-value store (`meet`: bounded waits, polling):
they agree on the config and the data (`Processes.agree`), process 0 builds the caches the others
then read (`Processes.main_first`), and the others check that they see process 0's run folder
(`Processes.check_run_folder`). A user error on one process, before the process group exists or
after, is posted to the store (`shared_errors`), and every other process stops with the same line
at its next meeting point or when a collective breaks: exit 2 on every process, no hang.

Without torchrun (no WORLD_SIZE in the environment) there is one process and every helper here is
a no-op: no process group, no DDP wrapper, no communication.
"""
from __future__ import annotations

import atexit
import gc
import json
import os
import secrets
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from plumbing.cli import Stopped, UserError
from plumbing.config import flatten, to_dict
from plumbing.device import configure_cuda, pick_device

# The longest a process waits for the others, at a meeting point or inside a collective (gloo's
# default): long enough for process 0 to decode the corpus or encode its latents on a CPU.
WAIT_MINUTES = 30
# Config keys that may differ between machines: where the data, its cache and the AE are (the data
# fingerprint and the AE's sha256 are compared instead).
MACHINE_KEYS = {"data.root", "data.cache_dir", "ae.ckpt"}
# How long the other processes look for process 0's marker file in the run folder (a shared
# filesystem may show a new file to other machines a little later).
SEE_FILE_SECONDS = 20


@dataclass
class Processes:
    """Where this process stands among the training processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    hosts: list[str] = field(default_factory=lambda: [socket.gethostname()])  # each process's machine

    def name(self, rank: int) -> str:
        """How messages name a process: `process 1 (on host-b)`."""
        return f"process {rank} (on {self.hosts[rank]})"

    @property
    def is_main(self) -> bool:
        """Process 0 logs, checkpoints and samples; the others only train."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def local_rows(self, global_batch: int) -> slice:
        """This process's rows of each global batch of `global_batch` rows (an even split)."""
        if global_batch % self.world_size:
            raise UserError(f"train.batch_size={global_batch} is not divisible by the {self.world_size} "
                            f"training processes; use a multiple of {self.world_size} or another --nproc_per_node")
        per = global_batch // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def wrap(self, model: nn.Module, compile: bool = False) -> nn.Module:
        """The module to run training forward passes through: DDP over the processes when there
        are several, compiled with torch.compile when asked. Weights and state dicts stay those of
        `model` itself."""
        wrapped = model
        if self.distributed:
            wrapped = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda"
                                              else None)
        if compile:
            wrapped = torch.compile(wrapped)
        return wrapped

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The average of `values` over the processes (for the logged losses and the NaN check,
        which must be the same on every process)."""
        if not self.distributed:
            return values
        values = values.detach().clone()
        dist.all_reduce(values)
        return values / self.world_size

    def first(self, value: float) -> float:
        """Process 0's `value` on every process (a broadcast): the one clock of a time budget, so that
        every process sets the same learning rate and stops after the same step."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return float(t.item())

    def max(self, value: int) -> int:
        """The largest of the processes' `value`s: a stop signal that reached one process (0 on
        the others) stops all of them after the same step."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def average_gradients(self, module: nn.Module) -> None:
        """Average the gradients of a module that is not wrapped in DDP (the AE's discriminator,
        whose two forward passes per step DDP would not accept) over the processes."""
        if not self.distributed:
            return
        for p in module.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(self.world_size)

    def seed_dropout(self, seed: int, step: int) -> None:
        """With several processes, give each its own dropout noise: before every step torch's global
        generators (which only dropout draws from in training) are seeded by (seed, rank, step), else
        every process would drop the same units of its rows. Seeded anew each step, the noise is a
        function of the step alone, so a resumed N-process run repeats the uninterrupted one (process
        0's state checkpoint cannot hold the other processes' generators). One process keeps the
        stream seed_everything (or a resumed state) set up, so its runs stay reproducible bit for bit."""
        if self.distributed:
            torch.manual_seed((seed * 1_000_003 + self.rank) * 1_000_003 + step)

    def gather(self, point: str, value: str) -> list[str]:
        """Every process's `value` at the meeting point `point`, in rank order (see `meet`)."""
        return meet(point, value, self.rank, self.world_size) if self.distributed else [value]

    def agree(self, what: str, values: dict, fix: str) -> None:
        """Raise the same UserError on every process unless all have process 0's `values` (a flat dict
        of JSON-able entries): the first key that differs, its two values and `fix`."""
        gathered = [json.loads(v) for v in self.gather(what, json.dumps(values, sort_keys=True))]
        for rank, theirs in enumerate(gathered[1:], start=1):
            for key in gathered[0]:
                if theirs.get(key) != gathered[0][key]:
                    raise UserError(f"the processes disagree on {what}: {self.name(rank)} has {key}={theirs.get(key)}, "
                                    f"{self.name(0)} {key}={gathered[0][key]}; {fix}")

    def agree_on_config(self, cfg) -> None:
        """Every process must run process 0's config (the time budget included), up to the paths that
        may differ between machines (MACHINE_KEYS: their content is compared where it is loaded)."""
        values = {k: v for k, v in flatten(to_dict(cfg)).items() if k not in MACHINE_KEYS}
        self.agree("the config", values, "start every machine's torchrun with the same command line and config files")

    def main_first(self, point: str, work: Callable[[], object]):
        """`work()` on process 0, then on the others once it is done (the meeting point `point`): what
        process 0 writes to a cache (decoded images, latents) the others read instead of computing it."""
        result = None
        if self.is_main:
            result = work()
        self.gather(point, "done")
        if not self.is_main:
            result = work()
        return result

    def check_run_folder(self, run_dir: Path | None) -> None:
        """Every process must see process 0's run folder at the same path (one folder on a filesystem
        every machine mounts): a resume on any machine reads it. Process 0 leaves a marker file in it,
        the others look for it (for up to SEE_FILE_SECONDS); a process that does not see it stops every
        process with a UserError."""
        if not self.distributed:
            return
        marker = None
        if self.is_main:
            marker = Path(run_dir).resolve() / f".processes-{secrets.token_hex(8)}"
            marker.write_text("written by process 0: every training process must see this folder\n")
        path = Path(self.gather("run-folder", str(marker) if marker else "")[0])
        seen = self.is_main or _appears(path, SEE_FILE_SECONDS)
        answers = self.gather("run-folder-seen", "yes" if seen else "no")
        if marker:
            marker.unlink(missing_ok=True)
        if "no" in answers:
            raise UserError(f"the run folder {path.parent} is not visible to {self.name(answers.index('no'))}; "
                            "put the run folder (--out, or checkpoints/) on a filesystem every machine mounts at "
                            "the same path")

    def barrier(self) -> None:
        """Wait until every process gets here (e.g. until process 0 has written a checkpoint)."""
        if self.distributed:
            dist.barrier()

    def check_same_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """Raise if the processes ended with different weights (a bug, never a user error): one
        float64 checksum per process, gathered and compared."""
        if not self.distributed:
            return
        total = sum(v.detach().double().sum() for v in tensors.values() if v.dtype.is_floating_point)
        mine = torch.as_tensor(total, dtype=torch.float64, device=self.device).reshape(1)
        gathered = [torch.zeros_like(mine) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine)
        if any(not torch.equal(g, gathered[0]) for g in gathered):
            raise RuntimeError(f"the training processes ended with different weights: checksums "
                               f"{[g.item() for g in gathered]}")

    def finish(self) -> None:
        """Leave the process group, all processes together, once process 0 has written the run.

        Call it after dropping the DDP wrapper (`del train_model`). The order matters at exit: the
        wrapper holds the process group, and a wrapper left in a reference cycle is only freed during
        interpreter shutdown, when gloo's worker threads can no longer take the GIL (2-process runs
        here aborted at exit with "terminate called without an active exception" about once in 60
        runs when process 1 left the group alone and early). So:
        wait for every process (the others wait here while process 0 samples and writes), destroy
        the group on all of them, and collect the garbage while the interpreter is fully alive."""
        if self.distributed:
            if dist.is_initialized():
                dist.barrier()
            _leave_group()


def start_processes(device_name: str, deterministic: bool = False) -> Processes:
    """This process's place among torchrun's processes (one process without torchrun), its device
    (cuda:LOCAL_RANK on CUDA), and the process group (NCCL on CUDA, gloo on CPU). Also sets up CUDA
    (TF32, cuDNN, determinism: plumbing/device.py, configure_cuda)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world <= 1:
        configure_cuda(device, deterministic)
        return Processes(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"{world} processes per node but only {torch.cuda.device_count()} GPU(s); "
                            f"use --nproc_per_node={torch.cuda.device_count()}")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise UserError(f"several training processes run on CUDA (NCCL) or the CPU (gloo), not on "
                        f"'{device.type}'; use device=cuda or device=cpu, or drop torchrun")
    configure_cuda(device, deterministic)
    hosts = meet("start", socket.gethostname(), rank, world)  # every process is here, or one failed
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(minutes=WAIT_MINUTES))
        atexit.register(_leave_group)  # for exits that skip Processes.finish
    return Processes(rank=rank, world_size=world, local_rank=local_rank, device=device, hosts=hosts)


# --- meeting points and shared errors, through torchrun's key-value store -----------------------------

_STORE = []  # the connection to torchrun's store, once made


def _store():
    """torchrun's key-value store (the TCPStore its agent serves at MASTER_ADDR:MASTER_PORT, which the
    workers reach before the process group exists and after any of them has died), under a prefix of
    this launch attempt; None where the processes were not started by torchrun."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    if not _STORE:
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                              timeout=timedelta(seconds=60))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        _STORE.append(dist.PrefixStore(f"pokediffusion/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/{attempt}", store))
    return _STORE[0]


def posted_error() -> str | None:
    """The user error another process posted (`shared_errors`), if any."""
    store = _store()
    if store is None or not store.check(["error"]):
        return None
    return store.get("error").decode()


def meet(point: str, value: str, rank: int, world: int) -> list[str]:
    """Every process's `value` at the meeting point `point`, in rank order: each posts its own and
    waits (at most WAIT_MINUTES) for the others'. A user error another process posted ends the wait
    with that error. Where torchrun's store is missing (processes started by hand) the process group
    gathers the values, once it exists."""
    store = _store()
    if store is None:
        if not dist.is_initialized():
            return [value] * world
        values = [None] * world
        dist.all_gather_object(values, value)
        return values
    store.set(f"{point}/{rank}", value)
    keys = [f"{point}/{r}" for r in range(world)]
    deadline = time.monotonic() + WAIT_MINUTES * 60
    while not store.check(keys):
        error = posted_error()
        if error:
            raise UserError(error)
        if time.monotonic() > deadline:
            missing = [r for r, k in enumerate(keys) if not store.check([k])]
            raise UserError(f"process(es) {missing} did not reach '{point}' within {WAIT_MINUTES} min; see their "
                            "output, and start every machine's torchrun with the same command")
        time.sleep(0.05)
    return [store.get(k).decode() for k in keys]


@contextmanager
def shared_errors():
    """Under torchrun, a user error on one process ends every process with it (the trainers' commands
    run inside this). The failing process posts its message, naming itself, to torchrun's store; the
    others find it at their next meeting point (`meet`), or, if they were in a collective that the
    failing process left, here on the way out: each prints the one line and exits 2. A process that
    fails with a bug posts that it did (and keeps its traceback), so that the others do not wait."""
    try:
        yield
    except Stopped:
        raise
    except UserError as err:
        _post_error(str(err))
        raise
    except Exception as err:
        error = _wait_for_posted_error(seconds=5)  # a collective broken by a process that stopped
        if error is None:
            _post_error(f"stopped with {type(err).__name__} ({str(err).splitlines()[0][:100] if str(err) else ''}); "
                        "see its traceback")
            raise
        raise UserError(error) from None


def _post_error(message: str) -> None:
    """Post this process's user error for the others (the first posted stays; nothing outside
    torchrun). Every process that stops on a user error counts itself; the first waits (a few seconds
    at most) until all have, so that its machine's torchrun, which may serve the store, outlives the
    reading."""
    try:
        store = _store()
        if store is None:
            return
        first = store.add("errors", 1) == 1
        if first:
            store.set("error", f"process {os.environ.get('RANK', '0')} (on {socket.gethostname()}): {message}")
        deadline = time.monotonic() + 5
        while first and store.add("errors", 0) < int(os.environ["WORLD_SIZE"]) and time.monotonic() < deadline:
            time.sleep(0.05)
    except Exception:  # the store is gone (its machine stopped): the others learn of it from torchrun
        pass


def _wait_for_posted_error(seconds: float) -> str | None:
    """The error another process posts within `seconds` (the failing process posts before its
    connections close, but this one may have noticed the closing first)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            error = posted_error()
        except Exception:  # the store went with a process that stopped: nothing to learn from it
            return None
        if error is not None or time.monotonic() > deadline:
            return error
        time.sleep(0.1)


def _appears(path: Path, seconds: float) -> bool:
    """Whether the file `path` exists, or appears within `seconds`."""
    deadline = time.monotonic() + seconds
    while not path.is_file():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _leave_group() -> None:
    """Leave the process group (if still in it) and free the DDP wrapper and its process group now,
    not during interpreter shutdown. `Processes.finish` calls it after its barrier; atexit calls it,
    without waiting for the others (they may be gone), for exits that skip `finish` (a requested
    stop, an error)."""
    if dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()
