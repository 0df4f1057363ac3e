"""What the demo page does, without the page: a request read from the page's controls, its labels,
the samples drawn live (each recorded x_t decoded to pixels as it is made), a morph row, and the
zip of PNGs and labels.csv. demo/page.py lays these out with Gradio; the tests call them directly.

A request is checked by the same check as the command line and the Python API
(diffusion/pipeline.py: check_request): a bad number or name is a UserError with one line that
names the fix, which the page shows as it is.
"""
from __future__ import annotations

import math
import queue
import threading
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from diffusion.guidance import DEFAULT_GUIDANCE
from diffusion.labels import Labels, sample_rows, write_labels_csv
from diffusion.pipeline import Pipeline, check_request, save_samples
from plumbing.cli import UserError
from plumbing.pictures import grid_array
from sprites.config import SOURCES
from sprites.labels import TYPES

RANDOM = "random"      # species: one drawn per sample from those the model trained on
NO_FUSION = "none"     # second species: no fusion
ANY_TYPE = "any"       # type: not given
FRAMES = 20            # x_t shown while a request is drawn (each decoded: about a step's cost)
MAX_N = 32             # samples a request from the page
MAX_MORPH = 12         # pictures in a morph row


@dataclass
class Request:
    """The page's controls, as the page passes them (a species name, a number from a text box...)."""

    species: str = RANDOM
    fuse_with: str = NO_FUSION
    fuse_weight: float = 0.5
    style: str = "artwork"
    type: str = ANY_TYPE
    guidance: float = DEFAULT_GUIDANCE
    seed: int | float | None = 0
    n: int | float = 8
    sampler: str = "ddim"
    steps: int | float = 25

    def checked(self, pipe: Pipeline, n: int | None = None) -> Request:
        """The request with whole numbers as ints, checked like a command line's (UserError naming the fix);
        `n` instead of the request's own (a morph's length)."""
        req = Request(self.species or RANDOM, self.fuse_with or NO_FUSION, self.fuse_weight, self.style,
                      self.type or ANY_TYPE, self.guidance, whole(self.seed, "seed"), whole(self.n, "n"),
                      self.sampler, whole(self.steps, "steps"))
        if not 1 <= req.n <= MAX_N:
            raise UserError(f"n={req.n}: the page draws 1 to {MAX_N} samples at a time; for more use "
                            "python -m diffusion.sample --n N")
        check_request(req.n if n is None else n, float(req.guidance), req.sampler, req.steps, 0.0,
                      pipe.schedule.T, seed=req.seed)
        return req

    def fusion(self) -> bool:
        return self.fuse_with != NO_FUSION


def whole(value, name: str) -> int:
    """A number from the page as an int: 3.0 -> 3; empty or fractional is a UserError."""
    if value is None or value == "":
        raise UserError(f"{name} is empty; enter a whole number")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise UserError(f"{name}={value}: enter a whole number")
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"{name}={value!r}: enter a whole number") from None


def species_choices(pipe: Pipeline) -> list[str]:
    """The species dropdown: 'random', then every species the model knows, in Pokedex order."""
    if pipe.species is None:
        return []
    return [RANDOM] + [pipe.species.table[k] for k in sorted(pipe.species.table)]


def style_choices(pipe: Pipeline) -> list[str]:
    return list(SOURCES) if pipe.conditional["style"] else []


def type_choices(pipe: Pipeline) -> list[str]:
    return [ANY_TYPE] + list(TYPES) if pipe.conditional["type"] else []


def _asked(pipe: Pipeline, req: Request) -> tuple[list[str] | None, list[str] | None]:
    """The type and style a request gives, as pipe.labels takes them (None where the model lacks the kind)."""
    types = [req.type] if pipe.conditional["type"] and req.type != ANY_TYPE else None
    styles = [req.style] if pipe.conditional["style"] and req.style else None
    return types, styles


