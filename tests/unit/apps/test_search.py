"""clap_helpers.apps.search: exact ranking, text/audio queries, the path guard, maps; on hand-made
embeddings and on the fixtures with the tiny CLAP."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clap_helpers import plots
from clap_helpers.apps import search
from clap_helpers.data.loaders import DatasetNotFoundError


def unit(*angles_deg: float) -> np.ndarray:
    """Unit vectors in the plane at the given angles: (len(angles), 2) float32."""
    a = np.deg2rad(np.asarray(angles_deg, dtype=float))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


class FakeEncoder:
    """Stands in for ClapEncoder: fixed text vectors, counts the texts it embeds."""

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors = vectors
        self.calls: list[str] = []
        self.model_id = "fake"

    def embed_text(self, texts):
        self.calls.extend(texts)
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)


# ------------------------------------------------------------------------------------ ranking
def test_top_k_known_order():
    emb = unit(90, 10, 45, 0, 180)
    rows, scores = search.top_k(unit(0)[0], emb, 3)
    assert rows.tolist() == [[3, 1, 2]]
    np.testing.assert_allclose(scores[0], np.cos(np.deg2rad([0, 10, 45])), atol=1e-6)


def test_top_k_ties_keep_collection_order():
    emb = unit(30, 0, -30, 0, 30)  # rows 1 and 3 tie, then 0, 2, 4 tie
    rows, _ = search.top_k(unit(0), emb, 5)
    assert rows.tolist() == [[1, 3, 0, 2, 4]]
    rows, _ = search.top_k(unit(0), emb, 3)  # the cut falls inside the 3-way tie
    assert rows.tolist() == [[1, 3, 0]]


def test_top_k_skips_nan_rows_and_k_larger_than_n():
    emb = unit(0, 5, 10, 15)
    emb[1] = np.nan
    rows, scores = search.top_k(unit(0, 12), emb, 10)
    assert rows.shape == (2, 3) and 1 not in rows
    assert rows.tolist() == [[0, 2, 3], [2, 3, 0]]
    assert np.isfinite(scores).all()
    all_nan = np.full((3, 2), np.nan, np.float32)
    assert search.top_k(unit(0), all_nan, 5)[0].shape == (1, 0)


def test_top_k_exclude_and_bad_queries():
    emb = unit(0, 10, 20)
    rows, scores = search.top_k(unit(0, 0), emb, 3, exclude=[0, None])
    assert rows.tolist() == [[1, 2, -1], [0, 1, 2]]
    assert np.isnan(scores[0, 2])
    with pytest.raises(search.QueryError, match="NaN"):
        search.top_k(np.array([np.nan, 0.0]), emb, 2)
    with pytest.raises(ValueError, match="do not match"):
        search.top_k(np.ones(3), emb, 2)


def test_validate_query():
    assert search.validate_query("  a dog  ") == "a dog"
    for bad in ["", "   \n", None]:
        with pytest.raises(search.QueryError, match="empty"):
            search.validate_query(bad)
    assert search.validate_query("x" * search.MAX_QUERY_CHARS)
    with pytest.raises(search.QueryError, match="limit is 500"):
        search.validate_query("x" * (search.MAX_QUERY_CHARS + 1))


def test_text_to_text_table_and_wide_form():
    enc = FakeEncoder(
        {
            "rock music": unit(0)[0],
            "folk music": unit(90)[0],
            "loud music": unit(10)[0],
            "calm music": unit(80)[0],
            "sad music": unit(60)[0],
        }
    )
    table = search.text_to_text(
        enc,
        ["rock music", "folk music"],
        ["loud", "calm", "sad"],
        k=2,
        candidate_template="{} music",
    )
    assert list(table.columns) == ["query", "rank", "text", "score"]
    assert table["text"].tolist() == ["loud", "sad", "calm", "sad"]
    assert table["query"].tolist() == ["rock music"] * 2 + ["folk music"] * 2
    assert table["rank"].tolist() == [1, 2, 1, 2]
    assert table["score"].iloc[0] == pytest.approx(np.cos(np.deg2rad(10)), abs=1e-6)
    wide = search.wide_table(table)
    assert wide.shape == (2, 2) and list(wide.index) == ["rock music", "folk music"]
    assert wide.loc["folk music", "top 1"] == "calm (0.985)"


@pytest.fixture
def toy_index(tmp_path):
    """Four 'clips' (real files, any bytes) with hand-made 2-D embeddings, one NaN."""
    folder = tmp_path / "toy" / "audio"
    folder.mkdir(parents=True)
    paths = []
    for name in "abcd":
        (folder / f"{name}.wav").write_bytes(b"RIFF")
        paths.append(str(folder / f"{name}.wav"))
    clips = pd.DataFrame(
        {"path": paths, "label": ["dog", "rain", "siren", "dog"], "dataset": "toy"}
    )
    emb = unit(0, 90, 45, 10)
    emb[2] = np.nan
    enc = FakeEncoder({"a dog": unit(5)[0], "rain": unit(95)[0], "a siren": unit(40)[0]})
    return search.SoundIndex(clips, emb, enc, roots=[folder])


def test_index_search_columns_and_nan(toy_index):
    hits = toy_index.search_text(["a dog", " rain "], k=5)
    assert list(hits.columns) == ["query", *search.RESULT_COLUMNS]
    assert hits[hits["query"] == "a dog"]["label"].tolist() == ["dog", "dog", "rain"]
    assert hits[hits["query"] == "rain"]["row"].tolist() == [1, 3, 0]
    assert 2 not in hits["row"].tolist()  # the NaN clip
    assert toy_index.n_failed == 1 and len(toy_index) == 4


def test_audio_queries_use_collection_rows(toy_index):
    a = toy_index.clips["path"][0]
    hits = toy_index.search_audio(a, k=2)  # a itself is left out
    assert hits["row"].tolist() == [3, 1] and (hits["query"] == a).all()
    assert toy_index.search_audio(a, k=1, exclude_self=False)["row"].tolist() == [0]
    ranked = toy_index.audio_to_text(a, ["rain", "a dog", "a siren"])
    assert ranked["text"].tolist() == ["a dog", "a siren", "rain"]
    with pytest.raises(search.QueryError, match="no such audio file"):
        toy_index.search_audio(str(a) + ".missing")


def test_path_guard(toy_index, tmp_path):
    inside = toy_index.clips["path"][1]
    assert toy_index.resolve_path(inside) == toy_index.resolve_path(
        str(tmp_path / "toy" / "audio" / ".." / "audio" / "b.wav")
    )
    link = tmp_path / "link.wav"
    link.symlink_to(inside)
    assert toy_index.row_of(link) == 1  # the same file under another name is the same clip
    outside = tmp_path / "secret.wav"
    outside.write_bytes(b"RIFF")
    for bad in [outside, tmp_path / "toy" / "audio" / ".." / "secret.wav", "/etc/passwd", ""]:
        with pytest.raises(search.PathNotInIndexError):
            toy_index.resolve_path(bad)
    assert toy_index.roots == [(tmp_path / "toy" / "audio").resolve()]
    assert not any(outside.resolve().is_relative_to(r) for r in toy_index.roots)


def esc50_copy(data_root, dest, n: int = 6):
    """A writable copy of the fixture ESC-50 with its first ``n`` rows and their clips."""
    src = data_root / "ESC-50-master"
    meta = pd.read_csv(src / "meta" / "esc50.csv").head(n)
    top = dest / "ESC-50-master"
    (top / "meta").mkdir(parents=True)
    (top / "audio").mkdir()
    for name in meta["filename"]:
        shutil.copy(src / "audio" / name, top / "audio" / name)
    meta.to_csv(top / "meta" / "esc50.csv", index=False)
    return top, meta


def test_roots_are_dataset_folders_not_clip_paths(data_root, tmp_path):
    """A '..' metadata row and a clip linked to a file elsewhere used to widen the served
    folders to / and to the link target's folder; now they are dropped, roots stay put."""
    import gradio.utils

    top, meta = esc50_copy(data_root, tmp_path / "data")
    escape = meta.iloc[[0]].assign(filename="../../../../../../../../tmp/x.wav")
    pd.concat([meta, escape]).to_csv(top / "meta" / "esc50.csv", index=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = top / "audio" / meta["filename"][1]
    shutil.move(linked, elsewhere / "target.wav")
    shutil.copy(elsewhere / "target.wav", elsewhere / "neighbour.wav")
    linked.symlink_to(elsewhere / "target.wav")
    with pytest.warns(UserWarning, match="lie outside") as caught:
        clips, missing = search.load_collection(["esc50"], tmp_path / "data")
    outside = [w for w in caught if "lie outside" in str(w.message)]
    assert len(outside) == 1
    message = str(outside[0].message)
    assert "esc50: 2 of 7 clips" in message and "x.wav" in message and linked.name in message
    assert len(clips) == 5 and not missing
    roots = search.collection_roots(["esc50"], tmp_path / "data")
    assert roots == [(top / "audio").resolve()]
    index = search.SoundIndex(clips, unit(*range(5)), roots=roots)
    assert index.roots == roots and all(index.serves(p) for p in clips["path"])
    for path in [
        elsewhere / "neighbour.wav",
        elsewhere / "target.wav",
        "/etc/passwd",
        "/tmp/x.wav",
    ]:
        assert not index.serves(path)
        assert not gradio.utils.is_allowed_file(Path(path), [], index.roots, [])[0]
    assert gradio.utils.is_allowed_file(Path(clips["path"][0]), [], index.roots, [])[0]
    # a hand-made collection is checked the same way: the linked clip is dropped, with a warning
    hand = pd.DataFrame({"path": [clips["path"][0], str(linked)], "dataset": "esc50"})
    with pytest.warns(UserWarning, match="1 of 2 clips lie outside"):
        small = search.SoundIndex(hand, unit(0, 90), roots=roots)
    assert small.clips["path"].tolist() == [clips["path"][0]] and len(small.embeddings) == 1


def test_maps_place_queries(toy_index):
    pca = search.EmbeddingMap.fit(toy_index.embeddings, "pca")
    assert pca.xy.shape == (4, 2) and np.isnan(pca.xy[2]).all()
    np.testing.assert_allclose(pca.place(toy_index.embeddings[0]), pca.xy[0], atol=1e-5)
    # a t-SNE-like map: the query goes to the cosine-weighted mean of its neighbours
    xy = np.array([[0.0, 0.0], [10.0, 0.0], [np.nan, np.nan], [0.0, 4.0]])
    tsne = search.EmbeddingMap("tsne", xy, toy_index.embeddings)
    w = np.cos(np.deg2rad([0.0, 10.0, 90.0]))
    expected = (w[:, None] * xy[[0, 3, 1]]).sum(0) / w.sum()
    np.testing.assert_allclose(tsne.place(unit(0)[0], neighbours=3), expected, atol=1e-5)
    fig = plots.query_map(tsne, toy_index.clips, [1.0, 1.0], [0, 3], "a dog")
    assert fig.axes[0].get_title() == "t-SNE map of 4 clips"


def test_load_collection_missing_datasets(data_root, tmp_path):
    root = tmp_path / "partial"
    root.mkdir()
    (root / "ESC-50-master").symlink_to(data_root / "ESC-50-master")
    clips, missing = search.load_collection(
        ["esc50", "urbansound8k"], root, n_samples=10, skip_missing=True
    )
    assert len(clips) == 10 and set(clips["dataset"]) == {"esc50"}
    assert (
        list(missing) == ["urbansound8k"]
        and "bash dataset.sh urbansound8k" in missing["urbansound8k"]
    )
    with pytest.raises(DatasetNotFoundError, match="bash dataset.sh urbansound8k"):
        search.load_collection(["esc50", "urbansound8k"], root)


# ------------------------------------------------------------------- fixtures + tiny CLAP
@pytest.fixture(scope="module")
def fixture_index(data_root, tiny_clap, tmp_path_factory):
    from clap_helpers.embedding.loading import load_clap

    enc = load_clap(tiny_clap, "cpu", "fp32", cache_dir=tmp_path_factory.mktemp("cache"))
    enc.num_workers = 0
    return search.SoundIndex.build(
        enc, ["esc50", "urbansound8k"], data_root, n_samples=8, batch_size=8, progress=False
    )


def test_index_on_fixtures(fixture_index, data_root, tmp_path):
    index = fixture_index
    assert len(index) == 16 and index.dim == index.encoder.dim and index.n_failed == 0
    assert sorted(map(str, index.roots)) == sorted(
        str((data_root / d / "audio").resolve()) for d in ["ESC-50-master", "UrbanSound8K"]
    )
    hits = index.search_text(["a dog barking", "a siren"], k=4)
    assert len(hits) == 8 and set(hits["dataset"]) <= {"esc50", "urbansound8k"}
    assert hits.groupby("query")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    # a copy of a clip outside the collection: its original comes first, with cosine ~ 1
    original = index.clips["path"][3]
    copy = tmp_path / "copy.wav"
    shutil.copy(original, copy)
    by_example = index.search_audio(copy, k=3)
    assert by_example["path"].iloc[0] == original and by_example["score"].iloc[0] > 0.999
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(search.QueryError, match="could not decode"):
        index.search_audio(bad)


def test_queries_are_cached(fixture_index, monkeypatch):
    index = fixture_index
    first = index.search_text("water dripping into a bucket", k=3)

    def fail(*args, **kwargs):
        raise AssertionError("the text model ran again")

    monkeypatch.setattr(index.encoder.model, "get_text_features", fail)
    again = index.search_text("water dripping into a bucket", k=3)
    pd.testing.assert_frame_equal(first, again)


def test_pca_query_map_names_the_variance_and_ranks_the_hits(toy_index):
    pca = search.EmbeddingMap.fit(toy_index.embeddings, "pca")
    assert pca.explained.shape == (2,) and 0 < pca.explained.sum() <= 1 + 1e-9
    assert search.EmbeddingMap("tsne", pca.xy, toy_index.embeddings).explained is None
    fig = plots.query_map(pca, toy_index.clips, pca.place(unit(0)[0]), [0, 3], "a dog")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("PC1 (") and "% of variance" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.texts]
    assert labels[0].startswith("1 ") and labels[1].startswith("2 ")


def test_results_text_names_files_not_paths(toy_index):
    path = toy_index.clips["path"].iloc[0]
    ranking = pd.DataFrame({"query": [path], "rank": [1], "text": ["a dog"], "score": [0.12345]})
    shown = search.results_text(ranking)
    assert list(shown.columns) == ["query", "rank", "text", "score"]
    assert shown["query"].iloc[0] == Path(path).name and shown["score"].iloc[0] == 0.123
    assert search.results_text(ranking.assign(query="a/b text"))["query"].iloc[0] == "a/b text"


def test_query_maps_is_a_pyplot_figure_a_notebook_shows(toy_index):
    import matplotlib.pyplot as plt

    fig = plots.query_maps(toy_index, "a dog", k=2, methods=("pca",))
    try:
        assert plt.fignum_exists(fig.number)  # a bare Figure() shows as "<Figure ...>" text
        assert fig.axes[0].get_legend() is not None
    finally:
        plt.close(fig)
