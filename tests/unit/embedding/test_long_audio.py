"""Long files, memory and libmpg123's stderr: bounded decoding, max_seconds, clear errors.

Issue 10 (hardening): a 2 h file must not exhaust memory, an out-of-memory decode is one named
failure, an undecodable file says so, and libmpg123 prints nothing on file descriptor 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from clap_helpers.data.audio import (
    DEFAULT_MAX_SECONDS,
    AudioError,
    AudioWarning,
    audio_info,
    load_audio,
)
from clap_helpers.data.loaders import load
from clap_helpers.embedding import decoding
from clap_helpers.embedding.encoder import EmbeddingWarning
from clap_helpers.embedding.loading import load_clap

ROOT = Path(__file__).resolve().parents[3]


def tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_silent_flac(path: Path, seconds: int, rate: int = 8000) -> None:
    """A long silent FLAC written in 10 min blocks (~90 kB per hour at 8 kHz)."""
    block = np.zeros(rate * 600, np.int16)
    with sf.SoundFile(path, "w", rate, 1, format="FLAC", subtype="PCM_16") as f:
        for start in range(0, seconds, 600):
            f.write(block[: rate * min(600, seconds - start)])


def mp3_with_bogus_xing(path: Path, frames: int | None = None, size: int | None = None) -> None:
    """An intact MP3 whose Xing header declares ``frames`` MPEG frames and ``size`` bytes."""
    sf.write(path, tone(440, 3.0, 44100), 44100, format="MP3")
    data = bytearray(path.read_bytes())
    at = data.find(b"Xing")
    assert at >= 0 and data[at + 7] & 3 == 3  # frames and bytes fields present
    if frames is not None:
        data[at + 8 : at + 12] = frames.to_bytes(4, "big")
    if size is not None:
        data[at + 12 : at + 16] = size.to_bytes(4, "big")
    path.write_bytes(bytes(data))


# -- memory and max_seconds -------------------------------------------------------------------
# The peak is this process's own VmHWM, not getrusage's ru_maxrss: a child's ru_maxrss starts
# at its parent's peak (Linux folds the parent's high-water mark in at exec), so it measured the
# test runner (1.55 GB after the suite's earlier tests) instead of the decode.
_PEAK_SCRIPT = """
import json, sys, warnings
from clap_helpers.data.audio import load_audio
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    x = load_audio(sys.argv[1])
hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"samples": int(x.size), "peak_mb": hwm_kb / 1024,
                  "warnings": [str(w.message) for w in caught]}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads VmHWM from /proc/self/status")
def test_two_hour_file_decodes_in_bounded_memory(tmp_path):
    path = tmp_path / "two_hours.flac"
    write_silent_flac(path, 2 * 3600)
    assert path.stat().st_size < 2_000_000
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    # Before the fix: the whole 2 h at 48 kHz plus temporaries, 4.3 GB.
    assert result["peak_mb"] < 1500, result
    assert result["samples"] == DEFAULT_MAX_SECONDS * 48000
    cut = [w for w in result["warnings"] if "max_seconds" in w]
    assert len(cut) == 1 and cut[0].startswith(str(path)) and "7200 s long" in cut[0]
    assert "only its first 1800 s are used" in cut[0]


