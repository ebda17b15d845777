"""Checkpoint URLs (clap_helpers.embedding.checkpoints) against a local HTTP server: fetched once,
checksums, archives, offline; and load_clap on the fetched tiny AudioCLIP and M2D-CLAP fixtures."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from clap_helpers.data.download.http import DownloadError
from clap_helpers.devtools.fixtures.tiny_audioclip import make_tiny_audioclip
from clap_helpers.devtools.fixtures.tiny_m2d import make_tiny_m2d
from clap_helpers.embedding.checkpoints import (
    MARKER,
    CheckpointUnavailable,
    checkpoint_cache_dir,
    fetch_checkpoint,
    resolve_checkpoint,
)


class Server:
    """Serves ``files`` on 127.0.0.1 and records every requested path."""

    def __init__(self, port: int) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.port = port

    def add(self, name: str, data: bytes) -> str:
        self.files[name] = data
        return f"http://127.0.0.1:{self.port}/{name}"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        srv: Server = self.server.state  # type: ignore[attr-defined]
        srv.requests.append(self.path)
        data = srv.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = Server(httpd.server_address[1])  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd.state  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def online(monkeypatch):
    """The test session runs with HF_HUB_OFFLINE=1; these tests download from 127.0.0.1."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def _m2d_zip(tmp_path: Path) -> tuple[bytes, Path]:
    """The tiny M2D-CLAP release folder zipped as the release is; returns (zip, text folder)."""
    ckpt, text = make_tiny_m2d(tmp_path / "m2d", "2024")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        folder = ckpt.parent.name
        zf.writestr(f"{folder}/", b"")
        for p in sorted(ckpt.parent.iterdir()):
            zf.write(p, f"{folder}/{p.name}")
    return buf.getvalue(), text


def test_fetched_once_then_from_cache(server, tmp_path, monkeypatch):
    data = b"checkpoint bytes" * 100
    url = server.add("releases/v0.1/model.pt", data)
    cache = tmp_path / "cache"
    sha = hashlib.sha256(data).hexdigest()
    path = fetch_checkpoint(url, checksum=f"sha256:{sha}", cache_dir=cache, progress=False)
    assert path.name == "model.pt" and path.read_bytes() == data
    assert path.parent.parent == cache and len(path.parent.name) == 16  # <root>/<url hash>/
    assert _files(cache) == [path.parent.name, f"{path.parent.name}/{MARKER}",
                             f"{path.parent.name}/model.pt"]  # fmt: skip
    assert server.requests == ["/releases/v0.1/model.pt"]
    md5 = hashlib.md5(data).hexdigest()
    again = fetch_checkpoint(url, checksum=f"md5:{md5}", cache_dir=cache, progress=False)
    assert again == path and len(server.requests) == 1  # second call: no request
    with pytest.raises(DownloadError, match="delete"):  # a cached copy with another checksum
        fetch_checkpoint(url, checksum="md5:" + "0" * 32, cache_dir=cache, progress=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: the cached copy, still no request
    assert resolve_checkpoint(url, cache_dir=cache, progress=False) == str(path)
    assert len(server.requests) == 1
    local = str(tmp_path / "x.pt")  # not a URL: unchanged
    assert resolve_checkpoint(local, cache_dir=cache) == local


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    url = server.add("model.pt", b"the real bytes")
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="checksum mismatch.*deleted"):
        fetch_checkpoint(url, checksum="sha256:" + "a" * 64, cache_dir=cache, progress=False)
    assert _files(cache) == []
    with pytest.raises(ValueError, match="bad checksum"):
        fetch_checkpoint(url, checksum="sha256:abc", cache_dir=cache, progress=False)


