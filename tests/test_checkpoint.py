"""plumbing.checkpoint (atomic save, safe load) and the LPIPS weights check of autoencoder.losses."""
from __future__ import annotations

import errno
import hashlib
import importlib
import os
import tempfile
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.hub

import plumbing.checkpoint as ck
from autoencoder.losses import backbone_weights_file, load_lpips
from plumbing.checkpoint import FORMAT_VERSION, file_sha256, load_checkpoint, save_atomic
from plumbing.cli import UserError, run_main


def _ckpt(kind="autoencoder", **extra):
    gen = torch.Generator().manual_seed(0)
    return {"kind": kind, "format": FORMAT_VERSION, "config": {"train": {"lr": 1e-3, "channels": [8, 16]}},
            "model": {"w": torch.randn(3, 4, generator=gen), "b": torch.zeros(4), "n": torch.tensor(7)},
            "latent": {"scale": 0.5, "channel_std": [1.0, 2.0]}, "data_fingerprint": "ab" * 32, **extra}


def test_save_then_load_round_trip(tmp_path):
    obj = _ckpt()
    path = save_atomic(obj, tmp_path / "sub" / "dir" / "ae.pt")  # creates missing folders
    assert path == tmp_path / "sub" / "dir" / "ae.pt" and path.is_file()
    back = load_checkpoint(path, kind="autoencoder")
    assert back.keys() == obj.keys()
    for k, v in obj["model"].items():
        assert torch.equal(back["model"][k], v) and back["model"][k].dtype == v.dtype
    assert back["config"] == obj["config"] and back["latent"] == obj["latent"]
    assert load_checkpoint(path)["kind"] == "autoencoder"  # kind=None accepts any kind
    assert sorted(os.listdir(path.parent)) == ["ae.pt"]  # no temp file left behind


def test_save_replaces_existing_file(tmp_path):
    path = tmp_path / "ae.pt"
    save_atomic(_ckpt(version=1), path)
    save_atomic(_ckpt(version=2), path)
    assert load_checkpoint(path)["version"] == 2
    assert os.listdir(tmp_path) == ["ae.pt"]


def test_wrong_kind(tmp_path):
    path = save_atomic(_ckpt(kind="ldm"), tmp_path / "ldm.pt")
    with pytest.raises(UserError) as exc:
        load_checkpoint(path, kind="autoencoder")
    assert "'ldm'" in str(exc.value) and "'autoencoder'" in str(exc.value)


def test_wrong_format_version(tmp_path):
    obj = _ckpt()
    obj["format"] = FORMAT_VERSION + 1
    path = save_atomic(obj, tmp_path / "ae.pt")
    with pytest.raises(UserError, match="format"):
        load_checkpoint(path, kind="autoencoder")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path)  # a folder is not a checkpoint file


@pytest.mark.parametrize("content", [
    pytest.param(b"", id="empty"),
    pytest.param(b"hello, I am a text file\n", id="text-hello"),
    pytest.param(b"kind: autoencoder\nformat: 1\n", id="yaml"),
    pytest.param(b'{"kind": "autoencoder", "format": 1}', id="json"),
    pytest.param(bytes(range(256)) * 40, id="binary"),
    pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(64), id="png-header"),
    pytest.param(b"PK\x03\x04" + b"\x00" * 100, id="broken-zip"),
])
def test_non_checkpoint_files(tmp_path, content):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(UserError) as exc:
        load_checkpoint(path)
    assert str(path) in str(exc.value)


def test_truncated_checkpoint(tmp_path):
    path = save_atomic(_ckpt(), tmp_path / "ae.pt")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError):
        load_checkpoint(path)


@pytest.mark.parametrize("obj", [[1, 2, 3], {"model": {}}, {"kind": "autoencoder"}, torch.zeros(3)])
def test_torch_files_that_are_not_project_checkpoints(tmp_path, obj):
    path = tmp_path / "x.pt"
    torch.save(obj, path)
    with pytest.raises(UserError, match="not a pokediffusion checkpoint"):
        load_checkpoint(path)


class _Payload:
    """Unpickling this object runs a shell command that creates a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _WritePayload:
    """Unpickling this calls builtins.exec on code that writes a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


