"""Execute a notebook top to bottom, headless, and fail on the first cell that raises.

    python -m plumbing.notebook_run NOTEBOOK [EXECUTED_COPY] [--timeout 1800] [--publish PATH]

nbclient is the execution engine behind nbconvert and papermill (Jupyter's own); papermill's
parameter cells are not needed here, since the notebook reads its budget from the environment
(plumbing/notebook.py). The notebook runs in its own folder, as Jupyter runs it; the copy with
outputs is written for looking at (figures included). The notebook checks its own results with
asserts (x_T's KS statistic under its yardstick, the VAE's PSNR above a floor, samples that are not
blank), so a wrong number fails the run as a raised error does.

--publish PATH writes the executed copy for reading in a browser (docs/notebook/pokediffusion.ipynb):
each GIF above GIF_BYTES keeps every other frame until it fits (plumbing.pictures.thin_gif),
progress bars (stderr) and the JPEG beside each PNG of a PIL image are dropped, and the run's own
paths are written relative to the repository.
"""
from __future__ import annotations

import argparse
import base64
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from plumbing.cli import UserError, run_main
from plumbing.pictures import thin_gif

GIF_BYTES = 400_000  # a published GIF's size at most (unless it is down to MIN_FRAMES)
MIN_FRAMES = 5


def smaller_gif(data: bytes, limit: int = GIF_BYTES) -> bytes:
    """The GIF `data` with every other frame dropped (each shown twice as long) until it takes at most
    `limit` bytes or has MIN_FRAMES frames left."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.gif"
        path.write_bytes(data)
        frames = MIN_FRAMES + 1
        while path.stat().st_size > limit and frames > MIN_FRAMES:
            frames = thin_gif(path)
        return path.read_bytes()


def for_reading(nb, root: Path, gif_bytes: int = GIF_BYTES) -> dict:
    """Make an executed notebook light to read (module docstring), in place; returns
    {"gifs thinned": n, "outputs dropped": n}."""
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


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m plumbing.notebook_run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebook")
    p.add_argument("executed", nargs="?", default=None, help="where to write the executed copy (default: none)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds a cell may take (default 1800)")
    p.add_argument("--publish", default=None, help="also write a copy made light for reading here")
    args = p.parse_args(argv)
    path = Path(args.notebook)
    if not path.is_file():
        raise UserError(f"notebook {path} not found; pass notebooks/pokediffusion.ipynb")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.time()
    try:
        client.execute()
    except CellExecutionError as err:
        raise UserError(f"{path}: a cell failed: {str(err).strip().splitlines()[-1]}") from None
    finally:
        if args.executed:
            Path(args.executed).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, args.executed)
    cells = sum(c.cell_type == "code" for c in nb.cells)
    print(f"{path}: {cells} code cells executed in {time.time() - start:.0f} s"
          + (f" -> {args.executed}" if args.executed else ""))
    if args.publish:
        changes = for_reading(nb, Path(__file__).resolve().parents[1])  # the repository
        Path(args.publish).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, args.publish)
        print(f"-> {args.publish} ({Path(args.publish).stat().st_size / 1e6:.1f} MB; {changes['gifs thinned']} GIFs "
              f"thinned, {changes['outputs dropped']} progress bars and JPEG copies dropped)")


if __name__ == "__main__":
    run_main(main)
