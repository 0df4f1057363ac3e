"""Benchmarks (commands, not unit tests): `python -m benchmarks` (behind scripts/bench.sh) measures the
machine's ceilings, the AE and U-Net training steps against diffusers, and sampling speed;
`python -m benchmarks.ae_step` times the AE step alone."""
