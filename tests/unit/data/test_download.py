"""clap_helpers.data.download against a local HTTP server (with Range support): offline and fast."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
import threading
import zipfile
from collections import namedtuple
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from clap_helpers.data import download
from clap_helpers.data.registry import RECORDS

REPO = Path(__file__).resolve().parents[3]


# ----------------------------------------------------------------------------- HTTP server


class Server:
    """Serves ``files`` on 127.0.0.1 and records every request as (path, Range header)."""

    def __init__(self, httpd: ThreadingHTTPServer) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.ignore_range = False
        self.cut_after: int | None = None  # the next body stops after this many bytes
        self.port = httpd.server_address[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def add(self, name: str, data: bytes) -> str:
        self.files[name] = data
        return self.url(name)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        srv: Server = self.server.state  # type: ignore[attr-defined]
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not srv.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:
            body, srv.cut_after = body[: srv.cut_after], None
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = Server(httpd)  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd.state  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


# ----------------------------------------------------------------------------- archives


def wav_bytes(seconds: float = 0.25, sr: int = 44_100, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    noise = np.random.default_rng(seed).uniform(-0.5, 0.5, int(seconds * sr))
    sf.write(buf, noise, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


ESC50_CSV = b"filename,fold,target,category,esc10,src_file,take\n1-100038-A-14.wav,1,14,chirping_birds,False,100038,A\n"
US8K_CSV = b"slice_file_name,fsID,start,end,salience,fold,classID,class\n100032-3-0-0.wav,100032,0.0,0.3,1,5,3,dog_bark\n"


def make_zip(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def make_tar_gz(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tf.addfile(info, io.BytesIO(member[1]))
    return buf.getvalue()


def tar_link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def esc50_members() -> dict[str, bytes]:
    return {
        "ESC-50-master/meta/esc50.csv": ESC50_CSV,
        "ESC-50-master/audio/1-100038-A-14.wav": wav_bytes(),
        "ESC-50-master/README.md": b"ESC-50 mimic\n",
    }


def us8k_members() -> list[tarfile.TarInfo | tuple[str, bytes]]:
    folds: list[tarfile.TarInfo | tuple[str, bytes]] = [
        (f"UrbanSound8K/audio/fold{k}/{k}-0-0-0.wav", wav_bytes(0.05, 22_050, k))
        for k in range(1, 11)
    ]
    return [("UrbanSound8K/metadata/UrbanSound8K.csv", US8K_CSV), *folds]


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def sha1(data: bytes) -> str:
    return "sha1:" + hashlib.sha1(data).hexdigest()


@pytest.fixture
def esc50(server: Server) -> tuple[str, str, bytes]:
    """(url, checksum, bytes) of an ESC-50 mimic archive served by ``server``."""
    data = make_zip(esc50_members())
    return server.add("mirror/esc50.zip", data), md5(data), data


@pytest.fixture(autouse=True)
def no_mirror_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("CLAP_MIRROR_", "CLAP_CHECKSUM_")):
            monkeypatch.delenv(name)


# ----------------------------------------------------------------------------- archives: success


def test_esc50_layout_marker_and_idempotent(tmp_path: Path, server: Server, esc50) -> None:
    url, checksum, _ = esc50
    dest = tmp_path / "dl"
    folder = download.fetch("esc50", dest, url=url, checksum=checksum, progress=False)
    assert folder == dest / "ESC-50-master"
    assert (folder / "meta" / "esc50.csv").read_bytes() == ESC50_CSV
    assert sf.info(str(folder / "audio" / "1-100038-A-14.wav")).samplerate == 44_100
    assert (folder / download.MARKER).read_text().splitlines() == [checksum, url]
    assert sorted(p.name for p in dest.iterdir()) == ["ESC-50-master"]  # archive deleted
    assert download.is_present(folder, "meta/esc50.csv")
    n = len(server.requests)
    assert n == 1
    assert download.fetch("esc50", dest, url=url, checksum=checksum, progress=False) == folder
    assert len(server.requests) == n


def test_keep_archive_is_reused_without_download(tmp_path: Path, server: Server, esc50) -> None:
    url, checksum, data = esc50
    download.fetch("esc50", tmp_path, url=url, checksum=checksum, keep_archive=True, progress=False)
    assert (tmp_path / "ESC-50-master.zip").read_bytes() == data
    shutil.rmtree(tmp_path / "ESC-50-master")
    download.fetch("esc50", tmp_path, url=url, checksum=checksum, progress=False)
    assert len(server.requests) == 1
    assert (tmp_path / "ESC-50-master" / "meta" / "esc50.csv").is_file()
    assert not (tmp_path / "ESC-50-master.zip").exists()


def test_urbansound8k_tar_gz_from_env_mirror(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_tar_gz(us8k_members())
    monkeypatch.setenv("CLAP_MIRROR_URBANSOUND8K", server.add("us8k.tar.gz", data))
    monkeypatch.setenv("CLAP_CHECKSUM_URBANSOUND8K", md5(data))
    folder = download.fetch("urbansound8k", tmp_path, progress=False)
    assert folder == tmp_path / "UrbanSound8K"
    folds = sorted(p.name for p in (folder / "audio").iterdir())
    assert folds == sorted(f"fold{k}" for k in range(1, 11))
    assert (folder / "metadata" / "UrbanSound8K.csv").read_bytes() == US8K_CSV
    assert server.requests == [("/us8k.tar.gz", None)]


def test_fma_two_archives_sha1_env(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = make_zip({"fma_small/000/000002.mp3": b"ID3 fake", "fma_small/155/155066.mp3": b"x"})
    meta = make_zip({"fma_metadata/tracks.csv": b"a,b\n", "fma_metadata/genres.csv": b"c\n"})
    monkeypatch.setenv("CLAP_MIRROR_FMA_SMALL", server.add("fma_small.zip", small))
    monkeypatch.setenv("CLAP_CHECKSUM_FMA_SMALL", sha1(small))
    monkeypatch.setenv("CLAP_MIRROR_FMA_METADATA", server.add("fma_metadata.zip", meta))
    monkeypatch.setenv("CLAP_CHECKSUM_FMA_METADATA", sha1(meta))
    assert download.fetch("fma_small", tmp_path, progress=False) == tmp_path / "fma_small"
    assert (tmp_path / "fma_small" / "155" / "155066.mp3").read_bytes() == b"x"
    assert (tmp_path / "fma_metadata" / "genres.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fma_metadata", "fma_small"]
    with pytest.raises(ValueError, match="CLAP_MIRROR_FMA_METADATA"):
        download.fetch("fma_small", tmp_path, url=server.url("fma_small.zip"))


def test_option_wins_over_env_and_env_mirror_uses_official_checksum(
    tmp_path: Path, server: Server, esc50, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, checksum, _ = esc50
    monkeypatch.setenv("CLAP_MIRROR_ESC50", url)
    official = RECORDS["esc50"].archives[0].checksum.split(":")[1]
    with pytest.raises(download.DownloadError, match=f"expected md5 {official} got"):
        download.fetch("esc50", tmp_path, progress=False)
    monkeypatch.setenv("CLAP_MIRROR_ESC50", server.url("missing.zip"))
    download.fetch("esc50", tmp_path, url=url, checksum=checksum, progress=False)
    assert server.requests[-1][0] == "/mirror/esc50.zip"


# ----------------------------------------------------------------------------- failures


def test_checksum_mismatch_deletes_everything(tmp_path: Path, esc50) -> None:
    url, _, data = esc50
    wrong = md5(data + b"x")
    with pytest.raises(download.DownloadError) as err:
        download.fetch("esc50", tmp_path, url=url, checksum=wrong, progress=False)
    message = str(err.value)
    assert message.startswith("checksum mismatch for esc50: expected md5 ")
    assert wrong.split(":")[1] in message and md5(data).split(":")[1] in message
    assert url in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_existing_unverified_folder_is_not_touched(tmp_path: Path, server: Server, esc50) -> None:
    url, checksum, _ = esc50
    (tmp_path / "ESC-50-master" / "meta").mkdir(parents=True)
    (tmp_path / "ESC-50-master" / "meta" / "esc50.csv").write_bytes(b"mine")
    with pytest.raises(download.DownloadError, match="not a verified download"):
        download.fetch("esc50", tmp_path, url=url, checksum=checksum, progress=False)
    assert server.requests == []
    assert (tmp_path / "ESC-50-master" / "meta" / "esc50.csv").read_bytes() == b"mine"


def test_http_error_names_dataset_and_url(tmp_path: Path, server: Server) -> None:
    url = server.url("nothing-here.zip")
    with pytest.raises(download.DownloadError, match=f"esc50: HTTP 404 .* from {url}"):
        download.fetch("esc50", tmp_path, url=url, progress=False)
    assert list(tmp_path.iterdir()) == []


DiskUsage = namedtuple("DiskUsage", "total used free")


def test_not_enough_space_to_unpack(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = {"ESC-50-master/meta/esc50.csv": ESC50_CSV, "ESC-50-master/big": bytes(1 << 20)}
    data = make_zip(members)
    url = server.add("big.zip", data)

    def disk_usage(path: str | os.PathLike[str]) -> DiskUsage:
        return DiskUsage(1 << 40, 0, len(data))  # room for the archive, not for its contents

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    with pytest.raises(download.DownloadError, match="not enough disk space for unpacking esc50"):
        download.fetch("esc50", tmp_path, url=url, checksum=md5(data), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ESC-50-master.zip"]


# ----------------------------------------------------------------------------- resume


def test_resume_existing_part_with_range(tmp_path: Path, server: Server, esc50) -> None:
    url, checksum, data = esc50
    (tmp_path / "ESC-50-master.zip.part").write_bytes(data[:1000])
    download.fetch("esc50", tmp_path, url=url, checksum=checksum, progress=False)
    assert server.requests == [("/mirror/esc50.zip", "bytes=1000-")]
    assert download.is_present(tmp_path / "ESC-50-master", "meta/esc50.csv")


def test_interrupted_download_resumes_on_next_run(tmp_path: Path, server: Server, esc50) -> None:
    url, checksum, data = esc50
    server.cut_after = len(data) // 3
    with pytest.raises(download.DownloadError, match="interrupted after .* run again to resume"):
        download.fetch("esc50", tmp_path, url=url, checksum=checksum, progress=False)
    part = tmp_path / "ESC-50-master.zip.part"
    assert part.stat().st_size == len(data) // 3
    assert not (tmp_path / "ESC-50-master").exists()
    download.fetch("esc50", tmp_path, url=url, checksum=checksum, progress=False)
    assert server.requests[-1] == ("/mirror/esc50.zip", f"bytes={len(data) // 3}-")
    assert (tmp_path / "ESC-50-master" / "meta" / "esc50.csv").read_bytes() == ESC50_CSV
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(tmp_path: Path, server: Server, esc50) -> None:
    url, checksum, _ = esc50
    server.ignore_range = True
    (tmp_path / "ESC-50-master.zip.part").write_bytes(b"garbage that is not the archive")
    download.fetch("esc50", tmp_path, url=url, checksum=checksum, progress=False)
    assert server.requests[0][1] is not None
    assert download.is_present(tmp_path / "ESC-50-master", "meta/esc50.csv")


def test_complete_part_gets_416_and_is_used(tmp_path: Path, server: Server, esc50) -> None:
    url, checksum, data = esc50
    (tmp_path / "ESC-50-master.zip.part").write_bytes(data)
    download.fetch("esc50", tmp_path, url=url, checksum=checksum, progress=False)
    assert server.requests == [("/mirror/esc50.zip", f"bytes={len(data)}-")]
    assert (tmp_path / "ESC-50-master" / "meta" / "esc50.csv").is_file()


# ----------------------------------------------------------------------------- unsafe archives

ESC = esc50_members()
US8K = us8k_members()
UNSAFE_ARCHIVES: dict[str, Callable[[], bytes]] = {
    "zip-absolute": lambda: make_zip({**ESC, "/evil.txt": b"x"}),
    "zip-dotdot": lambda: make_zip({**ESC, "ESC-50-master/../../evil.txt": b"x"}),
    "zip-symlink-out": lambda: make_zip(ESC, links={"ESC-50-master/link": "../../evil.txt"}),
    "zip-symlink-abs": lambda: make_zip(ESC, links={"ESC-50-master/link": "/etc/passwd"}),
    "tar-absolute": lambda: make_tar_gz([*US8K, ("/evil.txt", b"x")]),
    "tar-dotdot": lambda: make_tar_gz([*US8K, ("UrbanSound8K/../../evil.txt", b"x")]),
    "tar-symlink-out": lambda: make_tar_gz([*US8K, tar_link("UrbanSound8K/l", "../../evil.txt")]),
    "tar-symlink-abs": lambda: make_tar_gz([*US8K, tar_link("UrbanSound8K/l", "/tmp")]),
    "tar-hardlink-out": lambda: make_tar_gz(
        [*US8K, tar_link("UrbanSound8K/h", "../evil.txt", tarfile.LNKTYPE)]
    ),
    "tar-write-through-link": lambda: make_tar_gz(
        [*US8K, tar_link("UrbanSound8K/up", ".."), ("UrbanSound8K/up/evil.txt", b"x")]
    ),
    "tar-link-chain": lambda: make_tar_gz(
        [
            *US8K,
            tar_link("UrbanSound8K/a", "."),
            tar_link("UrbanSound8K/b", "a/../../evil.txt"),
        ]
    ),
    "tar-hardlink-missing": lambda: make_tar_gz(
        [*US8K, tar_link("UrbanSound8K/h", "UrbanSound8K/none", tarfile.LNKTYPE)]
    ),
    "tar-device": lambda: make_tar_gz([*US8K, tar_link("UrbanSound8K/dev", "", tarfile.CHRTYPE)]),
}


@pytest.mark.parametrize("case", sorted(UNSAFE_ARCHIVES))
def test_unsafe_members_are_refused(tmp_path: Path, server: Server, case: str) -> None:
    data = UNSAFE_ARCHIVES[case]()
    name = "esc50" if case.startswith("zip") else "urbansound8k"
    url = server.add(f"{case}.bin", data)
    dest = tmp_path / "a" / "dest"
    with pytest.raises(download.DownloadError, match=f"{name}: refused the archive from {url}"):
        download.fetch(name, dest, url=url, checksum=md5(data), progress=False)
    assert list(dest.iterdir()) == []
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["a", "a/dest"]


def test_links_inside_the_archive_are_allowed(tmp_path: Path, server: Server) -> None:
    data = make_tar_gz(
        [*US8K, tar_link("UrbanSound8K/latest", "metadata/UrbanSound8K.csv")]
        + [tar_link("UrbanSound8K/first", "UrbanSound8K/audio/fold1/1-0-0-0.wav", tarfile.LNKTYPE)]
    )
    url = server.add("ok.tar.gz", data)
    folder = download.fetch("urbansound8k", tmp_path, url=url, checksum=md5(data), progress=False)
    assert (folder / "latest").is_symlink()
    assert (folder / "latest").read_bytes() == US8K_CSV
    assert (folder / "first").read_bytes() == (folder / "audio/fold1/1-0-0-0.wav").read_bytes()


def test_archive_without_expected_folder_is_refused(tmp_path: Path, server: Server) -> None:
    data = make_zip({"other/meta/esc50.csv": ESC50_CSV})
    url = server.add("other.zip", data)
    with pytest.raises(download.DownloadError, match="no top-level folder 'ESC-50-master'"):
        download.fetch("esc50", tmp_path, url=url, checksum=md5(data), progress=False)
    assert list(tmp_path.iterdir()) == []


def stored_zip(members: dict[str, bytes]) -> bytes:
    """A zip whose members are stored uncompressed (their bytes appear as they are)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


