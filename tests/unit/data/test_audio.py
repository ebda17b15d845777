"""Decoding of every supported format and subtype, and clear errors for bad files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile as sf

from clap_helpers.data.audio import (
    AudioError,
    AudioWarning,
    audio_info,
    inspect_waveform,
    list_audio_files,
    load_audio,
    load_audio_with_rate,
)


def tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(
        np.float32
    )


def peak_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize(
    ("fmt", "subtype", "ext"),
    [
        ("WAV", "PCM_U8", "wav"),
        ("WAV", "PCM_16", "wav"),
        ("WAV", "PCM_24", "wav"),
        ("WAV", "PCM_32", "wav"),
        ("WAV", "FLOAT", "wav"),
        ("WAV", "DOUBLE", "wav"),
        ("FLAC", "PCM_16", "flac"),
        ("FLAC", "PCM_24", "flac"),
        ("OGG", "VORBIS", "ogg"),
        ("MP3", "MPEG_LAYER_III", "mp3"),
    ],
)
@pytest.mark.parametrize("rate", [16000, 44100])
def test_every_format_decodes_to_mono_float32_at_48k(tmp_path, fmt, subtype, ext, rate):
    path = tmp_path / f"clip.{ext}"
    sf.write(path, tone(1000, 2.0, rate), rate, format=fmt, subtype=subtype)
    x = load_audio(path, sr=48000)
    assert x.dtype == np.float32 and x.ndim == 1
    # MP3 encoders add priming/padding samples, a few ms at most.
    assert abs(x.size - 2 * 48000) <= (0.1 * 48000 if fmt == "MP3" else 2)
    assert abs(peak_frequency(x, 48000) - 1000) < 5
    assert 0.3 < np.max(np.abs(x)) < 0.7


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 96000])
def test_resampling_keeps_pitch_and_duration(tmp_path, rate):
    path = tmp_path / "clip.wav"
    source = tone(440, 1.5, rate)
    sf.write(path, source, rate)
    x = load_audio(path, sr=48000)
    assert abs(x.size - source.size * 48000 / rate) <= 1
    assert abs(peak_frequency(x, 48000) - 440) < 2


def test_stereo_is_averaged_and_native_rate_kept(tmp_path):
    left = tone(440, 1.0, 22050)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, 0.5 * left], axis=1), 22050, subtype="FLOAT")
    x, rate = load_audio_with_rate(path)
    assert rate == 22050
    np.testing.assert_allclose(x, 0.75 * left, atol=1e-6)
    assert load_audio(path, sr=None).size == left.size


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(AudioError, match="nope.wav: file not found"):
        load_audio(tmp_path / "nope.wav")


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="not a regular file"):
        load_audio(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav: empty file"):
        load_audio(path)


def test_garbage_bytes_are_undecodable(tmp_path):
    path = tmp_path / "garbage.mp3"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(AudioError, match="garbage.mp3: not a recognisable audio file"):
        load_audio(path)


def test_header_only_wav(tmp_path):
    path = tmp_path / "header.wav"
    sf.write(path, tone(440, 1.0, 16000), 16000)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(AudioError, match="header.wav"):
        load_audio(path)


@pytest.mark.parametrize("fmt", ["WAV", "MP3"])
def test_truncated_file_is_an_error(tmp_path, fmt):
    path = tmp_path / f"cut.{fmt.lower()}"
    sf.write(path, tone(440, 6.0, 44100), 44100, format=fmt)
    whole = load_audio(path)  # the intact file decodes
    assert whole.size > 5 * 48000
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(AudioError, match=f"cut.{fmt.lower()}: truncated"):
        load_audio(path)


def test_nan_samples_are_reported_and_zeroed(tmp_path):
    x = tone(440, 1.0, 48000)
    x[100:200] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 48000, subtype="FLOAT")
    with pytest.warns(AudioWarning, match="nan.wav: non-finite samples"):
        y = load_audio(path)
    assert np.isfinite(y).all()
    assert np.all(y[100:200] == 0) and np.allclose(y[300:400], x[300:400])


def test_silent_clip_is_reported(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(48000, np.float32), 48000)
    with pytest.warns(AudioWarning, match="silence.wav: silent"):
        load_audio(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(path, warn=False)


def test_inspect_waveform():
    assert inspect_waveform(np.ones(10, np.float32)) == []
    assert inspect_waveform(np.zeros(10, np.float32)) == ["silent"]
    assert inspect_waveform(np.array([np.nan, 0.5], np.float32)) == ["non-finite samples"]


def test_audio_info_and_listing(tmp_path):
    sf.write(tmp_path / "b.flac", tone(440, 0.5, 32000), 32000)
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "a.wav", np.stack([tone(440, 0.25, 8000)] * 2, 1), 8000)
    (tmp_path / "notes.txt").write_text("not audio")
    info = audio_info(tmp_path / "sub" / "a.wav")
    assert (info["samplerate"], info["channels"], info["frames"]) == (8000, 2, 2000)
    assert info["duration"] == pytest.approx(0.25)
    assert [p.name for p in list_audio_files(tmp_path)] == ["b.flac", "a.wav"]
    with pytest.raises(AudioError, match="missing.wav"):
        audio_info(tmp_path / "missing.wav")
