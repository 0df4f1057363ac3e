"""The notebook (notebooks/pokediffusion.ipynb): it calls the project's public API only, is committed
without outputs, and its set-up works on Colab and locally (CI executes it: scripts/notebook.sh --execute)."""
from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from plumbing.cli import UserError
from plumbing.notebook import BUDGET_ENV, budget, for_reading, save_to_drive, setup, smaller_gif
from tests.helpers import REPO

NOTEBOOK = REPO / "notebooks" / "pokediffusion.ipynb"
PROJECT = ("autoencoder", "diffusion", "plumbing", "reports", "sprites")


def _cells() -> list[dict]:
    return json.loads(NOTEBOOK.read_text())["cells"]


def _code() -> list[ast.Module]:
    """Each code cell as Python: IPython's shell lines (`!cmd`) become `pass`, at their indentation."""
    def python(line: str) -> str:
        stripped = line.lstrip()
        return line[:len(line) - len(stripped)] + "pass" if stripped.startswith("!") else line

    return [ast.parse("\n".join(python(ln) for ln in "".join(c["source"]).split("\n")))
            for c in _cells() if c["cell_type"] == "code"]


def test_the_notebook_is_committed_without_outputs_and_stays_small():
    code = [c for c in _cells() if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert NOTEBOOK.stat().st_size < 40_000


def test_the_copy_to_read_is_this_notebook_executed_and_a_few_mb():
    """docs/notebook/pokediffusion.ipynb (bash scripts/notebook.sh --publish) has the notebook's cells,
    every code cell run, and stays light enough for a browser."""
    published = REPO / "docs" / "notebook" / "pokediffusion.ipynb"
    cells = json.loads(published.read_text())["cells"]
    assert ["".join(c["source"]) for c in cells] == ["".join(c["source"]) for c in _cells()], \
        "the notebook changed since its copy to read was made: bash scripts/notebook.sh --publish"
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code) and sum(bool(c["outputs"]) for c in code) >= len(code) - 1
    assert not any(o["output_type"] == "error" for c in code for o in c["outputs"])
    assert published.stat().st_size < 8_000_000


def test_the_notebook_calls_public_names_that_exist():
    """No private name of the project (no `_x`), and every name it imports from the project exists."""
    for tree in _code():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert not alias.name.startswith("_"), alias.name
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
            if isinstance(node, ast.Attribute):
                assert not node.attr.startswith("_"), ast.unparse(node)
    imported = {n.module.split(".")[0] for t in _code() for n in ast.walk(t) if isinstance(n, ast.ImportFrom) and n.module}
    assert {"diffusion", "autoencoder", "reports", "plumbing"} <= imported


# --- the set-up cell: where the repository comes from --------------------------------------------------

def _setup_cell() -> ast.Module:
    return ast.parse("".join(next(c for c in _cells() if c["cell_type"] == "code")["source"]))


def _find_repository():
    """find_repository as the set-up cell defines it (its imports and functions, not its calls)."""
    body = [n for n in _setup_cell().body if isinstance(n, (ast.Import, ast.FunctionDef))
            or isinstance(n, ast.ImportFrom) and n.module.split(".")[0] not in PROJECT]
    namespace: dict = {}
    exec(compile(ast.Module(body=body, type_ignores=[]), "the set-up cell", "exec"), namespace)
    return namespace["find_repository"]


def _make_repository(folder: Path) -> Path:
    (folder / "diffusion").mkdir(parents=True)
    (folder / "diffusion" / "__init__.py").write_text("")
    (folder / "configs").mkdir()
    (folder / "configs" / "ldm.yaml").write_text("run_name: ldm\n")
    return folder


def _no_command(cmd, **kwargs):
    pytest.fail(f"ran {cmd}")


def test_the_setup_cell_finds_the_repository_before_importing_any_of_it():
    """On Colab nothing of the project is importable until the repository is there: the first project
    import of the cell comes after find_repository's call (an import first would raise ModuleNotFoundError)."""
    body = _setup_cell().body
    first_call = next(i for i, n in enumerate(body) if "find_repository(" in ast.unparse(n) and not isinstance(n, ast.FunctionDef))
    project = [i for i, n in enumerate(body) if isinstance(n, ast.ImportFrom) and n.module.split(".")[0] in PROJECT]
    assert project and min(project) > first_call
    assert "REPO_URL = ''" in ast.unparse(_setup_cell())  # as shipped: no address, the other routes work


