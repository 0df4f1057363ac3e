"""The command-line convention: user errors are one `error: ...` line on stderr and exit status 2."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plumbing.cli import UserError, run_main
from tests.helpers import N_SPRITES, REPO, subprocess_env
from sprites import download
from sprites.dataset import content_fingerprint
from sprites.download import main


def _run(args: list[str], tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=subprocess_env(tmp_path), capture_output=True,
                          text=True, timeout=timeout)


def _assert_one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# --- subprocesses: the real entry points ---------------------------------------------------------

def test_train_unknown_key_is_one_line(tmp_path):
    proc = _run(["-m", "autoencoder.train", "--config", "configs/ae.yaml", "--out", str(tmp_path / "run"),
                 "train.epoch=5"], tmp_path)
    line = _assert_one_line_error(proc)
    assert "train.epoch" in line and "did you mean 'train.epochs'" in line
    assert not (tmp_path / "run").exists()


def test_train_missing_data_folder_is_one_line(tmp_path):
    proc = _run(["-m", "autoencoder.train", "--config", "configs/ae.yaml", "--out", str(tmp_path / "run"),
                 "data.root=/nonexistent", f"data.cache_dir={tmp_path / 'cache'}", "device=cpu"], tmp_path)
    line = _assert_one_line_error(proc)
    assert "/nonexistent" in line and "does not exist" in line
    assert not (tmp_path / "run").exists()  # fails before creating the run folder
    assert not (tmp_path / "cache").exists()


def test_download_from_local_folder(sprite_dir, tmp_path):
    out = tmp_path / "data" / "pokemon"
    proc = _run(["-m", "sprites.download", "--from", str(sprite_dir), "--out", str(out), "--no-corpus"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    src = sorted(p.name for p in sprite_dir.glob("*.png"))
    assert sorted(p.name for p in out.glob("*.png")) == src and len(src) == N_SPRITES
    for name in src:
        assert (out / name).read_bytes() == (sprite_dir / name).read_bytes()
    assert f"{N_SPRITES} images" in proc.stdout
    # not the 919 official sprites: a warning, not a failure
    assert "warning" in proc.stderr and "919" in proc.stderr


def test_download_from_missing_folder_is_one_line(tmp_path):
    proc = _run(["-m", "sprites.download", "--from", "/nonexistent", "--out", str(tmp_path / "pokemon"), "--no-corpus"],
                tmp_path)
    line = _assert_one_line_error(proc)
    assert "/nonexistent" in line
    assert not (tmp_path / "pokemon").exists()


# --- in-process: run_main and sprites.download details ------------------------------------------

def _main_raising(exc):
    def main(argv):
        raise exc
    return main


def test_run_main_user_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_main(_main_raising(UserError("the thing is wrong; do this instead")), ["a"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: the thing is wrong; do this instead\n"


def test_run_main_debug_keeps_the_traceback():
    seen = []

    def main(argv):
        seen.append(argv)
        raise UserError("boom")

    with pytest.raises(UserError, match="boom"):
        run_main(main, ["x", "--debug", "y"])
    assert seen == [["x", "y"]]  # --debug is removed from argv


def test_run_main_programming_errors_propagate():
    with pytest.raises(ZeroDivisionError):
        run_main(_main_raising(ZeroDivisionError("bug")), [])


def test_run_main_interrupt(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_main(_main_raising(KeyboardInterrupt()), [])
    assert exit_.value.code == 130
    assert "interrupted" in capsys.readouterr().err


def _copy_pngs(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for p in src.glob("*.png"):
        (dest / p.name).write_bytes(p.read_bytes())
    return dest


def test_download_verifies_sha256sums(sprite_dir, tmp_path, capsys):
    src = _copy_pngs(sprite_dir, tmp_path / "src" / "pokemon")
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(src.glob("*.png")))
    (src / "SHA256SUMS").write_text(sums)
    run_main(main, ["--from", str(src), "--out", str(tmp_path / "out"), "--no-corpus"])
    assert f"verified {N_SPRITES} files against SHA256SUMS" in capsys.readouterr().out
    assert len(list((tmp_path / "out").glob("*.png"))) == N_SPRITES

    victim = sorted(src.glob("*.png"))[2]
    victim.write_bytes(victim.read_bytes() + b"\x00")  # damaged copy
    with pytest.raises(SystemExit) as exit_:
        run_main(main, ["--from", str(src), "--out", str(tmp_path / "out2"), "--no-corpus"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and victim.name in err[0]
    assert not (tmp_path / "out2").exists()  # nothing copied from a damaged source


def test_download_rejects_unreadable_png(sprite_dir, tmp_path, capsys):
    src = _copy_pngs(sprite_dir, tmp_path / "src")
    (src / "broken.png").write_text("not a png")
    with pytest.raises(SystemExit) as exit_:
        run_main(main, ["--from", str(src), "--out", str(tmp_path / "out"), "--no-corpus"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and err.startswith("error: ")


def test_download_from_folder_without_png(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "readme.txt").write_text("no images here")
    with pytest.raises(SystemExit) as exit_:
        run_main(main, ["--from", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--no-corpus"])
    assert exit_.value.code == 2
    assert "holds no PNG" in capsys.readouterr().err


def test_download_uses_pokemon_data_env(sprite_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POKEMON_DATA", str(sprite_dir))
    run_main(main, ["--out", str(tmp_path / "out"), "--no-corpus"])
    assert len(list((tmp_path / "out").glob("*.png"))) == N_SPRITES
    assert f"copying sprites from {sprite_dir}" in capsys.readouterr().out


def test_download_keeps_a_verified_set_without_downloading(sprite_dir, tmp_path, monkeypatch, capsys):
    """Without --from, a folder that already holds the verified artworks is kept (run_all.sh calls the
    download again when only the corpus is missing); any other folder is downloaded into."""

    monkeypatch.delenv("POKEMON_DATA", raising=False)
    out = tmp_path / "out"
    shutil.copytree(sprite_dir, out)
    fetched = []
    monkeypatch.setattr(download, "from_internet", lambda dest: fetched.append(dest))
    monkeypatch.setattr(download, "EXPECTED_FINGERPRINT", content_fingerprint(sorted(out.glob("*.png"))))
    run_main(download.main, ["--out", str(out), "--no-corpus"])
    assert fetched == [] and "already holds the verified artworks" in capsys.readouterr().out
    monkeypatch.setattr(download, "EXPECTED_FINGERPRINT", "0" * 64)
    run_main(download.main, ["--out", str(out), "--no-corpus"])
    assert fetched == [out]
