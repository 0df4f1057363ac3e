"""Benchmarks (commands, not unit tests): `python -m benchmarks` (behind scripts/bench.sh) measures the
machine's ceilings, the AE and U-Net training steps against diffusers, data loading, and sampling
speed (`--only ae` and the other section names time one part)."""
