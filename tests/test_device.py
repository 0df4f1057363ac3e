"""bf16 autocast is used only where it pays: native hardware support *and* a measured speed-up; float32
everywhere else (a CUDA card under compute capability 8.0, a CPU without bf16, MPS)."""
from __future__ import annotations

import contextlib

import pytest
import torch

from plumbing import device as D
from diffusion import trainer as dtrainer
from diffusion.config import DiffusionConfig
from plumbing.checkpoint import load_checkpoint
from plumbing.config import load_config
from plumbing.device import configure_cuda, to_device
from plumbing.distributed import Processes
from tests.helpers import TINY_DIFFUSION

CPU = torch.device("cpu")


@pytest.fixture
def fake_cpu(monkeypatch):
    """Pretend the CPU has native bf16, and let each test set the measured bf16/fp32 speed-up."""
    monkeypatch.setattr(D, "bf16_native", lambda device: device.type == "cpu")

    def set_speedup(value: float) -> None:
        monkeypatch.setattr(D, "_cpu_bf16_speedup", value)
    return set_speedup


def test_slow_native_bf16_is_not_used(fake_cpu):
    fake_cpu(0.63)  # measured on an Intel Xeon with AVX512-BF16 and no AMX
    assert not D.bf16_pays(CPU)
    note = D.precision_note(CPU, True)
    assert note.startswith("bf16 autocast off") and "0.63x" in note
    assert isinstance(D.autocast(CPU, True), type(D.autocast(CPU, False)))  # a no-op context


def test_fast_native_bf16_is_used(fake_cpu):
    fake_cpu(5.5)  # measured on an AMD EPYC with AVX512-BF16
    assert D.bf16_pays(CPU)
    assert D.precision_note(CPU, True) == "bf16 autocast on"
    assert isinstance(D.autocast(CPU, True), torch.autocast)


def test_threshold_is_inclusive(fake_cpu):
    fake_cpu(D.BF16_MIN_SPEEDUP)
    assert D.bf16_pays(CPU)
    fake_cpu(D.BF16_MIN_SPEEDUP - 0.01)
    assert not D.bf16_pays(CPU)


def test_config_switch_wins(fake_cpu):
    fake_cpu(5.5)
    assert D.precision_note(CPU, False) == "bf16 autocast off (train.bf16=false)"


def test_without_native_support_no_probe_is_needed(monkeypatch):
    monkeypatch.setattr(D, "bf16_native", lambda device: False)
    monkeypatch.setattr(D, "cpu_bf16_speedup", lambda: pytest.fail("probed without native bf16"))
    assert not D.bf16_pays(CPU)
    assert D.precision_note(CPU, True) == "bf16 autocast off (not native here): float32"


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend a CUDA card of a given compute capability; is_bf16_supported says True, as it does on a T4."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)

    def set_capability(major: int, minor: int) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
    return set_capability


@pytest.mark.parametrize("capability, native", [((7, 5), False), ((7, 0), False), ((8, 0), True), ((8, 6), True),
                                                ((9, 0), True)])
def test_cuda_bf16_follows_the_compute_capability(fake_cuda, capability, native):
    """A T4 (7.5) or V100 (7.0) emulates bf16: float32 there, although is_bf16_supported() is True."""
    fake_cuda(*capability)
    cuda = torch.device("cuda")
    assert D.bf16_native(cuda) is native and D.bf16_pays(cuda) is native
    note = D.precision_note(cuda, True)
    if native:
        assert note == "bf16 autocast on"
        with pytest.warns(UserWarning) if not torch.cuda.is_available() else contextlib.nullcontext():
            assert isinstance(D.autocast(cuda, True), torch.autocast)  # without a card torch warns and disables it
    else:
        assert note.startswith(f"bf16 autocast off (compute capability {capability[0]}.{capability[1]} < 8.0")
        assert note.endswith("float32")
        assert isinstance(D.autocast(cuda, True), contextlib.nullcontext)


def test_auto_never_picks_mps(monkeypatch):
    """A Mac with MPS trains on its CPU unless device=mps is asked for (the module docstring says why)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert D.pick_device("auto") == CPU
    assert D.pick_device("mps") == torch.device("mps")
    assert not D.bf16_pays(torch.device("mps"))


def test_probe_measures_a_positive_ratio_once(monkeypatch):
    monkeypatch.setattr(D, "_cpu_bf16_speedup", None)
    first = D.cpu_bf16_speedup(size=64, repeats=2)
    assert first > 0 and D.cpu_bf16_speedup() == first  # cached: the same value, no second probe


def test_deterministic_mode_runs_and_a_cpu_run_is_the_same_either_way(sprite_dir, tmp_path):
    """train.deterministic only changes CUDA kernels; on the CPU the weights are the same bit for bit."""

    args = [f"data.root={sprite_dir}", f"data.cache_dir={tmp_path / 'cache'}", "space=pixel", *TINY_DIFFUSION,
            "train.epochs=2"]
    for name, extra in (("a", []), ("b", ["train.deterministic=true"])):
        dtrainer.train(load_config(DiffusionConfig, None, [*args, *extra]), str(tmp_path / name))
    a, b = (load_checkpoint(tmp_path / n / "diffusion.pt")["ema"] for n in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    cpu = torch.device("cpu")
    configure_cuda(cpu, deterministic=True)  # no effect off CUDA
    x = torch.randn(3)
    assert to_device(x, cpu) is x or torch.equal(to_device(x, cpu), x)


def test_the_compile_wrapper_keeps_the_model_weights():
    """train.compile wraps the model in torch.compile, the weights staying those of the model."""

    model = torch.nn.Linear(2, 2)
    wrapped = Processes().wrap(model, compile=True)
    assert wrapped is not model and wrapped._orig_mod is model