def test_max_seconds_keeps_the_start_and_warns(tmp_path):
    path = tmp_path / "three_seconds.wav"
    sf.write(path, tone(440, 3.0, 44100), 44100)
    full = load_audio(path)
    with pytest.warns(AudioWarning, match=r"three_seconds.wav: 3 s long: only its first 1 s"):
        head = load_audio(path, max_seconds=1.0)
    assert head.size == 48000
    # Streaming resampler: same samples as the whole file's except the last few at the cut.
    np.testing.assert_allclose(head[:47000], full[:47000], atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_audio(path, max_seconds=3.0).size == full.size  # exactly the limit: no cut
        assert load_audio(path, max_seconds=None).size == full.size
    with pytest.raises(ValueError, match="max_seconds"):
        load_audio(path, max_seconds=0)


def test_header_claiming_an_enormous_length_is_no_memory_error(tmp_path):
    path = tmp_path / "bogus_frames.mp3"
    mp3_with_bogus_xing(path, frames=10**9)  # ~7 years of audio declared
    with pytest.raises(AudioError, match="bogus_frames.mp3: truncated"):
        load_audio(path)


def test_memory_error_while_decoding_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "huge.flac"
    sf.write(path, tone(440, 1.0, 16000), 16000)

    def no_memory(self, *args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(sf.SoundFile, "read", no_memory)
    with pytest.raises(AudioError, match="huge.flac: out of memory while decoding"):
        load_audio(path)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    paths = []
    for i, freq in enumerate([300, 600, 900]):
        paths.append(str(folder / f"clip{i}.wav"))
        sf.write(paths[-1], tone(freq, 2.0, 16000), 16000)
    return paths


def test_memory_error_in_embed_audio_is_one_named_failure(tiny_clap, clips, monkeypatch):
    enc = load_clap(tiny_clap, device="cpu", precision="fp32", num_workers=0)
    real = decoding.load_audio

    def flaky(path, *args, **kwargs):
        if path == clips[1]:
            raise MemoryError
        return real(path, *args, **kwargs)

    monkeypatch.setattr(decoding, "load_audio", flaky)
    with pytest.warns(EmbeddingWarning, match=r"clip1.wav: out of memory"):
        emb = enc.embed_audio(clips, cache_dir=False, progress=False)
    assert np.isnan(emb[1]).all() and np.isfinite(emb[[0, 2]]).all()
    assert [(p, r.split(" (")[0]) for p, r in enc.failures] == [
        (clips[1], "out of memory while decoding")
    ]


def test_out_of_memory_while_embedding_fails_only_that_clip(tiny_clap, clips, tmp_path):
    long_clip = tmp_path / "long_one.wav"
    sf.write(long_clip, tone(440, 30.0, 16000), 16000)
    paths = [clips[0], str(long_clip), clips[2]]
    enc = load_clap(tiny_clap, device="cpu", precision="fp32", num_workers=0)
    ref = enc.embed_audio(paths, cache_dir=False, progress=False)
    embed_clips = enc._embed_clips

    def tight_memory(clips, batch_size):  # as if a 30 s clip (3 windows) did not fit
        if any(len(x[0]) > 2 for x in clips):  # the workers send each clip's window features
            raise MemoryError
        return embed_clips(clips, batch_size)

    enc._embed_clips = tight_memory
    with pytest.warns(
        EmbeddingWarning, match=r"long_one.wav: out of memory while embedding 3 windows of 10 s"
    ):
        emb = enc.embed_audio(paths, cache_dir=False, progress=False)
    assert np.isnan(emb[1]).all()
    np.testing.assert_allclose(emb[[0, 2]], ref[[0, 2]], atol=1e-6)
    assert enc.failures == [
        (str(long_clip), "out of memory while embedding 3 windows of 10 s of audio")
    ]


def test_max_seconds_is_part_of_the_cache_key(tiny_clap, tmp_path):
    long_clip = tmp_path / "long.wav"
    sf.write(long_clip, np.concatenate([tone(300, 10.0, 16000), tone(2000, 15.0, 16000)]), 16000)
    head = tmp_path / "head.wav"
    sf.write(head, tone(300, 10.0, 16000), 16000)
    whole = load_clap(tiny_clap, device="cpu", precision="fp32", cache_dir=tmp_path / "cache")
    cut = load_clap(
        tiny_clap, device="cpu", precision="fp32", cache_dir=tmp_path / "cache", max_seconds=10
    )
    assert whole.audio_namespace()["max_seconds"] == DEFAULT_MAX_SECONDS
    assert cut.audio_namespace()["max_seconds"] == 10
    a = whole.embed_audio([long_clip], num_workers=0, progress=False)
    with pytest.warns(EmbeddingWarning, match=r"long.wav: 25 s long: only its first 10 s"):
        b = cut.embed_audio([long_clip], num_workers=0, progress=False)
    assert cut.problems and cut.problems[0][0] == str(long_clip)
    ref = cut.embed_audio([head], num_workers=0, progress=False, cache_dir=False)
    np.testing.assert_allclose(b, ref, atol=1e-5)  # the first 10 s, not a cached 25 s row
    assert float((a * b).sum()) < 0.9999


@pytest.mark.parametrize("in_workers", [True, False], ids=["worker-features", "batch-features"])
def test_long_clip_windows_go_through_the_model_in_bounded_batches(
    tiny_clap, monkeypatch, in_workers
):
    enc = load_clap(tiny_clap, device="cpu", precision="fp32", num_workers=0)
    enc.model_batch_size = 4
    enc.features_in_workers = in_workers
    x = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, 48000 * 75).astype("f4"))
    shapes = []
    tower = enc._tower_forward

    def recording(*feats):
        shapes.append(tuple(feats[0].shape))
        return tower(*feats)

    monkeypatch.setattr(enc, "_tower_forward", recording)
    emb = enc._embed_decoded([x, x[:48000]], batch_size=32)
    # 75 s -> 7 full windows + a 5 s tail, then the 1 s clip: 9 windows in 3 calls of <= 4,
    # each window one (1, frames, mels) log-mel whether computed per clip or per model batch.
    fe = enc.frontend
    assert shapes == [(n, 1, fe.n_frames, fe.n_mels) for n in (4, 4, 1)]
    # Same numbers as embedding each window on its own and averaging.
    size = fe.max_length
    starts = range(0, 75 * 48000 - 48000 + 1, size)
    single = torch.cat(
        [
            enc._audio_forward(x[s : s + size][None], torch.tensor([len(x[s : s + size])]))
            for s in starts
        ]
    )
    expected = torch.nn.functional.normalize(single.sum(0), dim=0).numpy()
    np.testing.assert_allclose(emb[0], expected, atol=1e-5)


