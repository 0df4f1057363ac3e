"""Train the stage-2 DDPM (x0-prediction, linear schedule) in latent or pixel space: `train(cfg)`,
called by the command (diffusion/train.py), the GPU runner and the tests.

Training objective, per batch (Ho et al. 2020 with the x0 parameterisation):
    log SNR ~ N(log_snr_mean, log_snr_std^2), t = the step with that log SNR,   eps ~ N(0, I),
    x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps
    L = mean_b || f_theta(x_t, t[, labels]) - x_0 ||^2 / D        (D = dimensions of x_0)

With labels (cond.labels, cond.style, cond.species) each kind is replaced by "no label" with probability
cond.drop_prob, on its own, for classifier-free guidance (diffusion/guidance.py).

Writes into the run folder (default checkpoints/<run_name>-<timestamp>/): config.yaml, log.txt,
loss.png, samples_epochNNNN.png, samples.png (EMA weights, DDIM), metrics.json, diffusion.pt, and
state-<step>.pt training-state checkpoints for --resume.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch

from diffusion.align import HiddenTerms
from diffusion.config import DiffusionConfig
from diffusion.guidance import dropped
from diffusion.labels import Labels, species_record, training_labels
from diffusion.denoiser import build_schedule, build_unet, make_denoiser, num_species, num_styles, num_types, predict_x0
from diffusion.pipeline import STATE_KIND, read_diffusion
from diffusion.samplers import ddim_sample
from diffusion.schedule import LinearSchedule
from diffusion.space import latent_cache, training_space
from diffusion.teacher import load_teacher, teacher_features
from plumbing.checkpoint import FORMAT_VERSION, cpu_state_dict
from plumbing.cli import UserError
from plumbing.config import to_dict
from plumbing.device import bf16_pays, precision_note, seed_everything, to_device
from plumbing.distributed import start_processes
from plumbing.loop import Loop
from plumbing.release import is_release
from plumbing.optim import EMA, adamw, clip_gradients
from plumbing.pictures import save_grid
from plumbing.resume import COMMON_RESUME_KEYS, Progress, Resumed, TrainingState, check_fingerprint, state_files
from plumbing.runs import RunLog, finish_run, open_run_dir, training_metrics
from sprites.config import SOURCES
from sprites.labels import NULL_SPECIES, TYPES, label_counts
from sprites.mixture import load_data, source_counts, training_batches

CHECKPOINT_NAME = "diffusion.pt"
COMMAND = "python -m diffusion.train"
# What --resume may change: only keys that leave the trained weights as they are (the sample grids
# draw from their own generator; a moved AE must have the same sha256).
RESUME_KEYS = COMMON_RESUME_KEYS | {"train.sample_every", "train.sample_n", "ae.ckpt", "train.init"}
# What a fine-tuning run (train.init) must share with the model it starts from: the network's shape.
INIT_KEYS = ("space", "data.size", "model.channels", "model.blocks", "model.attention_levels", "model.heads",
             "cond.labels", "cond.style", "cond.species")
# What --images DIR sets besides the data: a folder of one's own pictures has no Pokemon labels.
NO_LABELS = ["cond.labels=none", "cond.style=false", "cond.species=false"]
# The species of a species model's training-time grids, one per row: Bulbasaur, Charmander, Squirtle,
# Jigglypuff, Eevee, Gengar, Snorlax, Mewtwo (all in the corpus and trained on under the default split;
# Pikachu, 25, is held out).
GRID_SPECIES = (1, 4, 7, 39, 133, 94, 143, 150)


def grid_labels(cfg: DiffusionConfig, n: int, per_row: int = 8) -> Labels | None:
    """Labels of a training-time sample grid: one species per row of `per_row` (GRID_SPECIES, style
    artwork when also style-conditional), else one type per row (types in order; style artwork when
    also style-conditional), or one style per row for a style-only model."""
    row = torch.arange(n) // per_row
    if num_species(cfg):
        species = torch.tensor(GRID_SPECIES)[row % len(GRID_SPECIES)] - 1
        return Labels(None, torch.zeros(n, dtype=torch.long) if num_styles(cfg) else None, species)
    if num_types(cfg):
        return Labels(row % len(TYPES), torch.zeros(n, dtype=torch.long) if num_styles(cfg) else None)
    if num_styles(cfg):
        return Labels(None, row % len(SOURCES))
    return None


def draw_t(schedule: LinearSchedule, n: int, cfg, gen: torch.Generator) -> torch.Tensor:
    """The training steps t of one batch: lambda ~ N(log_snr_mean, log_snr_std^2), t = argmin_s |log SNR(s) - lambda|.

    Under t ~ Uniform{0..T-1} (Ho et al. 2020) about half the steps of the linear schedule have
    SNR < 0.09, where the best x0 estimate is little more than the data mean; the log-normal puts
    most steps at SNR 0.1-100, where the shapes are decided (Karras et al. 2022, sec. 5:
    ln sigma ~ N(-1.2, 1.2^2) for data of std 0.5, which is log SNR ~ N(1.0, 2.4^2) for unit-variance
    data, sigma^2 = 1 / SNR; docs/design.md has the comparison)."""
    log_snr = cfg.log_snr_mean + cfg.log_snr_std * torch.randn(n, generator=gen, dtype=torch.float64)
    return schedule.t_from_log_snr(log_snr)


@torch.no_grad()
def sample_grid(model, schedule, space, cfg: DiffusionConfig, device, use_bf16: bool, n: int, seed: int) -> torch.Tensor:
    """n samples (DDIM, config's steps and eta) decoded to pixels, from a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    denoise = make_denoiser(model, device, use_bf16, grid_labels(cfg, n), cfg.cond.guidance)
    x, _ = ddim_sample(denoise, schedule, (n, *space.shape), gen, device, space.clip, steps=cfg.sample.steps,
                       eta=cfg.sample.eta)
    model.train()
    return space.decode(x).cpu()


def init_model(path: str) -> dict:
    """{"config", "ema", "ae", "labels"} of train.init (diffusion/pipeline.py, read_diffusion): a release, a
    diffusion.pt, a training state, a finished run folder, or a stopped one (no diffusion.pt yet: the
    EMA weights of its newest training state, state-<step>.pt)."""
    folder = Path(path)
    if folder.is_dir() and not (folder / CHECKPOINT_NAME).is_file() and not is_release(folder):
        states = state_files(folder)
        if not states:
            raise UserError(f"train.init={path} holds neither {CHECKPOINT_NAME} nor a training state (state-*.pt); "
                            "pass a release, a run folder or a diffusion.pt")
        return read_diffusion(states[-1])
    return read_diffusion(path)


def starting_point(cfg: DiffusionConfig) -> tuple[dict | None, dict | None, list[int]]:
    """(EMA weights, AE record, species it trained on) of the model a fine-tuning run starts from
    (train.init), else (None, None, []). Its space and network must be the config's (INIT_KEYS)."""
    if not cfg.train.init:
        return None, None, []
    init = init_model(cfg.train.init)
    mine, theirs = to_dict(cfg), init["config"]
    for key in INIT_KEYS:
        a, b = mine, theirs
        for part in key.split("."):
            a, b = a[part], b[part]
        if a != b:
            raise UserError(f"train.init={cfg.train.init} has {key}={b}, this config {key}={a}; set {key}={b} "
                            "(fine-tuning keeps the network)")
    return init["ema"], init["ae"], init.get("labels", {}).get("trained_species", [])


def train(cfg: DiffusionConfig, out: str | None = None, resumed: Resumed | None = None) -> dict:
    """Train a DDPM from scratch or from train.init (into `out`), or continue the run `resumed`."""
    procs = start_processes(cfg.device, cfg.train.deterministic)  # this process among torchrun's, its device
    device = procs.device
    rows = procs.local_rows(cfg.train.batch_size)  # this process's rows of every global batch
    procs.agree_on_config(cfg)  # several processes: one config (a time budget included), or a UserError on all
    gen = seed_everything(cfg.seed)  # every draw of a step: t, noise, label dropout
    schedule = build_schedule(cfg)
    schedule.check_ends_in_noise(force=cfg.schedule.force)  # data-free check before any work
    init_weights, init_ae, earlier_species = starting_point(cfg) if not resumed else (None, None, [])
    if cfg.loss.align > 0:  # a missing or mismatched teacher stops the run before any work
        load_teacher(cfg.loss.teacher, cfg.data)
    data = procs.main_first("data", lambda: load_data(cfg.data))  # the others read process 0's image cache
    check_fingerprint(resumed, data.fingerprint, cfg.data.root)
    train_images = data.train()
    labels = training_labels(cfg, data)
    train_labels = None if labels is None else labels.index(data.train_idx)
    batches = training_batches(data, cfg.data, cfg.train.batch_size, cfg.seed)
    space, ae_record = training_space(cfg, device, resumed.state["ae"] if resumed else init_ae)
    procs.agree("the data", {"data fingerprint": data.fingerprint, "AE sha256": ae_record and ae_record["sha256"]},
                "give every machine the same images and AE (data.root, ae.ckpt)")
    run_dir = open_run_dir(out, cfg, resumed and resumed.run_dir, procs.is_main)
    procs.check_run_folder(run_dir)  # several machines: one run folder that every process sees
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
    if train_labels is not None and train_labels.type is not None:
        counts = label_counts(train_labels.type)
        log(f"conditioning on Type 1 ({len(train_labels) - counts['unlabelled']} labelled, {counts['unlabelled']} "
            f"unlabelled training images, trained as 'no label'); label dropout {cfg.cond.drop_prob}")
    if train_labels is not None and train_labels.style is not None:
        log(f"conditioning on the style ({', '.join(SOURCES)}); label dropout {cfg.cond.drop_prob}")
    if resumed:  # the species a resumed run's model had trained on before (a fine-tuning's starting model's)
        earlier_species = resumed.state.get("labels", {}).get("trained_species", [])
    species = species_record(cfg, data, earlier_species) if num_species(cfg) else {}
    label_record = {"types": list(TYPES) if num_types(cfg) else [], "styles": list(SOURCES) if num_styles(cfg) else [],
                    **species}
    if species:
        unnamed = int((train_labels.species == NULL_SPECIES).sum())
        log(f"conditioning on the species ({len(species['trained_species'])} Pokedex numbers; {unnamed} training images "
            f"of numbers the table does not name, trained as 'no label'); label dropout {cfg.cond.drop_prob}")
    t0 = time.time()
    images_key = hashlib.sha256(f"{data.fingerprint};{data.train_idx.tolist()}".encode()).hexdigest()
    cache = latent_cache(cfg.data.cache_dir, ae_record["sha256"], images_key) if ae_record else None
    procs.main_first("latents", lambda: space.prepare(train_images, cache))  # the others read its latent cache
    log(f"{len(train_images)} training images prepared in {time.time() - t0:.1f}s")
    features = None
    if cfg.loss.align > 0:
        t0 = time.time()
        features = procs.main_first("teacher features",  # the others read its feature cache
                                    lambda: teacher_features(cfg.loss.teacher, cfg.data, train_images, images_key, device))
        log(f"teacher {cfg.loss.teacher}: features {tuple(features.maps.shape[2:])} of every training image and "
            f"its mirror image in {time.time() - t0:.1f}s")
    diag = schedule.check_ends_in_noise(space.all_x0(), force=cfg.schedule.force)
    log(f"schedule T={schedule.T}, betas {schedule.beta_start:.3g}..{schedule.beta_end:.3g}: alpha_bar_T "
        f"{diag['alpha_bar_T']:.2e}, SNR_T {diag['snr_T']:.2e}, KL(q(x_T|x_0)||N(0,I)) {diag['kl_per_dim']:.2e} nats/dim")

    model = build_unet(cfg, space.shape[0]).to(device)
    if init_weights is not None:
        model.load_state_dict({k: v.float() for k, v in init_weights.items()})
        log(f"starting from the EMA weights of {cfg.train.init}")
    ema = EMA(model, cfg.train.ema_decay)
    sampler_model = build_unet(cfg, space.shape[0]).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"U-Net {n_params / 1e6:.2f}M parameters")
    # loss.align: a hook on the training model's hidden state; the alignment's projection
    # trains with the U-Net and lives in the training state only (diffusion/align.py)
    terms = HiddenTerms(cfg.loss, model, features)
    projection = terms.projection.to(device) if terms.projection is not None else None
    if terms:
        log(f"hidden-state terms: {terms.describe()}")
    trained = list(model.parameters()) + (list(projection.parameters()) if projection is not None else [])
    opt = adamw(trained, cfg.train.lr, device, weight_decay=0.0)

    # Training-state checkpoints (plumbing/resume.py): everything the next step depends on.
    parts = {"model": model, "ema": ema, "optimizer": opt, **({"projection": projection} if projection is not None else {})}
    state = TrainingState(run_dir, STATE_KIND, COMMAND, cfg, parts=parts,
                          generators={"noise": gen}, device=device, every=cfg.train.ckpt_every,
                          keep_last=cfg.train.keep_last, enabled=procs.is_main,
                          extra={"data_fingerprint": data.fingerprint, "ae": ae_record, "labels": label_record})
    progress = state.restore(resumed) if resumed else Progress(history={"loss": [], **{k: [] for k in terms.names()}})
    if resumed:
        log(f"resumed from {resumed.path} at step {progress.step} (epoch {progress.epoch}, batch {progress.batch})")
    train_model = procs.wrap(model, cfg.train.compile)  # DDP over the processes, torch.compile if asked

    total_steps = cfg.train.epochs * len(batches)
    if cfg.train.max_steps:  # a step budget: the schedule spans it, and the run stops there
        total_steps = min(total_steps, cfg.train.max_steps)
    losses = progress.history["loss"]

    def objective(idx: torch.Tensor, flip: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The DDPM loss of one batch (module docstring). Every process draws the whole global batch
        (the draws one process would make) and trains on its own rows of it."""
        procs.seed_dropout(cfg.seed, progress.step)  # several processes: each its own dropout noise
        x0 = space.batch(idx, flip)                                  # x_0 (latents or pixels)
        t = draw_t(schedule, len(x0), cfg.train, gen)                # t, by its log SNR
        noise = torch.randn(x0.shape, generator=gen)                 # eps ~ N(0, I)
        y = None
        if train_labels is not None:  # classifier-free guidance: drop some labels to "no label"
            y = dropped(train_labels.index(idx), cfg.cond.drop_prob, gen)
        y = None if y is None else y.index(rows).to(device)
        x0, t, noise = x0[rows], t[rows], noise[rows]
        xt = schedule.q_sample(x0, t, noise)                         # x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps
        x0, xt, t = (to_device(v, device) for v in (x0, xt, t))      # pinned, non-blocking on CUDA
        x0_hat = predict_x0(train_model, xt, t, use_bf16, y)         # f_theta(x_t, t[, y])
        loss = (x0_hat - x0).pow(2).mean()                           # || f_theta - x_0 ||^2 / D
        logged = {"loss": procs.mean(loss.detach()).item()}         # the same on every process
        if terms:  # training-only terms on the hidden states of this forward pass (diffusion/align.py)
            extra, values = terms(idx[rows], flip[rows], progress.step)
            loss = loss + extra
            logged.update({name: procs.mean(value).item() for name, value in values.items()})
        return loss, logged

    def update(loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()  # with DDP: gradients averaged over the processes
        if projection is not None:
            procs.average_gradients(projection)  # outside DDP: averaged here
        if cfg.train.grad_clip > 0:
            clip_gradients(model.parameters(), cfg.train.grad_clip)
        opt.step()
        ema.update(model)

    def sample_epoch_grid(epoch: int) -> None:
        sampler_model.load_state_dict(ema.shadow)
        grid = sample_grid(sampler_model, schedule, space, cfg, device, use_bf16, cfg.train.sample_n, cfg.seed)
        save_grid(grid, run_dir / f"samples_epoch{epoch + 1:04d}.png")

    loop = Loop(f"DDPM ({space.name})", cfg.train, batches, total_steps, progress, state, procs, log, opt, run_dir,
                guard_key="loss", guard_can_init=True)
    loop.run(objective, update, lambda logged: (f"loss {logged['loss']:.4f}", {"loss": f"{logged['loss']:.4f}"}),
             every=cfg.train.sample_every, at_epoch=sample_epoch_grid)
    train_seconds = progress.seconds()
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
        **{f"final_{name}_mean_last_epoch": sum(v[-len(batches):]) / len(v[-len(batches):])
           for name, v in progress.history.items() if name != "loss" and v},
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
        "labels": label_record,
        "data_fingerprint": data.fingerprint,
        "metrics": {k: v for k, v in metrics.items() if k != "schedule"},
    }
    path = finish_run(run_dir, ckpt, CHECKPOINT_NAME, metrics, {"x0 MSE (log-normal noise levels)": losses},
                      title=f"DDPM training in {space.name} space ({cfg.run_name})")
    log(f"{progress.step} steps in {train_seconds / 60:.1f} min ({metrics['train_img_per_s']} img/s), "
        f"final loss {metrics['final_loss_mean_last_epoch']:.4f}; {cfg.train.sample_n} DDIM-{cfg.sample.steps} "
        f"samples in {sample_seconds:.1f}s")
    log(f"saved {path}")
    procs.finish()
    return {"run_dir": str(run_dir), **metrics}