@pytest.mark.parametrize("payload_cls", [_Payload, _WritePayload])
def test_pickle_payload_is_refused_and_never_runs(tmp_path, payload_cls):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    # looks like a project checkpoint on the outside
    torch.save({"kind": "autoencoder", "format": FORMAT_VERSION, "model": {"w": torch.zeros(2)},
                "extra": payload_cls(marker)}, path)
    with pytest.raises(UserError) as exc:
        load_checkpoint(path, kind="autoencoder")
    assert "refused" in str(exc.value) or "objects other than weights" in str(exc.value)
    assert not marker.exists(), "the pickled code ran while loading"
    # control: the payload is live, an unsafe load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = save_atomic(_ckpt(version=1), tmp_path / "ae.pt")
    before = path.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial data")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match="disk full") as exc:
        save_atomic(_ckpt(version=2), path)
    assert "intact" in str(exc.value)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ae.pt"]  # the temp file was removed
    monkeypatch.undo()
    assert load_checkpoint(path)["version"] == 1


def test_other_write_errors(tmp_path, monkeypatch):
    path = save_atomic(_ckpt(version=1), tmp_path / "ae.pt")
    before = path.read_bytes()

    def denied(obj, f, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(torch, "save", denied)
    with pytest.raises(UserError, match="cannot write"):
        save_atomic(_ckpt(version=2), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ae.pt"]

    def bug(obj, f, *args, **kwargs):
        raise RuntimeError("a programming error")

    monkeypatch.setattr(torch, "save", bug)
    with pytest.raises(RuntimeError, match="programming error"):  # real bugs are not disguised
        save_atomic(_ckpt(version=3), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ae.pt"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_real_disk_full_via_dev_full(tmp_path, monkeypatch):
    """The temp file's descriptor writes to /dev/full: every write fails with ENOSPC."""
    path = save_atomic(_ckpt(version=1), tmp_path / "ae.pt")
    before = path.read_bytes()
    real_mkstemp = tempfile.mkstemp

    def full_mkstemp(**kwargs):
        fd, name = real_mkstemp(**kwargs)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name

    monkeypatch.setattr(ck.tempfile, "mkstemp", full_mkstemp)
    big = _ckpt(version=2)
    big["model"]["big"] = torch.zeros(100_000)
    with pytest.raises(UserError, match="disk full"):
        save_atomic(big, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ae.pt"]


def test_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a folder")
    with pytest.raises(UserError, match="cannot create folder"):
        save_atomic(_ckpt(), blocker / "sub" / "ae.pt")


def test_file_sha256(tmp_path):
    path = tmp_path / "blob.bin"
    data = os.urandom(3 << 20)  # larger than the 1 MiB read block
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert file_sha256(path) != hashlib.sha256(data).hexdigest()


# --- LPIPS needs pretrained weights, never a silent random backbone ----------------------------

def _offline(monkeypatch):
    """No network, whatever the machine: torch.hub's download fails as it does without internet."""

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)


def test_load_lpips_without_weights_is_a_user_error(tmp_path, monkeypatch):
    pytest.importorskip("lpips")
    pytest.importorskip("torchvision")

    home = tmp_path / "empty_torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    _offline(monkeypatch)
    with pytest.raises(UserError) as exc:
        load_lpips("alex")
    msg = str(exc.value)
    assert "https://download.pytorch.org/models/alexnet-" in msg
    assert "loss.perceptual_weight=0" in msg
    assert str(home) in msg  # says where the file must go
    assert "\n" not in msg  # one line, for the `error: ...` convention
    assert not list(home.rglob("*.pth"))  # nothing half-downloaded left behind


def test_load_lpips_with_damaged_cached_weights(tmp_path, monkeypatch):
    pytest.importorskip("lpips")
    pytest.importorskip("torchvision")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _offline(monkeypatch)
    url, cached = backbone_weights_file("squeeze")
    assert str(cached).startswith(str(tmp_path))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not really weights")
    with pytest.raises(UserError) as exc:
        load_lpips("squeeze")
    assert url in str(exc.value) and "loss.perceptual_weight=0" in str(exc.value)




@pytest.mark.parametrize("payload_cls", [_Payload, _WritePayload])
@pytest.mark.parametrize("trainer", ["autoencoder", "diffusion"])
def test_state_checkpoint_with_pickle_payload_is_refused_on_resume(tmp_path, capsys, payload_cls, trainer):
    """`--resume RUN_DIR` loads the newest state-<step>.pt with weights_only too: a planted state
    carrying a payload is refused with one line, and its code never runs."""

    main = importlib.import_module(f"{trainer}.train").main
    marker = tmp_path / "pwned.txt"
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"kind": f"{trainer}-state", "format": FORMAT_VERSION, "config": {}, "model": {"w": torch.zeros(2)},
                "rng": payload_cls(marker)}, run / "state-00000010.pt")
    with pytest.raises(SystemExit) as exit_:
        run_main(main, ["--resume", str(run)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused" in err[0] and "state-00000010.pt" in err[0], err
    assert not marker.exists(), "the pickled code ran while resuming"