def test_long_fusion_clip_is_not_padded_into_a_batch(tiny_clap_fused, monkeypatch):
    enc = load_clap(tiny_clap_fused, device="cpu", precision="fp32", window="fusion")
    enc.model_batch_size = 4
    enc.features_in_workers = False  # waveforms batched for the front-end (the GPU path)
    shapes = []
    forward = enc._audio_forward

    def recording(batch, lengths):
        shapes.append(tuple(batch.shape))
        return forward(batch, lengths)

    monkeypatch.setattr(enc, "_audio_forward", recording)
    short = np.zeros(48000, np.float32) + 0.1
    long = np.random.default_rng(0).uniform(-0.5, 0.5, 48000 * 60).astype(np.float32)
    batched = enc._embed_decoded([short, long, short, short], batch_size=4)
    # The 60 s clip goes alone; the 1 s clips are not padded to 60 s.
    assert shapes == [(1, 48000), (1, 48000 * 60), (2, 48000)]
    # Per-clip features (the CPU decode workers' way) give the same rows (up to the model's
    # batch composition): the 60 s clip's four fusion channels have the shape of any window's,
    # so no waveform is padded at all.
    enc.features_in_workers = True
    per_clip = enc._embed_decoded([short, long, short, short], 4)
    np.testing.assert_allclose(per_clip, batched, atol=1e-6)


