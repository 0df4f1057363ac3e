"""Multi-process training (plumbing/distributed.py): 2 CPU processes with gloo, each training on half
of every global batch, end with the weights of the 1-process run over the same global batches (up
to float rounding). The AE runs through torch.multiprocessing.spawn (so that its workers can stub
LPIPS), the LDM through torchrun, its real entry point: on one machine, and as two "machines" (two
torchrun launches with --nnodes=2 meeting at a rendezvous on 127.0.0.1), with a time budget, labels,
the latent cache, a SIGTERM that reaches one process, a resume, and the errors of a bad launch."""
from __future__ import annotations

import gc
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import autoencoder.trainer as ae_trainer
import diffusion.train as dtrain
from diffusion.denoiser import build_unet
from autoencoder.config import AEConfig
from plumbing.checkpoint import load_checkpoint
from plumbing.cli import UserError
from plumbing.config import load_config
import plumbing.distributed as distributed
from plumbing.distributed import Processes
from tests.helpers import REPO, TINY_AE, TINY_DIFFUSION, lpips_unavailable, subprocess_env
from diffusion.config import DiffusionConfig
from plumbing.config import from_dict

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

ATOL = 1e-5


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ae_worker(rank: int, world: int, port: int, overrides: list[str], out: str) -> None:
    """One of `world` training processes, set up as torchrun would set it up."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ae_trainer.load_lpips = lpips_unavailable
    seen = []  # the batch size of every training forward pass of this process
    build_vae = ae_trainer.build_vae

    def recording_vae(cfg):
        vae = build_vae(cfg)
        forward = vae.forward

        def record(x, eps=None):
            seen.append(len(x))
            return forward(x, eps)
        vae.forward = record
        return vae

    ae_trainer.build_vae = recording_vae
    ae_trainer.train(load_config(AEConfig, None, overrides), out)
    Path(out, f"batches_rank{rank}.txt").write_text(" ".join(map(str, seen)))
    # train() left the group and freed its DDP wrapper itself, before any interpreter shutdown
    ddp_alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    Path(out, f"left_rank{rank}.txt").write_text(f"initialized={dist.is_initialized()} ddp_alive={ddp_alive}")


def _assert_close(a: dict, b: dict) -> None:
    """Every weight within ATOL, except the key biases of self-attention: softmax(q.(k + b_k)) does
    not depend on b_k, so its gradient is exactly zero and what the backward pass computes for it is
    rounding noise, which AdamW normalises into steps of any sign. Those entries are compared for
    what matters, that they stay useless: the networks' outputs (see _assert_same_function)."""
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k].float(), b[k].float()
        if k.endswith("qkv.bias"):  # [q | k | v] biases, C each: drop the key part
            c = len(x) // 3
            x, y = torch.cat([x[:c], x[2 * c:]]), torch.cat([y[:c], y[2 * c:]])
        assert torch.allclose(x, y, atol=ATOL, rtol=0), (k, (x - y).abs().max())


def _assert_same_function(a: dict, b: dict) -> None:
    """The two diffusion checkpoints' U-Nets (weights and EMA) give the same x0 predictions."""

    cfg = from_dict(DiffusionConfig, a["config"])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, *a["space"]["shape"], generator=gen)
    t = torch.randint(0, cfg.schedule.T, (4,), generator=gen)
    for part in ("model", "ema"):
        nets = []
        for ckpt in (a, b):
            net = build_unet(cfg, a["space"]["shape"][0]).eval()
            net.load_state_dict(ckpt[part])
            nets.append(net)
        with torch.no_grad():
            assert torch.allclose(nets[0](x, t), nets[1](x, t), atol=ATOL, rtol=0), part


def _last_step_change(run_dir: Path, part: str = "model") -> float:
    """How far the last optimiser step moved the weights (from the two newest state checkpoints):
    the tolerance must be far below it for the comparison to mean anything."""
    before, after = (load_checkpoint(p)[part] for p in sorted(run_dir.glob("state-*.pt"))[-2:])
    return max((after[k].float() - before[k].float()).abs().max().item() for k in after)


