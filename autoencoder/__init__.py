"""Stage 1: the convolutional VAE (vae.py), its losses (losses.py), training (trainer.py; the command is
train.py) and what stage 2 loads from it (latents.py)."""
