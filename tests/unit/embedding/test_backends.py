"""Speed backends on the tiny CLAP: eager PyTorch (fp32, bf16 weights, autocast) and OpenVINO
(pinned, converted once and cached), backend="auto" and its fallbacks, determinism.

Every test pins backend and precision: nothing here depends on the CPU's instruction set.
OpenVINO tests are skipped, with the reason, where the package is absent (``make venv``
installs it, so CI runs them)."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

from clap_helpers.data.audio import load_audio
from clap_helpers.data.loaders import load
from clap_helpers.embedding import backends
from clap_helpers.embedding.backends import BackendUnavailable, BackendWarning, TorchBackend
from clap_helpers.embedding.frontend import batch_from_list
from clap_helpers.embedding.loading import load_clap

try:
    import openvino  # noqa: F401

    HAVE_OPENVINO, WHY = True, ""
except ImportError as exc:
    HAVE_OPENVINO, WHY = False, f"openvino is not installed ({exc}); pip install openvino"
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason=WHY)


@pytest.fixture(autouse=True)
def no_isa_cap(monkeypatch):
    """backend="auto" avoids OpenVINO under ONEDNN_MAX_CPU_ISA; the tests choose for themselves."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)


@pytest.fixture(scope="module")
def esc_paths(data_root):
    clips, _ = load("esc50", data_root)
    return list(clips["path"][:6])


@pytest.fixture(scope="module")
def torch_fp32(tiny_clap):
    return load_clap(tiny_clap, "cpu", "fp32", backend="torch", cache_dir=False, num_workers=0)


@pytest.fixture(scope="module")
def reference(torch_fp32, esc_paths):
    return torch_fp32.embed_audio(esc_paths, batch_size=4, cache_dir=False, progress=False)


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("converted")


@pytest.fixture(scope="module")
def ov_fp32(tiny_clap, model_cache):
    if not HAVE_OPENVINO:
        pytest.skip(WHY)
    return load_clap(
        tiny_clap, "cpu", "fp32", backend="openvino", cache_dir=model_cache, num_workers=0
    )


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1)))


# -- eager PyTorch --------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [True, False], ids=["bf16-weights", "bf16-autocast"])
def test_torch_bf16_stays_close_to_fp32(torch_fp32, weights):
    feats = torch_fp32._probe_features()
    ref = TorchBackend(torch_fp32.family.audio_tower, torch.device("cpu"), "fp32")(*feats)
    low = TorchBackend(torch_fp32.family.audio_tower, torch.device("cpu"), "bf16", weights=weights)
    assert low.mode == ("weights" if weights else "autocast")
    emb = low(*feats)
    assert emb.dtype == torch.float32 and emb.shape == ref.shape
    assert torch.nn.functional.cosine_similarity(emb, ref).min() > 0.99
    # the bf16 copy leaves the encoder's fp32 weights alone
    assert next(torch_fp32.family.audio_tower.parameters()).dtype == torch.float32


def test_torch_backend_names_itself(torch_fp32):
    assert torch_fp32.backend.key == "torch" and torch_fp32.precision == "fp32"
    streams = backends.default_streams()
    named = "backend=torch (fp32)" if streams == 1 else f"backend=torch (fp32, {streams} streams)"
    assert named in repr(torch_fp32)
    assert torch_fp32.audio_namespace()["backend"] == "torch"  # streams do not change numbers


@pytest.mark.parametrize("workers", [0, 2])
def test_torch_streams_change_speed_not_numbers(tiny_clap, esc_paths, workers, monkeypatch):
    """Two model calls at once, one intra-op thread each, against one call at a time on both
    threads: the same bits (front-end in the workers, or per batch here with workers=0)."""
    kw = {"batch_size": 4, "cache_dir": False, "progress": False, "num_workers": workers}
    runs = {}
    for streams in (1, 2):
        monkeypatch.setenv("CLAP_HELPERS_STREAMS", str(streams))
        enc = load_clap(tiny_clap, "cpu", "fp32", backend="torch", cache_dir=False)
        assert enc.backend.streams == min(streams, torch.get_num_threads())
        enc.model_batch_size = 2  # 6 clips: three model calls per decoded batch
        runs[streams] = enc.embed_audio(esc_paths, **kw)
    assert np.array_equal(runs[1], runs[2])


