"""Execute a notebook top to bottom, headless, and fail on the first cell that raises.

    python -m plumbing.notebook_run NOTEBOOK [EXECUTED_COPY] [--timeout 1800] [--publish PATH]

nbclient is the execution engine behind nbconvert and papermill (Jupyter's own); papermill's
parameter cells are not needed here, since the notebook reads its budget from the environment
(plumbing/notebook.py). The notebook runs in its own folder, as Jupyter runs it; the copy with
outputs is written for looking at (figures included). The notebook checks its own results with
asserts (x_T's KS statistic under its yardstick, the VAE's PSNR above a floor, samples that are not
blank), so a wrong number fails the run as a raised error does.

--publish PATH also writes the executed copy made light for reading in a browser
(docs/notebook/pokediffusion.ipynb; plumbing.notebook.for_reading says how).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from plumbing.cli import UserError, run_main
from plumbing.notebook import for_reading

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
