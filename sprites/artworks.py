"""The 919 artworks and their type table from their public homes, or from a local folder, checked.

Sources (see README.md, "Data"):
  images     folder `pokemon/` of github.com/gerritgr/pokemon_diffusion (919 RGBA PNGs, CC0)
  type table `data/pokemon_stats.csv` of github.com/Mtingggg/pokemon_diffusion

Checks: the archive must be a valid zip; every PNG must decode as an image; the content fingerprint
of the set is compared with the one this project was developed on (a mismatch is a warning: the
upstream repository may have changed). A local folder that carries a SHA256SUMS file (or has one
in its parent folder) is verified file by file. `python -m sprites.download` is the command.
"""
from __future__ import annotations

import hashlib
import io
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from PIL import Image

from plumbing.cli import UserError

IMAGES_URL = "https://github.com/gerritgr/pokemon_diffusion/archive/refs/heads/main.zip"
TYPES_URL = "https://raw.githubusercontent.com/Mtingggg/pokemon_diffusion/main/data/pokemon_stats.csv"
EXPECTED_COUNT = 919
# sprites.dataset.content_fingerprint of the 919 PNGs (name + bytes, in name order).
EXPECTED_FINGERPRINT = "fcdaa99867e816cff7cdf5a9edf907b86c0a3d68190c3cb3f0212c702661c4cb"


def fetch(url: str, timeout: float = 60.0) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"cannot download {url} ({reason}); without internet, copy the data from a local "
                        "folder: scripts/get_data.sh --from DIR (or POKEMON_DATA=DIR)")


def verify_sums(folder: Path) -> int:
    """Check the files listed in a SHA256SUMS beside or above `folder`; return how many were checked."""
    for sums in (folder / "SHA256SUMS", folder.parent / "SHA256SUMS"):
        if sums.is_file():
            base, checked = sums.parent, 0
            for line in sums.read_text().splitlines():
                digest, _, rel = line.strip().partition("  ")
                target = base / rel
                if not rel or not target.is_file() or target.parent.resolve() != folder.resolve():
                    continue
                if hashlib.sha256(target.read_bytes()).hexdigest() != digest:
                    raise UserError(f"{target} does not match its checksum in {sums}; the copy is damaged, "
                                    "fetch it again")
                checked += 1
            return checked
    return 0


def check_images(folder: Path) -> int:
    """Every PNG must decode; return the count."""
    pngs = sorted(folder.glob("*.png"))
    for p in pngs:
        try:
            with Image.open(p) as img:
                img.verify()
        except Exception:
            raise UserError(f"{p} is not a readable PNG; fetch the data again")
    return len(pngs)


def from_internet(dest: Path) -> Path | None:
    print(f"downloading {IMAGES_URL} ...")
    blob = fetch(IMAGES_URL)
    print(f"archive: {len(blob) / 1e6:.1f} MB, sha256 {hashlib.sha256(blob).hexdigest()[:16]}...")
    try:
        archive = zipfile.ZipFile(io.BytesIO(blob))
        bad = archive.testzip()
    except zipfile.BadZipFile:
        raise UserError(f"the download of {IMAGES_URL} is not a zip archive; try again later")
    if bad is not None:
        raise UserError(f"the archive is damaged ({bad}); try again")
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for info in archive.infolist():
        parts = Path(info.filename).parts
        # <repo>-main/pokemon/NAME.png
        if len(parts) == 3 and parts[1] == "pokemon" and parts[2].endswith(".png"):
            (dest / parts[2]).write_bytes(archive.read(info))
            n += 1
    if n == 0:
        raise UserError("the archive holds no pokemon/*.png; the upstream layout changed, see README.md 'Data'")
    print(f"downloading {TYPES_URL} ...")
    table = dest.parent / "pokemon_stats.csv"
    table.write_bytes(fetch(TYPES_URL))
    return table


def from_folder(src: Path, dest: Path) -> None:
    if not src.is_dir():
        raise UserError(f"data folder {src} does not exist; pass a folder of Pokemon PNGs to --from")
    pngs = sorted(src.glob("*.png"))
    if not pngs:
        raise UserError(f"data folder {src} holds no PNG; pass a folder of Pokemon PNGs to --from")
    checked = verify_sums(src)
    if checked:
        print(f"verified {checked} files against SHA256SUMS")
    if src.resolve() != dest.resolve():
        dest.mkdir(parents=True, exist_ok=True)
        for p in pngs:
            shutil.copy2(p, dest / p.name)
    table = src.parent / "pokemon_stats.csv"
    if table.is_file() and table.resolve() != (dest.parent / table.name).resolve():
        shutil.copy2(table, dest.parent / table.name)