def test_colab_without_a_repository_stops_with_one_line_that_says_what_to_do(tmp_path):
    with pytest.raises(SystemExit) as stop:
        _find_repository()("", colab=True, content=tmp_path, run=_no_command)
    message = str(stop.value.code)
    assert "\n" not in message and "REPO_URL" in message and "zip" in message and "My Drive/pokediffusion" in message


def test_colab_clones_the_address_once_and_shows_a_failed_clone(tmp_path):
    ran = []

    def fake_git(cmd, capture_output, text):
        ran.append(cmd)
        if cmd[-2] == "https://example.org/missing.git":
            return subprocess.CompletedProcess(cmd, 128, "", "Cloning...\nfatal: repository not found\n")
        _make_repository(Path(cmd[-1]))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    find = _find_repository()
    with pytest.raises(SystemExit, match="failed: fatal: repository not found"):
        find("https://example.org/missing.git", colab=True, content=tmp_path, run=fake_git)
    root = find("https://example.org/pokediffusion.git", colab=True, content=tmp_path, run=fake_git)
    assert root == tmp_path / "pokediffusion"
    assert ran[-1] == ["git", "clone", "--depth", "1", "https://example.org/pokediffusion.git", str(root)]
    assert find("https://example.org/pokediffusion.git", colab=True, content=tmp_path, run=_no_command) == root


def test_colab_takes_the_repository_from_an_uploaded_zip(tmp_path):
    """A zip as GitHub's 'Download ZIP' makes it (one top folder), beside a zip of something else."""
    source = _make_repository(tmp_path / "src" / "pokediffusion-main")
    (source / "README.md").write_text("the project\n")
    content = tmp_path / "content"
    content.mkdir()
    with zipfile.ZipFile(content / "a-photos.zip", "w") as z:
        z.writestr("holiday/1.txt", "not a repository")
    with zipfile.ZipFile(content / "pokediffusion-main.zip", "w") as z:
        for f in source.rglob("*"):
            z.write(f, f.relative_to(source.parent))
    root = _find_repository()("", colab=True, content=content, run=_no_command)
    assert root == content / "pokediffusion" and (root / "README.md").read_text() == "the project\n"


def test_colab_copies_the_repository_from_google_drive(tmp_path):
    on_drive = _make_repository(tmp_path / "drive" / "MyDrive" / "pokediffusion")
    (on_drive / ".venv").mkdir()
    root = _find_repository()("", colab=True, content=tmp_path, run=_no_command)
    assert root == tmp_path / "pokediffusion" and (root / "configs" / "ldm.yaml").is_file()
    assert not (root / ".venv").exists()


def test_elsewhere_the_repository_is_the_folder_around_the_notebook(monkeypatch, tmp_path):
    find = _find_repository()
    monkeypatch.chdir(REPO / "notebooks")
    assert find("", colab=False, run=_no_command) == REPO
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="not inside the pokediffusion repository"):
        find("", colab=False, run=_no_command)


# --- plumbing/notebook.py -------------------------------------------------------------------------------

def test_setup_on_colab_installs_and_shows_a_failed_install(tmp_path, monkeypatch, capsys):
    ran = []

    def fake_pip(cmd, capture_output, text):
        ran.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "Collecting resvg-py\n", "ERROR: No matching distribution found for resvg-py\n")

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="exit 1.*No matching distribution found for resvg-py"):
        setup(REPO, colab=True, run=fake_pip)
    assert ran == [[sys.executable, "-m", "pip", "install", "--quiet", "-r", str(REPO / "requirements.txt")]]
    assert "Collecting resvg-py" in capsys.readouterr().err  # pip's own lines, shown
    ok = lambda cmd, capture_output, text: subprocess.CompletedProcess(cmd, 0, "", "")
    assert setup(REPO, colab=True, run=ok) == REPO and Path.cwd() == REPO and str(REPO) in sys.path


