"""The error convention of every command in this project.

A *user error* (bad config key, missing data, wrong checkpoint, unwritable folder...) is
reported as ONE line on stderr, `error: <what is wrong>; <how to fix it>`, and the command exits
with status 2. No traceback, unless `--debug` is on the command line. Programming errors (real
bugs) keep their traceback, because that is what a developer needs.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Callable

# Set by scripts/env.sh to the folder the user ran a script from, before it moves to the repository
# root: relative paths the user gives are meant from there.
CALLER_DIR = "POKEDIFFUSION_CALLER_DIR"


def user_path(path: str | Path | None) -> Path | None:
    """A path the user gave on the command line: relative paths are resolved against the folder the
    user ran the command from ($POKEDIFFUSION_CALLER_DIR, set by the scripts), else the working folder."""
    if path is None:
        return None
    path = Path(path)
    caller = os.environ.get(CALLER_DIR)
    if not caller or path.is_absolute() or Path(caller).resolve() == Path.cwd().resolve():
        return path
    return Path(caller) / path


class UserError(ValueError):
    """A problem the user can fix: the message names the problem and the fix. A ValueError, so that
    the Python API (diffusion/pipeline.py) raises what Python code expects of a bad argument, with
    the same one-line message the command line prints."""

    def _render_traceback_(self) -> list[str]:
        """What IPython (a notebook) shows for it: the one line, as the command line does, no traceback."""
        return [f"UserError: {self}"]


class Stopped(Exception):
    """A command that stopped early on request (SIGINT/SIGTERM) after saving what it needs to continue.

    `run_main` prints the message (how to continue; empty: print nothing, e.g. on the non-main
    processes of a multi-process run) and exits with 128 + the signal number, the shell's
    convention for a process ended by that signal, so `set -e` scripts do not carry on.
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as a command prints it: `warning: <message>` (the source line is for developers)."""
    return f"warning: {message}\n"


def run_main(main: Callable[[list[str]], None], argv: list[str] | None = None) -> None:
    """Call `main(argv)`; turn a UserError into a one-line message and exit status 2, and a
    requested stop (`Stopped`) into its message and exit status 128 + signal.

    `--debug` anywhere on the command line is removed from argv and makes user errors
    re-raise with their full traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = one_line_warning
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        main(argv)
    except UserError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Stopped as stop:
        if str(stop):
            print(str(stop), file=sys.stderr)
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
