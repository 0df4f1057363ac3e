"""YAML configs with typed `key=value` overrides, checked before any work starts.

A config is a tree of dataclasses (its *schema*: every key, its type and its default, readable top
to bottom in e.g. `autoencoder/config.py`). Values come from three layers, later wins:

    1. the YAML file given with --config,
    2. environment variables that stand for a key (POKEMON_DATA -> data.root),
    3. `section.key=value` overrides on the command line (values are parsed as YAML: 5, 1e-3,
       true, [32, 64], null).

Unknown keys and values of the wrong type raise a UserError naming the key, so a typo such as
`train.epoch=5` fails at once instead of being ignored for a ten-minute run; so do numbers that are
not finite (nan, inf) and, through each schema's `validate`, numbers out of their range
(`check_range`).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from plumbing.cli import UserError, user_path

T = TypeVar("T")

# Environment variables that set a config key (applied after the YAML file, before overrides).
ENV_KEYS = {"POKEMON_DATA": "data.root"}
# Keys that hold a path: given as an override, a relative path is meant from where the user ran the
# command (plumbing/cli.py, user_path).
PATH_KEYS = {"data.root", "data.corpus", "data.cache_dir", "ae.ckpt", "train.init"}


def load_config(schema: type[T], path: str | Path | None, overrides: list[str] = ()) -> T:
    """Build a `schema` instance from a YAML file, the environment and command-line overrides."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file {path} not found; pass an existing file with --config")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserError(f"config file {path} is not valid YAML ({err.__class__.__name__}); fix its syntax")
        if not isinstance(tree, dict):
            raise UserError(f"config file {path} must hold a mapping of sections; see configs/ for examples")
    return apply_overrides(schema, tree, overrides)


def apply_overrides(schema: type[T], tree: dict, overrides: list[str] = ()) -> T:
    """Build a `schema` instance from a tree of values (a YAML file's, or a stored config) with the
    environment and command-line overrides applied on top."""
    tree = without_retired(schema, copy.deepcopy(tree))
    for env, key in ENV_KEYS.items():
        if os.environ.get(env) and _has_key(schema, key):
            _set_dotted(tree, key, os.environ[env])
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override '{item}' is not of the form section.key=value (e.g. train.epochs=5)")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if key.strip() in PATH_KEYS and isinstance(value, str) and value:
            value = str(user_path(value))
        _set_dotted(tree, key.strip(), value)
    return _build(schema, tree, prefix="")


def check_range(key: str, value: float, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """A UserError naming `key` unless low <= value <= high (< where open; None: no bound)."""
    ok = ((low is None or (value > low if low_open else value >= low))
          and (high is None or (value < high if high_open else value <= high)))
    if not ok:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise UserError(f"{key}={value:g} must lie in {interval}")


def to_dict(cfg: Any) -> dict:
    """The config as plain nested dicts/lists (what is written to config.yaml and checkpoints)."""
    return dataclasses.asdict(cfg)


def from_dict(schema: type[T], tree: dict) -> T:
    """Rebuild a config saved with `to_dict` (e.g. from a checkpoint), with the same checks."""
    return _build(schema, without_retired(schema, copy.deepcopy(tree)), prefix="")


def without_retired(schema: type, tree: dict) -> dict:
    """`tree` without the keys its schema has retired (`schema.RETIRED`: dotted key -> the one value the
    code now always uses), so that stored configs of earlier runs and releases still load. A retired
    key set to another value is an error: the code cannot reproduce that run."""
    for dotted, value in getattr(schema, "RETIRED", {}).items():
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            if node[leaf] != value:
                raise UserError(f"config key '{dotted}' is no longer supported (it is always {value!r} now; this "
                                f"config has {node[leaf]!r}); drop it")
            del node[leaf]
    return tree


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}: every leaf under its dotted key."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def dump_yaml(cfg: Any, path: str | Path) -> None:
    """Write the fully resolved config, so a run folder says exactly what produced it."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# --- internals -----------------------------------------------------------------------------

def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"override '{dotted}': '{part}' is a value, not a section")
    node[parts[-1]] = value


def _has_key(schema: type, dotted: str) -> bool:
    for part in dotted.split("."):
        hints = typing.get_type_hints(schema)
        if part not in hints:
            return False
        schema = hints[part]
    return True


def _build(schema: type[T], tree: dict, prefix: str) -> T:
    hints = typing.get_type_hints(schema)
    fields = {f.name for f in dataclasses.fields(schema)}
    for key in tree:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise UserError(f"unknown config key '{prefix}{key}'{hint}; valid keys in this section: "
                            f"{', '.join(sorted(fields))}")
    kwargs = {}
    factories = {f.name: f.default_factory for f in dataclasses.fields(schema)}
    for name in fields:
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            sub = tree.get(name, {})
            if not isinstance(sub, dict):
                raise UserError(f"config key '{prefix}{name}' is a section; set its keys as {prefix}{name}.KEY=VALUE")
            # keys left out keep the section's default as the enclosing schema gives it (its default_factory)
            if factories[name] is not dataclasses.MISSING:
                sub = _merged(dataclasses.asdict(factories[name]()), sub)
            kwargs[name] = _build(tp, sub, prefix=f"{prefix}{name}.")
        elif name in tree:
            kwargs[name] = _check(tp, tree[name], f"{prefix}{name}")
    try:
        cfg = schema(**kwargs)
    except TypeError as err:  # a field without default that nobody set
        raise UserError(f"config section '{prefix or 'root'}' is incomplete: {err}")
    check = getattr(cfg, "validate", None)
    if check is not None:
        check()
    return cfg


def _merged(base: dict, over: dict) -> dict:
    """`base` with the values of `over` on top, section by section."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _check(tp: Any, value: Any, key: str) -> Any:
    """Return `value` as type `tp`, or raise a UserError naming the key and the expected type."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # Optional[X] and X | None
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(arg, value, key)
            except UserError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise UserError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        (item_tp, *_) = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{key}' must be a list like [32, 64], got {value!r}")
        return [_check(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # nan and inf pass every comparison a range check makes
                raise UserError(f"config key '{key}' must be a finite number, got {value!r}")
            return number
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        raise TypeError(f"config schema type {tp} of '{key}' is not supported")
    raise UserError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
