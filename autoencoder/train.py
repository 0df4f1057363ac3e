"""Train the stage-1 VAE.

    python -m autoencoder.train --config configs/ae.yaml [--out DIR] [section.key=value ...]

Writes into the run folder (default checkpoints/ae-<timestamp>/): config.yaml, log.txt, loss.png,
reconstructions.png (held-out inputs on odd rows, their reconstructions below them), metrics.json
and ae.pt (weights, resolved config, data fingerprint, latent statistics).
"""
from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm

from autoencoder.config import AEConfig
from autoencoder.latents import build_vae, encode_posterior, latent_statistics
from autoencoder.losses import PatchDiscriminator, hinge_d_loss, hinge_g_loss, kl_to_standard_normal, load_lpips
from plumbing.checkpoint import FORMAT_VERSION, save_atomic
from plumbing.cli import UserError, run_main
from plumbing.config import dump_yaml, load_config, to_dict
from plumbing.device import autocast, bf16_pays, machine_summary, precision_note, pick_device, seed_everything
from plumbing.optim import warmup_cosine
from plumbing.pictures import save_grid
from plumbing.runs import RunLog, new_run_dir, save_loss_curve, write_json
from sprites.dataset import EpochBatches, load_sprites, pixel_batch, to_unit_range

CHECKPOINT_NAME = "ae.pt"


def parse_args(argv: list[str]) -> tuple[AEConfig, str | None]:
    parser = argparse.ArgumentParser(prog="python -m autoencoder.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/ae.yaml", help="YAML config (default: configs/ae.yaml)")
    parser.add_argument("--out", default=None, help="run folder (default: a new folder under checkpoints/)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.epochs=5")
    args = parser.parse_args(argv)
    return load_config(AEConfig, args.config, args.overrides), args.out


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


