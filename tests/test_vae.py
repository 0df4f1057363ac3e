"""Stage 1: VAE shapes, the KL term, a short training run, its checkpoint and its determinism."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.distributions import Normal, kl_divergence
from torch.nn import functional as F

import autoencoder.trainer as ae_trainer
from autoencoder.config import AEConfig
from autoencoder.latents import build_vae, encode_posterior, latent_statistics, load_autoencoder, spatial_smoothness
from autoencoder.losses import PatchDiscriminator, hinge_d_loss, hinge_g_loss, kl_to_standard_normal
from autoencoder.vae import VAE
from plumbing.checkpoint import FORMAT_VERSION, load_checkpoint
from plumbing.cli import UserError
from plumbing.config import load_config, to_dict
from sprites.dataset import load_artworks, to_unit_range
from tests.helpers import TINY_AE, offline_training
from autoencoder.trainer import discriminator_on
from plumbing.checkpoint import save_atomic

RUN_FILES = ["config.yaml", "log.txt", "loss.png", "reconstructions.png", "metrics.json", "ae.pt"]


# --- model shapes ----------------------------------------------------------------------------

@pytest.mark.parametrize("channels, f", [([8, 16, 32], 4), ([8, 16, 16, 32], 8)])
def test_encoder_decoder_shapes(channels, f):
    torch.manual_seed(0)
    vae = VAE(channels, blocks=1, latent_channels=4)
    assert vae.downsample_factor == f
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    mean, logvar = vae.encode(x)
    assert mean.shape == logvar.shape == (2, 4, 32 // f, 32 // f)
    x_hat = vae.decode(mean)
    assert x_hat.shape == (2, 3, 32, 32)
    out, m2, lv2 = vae(x)
    assert out.shape == (2, 3, 32, 32) and m2.shape == lv2.shape == (2, 4, 32 // f, 32 // f)
    # non-square inputs work too (fully convolutional)
    assert vae.encode(torch.zeros(1, 3, 2 * f, 4 * f))[0].shape == (1, 4, 2, 4)


def test_blocks_per_level():
    """blocks=[0, 1, 2]: no residual block at full resolution, then 1 and 2 (mirrored in the decoder)."""
    vae = VAE([8, 16, 32], blocks=[0, 1, 2], latent_channels=4)
    enc = [type(m).__name__ for m in vae.encoder.body]
    dec = [type(m).__name__ for m in vae.decoder.body]
    assert enc == ["Conv2d", "ResBlock", "Conv2d", "ResBlock", "ResBlock"]
    assert dec == ["ResBlock", "ResBlock", "ConvTranspose2d", "ResBlock", "ConvTranspose2d"]
    assert vae(torch.zeros(1, 3, 16, 16))[0].shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="one entry per level"):
        VAE([8, 16, 32], blocks=[1, 1], latent_channels=4)


def test_decode_is_clipped_forward_is_not():
    torch.manual_seed(0)
    vae = VAE([8, 16], 1, 3)
    with torch.no_grad():
        vae.decoder.conv_out.bias.fill_(5.0)  # push the raw output far outside [-1, 1]
        z = torch.randn(2, 3, 4, 4)
        assert float(vae.decode(z).max()) <= 1.0 and float(vae.decode(z).min()) >= -1.0
        raw, _, _ = vae(torch.zeros(2, 3, 8, 8))
        assert float(raw.max()) > 1.0


def test_sample_posterior_reparameterisation():
    mean = torch.full((4000, 2, 1, 1), 0.5, requires_grad=True)
    logvar = torch.full((4000, 2, 1, 1), float(np.log(4.0)), requires_grad=True)  # std 2
    z = VAE.sample_posterior(mean, logvar, generator=torch.Generator().manual_seed(0))
    assert abs(float(z.detach().mean()) - 0.5) < 0.1 and abs(float(z.detach().std()) - 2.0) < 0.1
    z.sum().backward()  # differentiable in both parameters
    assert mean.grad is not None and logvar.grad is not None and float(logvar.grad.abs().sum()) > 0
    z1 = VAE.sample_posterior(mean, logvar, generator=torch.Generator().manual_seed(1))
    z2 = VAE.sample_posterior(mean, logvar, generator=torch.Generator().manual_seed(1))
    assert torch.equal(z1, z2)


def test_logvar_is_clamped():
    torch.manual_seed(0)
    vae = VAE([8, 16], 1, 2)
    with torch.no_grad():
        vae.encoder.conv_out.bias.fill_(1e4)
        _, logvar = vae.encode(torch.zeros(1, 3, 8, 8))
    assert float(logvar.max()) <= 20.0 and torch.isfinite(logvar.exp()).all()


# --- the KL term ------------------------------------------------------------------------------

def test_kl_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 4, 5, 5, generator=gen, dtype=torch.float64)
    logvar = torch.randn(3, 4, 5, 5, generator=gen, dtype=torch.float64) * 2
    ours = kl_to_standard_normal(mu, logvar)
    ref = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(torch.zeros_like(mu), torch.ones_like(mu)))
    assert ours.shape == (3,)
    torch.testing.assert_close(ours, ref.flatten(1).sum(dim=1), rtol=1e-10, atol=1e-10)


def test_kl_zero_only_at_the_prior():
    zeros = torch.zeros(2, 4, 3, 3)
    assert torch.equal(kl_to_standard_normal(zeros, zeros), torch.zeros(2))
    assert (kl_to_standard_normal(zeros + 0.1, zeros) > 0).all()
    assert (kl_to_standard_normal(zeros, zeros - 0.1) > 0).all()
    # one dimension with mu = 1, s^2 = 1: KL = 1/2
    assert kl_to_standard_normal(torch.ones(1, 1), torch.zeros(1, 1)).item() == pytest.approx(0.5)


# --- a short training run ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(sprite_dir, tmp_path_factory):
    """One 60-step training run on the synthetic sprites (about 3 s), shared by several tests."""
    root = tmp_path_factory.mktemp("trained")
    captured = {}
    with offline_training() as mp:
        def capture(cfg):
            captured["vae"] = build_vae(cfg)
            return captured["vae"]

        mp.setattr(ae_trainer, "build_vae", capture)
        cfg = load_config(AEConfig, None, [f"data.root={sprite_dir}", f"data.cache_dir={root / 'cache'}"] + TINY_AE
                          + ["train.epochs=30", "train.grid_every=10"])
        result = ae_trainer.train(cfg, str(root / "run"))
    return {"cfg": cfg, "result": result, "run_dir": Path(result["run_dir"]), "vae": captured["vae"]}


def _logged_l1(run_dir: Path) -> list[float]:
    return [float(v) for v in re.findall(r"\bl1 ([0-9.]+) kl", (run_dir / "log.txt").read_text())]


def test_training_loss_falls(trained):
    l1 = _logged_l1(trained["run_dir"])
    assert len(l1) == 60  # 30 epochs x (21 train images // 8) steps, logged every step
    first, last = np.mean(l1[:5]), np.mean(l1[-5:])
    assert first > 0.3  # a fresh decoder is far from the sprites (it starts near their mean colour)
    assert last < 0.6 * first, (first, last)
    metrics = trained["result"]
    assert metrics["final_l1"] == pytest.approx(l1[-1], abs=1e-4)
    assert metrics["steps"] == 60 and metrics["epochs_completed"] == 30
    assert np.isfinite(metrics["psnr_db"]) and metrics["psnr_db"] > 10
    # held-out L1 is on the [0, 1] scale (half the [-1, 1] one); unseen images improve too
    assert 0 < 2 * metrics["l1"] < 0.7 * first


def test_training_writes_the_run_folder(trained):
    run_dir = trained["run_dir"]
    for name in RUN_FILES:
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    # intermediate grids every 10 epochs, except at the end (that one is reconstructions.png)
    grids = sorted(p.name for p in run_dir.glob("reconstructions_epoch*.png"))
    assert grids == ["reconstructions_epoch010.png", "reconstructions_epoch020.png"]
    for name in ["loss.png", "reconstructions.png"]:
        with Image.open(run_dir / name) as img:
            img.verify()
    # the grid holds the 2 held-out inputs and their 2 reconstructions, 16 px each with 2 px gaps
    with Image.open(run_dir / "reconstructions.png") as img:
        w, h = img.size
    assert ((w - 2) // 18) * ((h - 2) // 18) >= 4
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = {k: v for k, v in trained["result"].items() if k != "run_dir"}
    assert metrics.keys() == expected.keys()
    for key in ["psnr_db", "l1", "final_l1", "steps", "train_seconds", "train_img_per_s", "parameters"]:
        assert metrics[key] == pytest.approx(expected[key])
    assert metrics["lpips"] is None  # weights unavailable: reported as missing, not faked
    assert metrics["holdout_images"] == 2  # round(0.1 * 24)
    assert load_config(AEConfig, run_dir / "config.yaml", []) == trained["cfg"]
    assert "held-out LPIPS not computed" in (run_dir / "log.txt").read_text()
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*"))


def test_reconstruction_grid_puts_reconstructions_below_inputs(trained):
    with Image.open(trained["run_dir"] / "reconstructions.png") as img:
        assert img.size == (2 * 18 + 2, 2 * 18 + 2)


def test_checkpoint_contents(trained, tmp_path):
    path = trained["run_dir"] / "ae.pt"
    raw = torch.load(path, weights_only=True)  # plain tensors and containers only
    ckpt = load_checkpoint(path, kind="autoencoder")
    assert raw.keys() == ckpt.keys()
    assert ckpt["kind"] == "autoencoder" and ckpt["format"] == FORMAT_VERSION
    assert ckpt["config"] == to_dict(trained["cfg"])
    data = load_artworks(trained["cfg"].data.root, 16, tmp_path / "c")
    assert ckpt["data_fingerprint"] == data.fingerprint
    stats = ckpt["latent"]
    assert set(stats) >= {"scale", "channel_mean", "channel_std", "global_mean", "global_std"}
    assert len(stats["channel_mean"]) == len(stats["channel_std"]) == 4
    assert np.isfinite(stats["scale"]) and stats["scale"] > 0
    assert stats["scale"] == pytest.approx(1.0 / stats["global_std"], rel=1e-5)
    assert all(s > 0 for s in stats["channel_std"])
    assert stats == trained["result"]["latent"]
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())


def test_checkpoint_round_trip(trained, tmp_path):
    vae_trained = trained["vae"].eval()
    vae, ckpt = load_autoencoder(trained["run_dir"] / "ae.pt")
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())
    state = vae_trained.state_dict()
    assert state.keys() == ckpt["model"].keys()
    for k, v in vae.state_dict().items():
        assert torch.equal(v, state[k]), k
    cfg = trained["cfg"]
    data = load_artworks(cfg.data.root, cfg.data.size, tmp_path / "c", cfg.data.holdout, cfg.data.split_seed)
    x = to_unit_range(data.images[:6])
    with torch.no_grad():
        m1, lv1 = vae_trained.encode(x)
        m2, lv2 = vae.encode(x)
        torch.testing.assert_close(m2, m1, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lv2, lv1, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(vae.decode(m2), vae_trained.decode(m1), rtol=1e-5, atol=1e-5)
    # the stored latent statistics are those of the saved weights on the training images
    mean, std = encode_posterior(vae, to_unit_range(data.images[data.train_idx]))
    again = latent_statistics(mean, std, seed=trained["cfg"].seed)
    assert again["scale"] == pytest.approx(ckpt["latent"]["scale"], rel=1e-4)
    assert again["channel_mean"] == pytest.approx(ckpt["latent"]["channel_mean"], abs=1e-4)


def test_load_autoencoder_refuses_other_kinds(trained, tmp_path):
    ckpt = torch.load(trained["run_dir"] / "ae.pt", weights_only=True)
    ckpt["kind"] = "ldm"
    save_atomic(ckpt, tmp_path / "ldm.pt")
    with pytest.raises(UserError, match="expected 'autoencoder'"):
        load_autoencoder(tmp_path / "ldm.pt")


def test_training_is_deterministic(make_ae_config, tmp_path, no_lpips):
    cfg = make_ae_config("train.epochs=2", "seed=3")
    a = ae_trainer.train(cfg, str(tmp_path / "a"))
    b = ae_trainer.train(cfg, str(tmp_path / "b"))
    wa = torch.load(Path(a["run_dir"]) / "ae.pt", weights_only=True)
    wb = torch.load(Path(b["run_dir"]) / "ae.pt", weights_only=True)
    assert wa["model"].keys() == wb["model"].keys()
    for k in wa["model"]:
        assert torch.equal(wa["model"][k], wb["model"][k]), k
    assert wa["latent"] == wb["latent"]
    assert a["final_l1"] == b["final_l1"]
    # ... and the comparison is not vacuous: another seed gives other weights
    c = ae_trainer.train(make_ae_config("train.epochs=2", "seed=4"), str(tmp_path / "c"))
    wc = torch.load(Path(c["run_dir"]) / "ae.pt", weights_only=True)
    assert any(not torch.equal(wa["model"][k], wc["model"][k]) for k in wa["model"])


def test_batch_size_larger_than_train_set(make_ae_config, tmp_path, no_lpips):
    with pytest.raises(UserError, match="train.batch_size=64"):
        ae_trainer.train(make_ae_config("train.batch_size=64"), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # fails before creating the run folder


def test_zero_holdout_is_rejected_before_training(make_ae_config):
    with pytest.raises(UserError, match="data.holdout=0"):
        make_ae_config("data.holdout=0", "train.epochs=1")


def test_colour_whitening_is_an_exact_invertible_decorrelation():
    """W (x - m) has identity colour covariance, and unwhiten(whiten(x)) == x."""
    gen = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.2, 0.1], [0.3, 0.8, 0.0], [0.5, 0.5, 0.6]])
    x = torch.einsum("ij,bjhw->bihw", mix, torch.randn(64, 3, 8, 8, generator=gen) * 0.3)
    vae = VAE([8, 16], 1, 4)
    vae.set_colour_statistics(x)
    xw = vae.whiten(x)
    cov = torch.cov(xw.permute(1, 0, 2, 3).reshape(3, -1))
    assert torch.allclose(cov, torch.eye(3), atol=1e-4)
    assert torch.allclose(xw.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(vae.unwhiten(xw), x, atol=1e-5)


def test_colour_statistics_travel_with_the_weights():
    x = torch.rand(16, 3, 8, 8) * 2 - 1
    vae = VAE([8, 16], 1, 4)
    vae.set_colour_statistics(x)
    other = VAE([8, 16], 1, 4)
    other.load_state_dict(vae.state_dict())
    assert torch.equal(other.colour_to_white, vae.colour_to_white)
    assert not torch.equal(other.colour_to_white, torch.eye(3))


# --- the smoothness of the latents ------------------------------------------------------------

def test_spatial_smoothness_of_white_noise_and_of_smooth_fields():
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(512, 4, 16, 16, generator=gen)
    white = spatial_smoothness(noise)
    # white noise: no neighbour correlation, and power spread evenly over the non-DC frequency bins
    f = torch.fft.fftfreq(16)
    radius = (f.view(-1, 1) ** 2 + f.view(1, -1) ** 2).sqrt()
    assert abs(white["neighbour_correlation"]) < 0.01
    assert white["high_frequency_power"] == pytest.approx(float((radius > 0.25).sum()) / (16 * 16 - 1), abs=0.01)
    # a field interpolated from 4x4 noise is smooth: strongly correlated, little high-frequency power
    smooth = spatial_smoothness(F.interpolate(noise[:, :, :4, :4], size=16, mode="bilinear"))
    assert smooth["neighbour_correlation"] > 0.8 and smooth["high_frequency_power"] < 0.1
    # per-channel standardisation: scaling and shifting a channel changes nothing
    scaled = noise * torch.tensor([1.0, 5.0, 0.1, 2.0]).view(1, 4, 1, 1) + 3.0
    assert spatial_smoothness(scaled) == pytest.approx(white, abs=1e-5)


def test_hinge_losses_have_their_closed_form():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 0.0, 0.5])
    # L_D = 1/2 [mean relu(1 - D(x)) + mean relu(1 + D(x_hat))]
    expected = 0.5 * (np.mean([0.0, 0.5, 2.0]) + np.mean([0.0, 1.0, 1.5]))
    assert hinge_d_loss(real, fake).item() == pytest.approx(expected)
    assert hinge_d_loss(torch.zeros(5), torch.zeros(5)).item() == 1.0  # chance: all logits 0
    assert hinge_d_loss(torch.full((5,), 1.5), torch.full((5,), -1.5)).item() == 0.0  # beyond the margin
    assert hinge_g_loss(fake).item() == pytest.approx(-fake.mean().item())


@pytest.mark.parametrize("size, patches", [(16, 1), (64, 7)])
def test_patch_discriminator_gives_one_logit_per_patch(size, patches):
    torch.manual_seed(0)
    logits = PatchDiscriminator()(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 1, patches, patches)


def test_discriminator_run_logs_its_loss_and_keeps_it_out_of_the_weights(make_ae_config, tmp_path, no_lpips):
    """A short run with the discriminator from step 10: its hinge loss is logged from that step on
    and moves away from chance as it learns to tell reconstructions from sprites, the
    reconstruction still improves, the run is deterministic with it, and the VAE checkpoint holds
    the VAE alone (the discriminator is for training only)."""
    gan = ["train.epochs=15", "loss.disc_weight=0.1", "loss.disc_start=0.33"]  # 30 steps: on from step 10
    result = ae_trainer.train(make_ae_config(*gan), str(tmp_path / "a"))
    text = (Path(result["run_dir"]) / "log.txt").read_text()
    steps = [int(s) for s in re.findall(r"step (\d+)/\d+ loss", text)]
    with_disc = [int(s) for s in re.findall(r"step (\d+)/\d+ loss .* disc [0-9.]+ lr", text)]
    assert steps == list(range(1, 31)) and with_disc == list(range(11, 31))
    disc = [float(v) for v in re.findall(r" disc ([0-9.]+) lr", text)]
    assert all(np.isfinite(disc)) and np.mean(disc[-5:]) < 0.95, disc
    assert result["final_disc_loss"] == pytest.approx(disc[-1], abs=1e-4)
    l1 = _logged_l1(Path(result["run_dir"]))
    assert np.mean(l1[-5:]) < 0.8 * np.mean(l1[:5])
    again = ae_trainer.train(make_ae_config(*gan), str(tmp_path / "b"))
    wa, wb = (torch.load(Path(r["run_dir"]) / "ae.pt", weights_only=True) for r in (result, again))
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])
    assert wa["model"].keys() == build_vae(make_ae_config(*gan)).state_dict().keys() and "disc" not in wa
    # without the discriminator nothing is logged for it
    plain = ae_trainer.train(make_ae_config("train.epochs=2"), str(tmp_path / "c"))
    assert " disc " not in (Path(plain["run_dir"]) / "log.txt").read_text() and plain["final_disc_loss"] is None


def test_the_discriminator_starts_at_a_share_of_the_steps_or_of_the_time_budget(make_ae_config):
    steps = make_ae_config("loss.disc_start=0.5", "train.max_minutes=0")
    assert not discriminator_on(49, 100, 1e6, steps) and discriminator_on(50, 100, 0.0, steps)
    budget = make_ae_config("loss.disc_start=0.5", "train.max_minutes=10")
    assert not discriminator_on(10, 100, 4 * 60, budget)      # 40% of the budget: off, whatever the step
    assert discriminator_on(10, 100, 5 * 60, budget)          # half the budget used: on, at step 10
    assert discriminator_on(60, 100, 60, budget)              # or past half the steps