# -- clear errors and no libmpg123 output on fd 2 ---------------------------------------------
@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("random.wav", np.random.default_rng(0).bytes(4000)),
        ("random.mp3", np.random.default_rng(1).bytes(4000)),
        ("notes.mp3", b"this is a text file, not audio\n" * 20),
        ("empty.mp3", b""),
    ],
)
def test_undecodable_file_is_not_recognisable_audio(tmp_path, capfd, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioError, match=f"{name}: .*not a recognisable audio file") as err:
        load_audio(path)
    assert "does not exist" not in str(err.value)
    with pytest.raises(AudioError, match=f"{name}: .*not a recognisable audio file"):
        audio_info(path)
    assert capfd.readouterr().err == ""


@pytest.fixture(scope="module")
def truncated_fma_track(data_root):
    clips, _ = load("fma_small", data_root)
    bad = []
    for p in clips["path"]:
        try:
            audio_info(p)
            load_audio(p, warn=False)
        except AudioError:
            bad.append(p)
    assert len(bad) == 1
    return bad[0]


def test_truncated_mp3_is_named_and_silent_on_fd2(truncated_fma_track, capfd):
    capfd.readouterr()
    with pytest.raises(AudioError, match=f"{Path(truncated_fma_track).name}: truncated"):
        load_audio(truncated_fma_track)
    audio_info(truncated_fma_track)
    assert capfd.readouterr().err == ""  # was: "Warning: Xing stream size off by more than 1%..."


def test_bogus_xing_size_is_harmless_and_silent(tmp_path, capfd):
    path = tmp_path / "xing.mp3"
    mp3_with_bogus_xing(path, size=1234)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = load_audio(path)
    assert abs(x.size - 3 * 48000) < 0.1 * 48000
    assert capfd.readouterr().err == ""


def test_corrupt_mp3_frames_are_one_warning_naming_the_file(tmp_path, capfd):
    path = tmp_path / "corrupt.mp3"
    sf.write(path, tone(440, 6.0, 44100), 44100, format="MP3")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 300] = np.random.default_rng(2).bytes(300)
    path.write_bytes(bytes(data))
    with pytest.warns(AudioWarning, match=r"corrupt.mp3: corrupt MP3 frames skipped \(libmpg123"):
        load_audio(path)
    assert capfd.readouterr().err == ""


def test_other_stderr_output_is_not_lost(tmp_path, capfd, monkeypatch):
    path = tmp_path / "ok.wav"
    sf.write(path, tone(440, 1.0, 16000), 16000)
    read = sf.SoundFile.read

    def chatty(self, *args, **kwargs):
        # Output that is not libmpg123's, e.g. from another thread while fd 2 is captured.
        os.write(2, b"C library says hello\n")
        print("python says hello", file=sys.stderr)
        return read(self, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", chatty)
    load_audio(path)
    err = capfd.readouterr().err
    assert "C library says hello" in err and "python says hello" in err
    print("after", file=sys.stderr)  # fd 2 and sys.stderr are restored
    os.write(2, b"fd after\n")
    assert capfd.readouterr().err == "after\nfd after\n"


def test_worker_processes_keep_fd2_quiet(tiny_clap, truncated_fma_track, clips, capfd):
    enc = load_clap(tiny_clap, device="cpu", precision="fp32", num_workers=1)
    capfd.readouterr()
    with pytest.warns(EmbeddingWarning, match="truncated"):
        emb = enc.embed_audio([clips[0], truncated_fma_track], cache_dir=False, progress=False)
    assert np.isfinite(emb[0]).all() and np.isnan(emb[1]).all()
    assert [p for p, _ in enc.failures] == [truncated_fma_track]
    err = capfd.readouterr().err
    assert "Xing" not in err and "mpg123" not in err, err


def test_threads_decoding_at_once_leave_fd2_as_it_was(tmp_path, capfd):
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "xing.mp3"
    mp3_with_bogus_xing(path, size=1234)  # libmpg123 warns on every open
    with ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(lambda _: load_audio(path).size, range(12)))
    assert len(set(sizes)) == 1
    os.write(2, b"still here\n")
    assert capfd.readouterr().err == "still here\n"
