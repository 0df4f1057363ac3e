"""The house rule: every command (`python -m ...`) is a thin main that nothing imports. Library modules
hold what other modules use; a test may import a command only to run it (`main`) or to parse its
arguments (`parse_args`)."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

PACKAGES = ("autoencoder", "diffusion", "plumbing", "reports", "sprites", "benchmarks", "demo")
COMMAND_NAMES = {"main", "parse_args"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in (*PACKAGES, "tests") for p in (REPO / pkg).rglob("*.py")}


def _commands(sources: dict[str, Path]) -> set[str]:
    """Modules with an entry point: `if __name__ == "__main__"` or a package's __main__.py."""
    return {name for name, path in sources.items()
            if path.name == "__main__.py" or 'if __name__ == "__main__":' in path.read_text()}


def _imports(tree: ast.AST, modules: set[str]) -> list[tuple[str, str | None, str | None]]:
    """(module, name taken from it or None, local alias of the module or None) of every import of a module
    in `modules`: `import a.b as c` -> (a.b, None, c); `from a.b import f` -> (a.b, f, None); `from a import b`
    where a.b is a module -> (a.b, None, b)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.append((alias.name, None, alias.asname or alias.name))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if sub in modules:
                    found.append((sub, None, alias.asname or alias.name))
                elif node.module in modules:
                    found.append((node.module, alias.name, None))
    return found


def _attributes(tree: ast.AST, alias: str) -> set[str]:
    """Names read from a module alias: `alias.X` -> X (a dotted alias `a.b` counts as a.b.X)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if ast.unparse(node.value) == alias:
                names.add(node.attr)
    return names


def test_no_module_imports_a_command():
    sources = _sources()
    commands = _commands(sources)
    assert {"autoencoder.train", "diffusion.train", "diffusion.sample", "reports.metrics", "demo.__main__"} <= commands
    wrong = []
    for name, path in sorted(sources.items()):
        tree = ast.parse(path.read_text())
        for module, taken, alias in _imports(tree, commands):
            if module == name or name == f"{module}.__main__":
                continue
            if not name.startswith("tests."):
                wrong.append(f"{name} imports the command {module}")
                continue
            used = {taken} if taken else _attributes(tree, alias)
            if used - COMMAND_NAMES:
                wrong.append(f"{name} takes {sorted(used - COMMAND_NAMES)} from the command {module}")
    assert not wrong, "\n".join(wrong)
