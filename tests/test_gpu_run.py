"""scripts/gpu_run.sh --smoke: the whole GPU run at toy size on the CPU, so that it cannot rot while
no GPU is at hand (reports/gpu_run.py)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, subprocess_env, write_corpus, write_sprites


def test_smoke_run_writes_its_eight_files(tmp_path):
    art = tmp_path / "data" / "pokemon"
    paths = write_sprites(art)
    with (art.parent / "pokemon_stats.csv").open("w", newline="") as f:  # a type table beside the artworks
        w = csv.writer(f)
        w.writerow(["#", "Name", "Image_name", "Type 1", "Type 2"])
        for i, p in enumerate(paths):
            w.writerow([i + 1, p.stem, p.stem, ["Fire", "Water", "Grass"][i % 3], ""])
    corpus = write_corpus(tmp_path / "data" / "corpus")
    out = tmp_path / "elsewhere" / "run"
    env = {**subprocess_env(tmp_path), "POKEDIFFUSION_VENV": str(Path(sys.executable).parents[1])}
    (tmp_path / "elsewhere").mkdir()
    # run from another folder, with relative paths: they are meant from there
    rel = os.path.relpath
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), "--smoke", "--out", "run",
                           "--data-root", rel(art, out.parent), "--corpus", rel(corpus, out.parent),
                           "--cache-dir", rel(tmp_path / "cache", out.parent), "--device", "cpu"],
                          cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["ae.safetensors", "config.json", "grid.png", "ldm.safetensors", "log.txt", "loss.png",
                     "results.json", "reverse.gif"]
    results = json.loads((out / "results.json").read_text())
    assert results["machine"]["device"] == "cpu" and results["machine"]["torch"]
    assert results["corpus"] is True and results["labels"]["styles"] and results["labels"]["types"]
    for stage in ("ae", "ldm"):
        assert results[stage]["steps"] > 0 and results[stage]["train_img_per_s"] > 0
    assert results["sampling"]["n"] == 16 and "swd" in results["measures"]["pixel"]
    assert 0 <= results["measures"]["pixel"]["memorisation"]["rate"] <= 1
    log = (out / "log.txt").read_text()
    assert "machine: device cpu" in log and "LPIPS unavailable" in log and "creature measures not computed" in log