def train(cfg: AEConfig, out: str | None) -> dict:
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    lpips_model = None
    if cfg.loss.perceptual_weight > 0:  # fail before any work when the weights are missing
        lpips_model = load_lpips(cfg.loss.perceptual_net).to(device)
    data = load_sprites(cfg.data.root, cfg.data.size, cfg.data.cache_dir, cfg.data.holdout, cfg.data.split_seed)
    train_images = data.train()
    batches = EpochBatches(len(train_images), cfg.train.batch_size, cfg.seed, cfg.data.hflip)
    holdout = to_unit_range(data.holdout())

    run_dir = new_run_dir(out, cfg.run_name)
    dump_yaml(cfg, run_dir / "config.yaml")
    log = RunLog(run_dir)
    use_bf16 = cfg.train.bf16 and bf16_pays(device)
    log(f"run folder {run_dir} | device {device} | {precision_note(device, cfg.train.bf16)}")
    log(f"data {cfg.data.root}: {len(data.train_idx)} train / {len(data.holdout_idx)} held-out images at "
        f"{cfg.data.size}px, fingerprint {data.fingerprint[:12]}")

    vae = build_vae(cfg)
    if cfg.model.colour_whitening:
        vae.set_colour_statistics(to_unit_range(train_images))
    vae = vae.to(device)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    vae = vae.to(memory_format=memory_format)
    n_params = sum(p.numel() for p in vae.parameters())
    log(f"VAE {n_params / 1e6:.2f}M parameters, f={vae.downsample_factor}, latent "
        f"{cfg.model.latent_channels}x{cfg.data.size // vae.downsample_factor}x{cfg.data.size // vae.downsample_factor}")
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                            betas=(0.9, 0.99))
    disc = opt_d = None
    if cfg.loss.disc_weight > 0:
        disc = PatchDiscriminator().to(device)
        opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.train.lr, betas=(0.5, 0.9))

    total_steps = cfg.train.epochs * len(batches)
    budget_s = cfg.train.max_minutes * 60
    steps, history = [], {"total": [], "l1": [], "kl": []}
    if lpips_model is not None:
        history["lpips"] = []
    step, start = 0, time.time()
    bar = tqdm(total=total_steps, desc="AE", unit="step", dynamic_ncols=True, mininterval=1.0)
    stopped_early = False
    for epoch in range(cfg.train.epochs):
        for idx, flip in batches.epoch(epoch):
            # Progress runs on steps, or on wall time when a budget is set (whichever is further).
            progress = step if not budget_s else max(step, int(total_steps * (time.time() - start) / budget_s))
            if progress >= total_steps:
                stopped_early = True
                break
            for group in opt.param_groups:
                group["lr"] = cfg.train.lr * warmup_cosine(progress, total_steps, cfg.train.warmup_steps,
                                                           cfg.train.lr_min_ratio)
            x = pixel_batch(train_images, idx, flip).to(device).contiguous(memory_format=memory_format)
            with autocast(device, use_bf16):
                x_hat, mean, logvar = vae(x)
            x_hat = x_hat.float()
            # L1 is a mean over the D = 3*H*W pixel values; the KL is per image (summed over latent
            # dims). Dividing the KL by D gives kl_weight the meaning it has in Rombach et al. (2022),
            # whose reconstruction loss is a sum over pixels (without it the same weight is D times
            # stronger: measured here, the KL then held the latents to ~2.8 nats per dimension).
            l1 = (x_hat - x).abs().mean()
            kl = kl_to_standard_normal(mean.float(), logvar.float()).mean()
            loss = cfg.loss.l1_weight * l1 + cfg.loss.kl_weight * kl / x[0].numel()
            if cfg.loss.colour_weight > 0:  # L1 on whitened colours: every colour axis counts alike
                loss = loss + cfg.loss.colour_weight * (vae.whiten(x_hat) - vae.whiten(x)).abs().mean()
            if lpips_model is not None:
                lp = lpips_model(x_hat, x).mean()
                loss = loss + cfg.loss.perceptual_weight * lp
            gan_on = disc is not None and step >= cfg.loss.disc_start
            if gan_on:
                loss = loss + cfg.loss.disc_weight * hinge_g_loss(disc(x_hat))
            if not torch.isfinite(loss):
                raise UserError(f"the loss became {loss.item()} at step {step}; lower train.lr "
                                f"(now {cfg.train.lr}) or raise train.grad_clip")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.train.grad_clip)
            opt.step()
            if gan_on:  # discriminator step on detached reconstructions
                d_loss = hinge_d_loss(disc(x), disc(x_hat.detach()))
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()

            steps.append(step)
            history["total"].append(loss.item())
            history["l1"].append(l1.item())
            history["kl"].append(kl.item())
            if lpips_model is not None:
                history["lpips"].append(lp.item())
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, l1=f"{l1.item():.4f}", kl=f"{kl.item():.1f}")
            if step % cfg.train.log_every == 0:
                log(f"epoch {epoch} step {step}/{total_steps} loss {loss.item():.4f} l1 {l1.item():.4f} "
                    f"kl {kl.item():.2f} lr {opt.param_groups[0]['lr']:.2e}")
        if stopped_early:
            break
        if cfg.train.grid_every and (epoch + 1) % cfg.train.grid_every == 0 and epoch + 1 < cfg.train.epochs:
            metrics, recon = evaluate(vae, holdout, device)
            save_comparison(holdout, recon, run_dir / f"reconstructions_epoch{epoch + 1:03d}.png")
            log(f"epoch {epoch + 1}: held-out PSNR {metrics['psnr_db']:.2f} dB, L1 {metrics['l1']:.4f}")
    bar.close()
    train_seconds = time.time() - start
    if stopped_early:
        log(f"time budget of {cfg.train.max_minutes} min reached after {step} steps")

    # Evaluation on the held-out split, with LPIPS where its weights are present.
    if lpips_model is None:
        try:
            lpips_model = load_lpips(cfg.loss.perceptual_net).to(device)
        except UserError as err:
            log(f"held-out LPIPS not computed: {err}")
    metrics, recon = evaluate(vae, holdout, device, lpips_model)
    save_comparison(holdout, recon, run_dir / "reconstructions.png")
    # Latent statistics over the training set (unflipped), for stage 2's scaling.
    vae.eval()
    post_mean, post_std = encode_posterior(vae, to_unit_range(train_images), device=device)
    stats = latent_statistics(post_mean, post_std, seed=cfg.seed)
    images_seen = step * cfg.train.batch_size
    metrics.update({
        "train_seconds": round(train_seconds, 1),
        "train_img_per_s": round(images_seen / max(train_seconds, 1e-9), 1),
        "steps": step,
        "epochs_completed": step / max(1, len(batches)),
        "final_loss": history["total"][-1] if history["total"] else None,
        "final_l1": history["l1"][-1] if history["l1"] else None,
        "parameters": n_params,
        "device": str(device),
        "bf16": use_bf16,
        "machine": machine_summary(device),
        "latent": stats,
    })
    ckpt = {
        "kind": "autoencoder",
        "format": FORMAT_VERSION,
        "config": to_dict(cfg),
        "model": {k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()},
        "latent": stats,
        "data_fingerprint": data.fingerprint,
        "metrics": {k: v for k, v in metrics.items() if k != "latent"},
    }
    save_atomic(ckpt, run_dir / CHECKPOINT_NAME)
    write_json(metrics, run_dir / "metrics.json")
    save_loss_curve(steps, {k: v for k, v in history.items() if k != "kl"}, run_dir / "loss.png",
                    title=f"VAE training ({cfg.run_name})")
    log(f"held-out PSNR {metrics['psnr_db']:.2f} dB, L1 {metrics['l1']:.4f}, LPIPS {metrics['lpips']} | "
        f"{train_seconds / 60:.1f} min, {metrics['train_img_per_s']} img/s | latent scale {stats['scale']:.3f}, "
        f"channel std {[round(s, 2) for s in stats['channel_std']]}")
    log(f"saved {run_dir / CHECKPOINT_NAME}")
    return {"run_dir": str(run_dir), **metrics}


def main(argv: list[str]) -> None:
    cfg, out = parse_args(argv)
    train(cfg, out)


if __name__ == "__main__":
    run_main(main)
