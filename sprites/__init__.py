"""The Pokemon sprite data set: download (`sprites.download`) and tensors (`sprites.dataset`)."""
