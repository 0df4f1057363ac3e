"""Benchmark: one VAE training step, ours against diffusers' AutoencoderKL at equal widths.

    python -m benchmarks.ae_step [--batch 32] [--size 64] [--repeats 7] [--out benchmarks/results/ae_step.json]

Both models get the same job: a batch of B images at size x size, forward, L1 + KL loss, backward,
AdamW step. diffusers is configured as the issue's reference: the same widths per level, one block per
level and the same latent shape (4 x size/4 x size/4). Medians over `repeats` timed steps after 2 warm-up steps,
measured alternately in one process, so the ratio is what counts. Achieved GFLOP/s uses
torch.utils.flop_counter. diffusers is a benchmark-only dependency (requirements-bench.txt).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from autoencoder.config import AEConfig
from autoencoder.latents import build_vae
from autoencoder.losses import kl_to_standard_normal
from plumbing.config import load_config
from plumbing.device import autocast, bf16_supported


def ours(cfg: AEConfig):
    model = build_vae(cfg)

    def forward(x):
        x_hat, mean, logvar = model(x)
        return x_hat, mean, logvar
    return model, forward


def diffusers_vae(cfg: AEConfig):
    from diffusers import AutoencoderKL

    widths = tuple(cfg.model.channels)
    model = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=widths,
                          down_block_types=("DownEncoderBlock2D",) * len(widths),
                          up_block_types=("UpDecoderBlock2D",) * len(widths),
                          layers_per_block=1, latent_channels=cfg.model.latent_channels,
                          norm_num_groups=min(32, widths[0]), sample_size=cfg.data.size)

    def forward(x):
        posterior = model.encode(x).latent_dist
        z = posterior.sample()
        return model.decode(z).sample, posterior.mean, posterior.logvar
    return model, forward


def time_step(model, forward, x, use_bf16: bool, repeats: int) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    device = x.device

    def step():
        with autocast(device, use_bf16):
            x_hat, mean, logvar = forward(x)
        loss = (x_hat.float() - x).abs().mean() + 1e-6 * kl_to_standard_normal(mean.float(), logvar.float()).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    step()  # second warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    flops = counter.get_total_flops()
    return {"median_s": med, "img_per_s": len(x) / med, "gflop_per_step": flops / 1e9, "gflop_per_s": flops / med / 1e9,
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/ae.yaml")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default="benchmarks/results/ae_step.json")
    args = p.parse_args()
    cfg = load_config(AEConfig, args.config, [])
    torch.manual_seed(0)
    device = torch.device("cpu")
    use_bf16 = cfg.train.bf16 and bf16_supported(device)
    x = torch.rand(args.batch, 3, cfg.data.size, cfg.data.size) * 2 - 1
    # Each model is timed in both memory layouts (NCHW and channels-last NHWC); the speed-up compares
    # each model's faster layout, so neither side is handicapped by a layout that suits it badly.
    results = {}
    for name, build in [("pokediffusion VAE", ours), ("diffusers AutoencoderKL", diffusers_vae)]:
        for layout, fmt in [("NCHW", torch.contiguous_format), ("NHWC", torch.channels_last)]:
            torch.manual_seed(0)
            model, forward = build(cfg)
            model = model.to(memory_format=fmt)
            results[f"{name}, {layout}"] = time_step(model, forward, x.contiguous(memory_format=fmt),
                                                     use_bf16, args.repeats)
    best = {name: min((r for key, r in results.items() if key.startswith(name)), key=lambda r: r["median_s"])
            for name in ["pokediffusion VAE", "diffusers AutoencoderKL"]}
    a, b = best["pokediffusion VAE"], best["diffusers AutoencoderKL"]
    ratio = b["median_s"] / a["median_s"]
    print(f"AE training step, batch {args.batch} at {cfg.data.size}x{cfg.data.size}, widths {cfg.model.channels}, "
          f"blocks per level: ours {cfg.model.blocks}, diffusers 1, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"bf16 {'on' if use_bf16 else 'off (not native on this CPU)'}")
    print(f"{'model, layout':32s} {'params':>8s} {'s/step':>8s} {'img/s':>8s} {'GFLOP/step':>11s} {'GFLOP/s':>8s}")
    for name, r in results.items():
        print(f"{name:32s} {r['params_M']:7.2f}M {r['median_s']:8.3f} {r['img_per_s']:8.1f} "
              f"{r['gflop_per_step']:11.1f} {r['gflop_per_s']:8.1f}")
    print(f"speed-up (diffusers time / ours, each in its faster layout): {ratio:.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                               "torch": torch.__version__, "bf16": use_bf16, "batch": args.batch,
                               "results": results, "speedup": ratio}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