def test_offline_uncached_and_unreachable_are_clear(server, tmp_path, monkeypatch):
    url = server.add("AudioCLIP-Full-Training.pt", b"x")
    cache = tmp_path / "cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointUnavailable, match="HF_HUB_OFFLINE") as err:
        fetch_checkpoint(url, cache_dir=cache, progress=False)
    assert url in str(err.value) and "pass the local checkpoint path" in str(err.value)
    assert server.requests == [] and _files(cache) == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    missing = url.replace("AudioCLIP", "Missing")  # HTTP 404, as no network would be
    with pytest.raises(OSError, match="HTTP 404.*pass the local checkpoint path"):
        fetch_checkpoint(missing, cache_dir=cache, progress=False)
    assert _files(cache) == []


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CLAP_HELPERS_CHECKPOINTS", str(tmp_path / "ckpts"))
    assert checkpoint_cache_dir() == tmp_path / "ckpts"
    monkeypatch.delenv("CLAP_HELPERS_CHECKPOINTS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert checkpoint_cache_dir() == tmp_path / "xdg" / "clap_helpers" / "checkpoints"
    assert checkpoint_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_zip_extracted_with_folder_name(server, tmp_path):
    data, _ = _m2d_zip(tmp_path)
    url = server.add("v0.1.0/m2d_clap_vit_base-80x608p16x16-240128.zip", data)
    cache = tmp_path / "cache"
    path = fetch_checkpoint(url, cache_dir=cache, progress=False)
    assert path.name == "checkpoint-300.pth"
    assert path.parent.name == "m2d_clap_vit_base-80x608p16x16-240128"  # the configuration
    h = path.parent.parent.name
    assert not any(n.endswith((".zip", ".part")) or ".clap_tmp_" in n for n in _files(cache))
    assert f"{h}/{MARKER}" in _files(cache)
    assert fetch_checkpoint(url, cache_dir=cache, progress=False) == path
    assert len(server.requests) == 1


def test_bad_archives_leave_nothing(server, tmp_path):
    cache = tmp_path / "cache"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil/checkpoint-1.pth", b"x")
    url = server.add("evil.zip", buf.getvalue())
    with pytest.raises(DownloadError, match="refused the archive"):
        fetch_checkpoint(url, cache_dir=cache, progress=False)
    assert _files(cache) == []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("release/readme.txt", b"no weights here")
    url = server.add("empty.zip", buf.getvalue())
    with pytest.raises(DownloadError, match="one checkpoint file.*none"):
        fetch_checkpoint(url, cache_dir=cache, progress=False)
    assert _files(cache) == []


def test_load_clap_from_urls(server, tmp_path):
    import clap_helpers as ch

    ckpt, bpe = make_tiny_audioclip(tmp_path / "ac")
    url = server.add("v0.1/AudioCLIP-Full-Training.pt", ckpt.read_bytes())
    bpe_url = server.add("v0.1/bpe_simple_vocab_16e6.txt.gz", bpe.read_bytes())
    cache = tmp_path / "cache"
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    opts = dict(device="cpu", precision="fp32", cache_dir=False, checkpoint_cache=cache)
    enc = ch.load_clap(url, bpe_vocab=bpe_url, checksum=f"sha256:{sha}", **opts)
    assert enc.family.name == "audioclip"  # detected on the fetched file
    local = ch.load_clap(ckpt, bpe_vocab=bpe, **opts)
    texts = ["a dog barks", "rain"]
    assert (enc.embed_text(texts) == local.embed_text(texts)).all()
    data, text = _m2d_zip(tmp_path)
    url = server.add("v0.1.0/m2d_clap_vit_base-80x608p16x16-240128.zip", data)
    enc = ch.load_clap(url, family="m2d-clap", text_model=str(text), **opts)
    assert enc.family.name == "m2d-clap" and enc.sample_rate == 16000
    enc = ch.load_clap(url, text_model=str(text), **opts)  # detected, from the cache
    assert enc.family.name == "m2d-clap"
    assert len(server.requests) == 3


def test_tar_without_folder_unpacked_into_its_name(server, tmp_path):
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("weights.pt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    url = server.add("release-1.tar.gz", buf.getvalue())
    path = fetch_checkpoint(url, cache_dir=tmp_path / "cache", progress=False)
    assert path.parent.name == "release-1" and path.read_bytes() == b"abc"
