"""Every key of a stage-2 (diffusion) run, with its type and default.

The same schema serves the latent model (space: latent, configs/ldm.yaml) and the pixel-space
baseline (space: pixel, configs/pixel.yaml): the space is the only difference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from plumbing.cli import UserError
from sprites.config import DataConfig


@dataclass
class AESection:
    ckpt: Optional[str] = None       # AE checkpoint; null = the newest checkpoints/*/ae.pt
    norm: Literal["global", "channel"] = "channel"      # latent normalisation (see diffusion/space.py)
    posterior: Literal["sample", "mean"] = "mean"       # the posterior mean, or z ~ q(z|x) each epoch


@dataclass
class ScheduleConfig:
    T: int = 1000
    beta_start: float = 1e-4         # for T = 1000; scaled by 1000 / T when scale_to_T
    beta_end: float = 0.02
    scale_to_T: bool = True
    force: bool = False              # accept a schedule that does not end near N(0, I)


@dataclass
class UNetConfig:
    channels: list[int] = field(default_factory=lambda: [64, 128, 256])  # width per level
    blocks: int = 2                  # residual blocks per level (decoder: blocks + 1)
    attention_levels: list[int] = field(default_factory=lambda: [1, 2])  # level indices with self-attention
    heads: int = 4
    dropout: float = 0.0
    # x0_hat = f(x_t, t) (false), or sqrt(ab_t) x_t + sqrt(1 - ab_t) f(x_t, t) (true; see
    # LinearSchedule.x0_with_skip). Either way the model's output is an x0 estimate trained on the x0 MSE.
    x0_skip: bool = False
    # Self-conditioning (Chen et al. 2023): the network also sees its previous x0 estimate (UNet.forward);
    # half of the training steps cost one extra forward pass without gradient.
    self_condition: bool = False


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 200
    lr_min_ratio: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    # Weight of the x0-MSE at step t: uniform (plain x0 loss); min_snr: min(SNR(t), snr_gamma)
    # (Hang et al. 2023); trunc_snr: max(SNR(t), 1) (Salimans & Ho 2022).
    loss_weighting: Literal["uniform", "min_snr", "trunc_snr"] = "uniform"
    snr_gamma: float = 5.0
    # Which noise levels the training steps see: uniform (t ~ Uniform{0..T-1}, Ho et al. 2020) or
    # log_snr_normal (log SNR(t) ~ N(log_snr_mean, log_snr_std^2), mapped to the nearest t; Karras et
    # al. 2022's log-normal noise levels, here for unit-variance data).
    t_sampling: Literal["uniform", "log_snr_normal"] = "uniform"
    log_snr_mean: float = 1.0
    log_snr_std: float = 2.4
    bf16: bool = True                # bf16 autocast where the hardware supports it natively
    channels_last: bool = False
    log_every: int = 50
    sample_every: int = 25           # epochs between sample grids (0: only at the end)
    sample_n: int = 64
    max_minutes: float = 0.0         # stop after this many minutes of training (0: no limit)
    ckpt_every: int = 1000           # steps between training-state checkpoints for --resume (0: only on
                                     # SIGINT/SIGTERM); 1000 = every 1-2 min with the CPU configs
    keep_last: int = 2               # state checkpoints kept (the newest); older ones are deleted
    compile: bool = False            # torch.compile the model for training (CUDA; first steps slower)


@dataclass
class ConditionConfig:
    # Type conditioning with classifier-free guidance (diffusion/guidance.py, sprites/labels.py).
    labels: Literal["none", "type1"] = "none"   # "type1": condition on each sprite's Type 1
    table: Optional[str] = None      # type table; null: pokemon_stats.csv beside data.root's folder
    drop_prob: float = 0.15          # share of labels replaced by "no label" in training
    guidance: float = 3.0            # guidance scale s of the training-time sample grids


@dataclass
class SampleConfig:
    sampler: Literal["ddpm", "ddim"] = "ddim"
    steps: int = 50                  # DDIM steps
    eta: float = 0.0


@dataclass
class DiffusionConfig:
    seed: int = 0
    device: str = "auto"
    run_name: str = "ldm"
    space: Literal["latent", "pixel"] = "latent"
    data: DataConfig = field(default_factory=DataConfig)
    ae: AESection = field(default_factory=AESection)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    model: UNetConfig = field(default_factory=UNetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cond: ConditionConfig = field(default_factory=ConditionConfig)
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
        if not self.train.log_snr_std > 0:
            raise UserError(f"train.log_snr_std={self.train.log_snr_std} must be positive")
        if self.train.ckpt_every < 0:
            raise UserError(f"train.ckpt_every={self.train.ckpt_every} must be >= 0 (0: checkpoint only on a stop signal)")
        if self.train.keep_last < 1:
            raise UserError(f"train.keep_last={self.train.keep_last} must be at least 1")