CORRUPT_ARCHIVES: dict[str, Callable[[], bytes]] = {
    # a byte changed inside a member: its CRC-32 no longer matches
    "zip-bad-crc": lambda: stored_zip(ESC).replace(b"ESC-50 mimic", b"ESC-50 mimiX"),
    # the gzip stream ends in the middle of a member
    "tar-cut": lambda: make_tar_gz(US8K)[:-300],
}


@pytest.mark.parametrize("case", sorted(CORRUPT_ARCHIVES))
def test_corrupt_archive_is_refused_deleted_and_fetched_again(
    tmp_path: Path, server: Server, case: str
) -> None:
    """A damaged archive that matches its (mirror's) checksum is the mirror's fault: it is
    deleted like an unsafe one, so the next run downloads it again and succeeds."""
    name, good = (
        ("esc50", stored_zip(ESC))
        if case.startswith("zip")
        else ("urbansound8k", make_tar_gz(US8K))
    )
    bad = CORRUPT_ARCHIVES[case]()
    url = server.add("mirror/archive", bad)
    with pytest.raises(
        download.DownloadError, match=f"{name}: refused the archive from {url}: it is corrupt"
    ) as err:
        download.fetch(name, tmp_path, url=url, checksum=md5(bad), progress=False)
    assert "the archive was deleted, check the URL or your mirror" in str(err.value)
    assert list(tmp_path.iterdir()) == []
    server.add("mirror/archive", good)
    folder = download.fetch(name, tmp_path, url=url, checksum=md5(good), progress=False)
    assert download.is_present(folder, RECORDS[name].archives[0].key_file)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]


