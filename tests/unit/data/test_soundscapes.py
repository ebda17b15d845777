"""Tests for clap_helpers.data.soundscapes: SNR definition, determinism, WAV output, bad-file handling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile as sf

from clap_helpers.data import soundscapes as soundscape
from clap_helpers.data.audio import list_audio_files

SR = 48000
N = 10 * SR


def _tone(seconds: float, pad_s: float = 0.0, freq: float = 440.0, amp: float = 0.5):
    """A tone followed by ``pad_s`` of digital silence (like a padded ESC-50 clip)."""
    t = np.arange(round(seconds * SR)) / SR
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.concatenate([x, np.zeros(round(pad_s * SR))]).astype(np.float32)


def _noise(seconds: float, seed: int = 0, amp: float = 0.1):
    return (amp * np.random.default_rng(seed).standard_normal(round(seconds * SR))).astype(
        np.float32
    )


def _measured_snr(fg_part: np.ndarray, bg_part: np.ndarray) -> float:
    """SNR over the span where the (frame-aligned) tone sounds, computed independently."""
    nz = np.flatnonzero(fg_part)
    span = slice(nz[0], nz[-1] + 1)
    return 10 * np.log10(np.mean(fg_part[span] ** 2) / np.mean(bg_part[span] ** 2))


@pytest.mark.parametrize("snr", [-5.0, 0.0, 6.0, 10.0, 20.0])
@pytest.mark.parametrize("bg_seconds", [3.0, 25.0])  # looped and cropped background
def test_mix_at_snr_reaches_the_requested_snr(snr, bg_seconds):
    fg = _tone(1.0, pad_s=1.5)  # 1 s of tone = 100 whole 10 ms frames, then silence
    bg = _noise(bg_seconds)
    mix, fg_part, bg_part = soundscape.mix_at_snr(fg, bg, snr, seed=3, return_parts=True)
    assert mix.shape == (N,) and mix.dtype == np.float32
    np.testing.assert_allclose(mix, fg_part + bg_part, atol=1e-6)
    assert abs(_measured_snr(fg_part, bg_part) - snr) < 0.1
    assert np.max(np.abs(mix)) <= 1.0


def test_mix_at_snr_is_deterministic_and_seeded():
    fg, bg = _tone(2.0, pad_s=1.0), _noise(30.0)
    a = soundscape.mix_at_snr(fg, bg, 8.0, seed=1)
    b = soundscape.mix_at_snr(fg, bg, 8.0, seed=1)
    c = soundscape.mix_at_snr(fg, bg, 8.0, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    short_bg = _noise(2.0)
    np.testing.assert_array_equal(
        soundscape.mix_at_snr(fg, short_bg, 8.0, seed=5),
        soundscape.mix_at_snr(fg, short_bg, 8.0, seed=5),
    )


def test_mix_at_snr_lengths_and_centre_position():
    fg, bg = _tone(1.0), _noise(4.0)
    out = soundscape.mix_at_snr(fg, bg, 6.0, duration_s=5.0, sr=SR)
    assert out.shape == (5 * SR,)
    _, fg_part, _ = soundscape.mix_at_snr(fg, bg, 6.0, position="center", return_parts=True)
    nz = np.flatnonzero(fg_part)
    assert nz[0] in range(N // 2 - SR // 2 - 1, N // 2 - SR // 2 + 2)
    long_fg = _tone(12.0)  # longer than the soundscape: cropped
    assert soundscape.mix_at_snr(long_fg, bg, 6.0).shape == (N,)


def test_mix_at_snr_never_clips_and_keeps_the_snr():
    fg, bg = _tone(1.0, amp=0.9), _noise(10.0, amp=0.5)
    mix, fg_part, bg_part = soundscape.mix_at_snr(fg, bg, 20.0, return_parts=True)
    assert np.max(np.abs(mix)) == pytest.approx(soundscape.PEAK_TARGET, rel=1e-5)
    assert abs(_measured_snr(fg_part, bg_part) - 20.0) < 0.1
    # no rescaling when nothing would clip: the background keeps its level
    quiet = soundscape.mix_at_snr(_tone(1.0, amp=0.1), _noise(10.0, amp=0.01), 0.0, seed=0)
    assert np.max(np.abs(quiet)) < 0.5


def test_mix_at_snr_rejects_silence():
    with pytest.raises(ValueError, match="foreground is silent"):
        soundscape.mix_at_snr(np.zeros(SR, np.float32), _noise(10.0), 6.0)
    with pytest.raises(ValueError, match="background is silent"):
        soundscape.mix_at_snr(_tone(1.0), np.zeros(SR, np.float32), 6.0)


def test_active_mask_drops_padding():
    x = _tone(0.5, pad_s=0.5)
    mask = soundscape.active_mask(x, SR)
    assert mask[: SR // 2].all() and not mask[SR // 2 :].any()
    assert not soundscape.active_mask(np.zeros(100), SR).any()


# ----------------------------------------------------------------------------- files


@pytest.fixture
def files(tmp_path):
    fg_dir, bg_dir = tmp_path / "fg", tmp_path / "bg"
    fg_dir.mkdir()
    (bg_dir / "sub").mkdir(parents=True)
    fgs = []
    for i, freq in enumerate([300.0, 500.0, 700.0]):
        p = fg_dir / f"dog_{i}.wav"
        sf.write(p, _tone(1.0, pad_s=1.0, freq=freq), SR, subtype="PCM_16")
        fgs.append(p)
    corrupt = fg_dir / "broken.wav"
    corrupt.write_bytes(b"RIFF\x00\x00not really a wav file")
    fgs.insert(1, corrupt)
    sf.write(bg_dir / "park.flac", _noise(12.0, seed=1), SR)
    sf.write(bg_dir / "sub" / "street.wav", _noise(4.0, seed=2), SR)
    (bg_dir / "notes.txt").write_text("not audio")
    (bg_dir / ".hidden.wav").write_bytes(b"junk")
    return fgs, bg_dir


def test_list_audio_files(files):
    _, bg_dir = files
    found = list_audio_files(bg_dir)
    assert [p.name for p in found] == ["park.flac", "street.wav"]
    assert list_audio_files(bg_dir, recursive=False)[0].name == "park.flac"
    with pytest.raises(FileNotFoundError):
        list_audio_files(bg_dir / "missing")


def test_make_soundscapes_writes_wavs_and_skips_a_corrupt_file(files, tmp_path):
    fgs, bg_dir = files
    bgs = list_audio_files(bg_dir)
    out = tmp_path / "out"
    failures = []
    with pytest.warns(UserWarning, match="broken.wav"):
        df = soundscape.make_soundscapes(
            fgs, bgs, (6.0, 10.0), out_dir=out, seed=0, failures=failures
        )
    assert list(df.columns) == ["path", "foreground", "background", "snr_db"]
    assert len(df) == 3 and df.attrs["n_failed"] == 1 and len(failures) == 1
    assert failures[0][0].endswith("broken.wav")
    assert df["snr_db"].between(6.0, 10.0).all() and df["snr_db"].nunique() == 3
    assert set(df["background"]) <= {str(p) for p in bgs}
    for path in df["path"]:
        x, rate = sf.read(path)
        assert rate == SR and x.shape == (N,)
        assert sf.info(path).subtype == "PCM_16"
    # same seed -> same files; the iterator gives the same audio without writing
    again = soundscape.make_soundscapes(fgs[:1], bgs, (6.0, 10.0), out_dir=tmp_path / "again")
    assert again["snr_db"][0] == df["snr_db"][0]
    assert again["background"][0] == df["background"][0]
    np.testing.assert_array_equal(sf.read(again["path"][0])[0], sf.read(df["path"][0])[0])
    sc = next(iter(soundscape.make_soundscapes(fgs[:1], bgs, (6.0, 10.0))))
    np.testing.assert_allclose(sc.audio, sf.read(df["path"][0])[0], atol=1 / 2**15)
    assert sc.snr_db == df["snr_db"][0] and sc.name == df["path"][0].split("/")[-1][:-4]


def test_make_soundscapes_skips_a_bad_background_and_constant_snr(files, tmp_path):
    fgs, bg_dir = files
    good = [fgs[0], fgs[2], fgs[3]]
    bad_bg = bg_dir.parent / "bad.wav"
    bad_bg.write_bytes(b"garbage")
    bgs = [bad_bg, *list_audio_files(bg_dir)]
    failures = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = soundscape.make_soundscapes(
            good * 3, bgs, 7.5, out_dir=tmp_path / "o", subtype="FLOAT", failures=failures
        )
    assert len(df) == 9 and (df["snr_db"] == 7.5).all()
    assert failures == [(str(bad_bg), failures[0][1])]  # counted once, then never drawn again
    assert sum("bad.wav" in str(w.message) for w in caught) == 1
    assert str(bad_bg) not in set(df["background"])
    assert df["path"].nunique() == 9
    assert sf.info(df["path"][0]).subtype == "FLOAT"


def test_make_soundscapes_iterator_counts_failures(files):
    fgs, bg_dir = files
    failures = []
    with pytest.warns(UserWarning, match="broken.wav"):
        out = list(
            soundscape.make_soundscapes(fgs, list_audio_files(bg_dir), 6.0, failures=failures)
        )
    assert len(out) == 3 and len(failures) == 1
    name, audio, snr, fg, bg = out[0]
    assert audio.shape == (N,) and snr == 6.0 and fg == str(fgs[0])
