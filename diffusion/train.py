"""Train the stage-2 DDPM (x0-prediction, linear schedule) in latent or pixel space.

    python -m diffusion.train --config configs/ldm.yaml [--out DIR] [section.key=value ...]
    python -m diffusion.train --resume RUN_DIR                (continue a stopped run, plumbing/resume.py)
    torchrun --nproc_per_node=N -m diffusion.train ...        (N processes, plumbing/distributed.py)

Training objective, per batch (Ho et al. 2020 with the x0 parameterisation):
    t ~ p(t) (train.t_sampling: uniform, or log-normal in SNR),  eps ~ N(0, I),
    x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps
    L = mean_b  w(t_b) * || f_theta(x_t, t) - x_0 ||^2 / D        (D = dimensions of x_0)
with w(t) = 1 (uniform), min(SNR(t), gamma) or max(SNR(t), 1) (train.loss_weighting).

Writes into the run folder (default checkpoints/<run_name>-<timestamp>/): config.yaml, log.txt,
loss.png, samples_epochNNNN.png, samples.png (EMA weights, DDIM), metrics.json, diffusion.pt, and
state-<step>.pt training-state checkpoints for --resume.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from diffusion.config import DiffusionConfig
from diffusion.guidance import drop_labels, guided_x0
from diffusion.schedule import LinearSchedule
from diffusion.space import LatentSpace, PixelSpace
from diffusion.unet import UNet
from plumbing.checkpoint import FORMAT_VERSION, cpu_state_dict, file_sha256
from plumbing.cli import UserError, run_main
from plumbing.config import load_config, to_dict
from plumbing.device import autocast, bf16_pays, precision_note, seed_everything
from plumbing.distributed import start_processes
from plumbing.optim import EMA, scheduled_lr, set_learning_rate
from plumbing.pictures import save_grid
from plumbing.resume import (RESUMABLE_KEYS, Progress, Resumed, StopSignals, TrainingState, check_fingerprint,
                             open_resume, resume_config)
from plumbing.runs import RunLog, finish_run, newest_run_file, open_run_dir, training_metrics
from sprites.mixture import load_data, source_counts, training_batches
from sprites.labels import TYPES, default_table_path, label_counts, load_type_table, type_labels

CHECKPOINT_NAME = "diffusion.pt"
STATE_KIND = "diffusion-state"
COMMAND = "python -m diffusion.train"
# What --resume may change: only keys that leave the trained weights as they are (the sample grids
# draw from their own generator; a moved AE must have the same sha256).
RESUME_KEYS = RESUMABLE_KEYS | {"train.sample_every", "train.sample_n", "ae.ckpt"}


def parse_args(argv: list[str], default_config: str = "configs/ldm.yaml") -> tuple[DiffusionConfig, str | None,
                                                                                   Resumed | None]:
    """The config, the --out folder and, with --resume, the stopped run to continue."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help=f"YAML config (default: {default_config})")
    parser.add_argument("--out", default=None, help="run folder (default: a new folder under checkpoints/)")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the stopped run in RUN_DIR from its newest state checkpoint, with its config")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.epochs=5")
    args = parser.parse_args(argv)
    if args.resume is None:
        return load_config(DiffusionConfig, args.config or default_config, args.overrides), args.out, None
    if args.config or args.out:
        raise UserError("--resume continues a run in its own folder with its own config; drop --config and --out")
    resumed = open_resume(args.resume, STATE_KIND, COMMAND, CHECKPOINT_NAME)
    return resume_config(DiffusionConfig, resumed, args.overrides, RESUME_KEYS), None, resumed


def num_classes(cfg: DiffusionConfig) -> int:
    """Classes of the label embedding: the 18 types when conditional, none otherwise."""
    return len(TYPES) if cfg.cond.labels != "none" else 0


def build_unet(cfg: DiffusionConfig, in_channels: int) -> UNet:
    m = cfg.model
    return UNet(in_channels, m.channels, m.blocks, m.attention_levels, m.dropout, num_classes(cfg), m.heads,
                m.self_condition)


def training_labels(cfg: DiffusionConfig, names: list[str]) -> torch.Tensor | None:
    """Type index (or NULL_LABEL when unlabelled) of each image, or None for an unconditional model."""
    if cfg.cond.labels == "none":
        return None
    table = load_type_table(cfg.cond.table or default_table_path(cfg.data.root))
    return type_labels(names, table, "type1")


