"""The notebook (notebooks/pokediffusion.ipynb): it calls the project's public API only, is committed
without outputs, and its set-up works on Colab and locally (CI executes it: scripts/notebook.sh --execute)."""
from __future__ import annotations

import ast
import importlib
import json
import sys
from pathlib import Path

import pytest

from plumbing.cli import UserError
from plumbing.notebook import BUDGET_ENV, budget, repository_root, setup
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
    assert NOTEBOOK.stat().st_size < 20_000


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


def test_setup_on_colab_clones_once_and_installs(tmp_path, monkeypatch):
    """Colab cannot be reached from here: its set-up is run with the shell commands recorded instead."""
    ran = []

    def fake_run(cmd, check):
        ran.append(cmd)
        if cmd[:2] == ["git", "clone"]:  # what the clone leaves behind
            (tmp_path / "repo" / "diffusion").mkdir(parents=True)
            (tmp_path / "repo" / "diffusion" / "__init__.py").write_text("")
            (tmp_path / "repo" / "configs").mkdir()
            (tmp_path / "repo" / "configs" / "ldm.yaml").write_text("")

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="set REPO_URL"):
        setup("", colab=True, folder=tmp_path / "repo", run=fake_run)
    root = setup("https://example.org/pokediffusion.git", colab=True, folder=tmp_path / "repo", run=fake_run)
    assert root == tmp_path / "repo" and Path.cwd() == root and sys.path[0] == str(root)
    assert ran[0] == ["git", "clone", "--depth", "1", "https://example.org/pokediffusion.git", str(root)]
    assert ran[1][1:5] == ["-m", "pip", "install", "--quiet"] and ran[1][-1] == str(root / "requirements.txt")
    ran.clear()
    setup("https://example.org/pokediffusion.git", colab=True, folder=root, run=fake_run)  # a second run
    assert [cmd[:2] for cmd in ran] == [[sys.executable, "-m"]]  # no second clone


def test_setup_elsewhere_moves_to_the_repository_root(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(REPO / "notebooks")
    assert setup(colab=False) == REPO and Path.cwd() == REPO
    assert repository_root(tmp_path) is None
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="not inside the pokediffusion repository"):
        setup(colab=False)


def test_the_budget_comes_from_the_environment_or_the_device(monkeypatch):
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    assert budget(cuda=False) == 3.0 and budget(cuda=True) == 10.0
    monkeypatch.setenv(BUDGET_ENV, "0.3")
    assert budget(cuda=False) == 0.3
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(BUDGET_ENV, bad)
        with pytest.raises(UserError, match=BUDGET_ENV):
            budget(cuda=False)