def test_ae_two_processes_equal_one(sprite_dir, tmp_path, no_lpips):
    # 21 training images, global batches of 8 (4 per process), 3 epochs: 6 steps
    overrides = [f"data.root={sprite_dir}", f"data.cache_dir={tmp_path / 'cache'}", *TINY_AE, "train.epochs=3",
                 "train.ckpt_every=1"]
    one = ae_trainer.train(load_config(AEConfig, None, overrides), str(tmp_path / "one"))
    assert one["steps"] == 6
    mp.spawn(_ae_worker, args=(2, _free_port(), overrides, str(tmp_path / "two")), nprocs=2, join=True)
    a, b = (load_checkpoint(tmp_path / name / "ae.pt", kind="autoencoder") for name in ("one", "two"))
    _assert_close(a["model"], b["model"])
    assert _last_step_change(tmp_path / "one") > 10 * ATOL
    log = (tmp_path / "two" / "log.txt").read_text()
    assert "2 processes, 4 images each of every batch of 8" in log
    assert log.count("step 6/6") == 1  # process 0 alone logs
    assert sorted(p.name for p in (tmp_path / "two").glob("state-*.pt")) == ["state-00000005.pt", "state-00000006.pt"]
    for rank in (0, 1):  # each process trained on its 4 rows of every batch of 8
        assert (tmp_path / "two" / f"batches_rank{rank}.txt").read_text() == "4 4 4 4 4 4"
        assert (tmp_path / "two" / f"left_rank{rank}.txt").read_text() == "initialized=False ddp_alive=0"


def test_batch_not_divisible_by_the_processes():
    with pytest.raises(UserError, match=r"train.batch_size=10 is not divisible by the 4 training processes"):
        Processes(rank=1, world_size=4).local_rows(10)
    assert [Processes(rank=r, world_size=4).local_rows(8) for r in range(4)] == \
        [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]