def test_run_in_streams_keeps_order_and_restores_threads():
    threads = torch.get_num_threads()
    seen = []

    def call(i):
        seen.append(torch.get_num_threads())
        return i

    calls = [lambda i=i: call(i) for i in range(7)]
    assert backends.run_in_streams(calls, 2) == list(range(7))
    assert set(seen) == {max(1, threads // 2)} and torch.get_num_threads() == threads
    assert backends.run_in_streams(calls, 1) == list(range(7)) and seen[-1] == threads


def test_torch_bf16_weights_through_load_clap(tiny_clap, esc_paths, reference, monkeypatch):
    monkeypatch.setattr(backends, "cpu_has_fast_bf16", lambda: True)  # the gate, pinned
    enc = load_clap(tiny_clap, "cpu", "bf16", backend="torch", cache_dir=False, num_workers=0)
    assert enc.backend.key == "torch-weights" and "bf16 weights" in repr(enc)
    emb = enc.embed_audio(esc_paths, batch_size=4, cache_dir=False, progress=False)
    assert min_cosine(emb, reference) > 0.99


def test_unknown_backend_is_refused(tiny_clap):
    with pytest.raises(ValueError, match="backend must be one of"):
        load_clap(tiny_clap, "cpu", "fp32", backend="tensorrt", cache_dir=False, num_workers=0)


def test_default_backend_follows_the_environment(monkeypatch):
    monkeypatch.setenv("CLAP_HELPERS_BACKEND", "openvino")
    assert backends.default_backend() == "openvino"
    monkeypatch.delenv("CLAP_HELPERS_BACKEND")
    assert backends.default_backend() == "auto"


def test_openvino_is_not_tried_on_gpus_fp16_or_fused_towers(tiny_clap_fused):
    obstacle, cpu = backends._openvino_obstacle, torch.device("cpu")
    assert "CPUs" in obstacle(torch.device("cuda"), "bf16", False, True)
    assert "fp16" in obstacle(cpu, "fp16", False, True)
    assert obstacle(cpu, "fp32", False, True) is None
    assert "not exported" in obstacle(cpu, "fp32", False, False)
    fused = load_clap(
        tiny_clap_fused, "cpu", "fp32", backend="torch", window="average", cache_dir=False
    )
    assert "fused" in obstacle(cpu, "fp32", fused.fused, fused.family.openvino)


# -- OpenVINO -------------------------------------------------------------------------------


@needs_openvino
def test_openvino_converts_once_into_the_cache(ov_fp32, model_cache):
    b = ov_fp32.backend
    assert b.name == "openvino" and b.key == "openvino-f32" and ov_fp32.precision == "fp32"
    assert b.converted and b.conversion_s > 0
    saved = list((model_cache / "openvino").glob("*/model.xml"))
    assert len(saved) == 1 and saved[0].with_suffix(".bin").is_file()
    assert not list((model_cache / "openvino").glob(".tmp-*")), "temporary folder left over"
    assert "openvino (fp32 hint, converted" in repr(ov_fp32)
    assert ov_fp32.audio_namespace()["backend"] == "openvino-f32"


@needs_openvino
def test_second_load_reads_the_converted_model(
    tiny_clap, ov_fp32, model_cache, esc_paths, monkeypatch
):
    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cache holds the model")

    monkeypatch.setattr(backends, "_convert", no_conversion)
    enc = load_clap(tiny_clap, "cpu", "fp32", backend="openvino", cache_dir=model_cache)
    assert enc.backend.name == "openvino" and not enc.backend.converted
    assert enc.backend.conversion_s == 0 and "cached model" in repr(enc)
    # the first run (which converted) and later runs (which read the saved model) agree to the
    # bit: a freshly converted graph compiled differently from the saved one (8e-8 apart)
    assert np.array_equal(
        *(
            e.embed_audio(esc_paths, batch_size=4, cache_dir=False, progress=False)
            for e in (ov_fp32, enc)
        )
    )


@needs_openvino
def test_openvino_fp32_matches_eager_fp32(ov_fp32, esc_paths, reference):
    emb = ov_fp32.embed_audio(esc_paths, batch_size=4, cache_dir=False, progress=False)
    assert emb.shape == reference.shape and emb.dtype == np.float32
    assert min_cosine(emb, reference) > 0.9999
    assert ov_fp32.backend.cosine > 0.9999


@needs_openvino
def test_openvino_bf16_hint_stays_close(tiny_clap, model_cache, esc_paths, reference):
    enc = load_clap(tiny_clap, "cpu", "bf16", backend="openvino", cache_dir=model_cache)
    assert enc.backend.key == "openvino-bf16" and not enc.backend.converted  # one saved model
    emb = enc.embed_audio(esc_paths, batch_size=4, cache_dir=False, progress=False)
    assert min_cosine(emb, reference) > 0.99


@needs_openvino
def test_openvino_is_bit_identical_across_runs_batches_and_workers(ov_fp32, esc_paths):
    kw = {"cache_dir": False, "progress": False}
    first = ov_fp32.embed_audio(esc_paths, batch_size=4, num_workers=0, **kw)
    assert np.array_equal(first, ov_fp32.embed_audio(esc_paths, batch_size=4, num_workers=0, **kw))
    assert np.array_equal(first, ov_fp32.embed_audio(esc_paths, batch_size=4, num_workers=2, **kw))
    # a partial batch is zero-padded to the compiled batch: a row never depends on its neighbours
    assert np.array_equal(first, ov_fp32.embed_audio(esc_paths, batch_size=1, num_workers=0, **kw))
    assert np.array_equal(first, ov_fp32.embed_audio(esc_paths, batch_size=3, num_workers=0, **kw))
    # the front-end in the decode workers or per model batch here: the same features
    ov_fp32.features_in_workers = False
    try:
        here = ov_fp32.embed_audio(esc_paths, batch_size=4, num_workers=2, **kw)
    finally:
        ov_fp32.features_in_workers = True
    assert np.array_equal(first, here)


@needs_openvino
def test_openvino_streams_and_pinning(tiny_clap, esc_paths, torch_fp32):
    clips = [load_audio(p, torch_fp32.sample_rate) for p in esc_paths] * 2  # 12 rows: 3 batches
    feats = torch_fp32._features(*batch_from_list(clips[:11]))  # the last batch is partial
    tower = torch_fp32.family.audio_tower
    one = backends.OpenVinoBackend(tower, feats, "fp32", batch=4, threads=2, streams=1)
    two = backends.OpenVinoBackend(tower, feats, "fp32", batch=4, threads=2, streams=2)
    assert (one.streams, two.streams) == (1, 2) and "2 streams" in repr(two)
    assert torch.equal(one(*feats), two(*feats))
    assert torch.equal(two(*feats)[:4], two(*(f[:4] for f in feats)))
    # Two 1-thread processes with pinned threads shared one core (0.6x of one process): pinned
    # only when the threads are as many as the usable cores.
    cores = backends.usable_cores()
    for threads in sorted({1, cores}):
        ov = backends.OpenVinoBackend(tower, feats, "fp32", threads=threads)
        assert ov.compiled.get_property("ENABLE_CPU_PINNING") == (threads >= cores), threads


SIGNAL_STACK_CHECK = """
import gc, os, signal, torch
from clap_helpers.embedding.backends import OpenVinoBackend

tower, example = torch.nn.Linear(8, 4).eval(), (torch.zeros(2, 8),)
made = [OpenVinoBackend(tower, example, "fp32", threads=t) for t in (1, 2, 1)]
for i in (0, 2, 1):  # freed in another order than made
    made[i] = None
    gc.collect()
signal.signal(signal.SIGUSR1, lambda *_: print("signal handled"))
os.kill(os.getpid(), signal.SIGUSR1)
"""


@needs_openvino
def test_backends_freed_in_any_order_leave_signals_deliverable():
    """Each openvino.Core's CPU plugin swaps the thread's alternate signal stack and puts the
    old one back when destroyed; with a Core per backend, backends freed out of order left a
    freed stack and the next Python signal handler killed the process (SIGSEGV, no traceback).
    In a subprocess, since the failure is the process dying."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_STACK_CHECK], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "signal handled" in done.stdout, (
        f"exit code {done.returncode} (-11: SIGSEGV): {done.stderr[-2000:]}"
    )


def test_openvino_runs_two_streams_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("CLAP_HELPERS_STREAMS", raising=False)
    assert backends.default_streams(2) == 2 and backends.default_streams(8) == 2
    assert backends.default_streams(1) == 1  # a 1-thread process (Ray actor): one stream
    monkeypatch.setenv("CLAP_HELPERS_STREAMS", "1")
    assert backends.default_streams(2) == 1


@needs_openvino
def test_openvino_splits_batches_larger_than_compiled(ov_fp32):
    feats = ov_fp32._probe_features()
    many = tuple(f.repeat(9, *([1] * (f.dim() - 1))) for f in feats)
    out = ov_fp32.backend(*many)
    assert out.shape == (9, ov_fp32.dim)
    assert torch.equal(out, ov_fp32.backend(*feats).expand(9, -1))


@needs_openvino
def test_auto_picks_openvino_on_a_cpu(tiny_clap, model_cache):
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendWarning)
        enc = load_clap(tiny_clap, "cpu", "fp32", backend="auto", cache_dir=model_cache)
    assert enc.backend.name == "openvino" and enc.backend.cosine >= backends.MIN_COSINE_OPENVINO


@needs_openvino
def test_auto_falls_back_when_the_export_fails(tiny_clap, tmp_path, monkeypatch):
    import openvino as ov

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operation aten::frobnicate")

    monkeypatch.setattr(ov, "convert_model", broken)
    with pytest.warns(BackendWarning, match="export to OpenVINO failed.*frobnicate"):
        enc = load_clap(tiny_clap, "cpu", "fp32", backend="auto", cache_dir=tmp_path)
    assert enc.backend.name == "torch" and enc.precision == "fp32"
    assert not (tmp_path / "openvino").exists() or not any((tmp_path / "openvino").iterdir())
    with pytest.raises(BackendUnavailable, match="frobnicate"):
        load_clap(tiny_clap, "cpu", "fp32", backend="openvino", cache_dir=tmp_path)


@needs_openvino
def test_auto_falls_back_when_the_probe_check_fails(tiny_clap, model_cache, monkeypatch):
    monkeypatch.setattr(backends, "MIN_COSINE_OPENVINO", 1.5)  # no backend can pass this
    with pytest.warns(BackendWarning, match="probe clip is cosine"):
        enc = load_clap(tiny_clap, "cpu", "fp32", backend="auto", cache_dir=model_cache)
    assert enc.backend.name == "torch"


def test_auto_avoids_openvino_under_an_isa_cap(tiny_clap, monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    with pytest.warns(BackendWarning, match="ONEDNN_MAX_CPU_ISA is set"):
        enc = load_clap(tiny_clap, "cpu", "fp32", backend="auto", cache_dir=False)
    assert enc.backend.name == "torch"


@needs_openvino
def test_a_damaged_cached_model_is_converted_again(tiny_clap, ov_fp32, model_cache, tmp_path):
    saved = next((model_cache / "openvino").glob("*/model.xml"))
    damaged = tmp_path / "openvino" / saved.parent.name
    damaged.mkdir(parents=True)
    (damaged / "model.xml").write_text("<not a model")
    with pytest.warns(BackendWarning, match="unreadable"):
        enc = load_clap(tiny_clap, "cpu", "fp32", backend="openvino", cache_dir=tmp_path)
    assert enc.backend.converted and enc.backend.name == "openvino"
    assert (damaged / "model.xml").read_text() != "<not a model"  # replaced by a good copy


@needs_openvino
def test_a_model_saved_meanwhile_by_another_process_is_kept(ov_fp32, model_cache, tmp_path):
    import openvino as ov

    saved = next((model_cache / "openvino").glob("*/model.xml"))
    model = ov.Core().read_model(saved)
    target = tmp_path / "key"
    target.mkdir()
    (target / "model.xml").write_text("the other process's model")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backends._save_atomic(ov, model, target)
    assert (target / "model.xml").read_text() == "the other process's model"
    assert [p.name for p in tmp_path.iterdir()] == ["key"]  # no temporary folder left


@pytest.mark.parametrize("cached", [True, False], ids=["cache_dir", "no-cache"])
def test_auto_falls_back_when_openvino_is_missing(tiny_clap, monkeypatch, tmp_path, cached):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    cache = tmp_path if cached else False
    with pytest.warns(BackendWarning, match="openvino package is not installed"):
        enc = load_clap(tiny_clap, "cpu", "fp32", backend="auto", cache_dir=cache)
    assert enc.backend.name == "torch"
    with pytest.raises(BackendUnavailable, match="not installed"):
        load_clap(tiny_clap, "cpu", "fp32", backend="openvino", cache_dir=cache)


# -- other model families -----------------------------------------------------------------------


def _family_fixture(name, tmp_path_factory):
    """(checkpoint, loader options) of a tiny fixture of family ``name``."""
    from clap_helpers.devtools import fixtures

    folder = tmp_path_factory.mktemp(name)
    if name.startswith("msclap"):
        ckpt, text = fixtures.make_tiny_msclap(folder, name)
        return ckpt, {"text_model": text}
    maker = {"m2d-clap": fixtures.make_tiny_m2d, "audioclip": fixtures.make_tiny_audioclip}
    return maker[name](folder)[0], {}


def _mixed_waveforms(rate: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)  # shorter and longer than a window: padded rows, windows
    return [0.1 * rng.standard_normal(int(rate * s)).astype(np.float32) for s in (1.3, 4, 12, 0.5)]


@needs_openvino
@pytest.mark.parametrize("name", ["msclap-2022", "msclap-2023", "audioclip"])
def test_families_that_export_match_eager_pytorch(name, tmp_path_factory):
    ckpt, opts = _family_fixture(name, tmp_path_factory)
    kw = {"cache_dir": False, "num_workers": 0, **opts}
    eager = load_clap(ckpt, "cpu", "fp32", backend="torch", **kw)
    ov = load_clap(ckpt, "cpu", "fp32", backend="openvino", **kw)
    assert ov.family.openvino and ov.backend.name == "openvino"
    waves = _mixed_waveforms(eager.sample_rate)
    ref = eager.embed_waveforms(waves, batch_size=4)
    assert min_cosine(ov.embed_waveforms(waves, batch_size=4), ref) > 0.9999


@pytest.mark.parametrize("name", ["pe-audio", "m2d-clap"])
def test_families_that_do_not_export_run_pytorch_quietly(name, request, tmp_path_factory):
    if name == "pe-audio":
        ckpt, opts = request.getfixturevalue("tiny_pe_audio"), {}
    else:
        ckpt, opts = _family_fixture(name, tmp_path_factory)
    kw = {"cache_dir": False, "num_workers": 0, **opts}
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendWarning)
        enc = load_clap(ckpt, "cpu", "fp32", backend="auto", **kw)
    assert not enc.family.openvino and enc.backend.name == "torch"
    with pytest.raises(BackendUnavailable, match="not exported"):
        load_clap(ckpt, "cpu", "fp32", backend="openvino", **kw)


@needs_openvino
def test_openvino_refuses_inputs_of_another_shape(ov_fp32):
    (feats, *rest) = ov_fp32._probe_features()
    with pytest.raises(ValueError, match="compiled for inputs"):
        ov_fp32.backend(feats[..., :-8], *rest)


@pytest.mark.parametrize("fast_bf16", [True, False], ids=["fast-bf16-cpu", "other-cpu"])
def test_bf16_weights_that_drift_fall_back_to_autocast(fast_bf16, tmp_path_factory, monkeypatch):
    """Tiny AudioCLIP drifts with bf16 weights (cosine ~0.94): autocast is used on every CPU."""
    monkeypatch.setattr(backends, "cpu_has_fast_bf16", lambda: fast_bf16)
    ckpt, opts = _family_fixture("audioclip", tmp_path_factory)
    enc = load_clap(ckpt, "cpu", "fp32", backend="torch", cache_dir=False, num_workers=0)
    feats = enc._probe_features()
    tower, cpu = enc.family.audio_tower, torch.device("cpu")
    ref = TorchBackend(tower, cpu, "fp32")(*feats)
    weights = TorchBackend(tower, cpu, "bf16", weights=True)
    assert backends._cosine(weights(*feats), ref) < backends.MIN_COSINE_TORCH
    chosen = backends.torch_backend(tower, cpu, "bf16", feats, ref)
    assert chosen.mode == "autocast" and chosen.cosine > 0.99
    assert enc.precision_check("bf16") == chosen.cosine