def build_schedule(cfg: DiffusionConfig) -> LinearSchedule:
    s = cfg.schedule
    return LinearSchedule(s.T, s.beta_start, s.beta_end, s.scale_to_T)


def resolve_ae_path(cfg: DiffusionConfig) -> Path:
    """The AE checkpoint of a latent run: ae.ckpt, or the newest checkpoints/*/ae.pt."""
    if cfg.ae.ckpt:
        return Path(cfg.ae.ckpt)
    found = newest_run_file("ae.pt")
    if found is None:
        raise UserError("no AE checkpoint found under checkpoints/; run scripts/train_ae.sh first or pass ae.ckpt=PATH")
    return found


def build_space(cfg: DiffusionConfig, device: torch.device, trained_on: dict | None = None):
    """The diffusion space of a config, and the AE record ({path, sha256}) for latent space.

    `trained_on` is the AE record of a resumed run: its AE is used unless ae.ckpt names one, and
    whichever is used must have the recorded sha256."""
    if cfg.space == "pixel":
        return PixelSpace(cfg.data.size), None
    from autoencoder.latents import load_autoencoder

    ae_path = Path(trained_on["path"]) if trained_on and not cfg.ae.ckpt else resolve_ae_path(cfg)
    if trained_on and file_sha256(ae_path) != trained_on["sha256"]:
        raise UserError(f"AE {ae_path} is not the one this run was trained on (sha256 {trained_on['sha256'][:12]}); "
                        "pass the matching AE with ae.ckpt=PATH")
    vae, ae_ckpt = load_autoencoder(ae_path, device)
    ae_size = ae_ckpt["config"]["data"]["size"]
    if ae_size != cfg.data.size:
        raise UserError(f"data.size={cfg.data.size} but the AE {ae_path} was trained at {ae_size}px; "
                        f"set data.size={ae_size}")
    space = LatentSpace(vae, ae_ckpt["latent"], cfg.ae.norm, cfg.ae.posterior, device, cfg.data.size)
    return space, {"path": str(ae_path), "sha256": file_sha256(ae_path)}


def loss_weights(schedule: LinearSchedule, t: torch.Tensor, kind: str, gamma: float) -> torch.Tensor:
    """w(t) for the x0-MSE (see the module docstring)."""
    if kind == "uniform":
        return torch.ones(len(t))
    snr = schedule.snr(t).float()
    return snr.clamp(max=gamma) if kind == "min_snr" else snr.clamp(min=1.0)


def draw_t(schedule: LinearSchedule, n: int, cfg, gen: torch.Generator) -> torch.Tensor:
    """The training steps t of one batch (train.t_sampling, see TrainConfig):
        uniform:         t ~ Uniform{0, ..., T-1}
        log_snr_normal:  lambda ~ N(log_snr_mean, log_snr_std^2),  t = argmin_s |log SNR(s) - lambda|
    Under uniform t about half the steps of the linear schedule have SNR < 0.09, where the best x0
    estimate is little more than the data mean; the log-normal puts most steps at SNR 0.1-100, where
    the shapes are decided (Karras et al. 2022, sec. 5: ln sigma ~ N(-1.2, 1.2^2) for data of std 0.5,
    which is log SNR ~ N(1.0, 2.4^2) for unit-variance data, sigma^2 = 1 / SNR)."""
    if cfg.t_sampling == "uniform":
        return torch.randint(0, schedule.T, (n,), generator=gen)
    log_snr = cfg.log_snr_mean + cfg.log_snr_std * torch.randn(n, generator=gen, dtype=torch.float64)
    return schedule.t_from_log_snr(log_snr)


def predict_x0(model: UNet, schedule: LinearSchedule, xt: torch.Tensor, t: torch.Tensor, x0_skip: bool,
               use_bf16: bool, y: torch.Tensor | None = None, x0_prev: torch.Tensor | None = None) -> torch.Tensor:
    """x0_hat from the network: f(x_t, t[, y]), or with model.x0_skip
    sqrt(ab_t) x_t + sqrt(1 - ab_t) f(x_t, t[, y]); `x0_prev` is the self-conditioning input."""
    with autocast(xt.device, use_bf16):
        f = model(xt, t, y, x0_prev).float()
    return schedule.x0_with_skip(xt, t, f) if x0_skip else f