# ----------------------------------------------------------------------------- interrupted unpack


@pytest.mark.parametrize("error", [OSError("No space left on device"), KeyboardInterrupt()])
def test_interrupted_extraction_leaves_no_folder(
    tmp_path: Path, server: Server, esc50, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    url, checksum, _ = esc50
    original = zipfile.ZipFile.extract
    calls: list[str] = []

    def failing_extract(self: zipfile.ZipFile, member: zipfile.ZipInfo, path: str) -> str:
        calls.append(member.filename)
        if len(calls) == 2:
            raise error
        return original(self, member, path)

    monkeypatch.setattr(zipfile.ZipFile, "extract", failing_extract)
    with pytest.raises((download.DownloadError, KeyboardInterrupt)) as err:
        download.fetch("esc50", tmp_path, url=url, checksum=checksum, progress=False)
    assert type(err.value) is (
        download.DownloadError if isinstance(error, OSError) else KeyboardInterrupt
    )
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ESC-50-master.zip"]  # archive kept
    monkeypatch.undo()
    download.fetch("esc50", tmp_path, url=url, checksum=checksum, progress=False)
    assert len(server.requests) == 1  # the kept archive was reused
    assert download.is_present(tmp_path / "ESC-50-master", "meta/esc50.csv")


# ----------------------------------------------------------------------------- CLI


def test_main_exit_codes_and_messages(
    tmp_path: Path, server: Server, esc50, capsys: pytest.CaptureFixture[str]
) -> None:
    url, checksum, data = esc50
    dest = str(tmp_path)
    assert download.main(["esc50", "--dest", dest, "--url", url, "--checksum", md5(b"")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("error: checksum mismatch for esc50") and url in err
    assert download.main(["esc50", "--dest", dest, "--checksum", "md5:123"]) == 2
    assert "bad checksum" in capsys.readouterr().err
    assert download.main(["esc50", "fma_small", "--url", url]) == 2
    assert download.main(["fma_small", "--dest", dest, "--url", url]) == 2
    assert "CLAP_MIRROR_FMA_SMALL" in capsys.readouterr().err
    assert download.main(["nope"]) == 2
    assert download.main(["esc50", "--dest", dest, "--url", url, "--checksum", checksum]) == 0
    assert "esc50: ready in" in capsys.readouterr().out
    assert download.main(["esc50", "--dest", dest, "--url", url, "--checksum", checksum]) == 0
    assert "already present and verified" in capsys.readouterr().out
    assert download.main(["--help"]) == 0
    help_text = capsys.readouterr().out
    for var in ("CLAP_MIRROR_ESC50", "CLAP_CHECKSUM_FMA_SMALL", "CLAP_MIRROR_FMA_METADATA"):
        assert var in help_text


def test_dataset_sh_with_env_mirror(tmp_path: Path, server: Server, esc50) -> None:
    url, checksum, _ = esc50
    dest = tmp_path / "downloads"

    def run(check: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CLAP_MIRROR_ESC50": url, "CLAP_CHECKSUM_ESC50": check}
        cmd = ["bash", str(REPO / "dataset.sh"), "esc50", "--dest", str(dest)]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)

    bad = run(md5(b"other"))
    assert bad.returncode == 1
    assert (
        "checksum mismatch for esc50" in bad.stderr and not dest.joinpath("ESC-50-master").exists()
    )
    ok = run(checksum)
    assert ok.returncode == 0, ok.stderr
    assert (dest / "ESC-50-master" / "meta" / "esc50.csv").is_file()
    again = run(checksum)
    assert again.returncode == 0 and "already present" in again.stdout
    assert len(server.requests) == 2


# ----------------------------------------------------------------------------- AudioSet

CLASS_LABELS = """index,mid,display_name
0,/m/09x0r,"Speech"
1,/m/0bt9lr,"Dog"
2,/t/dd00002,"Baby cry, infant cry"
3,/m/01yrx,"Cat"
"""
HEADER = """# Segments csv created Sun Mar  5 10:54:25 2017
# num_ytids=6, num_segs=6, num_unique_labels=4, num_positive_labels=8
# YTID, start_seconds, end_seconds, positive_labels
"""
BALANCED = (
    HEADER
    + """dog1xxxxxxx, 30.000, 40.000, "/m/0bt9lr,/m/09x0r"
gone1xxxxxx, 0.000, 10.000, "/m/0bt9lr"
-dogcatxxxx, 5.500, 15.500, "/m/01yrx,/m/0bt9lr"
baby1xxxxxx, 20.000, 30.000, "/t/dd00002,/m/09x0r"
dog3xxxxxxx, 0.000, 10.000, "/m/0bt9lr"
speech1xxxx, 0.000, 10.000, "/m/09x0r"
cat2xxxxxxx, 10.000, 20.000, "/m/01yrx"
"""
)
EVAL = (
    HEADER
    + """evdogxxxxxx, 0.000, 10.000, "/m/0bt9lr"
evgonexxxxx, 0.000, 10.000, "/t/dd00002"
evbabyxxxxx, 3.000, 13.000, "/t/dd00002,/m/0bt9lr"
"""
)
CLASSES = ["Dog", "Cat", "Baby cry, infant cry"]


class FakeFetcher:
    """Writes 0.1 s of 48 kHz mono noise; videos in ``gone`` are unavailable."""

    def __init__(self, gone: set[str], broken: set[str] = frozenset(), stop_after: int = -1):
        self.gone, self.broken, self.stop_after = gone, broken, stop_after
        self.calls: list[tuple[str, float, float]] = []

    def __call__(self, ytid: str, start: float, end: float, out_path: Path) -> None:
        self.calls.append((ytid, start, end))
        if len(self.calls) == self.stop_after:
            raise KeyboardInterrupt
        if ytid in self.gone:
            raise download.ClipUnavailable("ERROR: [youtube] Video unavailable")
        if ytid in self.broken:
            raise RuntimeError("HTTP Error 503")
        sf.write(out_path, np.zeros(4800, dtype=np.float32), 48_000)


@pytest.fixture
def audioset_base(server: Server) -> str:
    server.add("as/class_labels_indices.csv", CLASS_LABELS.encode())
    server.add("as/balanced_train_segments.csv", BALANCED.encode())
    server.add("as/eval_segments.csv", EVAL.encode())
    return server.url("as/")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_read_segments_real_format(tmp_path: Path) -> None:
    path = tmp_path / "seg.csv"
    path.write_text(BALANCED)
    segs = list(download.read_segments(path))
    assert len(segs) == 7
    assert segs[2] == download.Segment("-dogcatxxxx", "5.500", "15.500", ("/m/01yrx", "/m/0bt9lr"))
    assert segs[2].clip_name == "-dogcatxxxx_5500"
    path.write_text(HEADER + "x, 1.0, \n")
    with pytest.raises(download.DownloadError, match="malformed"):
        list(download.read_segments(path))


def test_audioset_selection_manifest_and_resume(
    tmp_path: Path, server: Server, audioset_base: str
) -> None:
    fetcher = FakeFetcher(gone={"gone1xxxxxx", "evgonexxxxx"})
    summary = download.fetch_audioset(
        tmp_path,
        base_url=audioset_base,
        classes=CLASSES,
        per_class=2,
        fetch_clip=fetcher,
        progress=False,
    )
    root = tmp_path / "audioset"
    assert summary.folder == root and summary.manifest == root / "manifest.csv"
    assert sorted(p.name for p in (root / "csv").iterdir()) == [
        "balanced_train_segments.csv",
        "class_labels_indices.csv",
        "eval_segments.csv",
    ]
    assert [c[0] for c in fetcher.calls] == [
        "dog1xxxxxxx",
        "gone1xxxxxx",
        "-dogcatxxxx",
        "baby1xxxxxx",
        "cat2xxxxxxx",
        "evdogxxxxxx",
        "evgonexxxxx",
        "evbabyxxxxx",
    ]
    assert fetcher.calls[2] == ("-dogcatxxxx", 5.5, 15.5)
    rows = read_rows(root / "manifest.csv")
    assert list(rows[0]) == list(download.MANIFEST_COLUMNS)
    got = [(r["YTID"], r["labels"], r["split"]) for r in rows]
    assert got == [
        ("dog1xxxxxxx", "Dog", "balanced_train"),
        ("-dogcatxxxx", "Dog;Cat", "balanced_train"),
        ("baby1xxxxxx", "Baby cry, infant cry", "balanced_train"),
        ("cat2xxxxxxx", "Cat", "balanced_train"),
        ("evdogxxxxxx", "Dog", "eval"),
        ("evbabyxxxxx", "Dog;Baby cry, infant cry", "eval"),
    ]
    assert rows[1]["path"] == "audio/-dogcatxxxx_5500.wav"
    assert (rows[1]["start_seconds"], rows[1]["end_seconds"]) == ("5.500", "15.500")
    for r in rows:
        info = sf.info(str(root / r["path"]))
        assert (info.samplerate, info.channels) == (48_000, 1)
    assert (summary.clips, summary.fetched, summary.unavailable, summary.failed) == (6, 6, 2, 0)
    gone = read_rows(root / "unavailable.csv")
    assert [(g["YTID"], g["start_seconds"]) for g in gone] == [
        ("gone1xxxxxx", "0.000"),
        ("evgonexxxxx", "0.000"),
    ]
    assert "Video unavailable" in gone[0]["reason"]
    assert not list((root / "audio").glob("*.part*"))

    again = FakeFetcher(gone=set())
    second = download.fetch_audioset(
        tmp_path,
        base_url=audioset_base,
        classes=CLASSES,
        per_class=2,
        fetch_clip=again,
        progress=False,
    )
    assert again.calls == []
    assert (second.clips, second.fetched, second.unavailable) == (6, 0, 2)
    assert read_rows(root / "manifest.csv") == rows
    assert all(p != "/as/unbalanced_train_segments.csv" for p, _ in server.requests)

    retry = FakeFetcher(gone={"evgonexxxxx"})
    third = download.fetch_audioset(
        tmp_path,
        base_url=audioset_base,
        classes=CLASSES,
        per_class=2,
        fetch_clip=retry,
        retry_unavailable=True,
        progress=False,
    )
    assert [c[0] for c in retry.calls] == ["gone1xxxxxx", "evgonexxxxx"]
    assert third.clips == 7 and third.unavailable == 1
    assert [g["YTID"] for g in read_rows(root / "unavailable.csv")] == ["evgonexxxxx"]


def test_audioset_failures_are_counted_not_recorded(tmp_path: Path, audioset_base: str) -> None:
    fetcher = FakeFetcher(gone=set(), broken={"dog1xxxxxxx"})
    with pytest.raises(
        download.DownloadError, match="1 clips failed .* dog1xxxxxxx: HTTP Error 503"
    ):
        download.fetch_audioset(
            tmp_path,
            base_url=audioset_base,
            classes=["Dog"],
            per_class=1,
            fetch_clip=fetcher,
            progress=False,
        )
    root = tmp_path / "audioset"
    assert [r["YTID"] for r in read_rows(root / "manifest.csv")] == ["gone1xxxxxx", "evdogxxxxxx"]
    assert read_rows(root / "unavailable.csv") == []


def test_audioset_interrupt_keeps_fetched_clips(tmp_path: Path, audioset_base: str) -> None:
    first = FakeFetcher(gone=set(), stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        download.fetch_audioset(
            tmp_path,
            base_url=audioset_base,
            classes=CLASSES,
            per_class=2,
            fetch_clip=first,
            progress=False,
        )
    manifest = tmp_path / "audioset" / "manifest.csv"
    assert [r["YTID"] for r in read_rows(manifest)] == ["dog1xxxxxxx", "gone1xxxxxx"]
    second = FakeFetcher(gone=set())
    download.fetch_audioset(
        tmp_path,
        base_url=audioset_base,
        classes=CLASSES,
        per_class=2,
        fetch_clip=second,
        progress=False,
    )
    assert second.calls[0][0] == "-dogcatxxxx"
    assert "dog1xxxxxxx" not in [c[0] for c in second.calls]


def test_audioset_manifest_on_disk_after_each_clip(tmp_path: Path, audioset_base: str) -> None:
    """What a hard kill (no finally) would leave: every clip fetched so far is in the manifest."""
    manifest = tmp_path / "audioset" / "manifest.csv"
    fake, seen = FakeFetcher(gone={"gone1xxxxxx"}), []

    def fetch_clip(ytid: str, start: float, end: float, out_path: Path) -> None:
        seen.append([r["YTID"] for r in read_rows(manifest)] if manifest.exists() else [])
        fake(ytid, start, end, out_path)

    download.fetch_audioset(
        tmp_path,
        base_url=audioset_base,
        classes=["Dog"],
        per_class=2,
        fetch_clip=fetch_clip,
        progress=False,
    )
    # calls: dog1xxxxxxx, gone1xxxxxx (unavailable), -dogcatxxxx, then eval: evdogxxxxxx, evbabyxxxxx
    assert seen == [
        [],
        ["dog1xxxxxxx"],
        ["dog1xxxxxxx"],
        ["dog1xxxxxxx", "-dogcatxxxx"],
        ["dog1xxxxxxx", "-dogcatxxxx", "evdogxxxxxx"],
    ]


def test_audioset_class_string_env_base_and_unknown_class(
    tmp_path: Path, audioset_base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAP_MIRROR_AUDIOSET", audioset_base)
    fetcher = FakeFetcher(gone=set())
    folder = download.fetch(
        "audioset",
        tmp_path,
        classes="baby cry, infant cry,Cat",
        per_class=1,
        fetch_clip=fetcher,
        progress=False,
    )
    labels = {r["labels"] for r in read_rows(folder / "manifest.csv")}
    assert labels == {"Cat", "Baby cry, infant cry"}
    with pytest.raises(
        download.DownloadError, match="unknown class names 'Dgo' \\(did you mean 'Dog'"
    ):
        download.fetch("audioset", tmp_path, classes="Dgo;Cat", fetch_clip=fetcher, progress=False)


def test_audioset_without_tools_writes_csvs_then_fails(
    tmp_path: Path,
    audioset_base: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(download.audioset, "_tool", lambda name: None)
    code = download.main(
        ["audioset", "--dest", str(tmp_path), "--url", audioset_base, "--classes", "Dog"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "pip install yt-dlp" in err and "apt-get install ffmpeg" in err
    assert (tmp_path / "audioset" / "csv" / "eval_segments.csv").read_text() == EVAL
    assert read_rows(tmp_path / "audioset" / "manifest.csv") == []


def test_audioset_invalid_ytids_are_skipped_counted_and_named(
    tmp_path: Path, server: Server, capsys: pytest.CaptureFixture
) -> None:
    """A YTID names the clip file: one holding '/' or '..' would write outside audio/."""
    evil = ["../../../../x", "../../../..", "dog/../../x", "short", "dog1xxxxxxx.."]
    rows = [f'{y}, 0.000, 10.000, "/m/0bt9lr"' for y in evil]
    server.add("bad/class_labels_indices.csv", CLASS_LABELS.encode())
    server.add(
        "bad/balanced_train_segments.csv",
        (HEADER + "\n".join([*rows, 'dog1xxxxxxx, 0.000, 10.000, "/m/0bt9lr"']) + "\n").encode(),
    )
    server.add("bad/eval_segments.csv", HEADER.encode())
    fetcher = FakeFetcher(gone=set())
    summary = download.fetch_audioset(
        tmp_path / "dl",
        base_url=server.url("bad/"),
        classes=["Dog"],
        per_class=3,
        fetch_clip=fetcher,
        progress=False,
    )
    assert [c[0] for c in fetcher.calls] == ["dog1xxxxxxx"] and summary.clips == 1
    err = capsys.readouterr().err
    assert f"skipped {len(evil)} segment rows" in err and "not an 11-character YouTube id" in err
    assert all(repr(y) in err for y in evil)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.wav"))
    assert written == ["dl/audioset/audio/dog1xxxxxxx_0.wav"]