def _heard(call) -> tuple[object, list[str]]:
    """call()'s result and the warnings it gave (a held-out species), as lines for the page."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in caught]


def request_labels(pipe: Pipeline, req: Request) -> tuple[Labels | None, list[str], list[str]]:
    """(labels of the request's samples, row names, warnings): req.n of the species (or random ones),
    or of the fusion of two species; the type and style where the model knows them."""
    types, styles = _asked(pipe, req)
    species = fusions = None
    if pipe.species is not None:
        if req.fusion():
            if req.species == RANDOM:
                raise UserError("a fusion needs two named species; pick the first species instead of 'random'")
            fusions = [(req.species, req.fuse_with, float(req.fuse_weight))]
        else:
            species = [req.species]
    (labels, rows), warned = _heard(lambda: pipe.labels(types, styles, req.n, species, fusions, req.seed))
    return labels, rows, warned


def morph_labels(pipe: Pipeline, req: Request, k: int) -> tuple[Labels, torch.Tensor, list[str]]:
    """(labels, x_T, warnings) of a morph row: k pictures from req.species to req.fuse_with, one x_T
    (Pipeline.morph_request)."""
    if pipe.species is None:
        raise UserError("this checkpoint was trained without species labels: it has nothing to morph")
    if req.species == RANDOM or not req.fusion():
        raise UserError("a morph goes from one named species to another: pick both species")
    types, styles = _asked(pipe, req)
    (labels, x_T), warned = _heard(lambda: pipe.morph_request(req.species, req.fuse_with, k, req.seed,
                                                              types[0] if types else None,
                                                              styles[0] if styles else None))
    return labels, x_T, warned


def live(pipe: Pipeline, n: int, seed: int, labels: Labels | None, guidance: float, sampler: str, steps: int,
         noise: torch.Tensor | None = None, frames: int = FRAMES, threads: int | None = None) -> Iterator[tuple]:
    """Draw n samples (Pipeline.generate, in a thread of its own with `threads` PyTorch threads where
    given) and tell how it goes, in order:
    ("step", done, total) after each step, ("frame", t, uint8 grid of x_t decoded, 3x) at `frames` steps,
    then ("done", samples in [-1, 1], seconds). A UserError of the sampling is raised here."""
    events: queue.Queue = queue.Queue()

    class Steps:  # the sampler's progress bar
        def update(self, k: int) -> None:
            events.put(("step", k))

    def run() -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            images, _, seconds = pipe.generate(n, seed, labels, guidance, sampler, steps, frames=frames,
                                               progress=Steps(), noise=noise,
                                               on_frame=lambda t, x: events.put(("frame", t, x)))
            events.put(("done", images, seconds))
        except BaseException as err:  # handed to the caller's thread
            events.put(("error", err))

    threading.Thread(target=run, daemon=True).start()
    total, done = (pipe.schedule.T if sampler == "ddpm" else steps), 0
    while True:
        kind, *rest = events.get()
        if kind == "step":
            done += rest[0]
            yield "step", done, total
        elif kind == "frame":
            t, x = rest
            with torch.inference_mode():
                yield "frame", t, grid_array(pipe.space.decode(x[:16]).cpu(), nrow=min(4, len(x)), upscale=3)
        elif kind == "error":
            raise rest[0]
        else:
            yield "done", *rest
            return


def captions(pipe: Pipeline, labels: Labels | None, n: int) -> list[str]:
    """One caption per sample: its species (or fusion), type and style, as labels.csv names them."""
    rows = sample_rows(labels, n, pipe.species)
    return [", ".join(v for v in (r["species"], r["type"], r["style"]) if v) or f"sample {i}"
            for i, r in enumerate(rows)]


def write_zip(folder: Path, pipe: Pipeline, images: torch.Tensor, labels: Labels | None, guidance: float,
              seed: int) -> Path:
    """folder/samples.zip: the samples as 0000.png, ... and their labels.csv, as diffusion.sample writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    files = save_samples(images, folder)
    write_labels_csv(folder / "labels.csv", files, labels, pipe.species, guidance, seed)
    path = folder / "samples.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name in [*files, "labels.csv"]:
            zf.write(folder / name, name)
            (folder / name).unlink()
    return path

