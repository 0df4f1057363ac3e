"""What notebooks/pokediffusion.ipynb needs besides the project's API: its set-up, its budget, pictures
and, on Colab, keeping the run folders.

The notebook's first cell finds the repository (on Colab: a clone of REPO_URL, an uploaded zip or a
folder on Google Drive; elsewhere: the folder around the notebook) before anything of the project can
be imported; what follows lives here:

    in_colab()          whether the kernel runs on Google Colab
    setup(root)         on Colab: pip install -r requirements.txt (its output shown where it fails);
                        anywhere: move to the repository root and put it on sys.path
    budget(cuda)        minutes per training stage: POKEDIFFUSION_NOTEBOOK_MINUTES, else 3 on a CPU and 10
                        on a GPU (with the *_full configs)
    show(path)          an image or GIF file inline (IPython's display)
    save_to_drive(...)  on Colab: copy the run folders to Google Drive, which outlives the runtime
    for_reading(nb)     an executed copy made light to read (scripts/notebook.sh --publish)

CI executes the notebook with POKEDIFFUSION_NOTEBOOK_MINUTES=0.3 (scripts/notebook.sh --execute).
"""
from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from plumbing.cli import UserError

BUDGET_ENV = "POKEDIFFUSION_NOTEBOOK_MINUTES"
CPU_MINUTES = 3.0
GPU_MINUTES = 10.0
DRIVE = Path("/content/drive")                 # where Colab mounts Google Drive
DRIVE_RUNS = "MyDrive/pokediffusion_runs"      # the run folders' home on it
PIP_LINES_SHOWN = 25                           # of a failed install's output


def in_colab() -> bool:
    return "google.colab" in sys.modules


def setup(root: Path, colab: bool | None = None, run: Callable = subprocess.run) -> Path:
    """Make the project at `root` importable and the working folder; on Colab (`colab`, default
    `in_colab()`) first `pip install -r requirements.txt` (Colab has PyTorch; the rest takes a minute).
    A failed install shows the end of pip's output and raises a UserError. `run` runs the command
    (a test replaces it)."""
    root = Path(root).resolve()
    if in_colab() if colab is None else colab:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "-r", str(root / "requirements.txt")]
        done = run(command, capture_output=True, text=True)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip().splitlines()
            print("\n".join(output[-PIP_LINES_SHOWN:]), file=sys.stderr)
            raise UserError(f"pip install -r requirements.txt failed (exit {done.returncode}): "
                            f"{output[-1] if output else 'no output'}; the lines above say why")
    os.chdir(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def budget(cuda: bool) -> float:
    """Minutes per training stage: $POKEDIFFUSION_NOTEBOOK_MINUTES, else CPU_MINUTES on a CPU and
    GPU_MINUTES on a GPU."""
    value = os.environ.get(BUDGET_ENV)
    if value:
        try:
            minutes = float(value)
        except ValueError:
            raise UserError(f"{BUDGET_ENV}={value!r} must be a number of minutes, e.g. 3") from None
        if not 0 < minutes < 1e4:
            raise UserError(f"{BUDGET_ENV}={value} must be a positive number of minutes")
        return minutes
    return GPU_MINUTES if cuda else CPU_MINUTES


def show(path: str | Path) -> None:
    """Display an image or GIF file inline in a notebook (its bytes, so the saved notebook holds it)."""
    from IPython.display import Image, display  # the notebook's kernel has IPython; nothing else needs it

    path = Path(path)
    display(Image(data=path.read_bytes(), format=path.suffix.lstrip(".").lower().replace("jpg", "jpeg")))


def save_to_drive(folder: str | Path, colab: bool | None = None, drive: Path = DRIVE,
                  mount: Callable[[str], None] | None = None) -> Path | None:
    """On Colab: mount Google Drive at `drive` (Colab asks for permission once) and copy `folder`
    into MyDrive/pokediffusion_runs/, replacing an earlier copy; returns the copy. Elsewhere the
    folder is already on disk: returns None. `mount` mounts Drive (default: google.colab.drive.mount)."""
    if not (in_colab() if colab is None else colab):
        return None
    if not (drive / "MyDrive").is_dir():
        if mount is None:
            from google.colab import drive as colab_drive  # exists on Colab only
            mount = colab_drive.mount
        mount(str(drive))
    folder = Path(folder)
    target = drive / DRIVE_RUNS / folder.name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(folder, target)
    return target


GIF_BYTES = 400_000  # a published GIF's size at most (unless it is down to MIN_FRAMES)
MIN_FRAMES = 5


def smaller_gif(data: bytes, limit: int = GIF_BYTES) -> bytes:
    """The GIF `data` with every other frame dropped (each shown twice as long) until it takes at most
    `limit` bytes or has MIN_FRAMES frames left."""
    from plumbing.pictures import thin_gif  # imageio: only where a copy is published

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.gif"
        path.write_bytes(data)
        frames = MIN_FRAMES + 1
        while path.stat().st_size > limit and frames > MIN_FRAMES:
            frames = thin_gif(path)
        return path.read_bytes()


def for_reading(nb, root: Path, gif_bytes: int = GIF_BYTES) -> dict:
    """Make an executed notebook (nbformat's) light to read in a browser, in place: each GIF above
    `gif_bytes` keeps every other frame until it fits (`smaller_gif`), progress bars (stderr) and the
    JPEG beside each PNG of a PIL image are dropped, and the absolute path `root` (the repository) is
    written relative. Returns {"gifs thinned": n, "outputs dropped": n}."""
    thinned = dropped = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stderr":
                dropped += 1
                continue
            if out.output_type == "stream":
                out.text = out.text.replace(str(root) + "/", "").replace(str(root), ".")
            if "image/png" in out.get("data", {}) and out.data.pop("image/jpeg", None):  # PIL shows both
                dropped += 1
            gif = out.get("data", {}).get("image/gif")
            if gif and len(gif) * 3 // 4 > gif_bytes:
                out.data["image/gif"] = base64.b64encode(smaller_gif(base64.b64decode(gif), gif_bytes)).decode()
                thinned += 1
            kept.append(out)
        cell.outputs = kept
    return {"gifs thinned": thinned, "outputs dropped": dropped}
