"""Benchmarks (commands, not unit tests): `python -m benchmarks.ae_step`."""
