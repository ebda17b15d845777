"""Ray Data scale-out (clap_helpers.embedding.distributed) on a local 2-CPU Ray with the tiny CLAP.

The Ray tests share one local cluster (module fixture, shut down at the end); set RAY_ADDRESS to
use a running cluster instead. A local Ray start that times out (ray-project/ray#65983: the
raylet gives its agents 15 s, too little on an overloaded machine) skips them, saying so.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clap_helpers.data.loaders import load
from clap_helpers.embedding import distributed as D
from clap_helpers.embedding.loading import load_clap

REPO = Path(__file__).resolve().parents[3]
ACTOR_TITLE = "MapBatches(ClapEmbedder)"


# ---------------------------------------------------------------------------------------------
# Without Ray: reading an output folder
# ---------------------------------------------------------------------------------------------
def _write_shard(path: Path, rows: list[tuple[str, list | None, str | None]], meta: dict) -> None:
    table = pa.table(
        {
            "path": [r[0] for r in rows],
            "embedding": pa.array([r[1] for r in rows], pa.list_(pa.float32())),
            "error": pa.array([r[2] for r in rows], pa.string()),
            "warning": pa.array([None] * len(rows), pa.string()),
        },
        schema=D.output_schema(meta),
    )
    pq.write_table(table, path)


META = {"model": "m", "revision": "r", "precision": "fp32", "window": "average", "dim": 2}


def test_read_embeddings_aligns_to_paths(tmp_path):
    a, b, c = (str(tmp_path / n) for n in ("a.wav", "b.wav", "c.wav"))
    _write_shard(tmp_path / "1.parquet", [(a, [1.0, 0.0], None), (b, None, "file not found")], META)
    _write_shard(tmp_path / "2.parquet", [(b, [0.0, 1.0], None)], META)  # re-run fixed b
    (tmp_path / "3.parquet").write_bytes(b"PAR1 cut short")  # a run killed while writing
    with pytest.warns(UserWarning, match="unreadable shard"):
        emb, why = D.read_embeddings(tmp_path, [c, b, a, a], return_errors=True)
    assert emb.shape == (4, 2) and emb.dtype == np.float32
    assert np.isnan(emb[0]).all() and why[0] == "not in the output"
    np.testing.assert_array_equal(emb[1:], [[0, 1], [1, 0], [1, 0]])
    assert why[1:] == [None, None, None]
    with pytest.warns(UserWarning):
        table = D.read_table(tmp_path)
    assert sorted(table["path"]) == [a, b] and table["error"].isna().all()


def test_read_embeddings_refuses_mixed_runs_and_other_models(tmp_path):
    _write_shard(tmp_path / "1.parquet", [("x.wav", [1.0, 0.0], None)], META)

    class Enc:
        model_id, revision = "other", "r"

    with pytest.raises(D.DistributedError, match="embedded with model m"):
        D.read_embeddings(tmp_path, ["x.wav"], encoder=Enc())
    _write_shard(tmp_path / "2.parquet", [("y.wav", [1.0, 0.0], None)], {**META, "model": "n"})
    with pytest.raises(D.DistributedError, match="disagree"):
        D.read_embeddings(tmp_path, ["x.wav"])
    with pytest.raises(D.DistributedError, match="no embeddings"):
        D.read_embeddings(tmp_path / "empty", ["x.wav"])


def test_expand_files(tmp_path):
    for name in ("b.wav", "a.flac", "notes.txt", "sub/c.mp3"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# clips\n{tmp_path / 'b.wav'}\n\n{tmp_path / 'a.flac'}\n")
    assert [Path(p).name for p in D.expand_files(str(tmp_path))] == ["a.flac", "b.wav", "c.mp3"]
    assert [Path(p).name for p in D.expand_files(str(listing))] == ["b.wav", "a.flac"]
    assert [Path(p).name for p in D.expand_files(str(tmp_path / "*.wav"))] == ["b.wav"]
    uri = D.expand_files(tmp_path.as_uri())
    assert len(uri) == 3 and all(u.startswith("file://") for u in uri)
    with pytest.raises(FileNotFoundError, match="--files"):
        D.expand_files(str(tmp_path / "nothing*.ogg"))


# ---------------------------------------------------------------------------------------------
# On a local Ray
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    env = {"env_vars": {"PYTHONPATH": str(REPO)}}  # the workers import this checkout
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], runtime_env=env)
    else:
        try:
            D.init_local_ray(num_cpus=2, runtime_env=env)
        except Exception as exc:  # noqa: BLE001
            if "timed out during startup" not in str(exc):
                raise
            pytest.skip(f"local Ray did not start on this (overloaded) machine: {exc}")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(data_root, tmp_path_factory):
    """ESC-50 fixture clips (some as file:// URIs), a missing file and a file that is not audio."""
    esc, _ = load("esc50", data_root)
    paths = list(esc["path"][:16])
    paths[1::4] = [Path(p).as_uri() for p in paths[1::4]]  # object-store style paths
    bad = tmp_path_factory.mktemp("bad")
    (bad / "not_audio.wav").write_bytes(b"this is not a RIFF file at all" * 10)
    return [*paths, str(bad / "not_audio.wav"), str(bad / "missing.wav")]


def _local(path: str) -> str:
    return path.removeprefix("file://")


def test_distributed_equals_single_process_and_resumes(ray_cluster, tiny_clap, clips, tmp_path):
    out = (tmp_path / "emb").as_uri()  # output through a pyarrow filesystem
    kwargs = dict(model=tiny_clap, precision="fp32", num_workers=2, cpus_per_worker=0.5)
    first = D.embed_distributed(out, clips[:10], batch_size=4, rows_per_shard=4, **kwargs)
    assert (first["n_paths"], first["n_skipped"], first["n_missing"]) == (10, 0, 0)

    # Resume through the command line: only the new paths are embedded.
    listing = tmp_path / "clips.txt"
    listing.write_text("\n".join(clips))
    shards_before = set((tmp_path / "emb").glob("*.parquet"))
    argv = [
        "--files",
        str(listing),
        "--model",
        str(tiny_clap),
        "--out",
        out,
        "--precision",
        "fp32",
        "--num-workers",
        "2",
        "--cpus-per-worker",
        "0.5",
        "--batch-size",
        "4",
    ]
    assert D.main(argv) == 0
    new_shards = set((tmp_path / "emb").glob("*.parquet")) - shards_before
    new_paths = pq.read_table(sorted(new_shards), columns=["path"]).column("path").to_pylist()
    assert sorted(new_paths) == sorted(D.normalize_path(p) for p in clips[10:])

    emb, why = D.read_embeddings(out, clips, return_errors=True)
    enc = load_clap(tiny_clap, precision="fp32", num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = enc.embed_audio([_local(p) for p in clips], batch_size=8, cache_dir=False)
    good = slice(0, len(clips) - 2)
    np.testing.assert_allclose(emb[good], ref[good], atol=1e-5, rtol=0)
    assert why[good] == [None] * (len(clips) - 2)
    # the corrupt clip fails for the reason the single-process engine gives it
    single = dict(enc.failures)
    assert why[-2] == single[_local(clips[-2])] and why[-1] == "file not found"
    assert np.isnan(emb[-2:]).all()
    assert np.isfinite(D.read_embeddings(out, clips, encoder=enc)[good]).all()

    meta = D.read_metadata(out)
    assert meta["model"] == str(Path(tiny_clap).resolve()) and meta["revision"] == enc.revision
    assert (meta["precision"], meta["window"], meta["dim"]) == ("fp32", "average", enc.dim)
    assert meta["frontend"]["sampling_rate"] == 48_000 and meta["frontend"]["n_mels"] == 64
    assert meta["sample_rate"] == 48_000  # the rate the decoding tasks resampled to
    again = D.embed_distributed(out, clips, **kwargs)
    assert again["n_skipped"] == len(clips) and again["n_missing"] == 0

    with pytest.raises(D.DistributedError, match="other settings"):
        D.embed_distributed(out, clips, **{**kwargs, "window": "first"})


def _actor_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                title = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if ACTOR_TITLE in title and ".submit" in title:  # busy with a batch
                pids.append(int(proc.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_run_survives_a_killed_actor(ray_cluster, tiny_clap, data_root, tmp_path):
    esc, _ = load("esc50", data_root)
    paths = list(esc["path"])
    killed: list[int] = []
    done = threading.Event()

    def killer():
        while not done.is_set() and not killed:
            for pid in _actor_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        summary = D.embed_distributed(
            tmp_path / "emb",
            paths,
            model=tiny_clap,
            precision="fp32",
            num_workers=1,
            cpus_per_worker=1,
            batch_size=2,
            rows_per_shard=8,
        )
    finally:
        done.set()
        thread.join()
    assert killed, "no embedding actor was seen busy: nothing was killed"
    assert summary["n_embedded"] == len(paths) and summary["n_missing"] == 0
    emb = D.read_embeddings(tmp_path / "emb", paths)
    assert np.isfinite(emb).all()


# ---------------------------------------------------------------------------------------------
# Notebooks read a distributed run (shards written here from the single-process engine)
# ---------------------------------------------------------------------------------------------
def test_notebook_02_reads_embeddings_dir(fixture_env, data_root, tiny_clap, tmp_path):
    from clap_helpers.devtools import runner
    from clap_helpers.evaluation import zeroshot
    from clap_helpers.evaluation.prompts import template_prompts

    esc, classes = load("esc50", data_root)
    enc = load_clap(tiny_clap, precision="fp32", num_workers=0)
    ref = enc.embed_audio(esc["path"], batch_size=8, cache_dir=False, progress=False)
    meta = {**enc.audio_namespace(), "dim": enc.dim}
    rows = [(p, e.tolist(), None) for p, e in zip(esc["path"][1:], ref[1:], strict=True)]
    (tmp_path / "emb").mkdir()
    _write_shard(tmp_path / "emb" / "0.parquet", rows, meta)
    notebook = REPO / "notebooks" / "02_esc50_zeroshot.ipynb"
    params = runner.fixture_parameters(notebook, fixture_env, tmp_path / "figs")
    params.update(embeddings_dir=str(tmp_path / "emb"), results_path=str(tmp_path / "r.json"))
    results = runner.run_notebook(notebook, tmp_path / "02.ipynb", params)
    ref[0] = np.nan  # the clip left out of the run counts as failed
    text = enc.embed_text(template_prompts(classes, "This is a sound of {}."), cache_dir=False)
    expected = zeroshot.evaluate(ref, esc["target"].to_numpy(), text, ks=(1, 3, 5))
    assert (results["n"], results["n_failed"]) == (len(esc) - 1, 1)
    assert results["top1"] == pytest.approx(expected["top1"])


# ---------------------------------------------------------------------------------------------
# The pipeline's stages without Ray, on a family that is not 48 kHz
# ---------------------------------------------------------------------------------------------
def test_stages_decode_at_the_family_rate(fixture_env, data_root, other_families):
    """M2D-CLAP takes 16 kHz: the run metadata says so, the decoding stage resamples to it and
    the embedding stage gives what the single-process engine gives (48 kHz input would not)."""
    model = str(fixture_env.m2d_model)
    meta = D._describe(model, "fp32", None, "average", False)
    assert meta["sample_rate"] == 16_000 and meta["family"] == "m2d-clap"
    esc, _ = load("esc50", data_root)
    paths = list(esc["path"][:4])
    batch = D.decode_batch({"path": np.array(paths, dtype=object)}, sample_rate=16_000)
    at48 = D.decode_batch({"path": np.array(paths[:1], dtype=object)})
    assert len(at48["waveform"][0]) == 3 * len(batch["waveform"][0])  # 48 kHz is 3 x 16 kHz
    settings = {
        "precision": "fp32",
        "window": "average",
        "int16_roundtrip": False,
        "batch_size": 2,
        "model_options": {},
    }
    table = D.ClapEmbedder(model, settings, threads=1)(batch)
    got = np.array(table.column("embedding").to_pylist(), np.float32)
    enc = load_clap(model, "cpu", "fp32", num_workers=0)
    ref = enc.embed_audio(paths, batch_size=2, cache_dir=False, progress=False)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    assert table.column("error").to_pylist() == [None] * 4
