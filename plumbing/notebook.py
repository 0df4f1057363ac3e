"""What notebooks/pokediffusion.ipynb needs besides the project's API: where it runs, its set-up, its budget.

    in_colab()        whether the kernel runs on Google Colab
    setup(...)        on Colab: clone the repository (once) and install requirements.txt; anywhere: move to
                      the repository root and put it on sys.path, so that `import diffusion` works
    budget(cuda)      minutes per training stage: POKEDIFFUSION_NOTEBOOK_MINUTES, else 3 on a CPU and 10
                      on a GPU (with the *_full configs)
    show(path)        an image or GIF file inline (IPython's display)

CI executes the notebook with POKEDIFFUSION_NOTEBOOK_MINUTES=0.3 (scripts/notebook.sh --execute).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from plumbing.cli import UserError

BUDGET_ENV = "POKEDIFFUSION_NOTEBOOK_MINUTES"
CPU_MINUTES = 3.0
GPU_MINUTES = 10.0
COLAB_FOLDER = Path("/content/pokediffusion")


def in_colab() -> bool:
    return "google.colab" in sys.modules


def repository_root(start: Path) -> Path | None:
    """The nearest folder at or above `start` that holds this project (diffusion/ and configs/ldm.yaml)."""
    for folder in [start, *start.parents]:
        if (folder / "diffusion" / "__init__.py").is_file() and (folder / "configs" / "ldm.yaml").is_file():
            return folder
    return None


def setup(repo_url: str = "", colab: bool | None = None, folder: Path = COLAB_FOLDER,
          run: Callable = subprocess.run) -> Path:
    """Make the project importable from a notebook and return its root (the working folder afterwards).

    On Colab (`colab`, default: `in_colab()`): `git clone repo_url folder` unless the folder holds the
    project already, then `pip install -r requirements.txt` (Colab has PyTorch; the rest takes a minute).
    Elsewhere: the repository around the working folder (a notebook runs in notebooks/). `run` runs
    the shell commands (a test replaces it)."""
    colab = in_colab() if colab is None else colab
    if colab:
        if repository_root(folder) is None:
            if not repo_url:
                raise UserError("on Colab the notebook clones the repository: set REPO_URL in the first cell to "
                                "its git address (the one you would pass to git clone)")
            run(["git", "clone", "--depth", "1", repo_url, str(folder)], check=True)
        run([sys.executable, "-m", "pip", "install", "--quiet", "-r", str(folder / "requirements.txt")], check=True)
        root = folder
    else:
        root = repository_root(Path.cwd().resolve())
        if root is None:
            raise UserError(f"{Path.cwd()} is not inside the pokediffusion repository; start Jupyter in the "
                            "repository (bash scripts/notebook.sh)")
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
