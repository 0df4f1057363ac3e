"""What every stage and command shares; each module has one job:
    config         YAML config -> typed dataclass, with `key=value` overrides checked before any work
    cli            the one-line error convention of every command (and one-line warnings)
    device         device choice, seeding, mixed-precision autocast, the machine's description
    checkpoint     atomic save, safe (weights-only) load, safetensors, content hashes
    resume         training-state checkpoints, stop signals, --resume
    guard          the divergence guard of both trainers
    optim          the learning-rate schedule, the EMA, range checks of the optimisation keys
    runs           run folders, logs, progress bars, loss curves
    distributed    several training processes (torchrun)
    pictures       image grids, labelled rows, GIFs
    release        the release format (safetensors + config.json + model card)
    notebook       the notebook's set-up and budget; notebook_run executes a notebook headless
"""
