"""The error convention of every command in this project.

A *user error* (bad config key, missing data, wrong checkpoint, unwritable folder...) is
reported as ONE line on stderr, `error: <what is wrong>; <how to fix it>`, and the command exits
with status 2. No traceback, unless `--debug` is on the command line. Programming errors (real
bugs) keep their traceback, because that is what a developer needs.
"""
from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """A problem the user can fix: the message names the problem and the fix."""


def run_main(main: Callable[[list[str]], None], argv: list[str] | None = None) -> None:
    """Call `main(argv)`; turn a UserError into a one-line message and exit status 2.

    `--debug` anywhere on the command line is removed from argv and makes user errors
    re-raise with their full traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        main(argv)
    except UserError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
