"""Every key of a stage-2 (diffusion) run, with its type and default.

The same schema serves the latent model (space: latent, configs/ldm.yaml) and the pixel-space
baseline (space: pixel, configs/pixel.yaml): the space is the only difference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, Optional

from plumbing.cli import UserError
from plumbing.config import check_range
from plumbing.optim import check_schedule
from sprites.config import DataConfig


@dataclass
class AESection:
    ckpt: Optional[str] = None       # AE checkpoint; null = the newest checkpoints/*/ae.pt


@dataclass
class ScheduleConfig:
    T: int = 1000
    beta_start: float = 1e-4         # for T = 1000; scaled by 1000 / T when scale_to_T
    beta_end: float = 0.02
    scale_to_T: bool = True
    force: bool = False              # accept a schedule that does not end near N(0, I)


@dataclass
class UNetConfig:
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # width per level
    blocks: int = 2                  # residual blocks per level (decoder: blocks + 1)
    attention_levels: list[int] = field(default_factory=lambda: [1, 2])  # level indices with self-attention
    heads: int = 4
    dropout: float = 0.0


@dataclass
class DDPMTrainConfig:
    epochs: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 200
    lr_min_ratio: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.999         # averages over the last ~1,000 steps
    # The noise levels of the training steps: log SNR(t) ~ N(log_snr_mean, log_snr_std^2), mapped to the
    # nearest t (Karras et al. 2022's log-normal noise levels, for unit-variance data; diffusion/train.py).
    log_snr_mean: float = 1.0
    log_snr_std: float = 2.4
    bf16: bool = True                # bf16 autocast where the hardware supports it natively
    log_every: int = 50
    sample_every: int = 50           # epochs between sample grids (0: only at the end)
    sample_n: int = 64
    max_minutes: float = 15.0        # stop after this many minutes of training (0: no limit)
    max_steps: int = 0               # stop after this many optimiser steps (0: the epochs decide); the
                                     # learning-rate schedule spans them
    ckpt_every: int = 1000           # steps between training-state checkpoints for --resume (0: only on
                                     # SIGINT/SIGTERM); 1000 = every 1-2 min with the CPU configs
    keep_last: int = 2               # state checkpoints kept (the newest); older ones are deleted
    compile: bool = False            # torch.compile the model for training (CUDA; first steps slower)
    deterministic: bool = False      # CUDA: deterministic kernels only (slower; plumbing/device.py). CPU runs are
                                     # bitwise repeatable either way
    init: Optional[str] = None       # start from the EMA weights of a release, a run folder or a diffusion.pt
                                     # (fine-tuning; a stopped run: its newest state-*.pt); a latent model
                                     # keeps its AE; space and U-Net must match


@dataclass
class ConditionConfig:
    # Labels with classifier-free guidance (diffusion/guidance.py): the Pokemon type (sprites/labels.py)
    # and the style, i.e. the source of each image (sprites/config.py SOURCES); either, both or none.
    labels: Literal["none", "type1"] = "none"   # "type1": condition on each image's Type 1
    style: bool = False              # condition on the source: artwork, dream_world, sprite_front, sprite_back
    species: bool = False            # condition on the Pokedex number (sprites/labels.py: 1..721 named by the table)
    drop_prob: float = 0.15          # share of labels replaced by "no label" in training (each kind on its own)
    guidance: float = 1.0            # guidance scale s of the training-time sample grids: the sampler's
                                     # default (diffusion.guidance.DEFAULT_GUIDANCE), one pass per step


@dataclass
class LossConfig:
    # Terms added to the x0 MSE in training only (diffusion/align.py); nothing of them is in a release.
    # Representation alignment (REPA, Yu et al. 2024; U-REPA for U-Nets): a conv projection of the U-Net's
    # hidden state at `align_stage`, on the noisy input, matched per position to the teacher's spatially
    # normalised features of the clean image (diffusion/teacher.py).
    align: float = 0.0               # weight of the alignment term (0: off)
    align_stage: str = "mid"         # "mid" (the 4x4 middle), "enc<L>" / "dec<L>" (the last block of level L)
    align_until: int = 0             # the step from which the term is off (HASTE's early stop; 0: never off)
    teacher: str = "checkpoints/teacher/teacher.pt"  # the teacher's weights (python -m diffusion.train_teacher)


@dataclass
class SampleConfig:
    # The training-time sample grids: DDIM with these settings (diffusion.sample has its own flags).
    steps: int = 50                  # DDIM steps
    eta: float = 0.0                 # 0: deterministic DDIM


@dataclass
class DiffusionConfig:
    # Keys of stored configs that every run now has at one value (plumbing/config.py, without_retired).
    RETIRED: ClassVar[dict] = {"ae.norm": "channel", "train.weight_decay": 0.0, "train.channels_last": False,
                               "cond.table": None, "train.augment": 0.0,
                               "loss.disperse": 0.0, "loss.disperse_stage": "mid", "loss.disperse_tau": 0.5}
    seed: int = 0
    device: str = "auto"
    run_name: str = "ldm"
    space: Literal["latent", "pixel"] = "latent"
    data: DataConfig = field(default_factory=DataConfig)
    ae: AESection = field(default_factory=AESection)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    model: UNetConfig = field(default_factory=UNetConfig)
    train: DDPMTrainConfig = field(default_factory=DDPMTrainConfig)
    cond: ConditionConfig = field(default_factory=ConditionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def validate(self) -> None:
        m = self.model
        if not m.channels or any(c <= 0 or c % m.heads for c in m.channels):
            raise UserError(f"model.channels={m.channels} must be positive multiples of model.heads={m.heads}")
        if any(not 0 <= lv < len(m.channels) for lv in m.attention_levels):
            raise UserError(f"model.attention_levels={m.attention_levels} must be level indices "
                            f"0..{len(m.channels) - 1}")
        for key, value in [("train.epochs", self.train.epochs), ("train.batch_size", self.train.batch_size),
                           ("model.blocks", m.blocks), ("sample.steps", self.sample.steps),
                           ("train.sample_n", self.train.sample_n)]:
            if value <= 0:
                raise UserError(f"{key}={value} must be positive")
        if not 0.0 <= self.cond.drop_prob <= 1.0:
            raise UserError(f"cond.drop_prob={self.cond.drop_prob} must be in [0, 1]")
        if not 0.0 <= self.train.ema_decay < 1.0:
            raise UserError(f"train.ema_decay={self.train.ema_decay} must be in [0, 1)")
        check_schedule(self.train)
        check_range("cond.guidance", self.cond.guidance, 0)
        check_range("sample.eta", self.sample.eta, 0, 1)
        check_range("model.dropout", self.model.dropout, 0, 1, high_open=True)
        check_range("schedule.beta_start", self.schedule.beta_start, 0, 1, low_open=True, high_open=True)
        check_range("schedule.beta_end", self.schedule.beta_end, self.schedule.beta_start, 1, high_open=True)
        check_range("schedule.T", self.schedule.T, 1)
        if not self.train.log_snr_std > 0:
            raise UserError(f"train.log_snr_std={self.train.log_snr_std} must be positive")
        check_range("loss.align", self.loss.align, 0)
        if self.loss.align_until < 0:
            raise UserError(f"loss.align_until={self.loss.align_until} must be >= 0 (0: the term stays on)")
        stage = self.loss.align_stage
        if not (stage == "mid" or (stage[:3] in ("enc", "dec") and stage[3:].isdigit()
                                   and int(stage[3:]) < len(m.channels))):
            raise UserError(f"loss.align_stage={stage} must be mid, enc<L> or dec<L> with a level L in "
                            f"0..{len(m.channels) - 1}")
        if self.train.max_steps < 0:
            raise UserError(f"train.max_steps={self.train.max_steps} must be >= 0 (0: the epochs decide)")
        if self.train.ckpt_every < 0:
            raise UserError(f"train.ckpt_every={self.train.ckpt_every} must be >= 0 (0: checkpoint only on a stop signal)")
        if self.train.keep_last < 1:
            raise UserError(f"train.keep_last={self.train.keep_last} must be at least 1")