def _launch(module_args: list[str], tmp_path: Path, machines: list[dict] | None = None,
            timeout: float = 240) -> list[subprocess.CompletedProcess]:
    """torchrun with 2 processes: on one machine (`machines` None), or as two machines of one process
    each (two launches, --nnodes=2, one c10d rendezvous on 127.0.0.1); a machine's dict may give its
    own `cwd` and `prefix` (arguments before the command's, e.g. tests.signal_at_step)."""
    run = [sys.executable, "-m", "torch.distributed.run"]
    if machines is None:
        launches = [(run + ["--nnodes=1", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                            f"--master_port={_free_port()}"], {})]
    else:
        endpoint = f"--rdzv-endpoint=127.0.0.1:{_free_port()}"
        launches = [(run + ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", endpoint, "--rdzv-id=test"], m)
                    for m in machines]
    procs = [subprocess.Popen(cmd + ["-m", *m.get("prefix", []), *module_args], cwd=m.get("cwd", REPO),
                              env=subprocess_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd, m in launches]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def _worker_errors(launch: subprocess.CompletedProcess) -> list[str]:
    """The lines the training processes printed on stderr as `error: ...` (torchrun's own report of a
    failed worker follows them)."""
    return [line for line in launch.stderr.splitlines() if line.startswith("error: ")]


def test_latent_space_with_labels_and_a_time_budget_under_torchrun(tiny_runs, sprite_dir, tmp_path):
    """A time budget stops both processes after the same step (process 0's clock), with the same weights;
    process 0 alone encodes the latent cache, which the other reads."""
    cache = tmp_path / "cache"
    args = ["diffusion.train", "--config", str(REPO / "configs/ldm.yaml"), "--out", str(tmp_path / "run"),
            f"data.root={sprite_dir}", f"data.cache_dir={cache}", "space=latent", f"ae.ckpt={tiny_runs['ae_path']}",
            "cond.style=true", *TINY_DIFFUSION,
            "train.epochs=100000", "train.max_minutes=0.05", "train.ckpt_every=0"]
    launch, = _launch(args, tmp_path)
    assert launch.returncode == 0, launch.stderr[-3000:]
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "conditioning on the style" in log
    steps = int(re.search(r"time budget of 0.05 min reached after (\d+) steps", log).group(1))
    assert steps > 0 and load_checkpoint(tmp_path / "run" / "diffusion.pt")["metrics"]["steps"] == steps
    assert len(list(cache.glob("latents_*.pt"))) == 1
    assert not list((tmp_path / "run").glob(".processes-*"))  # the visibility marker is gone


def test_two_machines_stop_on_one_sigterm_resume_and_equal_one_process(sprite_dir, tmp_path):
    """Two machines: a SIGTERM that reaches one process stops both after the same step; a resume that
    one machine cannot read stops both with its one-line error; resumed by 2 processes of one machine,
    the run ends with the weights of the uninterrupted 1-process run."""
    overrides = [f"data.root={sprite_dir}", f"data.cache_dir={tmp_path / 'cache'}", "space=pixel", *TINY_DIFFUSION,
                 "train.epochs=3", "train.ckpt_every=1"]
    dtrain.main(["--config", str(REPO / "configs/pixel.yaml"), "--out", str(tmp_path / "one"), *overrides])
    run = tmp_path / "run"
    stopped = _launch(["diffusion.train", "--config", str(REPO / "configs/pixel.yaml"), "--out", str(run), *overrides],
                      tmp_path, machines=[{"prefix": ["tests.signal_at_step", "TERM@3"]}, {}])
    assert all(launch.returncode != 0 for launch in stopped)
    assert "stopped by SIGTERM after step 3" in "".join(launch.stderr for launch in stopped)
    assert [p.name for p in sorted(run.glob("state-*.pt"))][-1] == "state-00000003.pt"
    assert not (run / "diffusion.pt").exists()

    elsewhere = tmp_path / "elsewhere"  # a machine on which the run folder's path leads nowhere
    elsewhere.mkdir()
    refused = _launch(["diffusion.train", "--resume", os.path.relpath(run, REPO)], tmp_path,
                      machines=[{}, {"cwd": elsewhere}])
    for launch in refused:
        assert launch.returncode != 0
        errors = _worker_errors(launch)
        assert len(errors) == 1 and "run folder" in errors[0] and "does not exist" in errors[0], launch.stderr[-2000:]
        assert "Traceback" not in launch.stderr.split(errors[0])[0]  # no traceback of the trainer before its line

    resumed, = _launch(["diffusion.train", "--resume", str(run)], tmp_path)  # on one machine, 2 processes
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (load_checkpoint(tmp_path / name / "diffusion.pt", kind="diffusion") for name in ("one", "run"))
    assert a["metrics"]["steps"] == b["metrics"]["steps"] == 6
    _assert_close(a["model"], b["model"])
    _assert_close(a["ema"], b["ema"])
    _assert_same_function(a, b)
    assert _last_step_change(tmp_path / "one") > 10 * ATOL
    log = (run / "log.txt").read_text()
    assert log.count("2 processes, 4 images each of every batch of 8") == 2  # the first start and the resume


class _Meeting:
    """Stands in for torchrun's store at the meeting points: every process's value where given, else
    this process's own value and "yes" from the others."""

    def __init__(self, values: dict[str, list[str]]):
        self.values = values

    def __call__(self, point, value, rank, world):
        return self.values.get(point) or [value if r == rank else "yes" for r in range(world)]


def test_processes_that_disagree_on_the_config_stop_with_one_line(monkeypatch):
    budget = {"train.max_minutes": 15.0, "train.lr": 1e-3}
    other = {"train.max_minutes": 0.5, "train.lr": 1e-3}
    monkeypatch.setattr(distributed, "meet", _Meeting({"the config": [distributed.json.dumps(budget),
                                                                      distributed.json.dumps(other)]}))
    for rank in (0, 1):  # the same message on both processes
        procs = Processes(rank=rank, world_size=2, hosts=["node-a", "node-b"])
        with pytest.raises(UserError, match=r"^the processes disagree on the config: process 1 \(on node-b\) has "
                                            r"train.max_minutes=0.5, process 0 \(on node-a\) train.max_minutes=15.0; "):
            procs.agree("the config", budget if rank == 0 else other, "start every machine alike")


def test_a_run_folder_another_machine_does_not_see(monkeypatch, tmp_path):
    """Process 1 looks for process 0's marker at a path its machine does not have."""
    monkeypatch.setattr(distributed, "SEE_FILE_SECONDS", 0.1)
    run = tmp_path / "run"
    monkeypatch.setattr(distributed, "meet", _Meeting({"run-folder": [str(tmp_path / "not-here" / ".processes-x"), ""]}))
    procs = Processes(rank=1, world_size=2, hosts=["node-a", "node-b"])
    with pytest.raises(UserError, match=r"the run folder .*not-here is not visible to process 1 \(on node-b\); put the "
                                        r"run folder"):
        procs.check_run_folder(None)
    run.mkdir()
    monkeypatch.setattr(distributed, "meet", _Meeting({}))  # process 0 finds its own marker
    Processes(rank=0, world_size=2, hosts=["node-a", "node-b"]).check_run_folder(run)
    assert not list(run.iterdir())