def make_denoiser(model: UNet, schedule: LinearSchedule, x0_skip: bool, device: torch.device, use_bf16: bool,
                  labels: torch.Tensor | None = None, guidance: float = 1.0):
    """denoise(x_t, t) -> x0_hat for the samplers (autocast where enabled). With `labels` (one per
    sample) the prediction is classifier-free guided with scale `guidance` (diffusion/guidance.py).

    A self-conditioned model (model.self_condition) gets the x0_hat of the previous call as its
    second input. A sampling run visits t in decreasing order, so a call whose t is not below the
    previous call's starts a new run, from zeros."""
    last = {"t": None, "x0": None}  # the previous call's step and (guided) x0_hat

    def x0_of(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        prev = last["x0"]
        if prev is not None and len(prev) != len(x):  # guidance's batched pass: [conditional, unconditional]
            prev = prev.repeat(len(x) // len(prev), *([1] * (prev.dim() - 1)))
        return predict_x0(model, schedule, x, t, x0_skip, use_bf16, y, prev)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y = None if labels is None else labels.to(device)
        step = int(t.max())
        if last["t"] is not None and step >= last["t"]:
            last["x0"] = None  # a new sampling run
        x0 = guided_x0(x0_of, x, t.to(device), y, guidance)
        if getattr(model, "self_condition", False):
            last["t"], last["x0"] = step, x0
        return x0
    return denoise


def grid_labels(n: int, per_row: int = 8) -> torch.Tensor:
    """Labels of a conditional sample grid: one type per row of `per_row` samples, types in order."""
    return (torch.arange(n) // per_row) % len(TYPES)


@torch.no_grad()
def sample_grid(model, schedule, space, cfg: DiffusionConfig, device, use_bf16: bool, n: int, seed: int) -> torch.Tensor:
    """n samples (DDIM, config's steps and eta) decoded to pixels, from a fixed seed."""
    from diffusion.sampling import ddim_sample

    gen = torch.Generator().manual_seed(seed)
    model.eval()
    labels = grid_labels(n) if cfg.cond.labels != "none" else None
    denoise = make_denoiser(model, schedule, cfg.model.x0_skip, device, use_bf16, labels, cfg.cond.guidance)
    x, _ = ddim_sample(denoise, schedule, (n, *space.shape), gen, device,
                       space.clip, steps=cfg.sample.steps, eta=cfg.sample.eta)
    model.train()
    return space.decode(x).cpu()


def train(cfg: DiffusionConfig, out: str | None = None, resumed: Resumed | None = None) -> dict:
    """Train a DDPM from scratch (into `out`), or continue the run `resumed`; return the metrics."""
    procs = start_processes(cfg.device)  # this process among torchrun's (one without torchrun), its device
    device = procs.device
    rows = procs.local_rows(cfg.train.batch_size)  # this process's rows of every global batch
    gen = seed_everything(cfg.seed)  # every draw of a step: posterior samples, t, noise, label dropout
    schedule = build_schedule(cfg)
    schedule.check_ends_in_noise(force=cfg.schedule.force)  # data-free check before any work
    data = load_data(cfg.data)
    check_fingerprint(resumed, data.fingerprint, cfg.data.root)
    train_images = data.train()
    labels = training_labels(cfg, data.stems)
    train_labels = None if labels is None else labels[data.train_idx]
    batches = training_batches(data, cfg.data, cfg.train.batch_size, cfg.seed)
    space, ae_record = build_space(cfg, device, resumed.state["ae"] if resumed else None)
    run_dir = open_run_dir(out, cfg, resumed and resumed.run_dir, procs.is_main)
    log = RunLog(run_dir)  # silent on processes other than the first (no run folder)
    use_bf16 = cfg.train.bf16 and bf16_pays(device)
    log(f"run folder {run_dir} | device {device} | space {space.name} {space.shape} | "
        f"{precision_note(device, cfg.train.bf16)}")
    if procs.distributed:
        log(f"{procs.world_size} processes, {rows.stop - rows.start} images each of every batch of "
            f"{cfg.train.batch_size}")
    if ae_record:
        log(f"AE {ae_record['path']} (sha256 {ae_record['sha256'][:12]})")
    if cfg.data.uses_corpus():
        log(f"sources (training images; share of a batch): {source_counts(data, cfg.data)}")
    if train_labels is not None:
        counts = label_counts(train_labels)
        log(f"conditioning on Type 1 ({len(train_labels) - counts['unlabelled']} labelled, {counts['unlabelled']} "
            f"unlabelled training images, trained as 'no label'); label dropout {cfg.cond.drop_prob}")
    t0 = time.time()
    space.prepare(train_images)
    log(f"{len(train_images)} training images prepared in {time.time() - t0:.1f}s")
    diag = schedule.check_ends_in_noise(space.all_x0(), force=cfg.schedule.force)
    log(f"schedule T={schedule.T}, betas {schedule.beta_start:.3g}..{schedule.beta_end:.3g}: alpha_bar_T "
        f"{diag['alpha_bar_T']:.2e}, SNR_T {diag['snr_T']:.2e}, KL(q(x_T|x_0)||N(0,I)) {diag['kl_per_dim']:.2e} nats/dim")

    model = build_unet(cfg, space.shape[0]).to(device)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    ema = EMA(model, cfg.train.ema_decay)
    sampler_model = build_unet(cfg, space.shape[0]).to(device).to(memory_format=memory_format)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"U-Net {n_params / 1e6:.2f}M parameters")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    # Training-state checkpoints (plumbing/resume.py): everything the next step depends on.
    state = TrainingState(run_dir, STATE_KIND, COMMAND, cfg, parts={"model": model, "ema": ema, "optimizer": opt},
                          generators={"noise": gen}, device=device, every=cfg.train.ckpt_every,
                          keep_last=cfg.train.keep_last, enabled=procs.is_main,
                          extra={"data_fingerprint": data.fingerprint, "ae": ae_record})
    progress = state.restore(resumed) if resumed else Progress(history={"loss": []})
    if resumed:
        log(f"resumed from {resumed.path} at step {progress.step} (epoch {progress.epoch}, batch {progress.batch})")
    train_model = procs.wrap(model, cfg.train.compile)  # DDP over the processes, torch.compile if asked
    procs.seed_dropout(cfg.seed, progress.step)  # several processes: each its own dropout noise

    total_steps = cfg.train.epochs * len(batches)
    losses = progress.history["loss"]
    stopped_early = False
    progress.start_clock()
    bar = tqdm(total=total_steps, initial=progress.step, desc=f"DDPM ({space.name})", unit="step",
               dynamic_ncols=True, mininterval=1.0, disable=not procs.is_main)
    # Ctrl-C / SIGTERM: finish the step, write a state checkpoint, exit (the bar closes on any exit).
    with StopSignals() as stop, bar:
        for epoch in range(progress.epoch, cfg.train.epochs):
            for idx, flip in batches.epoch(epoch, start=progress.batch):
                lr = scheduled_lr(cfg.train, progress.step, total_steps, progress.seconds())
                if lr is None:  # the time budget (train.max_minutes) is used up
                    stopped_early = True
                    break
                set_learning_rate(opt, lr)
                # Every process draws the whole global batch (the draws one process would make) and
                # trains on its own rows of it.
                x0 = space.batch(idx, flip, gen)
                t = draw_t(schedule, len(x0), cfg.train, gen)
                noise = torch.randn(x0.shape, generator=gen)
                y = None
                if train_labels is not None:  # classifier-free guidance: drop some labels to "no label"
                    y = drop_labels(train_labels[idx], cfg.cond.drop_prob, gen)[rows].to(device)
                x0, t, noise = x0[rows], t[rows], noise[rows]
                xt = schedule.q_sample(x0, t, noise)
                w = loss_weights(schedule, t, cfg.train.loss_weighting, cfg.train.snr_gamma).to(device)
                x0, xt, t = (v.to(device) for v in (x0, xt, t))
                xt = xt.contiguous(memory_format=memory_format)
                x0_prev = None
                # Self-conditioning (Chen et al. 2023): on half of the steps (one draw per step) the
                # network first estimates x0 without gradient, then gets that estimate as its second
                # input, as it will get the previous step's estimate when sampling.
                if cfg.model.self_condition and torch.rand((), generator=gen) < 0.5:
                    with torch.no_grad():
                        x0_prev = predict_x0(train_model, schedule, xt, t, cfg.model.x0_skip, use_bf16, y)
                x0_hat = predict_x0(train_model, schedule, xt, t, cfg.model.x0_skip, use_bf16, y, x0_prev)
                per_sample = (x0_hat - x0).pow(2).flatten(1).mean(dim=1)
                loss = (w * per_sample).mean()
                logged = procs.mean(loss.detach()).item()  # the same on every process
                if not math.isfinite(logged):
                    raise UserError(f"the loss became {logged} at step {progress.step + 1}; lower train.lr (now "
                                    f"{cfg.train.lr}) and start a new run (last good state checkpoint: "
                                    f"{state.last_saved or 'none'})")
                opt.zero_grad(set_to_none=True)
                loss.backward()  # with DDP: gradients averaged over the processes
                if cfg.train.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                opt.step()
                ema.update(model)

                losses.append(logged)
                progress.done_step()
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{logged:.4f}")
                if progress.step % cfg.train.log_every == 0:
                    log(f"epoch {epoch} step {progress.step}/{total_steps} loss {logged:.4f} "
                        f"lr {opt.param_groups[0]['lr']:.2e}")
                state.end_of_step(progress, stop, procs, log)  # state checkpoint when due; stop on a signal
            if stopped_early:
                break
            if (procs.is_main and cfg.train.sample_every and (epoch + 1) % cfg.train.sample_every == 0
                    and epoch + 1 < cfg.train.epochs):
                sampler_model.load_state_dict(ema.shadow)
                grid = sample_grid(sampler_model, schedule, space, cfg, device, use_bf16, cfg.train.sample_n, cfg.seed)
                save_grid(grid, run_dir / f"samples_epoch{epoch + 1:04d}.png")
            progress.next_epoch(epoch + 1)
    train_seconds = progress.seconds()
    if stopped_early:
        log(f"time budget of {cfg.train.max_minutes} min reached after {progress.step} steps")
    del train_model  # the DDP wrapper holds the process group: drop it before procs.finish()
    procs.check_same_weights({**model.state_dict(), **{f"ema.{k}": v for k, v in ema.shadow.items()}})
    if not procs.is_main:  # process 0 alone samples and writes
        procs.finish()
        return {"run_dir": None, "rank": procs.rank}

    sampler_model.load_state_dict(ema.shadow)
    t0 = time.time()
    grid = sample_grid(sampler_model, schedule, space, cfg, device, use_bf16, cfg.train.sample_n, cfg.seed)
    sample_seconds = time.time() - t0
    save_grid(grid, run_dir / "samples.png")
    last_epoch = losses[-len(batches):]
    metrics = {
        "space": space.name,
        **training_metrics(progress.step, cfg.train.batch_size, len(batches), train_seconds, n_params, device,
                           use_bf16),
        "final_loss": losses[-1] if losses else None,
        "final_loss_mean_last_epoch": sum(last_epoch) / len(last_epoch) if last_epoch else None,
        f"sample_seconds_{cfg.train.sample_n}_ddim{cfg.sample.steps}": round(sample_seconds, 2),
        "schedule": diag,
    }
    ckpt = {
        "kind": "diffusion",
        "format": FORMAT_VERSION,
        "config": to_dict(cfg),
        "space": {"name": space.name, "shape": list(space.shape)},
        "model": cpu_state_dict(model),
        "ema": cpu_state_dict(ema.shadow),
        "ae": ae_record,
        "data_fingerprint": data.fingerprint,
        "metrics": {k: v for k, v in metrics.items() if k != "schedule"},
    }
    curve = f"x0 MSE ({cfg.train.loss_weighting} weight, t {cfg.train.t_sampling})"
    path = finish_run(run_dir, ckpt, CHECKPOINT_NAME, metrics, {curve: losses},
                      title=f"DDPM training in {space.name} space ({cfg.run_name})")
    log(f"{progress.step} steps in {train_seconds / 60:.1f} min ({metrics['train_img_per_s']} img/s), "
        f"final loss {metrics['final_loss_mean_last_epoch']:.4f}; {cfg.train.sample_n} DDIM-{cfg.sample.steps} "
        f"samples in {sample_seconds:.1f}s")
    log(f"saved {path}")
    procs.finish()
    return {"run_dir": str(run_dir), **metrics}


def main(argv: list[str]) -> None:
    """The command line: parse, then train or resume."""
    train(*parse_args(argv))


if __name__ == "__main__":
    run_main(main)
