"""Execute a notebook top to bottom, headless, and fail on the first cell that raises.

    python -m plumbing.notebook_run NOTEBOOK [EXECUTED_COPY] [--timeout 1800]

nbclient is the execution engine behind nbconvert and papermill (Jupyter's own); papermill's
parameter cells are not needed here, since the notebook reads its budget from the environment
(plumbing/notebook.py). The notebook runs in its own folder, as Jupyter runs it; the copy with
outputs is written for looking at (figures included).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from plumbing.cli import UserError, run_main


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m plumbing.notebook_run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebook")
    p.add_argument("executed", nargs="?", default=None, help="where to write the executed copy (default: none)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds a cell may take (default 1800)")
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


if __name__ == "__main__":
    run_main(main)
