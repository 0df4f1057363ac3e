"""One measurement per process, so that each peak resident memory is that measurement's own.

`run_job(fn, kwargs)` calls `fn(**kwargs)` (which returns a dict) and adds `peak_rss_mb`, the
process's peak resident set size (resource.getrusage ru_maxrss) when `fn` is done. With isolation
(Linux), the call runs in a child forked from the benchmark's main process, which has imported
torch and the project but never computed anything: the peak is what the child starts from (the
`idle` job measures it: about 0.3 GB with a CUDA build of torch) plus what the measurement itself
needs. The child counts a page of torch's shared libraries only once it touches it, so its peak can
be lower than that of a separate Python process doing the same work, by at most the difference
between the main process's own peak after its imports (about 0.5 GB) and the idle job's. Without
isolation (other systems, or --in-process) everything runs in one process and each peak is the
maximum so far, i.e. cumulative.
"""
from __future__ import annotations

import multiprocessing
import resource
import sys
import traceback
from typing import Callable


class JobError(RuntimeError):
    """A measurement failed; the message is the job's traceback (or how its process died)."""


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def isolation_available() -> bool:
    """Forked children are safe here only on Linux (macOS frameworks do not survive a fork)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def idle() -> dict:
    """A job that does nothing: its peak is the memory every job starts from."""
    return {}


def _measure(fn: Callable[..., dict], kwargs: dict) -> dict:
    result = fn(**kwargs)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _child(fn: Callable[..., dict], kwargs: dict, conn) -> None:
    try:
        conn.send(("ok", _measure(fn, kwargs)))
    except BaseException:  # report everything, the parent decides what is fatal
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_job(fn: Callable[..., dict], kwargs: dict, isolate: bool) -> dict:
    """fn(**kwargs) plus its peak_rss_mb, in a forked child when `isolate`; raises JobError on failure."""
    if not isolate:
        try:
            return _measure(fn, kwargs)
        except Exception:
            raise JobError(traceback.format_exc())
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(fn, kwargs, sender))
    process.start()
    sender.close()
    try:
        status, payload = receiver.recv()
    except EOFError:
        process.join()
        raise JobError(f"the process measuring {fn.__name__} died with exit code {process.exitcode} "
                       "(out of memory?)")
    process.join()
    if status != "ok":
        raise JobError(payload)
    return payload