def test_setup_elsewhere_moves_to_the_repository_root(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(REPO / "notebooks")
    assert setup(REPO / "notebooks" / "..", colab=False, run=_no_command) == REPO and Path.cwd() == REPO


def test_save_to_drive_mounts_once_and_replaces_the_earlier_copy(tmp_path):
    runs = tmp_path / "notebook_out"
    (runs / "ldm").mkdir(parents=True)
    (runs / "ldm" / "metrics.json").write_text("{}")
    mounted = []

    def fake_mount(where):
        mounted.append(where)
        (Path(where) / "MyDrive").mkdir(parents=True)

    drive = tmp_path / "drive"
    assert save_to_drive(runs, colab=False, drive=drive, mount=fake_mount) is None and not mounted
    copy = save_to_drive(runs, colab=True, drive=drive, mount=fake_mount)
    assert copy == drive / "MyDrive" / "pokediffusion_runs" / "notebook_out" and (copy / "ldm" / "metrics.json").is_file()
    (runs / "ldm" / "metrics.json").unlink()
    (runs / "ae").mkdir()
    save_to_drive(runs, colab=True, drive=drive, mount=fake_mount)
    assert mounted == [str(drive)] and (copy / "ae").is_dir() and not (copy / "ldm" / "metrics.json").exists()


def test_a_user_error_shows_one_line_in_a_notebook():
    """IPython renders an exception through its _render_traceback_ where it has one."""
    assert UserError("data.size=30 is not supported; use 32")._render_traceback_() == [
        "UserError: data.size=30 is not supported; use 32"]


def test_the_budget_comes_from_the_environment_or_the_device(monkeypatch):
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    assert budget(cuda=False) == 3.0 and budget(cuda=True) == 10.0
    monkeypatch.setenv(BUDGET_ENV, "0.3")
    assert budget(cuda=False) == 0.3
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(BUDGET_ENV, bad)
        with pytest.raises(UserError, match=BUDGET_ENV):
            budget(cuda=False)


def test_the_copy_to_read_thins_large_gifs_and_drops_progress_bars(tmp_path):
    """plumbing.notebook_run --publish: a GIF over the limit loses every other frame until it fits;
    stderr (progress bars) and a PIL image's JPEG copy go; the repository's absolute path becomes relative."""
    import base64

    import imageio.v3 as iio
    import nbformat
    import numpy as np
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from plumbing.pictures import save_gif

    limit = 40_000
    frames = [np.random.default_rng(i).integers(0, 256, (48, 48, 3), dtype=np.uint8) for i in range(40)]
    big = save_gif(frames, tmp_path / "big.gif").read_bytes()
    assert len(big) > limit
    small = smaller_gif(big, limit)
    kept = iio.imread(small, index=None, extension=".gif")
    assert len(small) <= limit and 5 <= len(kept) < 40
    first = iio.imread(big, index=0, extension=".gif")[..., :3]
    assert np.array_equal(kept[0][..., :3], first)  # frames dropped, the ones kept unchanged

    cell = new_code_cell("x", outputs=[
        new_output("stream", name="stderr", text="DDPM (pixel): 100%|####| 3/3\r"),
        new_output("stream", name="stdout", text=f"run folder {REPO}/notebook_out/ae\n"),
        new_output("display_data", data={"image/gif": base64.b64encode(big).decode()}),
        new_output("execute_result", data={"image/png": "iVBO", "image/jpeg": "/9j/", "text/plain": "<PIL>"},
                   execution_count=1)])
    nb = new_notebook(cells=[cell])
    assert for_reading(nb, REPO, limit) == {"gifs thinned": 1, "outputs dropped": 2}
    assert [o.output_type for o in nb.cells[0].outputs] == ["stream", "display_data", "execute_result"]
    assert set(nb.cells[0].outputs[2].data) == {"image/png", "text/plain"}
    assert nb.cells[0].outputs[0].text == "run folder notebook_out/ae\n"
    assert len(base64.b64decode(nb.cells[0].outputs[1].data["image/gif"])) <= limit
    nbformat.validate(nb)
