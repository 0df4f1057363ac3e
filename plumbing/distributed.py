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

Without torchrun (no WORLD_SIZE in the environment) there is one process and every helper here is
a no-op: no process group, no DDP wrapper, no communication.
"""
from __future__ import annotations

import atexit
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from plumbing.cli import UserError
from plumbing.device import configure_cuda, pick_device


@dataclass
class Processes:
    """Where this process stands among the training processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

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
        """With several processes, give each its own dropout noise: torch's global generators (which
        only dropout draws from in training) are seeded by (seed, rank, step), else every process
        would drop the same units of its rows. One process keeps the stream seed_everything (or a
        resumed state) set up, so its runs stay reproducible bit for bit."""
        if self.distributed:
            torch.manual_seed((seed * 1_000_003 + self.rank) * 1_000_003 + step)

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
    if not dist.is_initialized():
        dist.init_process_group(backend)
        atexit.register(_leave_group)  # for exits that skip Processes.finish
    return Processes(rank=rank, world_size=world, local_rank=local_rank, device=device)


def _leave_group() -> None:
    """Leave the process group (if still in it) and free the DDP wrapper and its process group now,
    not during interpreter shutdown. `Processes.finish` calls it after its barrier; atexit calls it,
    without waiting for the others (they may be gone), for exits that skip `finish` (a requested
    stop, an error)."""
    if dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()
