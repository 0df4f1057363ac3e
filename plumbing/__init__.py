"""Shared plumbing for every stage: configs, seeding and devices, checkpoints, command-line errors.

Each module has one job:
    config      YAML config -> typed dataclass, with `key=value` overrides checked before any work.
    device      device choice, seeding, mixed-precision autocast.
    checkpoint  atomic save, safe (weights-only) load, content hashes.
    cli         the one-line error convention shared by every command.
"""
