"""Stage 2: the DDPM, the same code in pixel and in latent space.

The schedule (schedule.py: the forward process q), the network (unet.py) and the denoiser built from
them (denoiser.py: x0_hat = f(x_t, t) with guidance, guidance.py, over labels, labels.py), the
samplers (samplers.py: ancestral DDPM, DDIM), where diffusion happens (space.py: pixels or a VAE's
latents), training (trainer.py) and the Python API (pipeline.py). Commands: train.py, sample.py,
release.py.
"""
