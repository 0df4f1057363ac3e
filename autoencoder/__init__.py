"""Stage 1: the convolutional VAE (model, losses, training, and what stage 2 loads from it)."""
