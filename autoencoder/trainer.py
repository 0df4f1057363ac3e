"""Train the stage-1 VAE: `train(cfg)`, called by the command (autoencoder/train.py), the GPU runner
and the tests.

Writes into the run folder (default checkpoints/ae-<timestamp>/): config.yaml, log.txt, loss.png,
reconstructions.png (held-out inputs on odd rows, their reconstructions below them), metrics.json,
ae.pt (weights, resolved config, data fingerprint, latent statistics), and state-<step>.pt
training-state checkpoints for --resume.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch.nn import functional as F

from autoencoder.config import AEConfig
from autoencoder.latents import build_vae, encode_posterior, latent_statistics, spatial_smoothness
from autoencoder.losses import (PatchDiscriminator, colour_l1, hinge_d_loss, hinge_g_loss, kl_to_standard_normal,
                                 load_lpips)
from plumbing.checkpoint import FORMAT_VERSION, cpu_state_dict
from plumbing.cli import UserError
from plumbing.config import to_dict
from plumbing.device import autocast, bf16_pays, precision_note, seed_everything, to_device
from plumbing.distributed import start_processes
from plumbing.loop import Loop
from plumbing.optim import schedule_position
from plumbing.pictures import save_grid
from plumbing.resume import COMMON_RESUME_KEYS, Progress, Resumed, TrainingState, check_fingerprint
from plumbing.runs import RunLog, finish_run, open_run_dir, training_metrics
from sprites.dataset import pixel_batch, to_unit_range
from sprites.mixture import drawn_sample, load_data, source_counts, training_batches

CHECKPOINT_NAME = "ae.pt"
STATE_KIND = "autoencoder-state"
COMMAND = "python -m autoencoder.train"
# What --resume may change: only keys that leave the trained weights as they are.
RESUME_KEYS = COMMON_RESUME_KEYS | {"train.grid_every"}
STATS_IMAGES = 8192  # images for the colour and latent statistics (all of them when the set is smaller)


def discriminator_on(step: int, total_steps: int, seconds: float, cfg: AEConfig) -> bool:
    """Whether the discriminator loss is on: once the schedule's position (the step, or under a time
    budget the share of the budget used, whichever is further: plumbing/optim.py) passes the share
    loss.disc_start of training. So a slower machine starts it at the same share of its budget."""
    return schedule_position(step, total_steps, seconds, cfg.train.max_minutes) >= cfg.loss.disc_start * total_steps


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB on the [0, 1] scale: 10 * log10(1 / MSE). Inputs are in [-1, 1]."""
    mse = ((x - y) / 2).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor, device, batch_size: int = 64) -> torch.Tensor:
    """Deterministic reconstruction through the posterior mean: x_hat = D(mean(q(z|x)))."""
    out = []
    for i in range(0, len(images), batch_size):
        mean, _ = vae.encode(images[i:i + batch_size].to(device))
        out.append(vae.decode(mean).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def evaluate(vae, holdout: torch.Tensor, device, lpips_model=None) -> dict:
    """Held-out PSNR (dB), L1 (on the [0, 1] scale) and LPIPS (None without its weights)."""
    vae.eval()
    recon = reconstruct(vae, holdout, device)
    result = {
        "holdout_images": len(holdout),
        "psnr_db": float(psnr(recon, holdout).mean()),
        "l1": float(((recon - holdout).abs() / 2).mean()),
        "lpips": None,
    }
    if lpips_model is not None:
        result["lpips"] = float(lpips_model(recon.to(device), holdout.to(device)).mean())
    vae.train()
    return result, recon


def save_comparison(inputs: torch.Tensor, recon: torch.Tensor, path, n: int = 32, per_row: int = 8) -> None:
    """A grid of rows of inputs, each row followed by the row of their reconstructions."""
    n = min(n, len(inputs)) // per_row * per_row or min(n, len(inputs))
    per_row = min(per_row, n)
    rows = []
    for r in range(0, n, per_row):
        rows += [inputs[r:r + per_row], recon[r:r + per_row]]
    save_grid(torch.cat(rows), path, nrow=per_row)


def train(cfg: AEConfig, out: str | None = None, resumed: Resumed | None = None) -> dict:
    """Train a VAE from scratch (into `out`), or continue the run `resumed`; return the metrics."""
    procs = start_processes(cfg.device, cfg.train.deterministic)  # this process among torchrun's, its device
    device = procs.device
    rows = procs.local_rows(cfg.train.batch_size)  # this process's rows of every global batch
    procs.agree_on_config(cfg)  # several processes: one config (a time budget included), or a UserError on all
    gen = seed_everything(cfg.seed)  # posterior noise (the data order has its own (seed, epoch) generators)
    lpips_model = None
    if cfg.loss.perceptual_weight > 0:  # fail before any work when the weights are missing
        lpips_model = load_lpips().to(device)
    data = procs.main_first("data", lambda: load_data(cfg.data))  # the others read process 0's image cache
    procs.agree("the data", {"data fingerprint": data.fingerprint}, "give every machine the same images (data.root)")
    check_fingerprint(resumed, data.fingerprint, cfg.data.root)
    batches = training_batches(data, cfg.data, cfg.train.batch_size, cfg.seed)
    # colour whitening and latent scales: every training image, or a draw by share from a large mixture
    stats_images = drawn_sample(data, cfg.data, STATS_IMAGES, cfg.seed)
    holdout = to_unit_range(data.holdout())

    run_dir = open_run_dir(out, cfg, resumed and resumed.run_dir, procs.is_main)
    procs.check_run_folder(run_dir)  # several machines: one run folder that every process sees
    log = RunLog(run_dir)  # silent on processes other than the first (no run folder)
    use_bf16 = cfg.train.bf16 and bf16_pays(device)
    log(f"run folder {run_dir} | device {device} | {precision_note(device, cfg.train.bf16)}")
    if procs.distributed:
        log(f"{procs.world_size} processes, {rows.stop - rows.start} images each of every batch of "
            f"{cfg.train.batch_size}")
    log(f"data {cfg.data.root}: {len(data.train_idx)} train / {len(data.holdout_idx)} held-out images at "
        f"{cfg.data.size}px, fingerprint {data.fingerprint[:12]}")
    if cfg.data.uses_corpus():
        log(f"sources (training images; share of a batch): {source_counts(data, cfg.data)}")

    vae = build_vae(cfg)
    vae.set_colour_statistics(to_unit_range(stats_images))
    vae = vae.to(device)
    n_params = sum(p.numel() for p in vae.parameters())
    latent_shape = (cfg.model.latent_channels, cfg.data.size // vae.downsample_factor,
                    cfg.data.size // vae.downsample_factor)
    log(f"VAE {n_params / 1e6:.2f}M parameters, f={vae.downsample_factor}, latent "
        f"{latent_shape[0]}x{latent_shape[1]}x{latent_shape[2]}")
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.train.lr, weight_decay=0.0,
                            betas=(0.9, 0.99))
    disc = opt_d = None
    if cfg.loss.disc_weight > 0:
        disc = PatchDiscriminator().to(device)
        opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.train.lr, betas=(0.5, 0.9))

    # Training-state checkpoints (plumbing/resume.py): everything the next step depends on.
    state = TrainingState(run_dir, STATE_KIND, COMMAND, cfg,
                          parts={"model": vae, "optimizer": opt, "disc": disc, "disc_optimizer": opt_d},
                          generators={"noise": gen}, device=device, every=cfg.train.ckpt_every,
                          keep_last=cfg.train.keep_last, enabled=procs.is_main,
                          extra={"data_fingerprint": data.fingerprint})
    history_keys = (["total", "l1", "kl"] + (["lpips"] if lpips_model is not None else [])
                    + (["disc"] if disc is not None else []))
    progress = state.restore(resumed) if resumed else Progress(history={k: [] for k in history_keys})
    if resumed:
        log(f"resumed from {resumed.path} at step {progress.step} (epoch {progress.epoch}, batch {progress.batch})")
    train_vae = procs.wrap(vae, cfg.train.compile)  # DDP over the processes, torch.compile if asked

    total_steps = cfg.train.epochs * len(batches)

    def objective(idx: torch.Tensor, flip: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The VAE's loss of one batch. Every process draws the posterior noise of the whole global
        batch and takes its rows."""
        eps = torch.randn((len(idx), *latent_shape), generator=gen)[rows]
        x = to_device(pixel_batch(data.images, data.train_idx[idx[rows]], flip[rows]), device)
        eps = to_device(eps, device)
        with autocast(device, use_bf16):
            x_hat, mean, logvar = train_vae(x, eps)                  # x_hat = D(z), z = mean + exp(logvar / 2) eps
        x_hat = x_hat.float()
        # L1 is a mean over the D = 3*H*W pixel values; the KL is per image (summed over latent dims).
        # Dividing the KL by D gives kl_weight the meaning it has in Rombach et al. (2022), whose
        # reconstruction loss is a sum over pixels (without it the same weight is D times stronger:
        # measured here, the KL then held the latents to ~2.8 nats per dimension).
        l1 = (x_hat - x).abs().mean()
        kl = kl_to_standard_normal(mean.float(), logvar.float()).mean()
        loss = cfg.loss.l1_weight * l1 + cfg.loss.kl_weight * kl / x[0].numel()
        if cfg.loss.colour_weight > 0:  # L1 on whitened colours: every colour axis counts alike
            loss = loss + cfg.loss.colour_weight * colour_l1(vae, x_hat, x)
        lp = lpips_model(x_hat, x).mean() if lpips_model is not None else None
        if lp is not None:
            loss = loss + cfg.loss.perceptual_weight * lp
        gan.on = disc is not None and discriminator_on(progress.step, total_steps, loop.seconds, cfg)  # process 0's clock
        if gan.on:
            loss = loss + cfg.loss.disc_weight * hinge_g_loss(disc(x_hat))
            gan.pair = (x, x_hat.detach())
        terms = {"total": loss, "l1": l1, "kl": kl, **({"lpips": lp} if lp is not None else {})}
        # Averaged over the processes: the same numbers on each, for the log and the guard.
        return loss, dict(zip(terms, procs.mean(torch.stack(list(terms.values())).detach()).tolist()))

    def update(loss: torch.Tensor) -> dict[str, float]:
        opt.zero_grad(set_to_none=True)
        loss.backward()  # with DDP: gradients averaged over the processes
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.train.grad_clip)
        opt.step()
        if not gan.on:
            return {}
        # the discriminator's step on the detached reconstructions (at the constant rate train.lr)
        x, x_hat = gan.pair
        d_loss = hinge_d_loss(disc(x), disc(x_hat))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        procs.average_gradients(disc)
        opt_d.step()
        # 1 = chance (all logits 0), 0 = every patch told apart with a margin of 1
        return {"disc": procs.mean(d_loss.detach()).item()}

    def describe(logged: dict) -> tuple[str, dict]:
        text = (f"loss {logged['total']:.4f} l1 {logged['l1']:.4f} kl {logged['kl']:.2f}"
                + (f" disc {logged['disc']:.4f}" if "disc" in logged else ""))
        return text, {"l1": f"{logged['l1']:.4f}", "kl": f"{logged['kl']:.1f}"}

    def reconstruction_grid(epoch: int) -> None:
        metrics, recon = evaluate(vae, holdout, device)
        save_comparison(holdout, recon, run_dir / f"reconstructions_epoch{epoch + 1:03d}.png")
        log(f"epoch {epoch + 1}: held-out PSNR {metrics['psnr_db']:.2f} dB, L1 {metrics['l1']:.4f}")

    gan = SimpleNamespace(on=False, pair=None)  # whether this step trains the discriminator, on which images
    loop = Loop("AE", cfg.train, batches, total_steps, progress, state, procs, log, opt, run_dir, guard_key="total")
    loop.run(objective, update, describe, every=cfg.train.grid_every, at_epoch=reconstruction_grid)
    train_seconds = progress.seconds()
    del train_vae  # the DDP wrapper holds the process group: drop it before procs.finish()
    procs.check_same_weights(vae.state_dict())
    if not procs.is_main:  # process 0 alone evaluates and writes
        procs.finish()
        return {"run_dir": None, "rank": procs.rank}

    # Evaluation on the held-out split, with LPIPS where its weights are present.
    if lpips_model is None:
        try:
            lpips_model = load_lpips().to(device)
        except UserError as err:
            log(f"held-out LPIPS not computed: {err}")
    metrics, recon = evaluate(vae, holdout, device, lpips_model)
    save_comparison(holdout, recon, run_dir / "reconstructions.png")
    # Latent statistics over the training set (unflipped), for stage 2's scaling.
    vae.eval()
    train_pixels = to_unit_range(stats_images)
    post_mean, post_std = encode_posterior(vae, train_pixels, device=device)
    stats = latent_statistics(post_mean, post_std, seed=cfg.seed)
    # How picture-like the posterior means are, next to the sprites averaged down to the latent size.
    smoothness = {"latent_means": spatial_smoothness(post_mean),
                  "sprites_at_latent_size": spatial_smoothness(
                      F.avg_pool2d(train_pixels, vae.downsample_factor))}
    history = progress.history
    metrics.update(training_metrics(progress.step, cfg.train.batch_size, len(batches), train_seconds, n_params,
                                    device, use_bf16))
    metrics.update({
        "final_loss": history["total"][-1] if history["total"] else None,
        "final_l1": history["l1"][-1] if history["l1"] else None,
        "final_disc_loss": history["disc"][-1] if history.get("disc") else None,
        "latent": stats,
        "latent_smoothness": smoothness,
    })
    ckpt = {
        "kind": "autoencoder",
        "format": FORMAT_VERSION,
        "config": to_dict(cfg),
        "model": cpu_state_dict(vae),
        "latent": stats,
        "data_fingerprint": data.fingerprint,
        "metrics": {k: v for k, v in metrics.items() if k != "latent"},
    }
    path = finish_run(run_dir, ckpt, CHECKPOINT_NAME, metrics, {k: v for k, v in history.items() if k not in ("kl", "disc")},
                      title=f"VAE training ({cfg.run_name})")
    log(f"held-out PSNR {metrics['psnr_db']:.2f} dB, L1 {metrics['l1']:.4f}, LPIPS {metrics['lpips']} | "
        f"{train_seconds / 60:.1f} min, {metrics['train_img_per_s']} img/s | latent scale {stats['scale']:.3f}, "
        f"channel std {[round(s, 2) for s in stats['channel_std']]}")
    log("latent means: neighbour correlation {neighbour_correlation:.2f}, high-frequency power {high_frequency_power:.2f}"
        .format(**smoothness["latent_means"]) + " (sprites at the latent size: {neighbour_correlation:.2f}, "
        "{high_frequency_power:.2f})".format(**smoothness["sprites_at_latent_size"]))
    log(f"saved {path}")
    procs.finish()
    return {"run_dir": str(run_dir), **metrics}


