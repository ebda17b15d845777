"""Plots: each returns a Figure with the expected content; nothing is shown."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

from clap_helpers import plots  # noqa: E402
from clap_helpers.evaluation import zeroshot as zs  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    n_classes, dim, per_class = 6, 12, 8
    text = np.linalg.qr(rng.normal(size=(dim, n_classes)))[0].T.astype(np.float32)
    labels = np.repeat(np.arange(n_classes), per_class)
    audio = text[labels] + 0.3 * rng.normal(size=(len(labels), dim))
    audio = (audio / np.linalg.norm(audio, axis=1, keepdims=True)).astype(np.float32)
    classes = [f"class_{i}" for i in range(n_classes)]
    return audio, labels, text, classes


def _images(fig: Figure) -> list[AxesImage]:
    return [im for ax in fig.axes for im in ax.get_images()]


@pytest.mark.parametrize("n_classes", [5, 50])
def test_confusion_matrix(n_classes):
    rng = np.random.default_rng(0)
    conf = rng.integers(0, 10, size=(n_classes, n_classes))
    classes = [f"c{i}" for i in range(n_classes)]
    fig = plots.confusion_matrix(conf, classes, title="t")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # matrix + colorbar
    (im,) = _images(fig)
    data = im.get_array()
    assert data.shape == (n_classes, n_classes)
    np.testing.assert_allclose(data.sum(axis=1), 1.0)  # row-normalised
    ax = fig.axes[0]
    assert len(ax.get_xticklabels()) == n_classes
    assert (len(ax.texts) > 0) == (n_classes <= 15)  # cell values only for few classes
    raw = plots.confusion_matrix(conf, classes, normalize=False)
    np.testing.assert_array_equal(_images(raw)[0].get_array(), conf)
    big, small = plots.confusion_matrix(np.eye(50), [str(i) for i in range(50)]), fig
    assert big.get_size_inches()[0] >= small.get_size_inches()[0]


def test_confusion_into_given_axes(toy):
    fig, ax = plt.subplots()
    out = plots.confusion_matrix(np.eye(3, dtype=int), ["a", "b", "c"], ax=ax)
    assert out is fig


def test_topk_confusion(toy):
    audio, labels, text, classes = toy
    s = zs.scores(audio, text)
    fig = plots.topk_confusion(s, labels, classes, k=3)
    (im,) = _images(fig)
    expected = zs.topk_confusion_matrix(s, labels, 3)
    np.testing.assert_allclose(im.get_array(), expected / expected.sum(axis=1, keepdims=True))


def test_strategy_bars(toy):
    audio, labels, text, classes = toy
    rng = np.random.default_rng(1)
    results = {
        name: zs.evaluate(audio + noise * rng.normal(size=audio.shape), labels, text)
        for name, noise in [("label", 0.5), ("template", 0.3), ("descriptive", 0.1)]
    }
    fig = plots.strategy_bars(zs.results_table(results))
    ax = fig.axes[0]
    assert len(ax.patches) == 3 * 3
    assert len([t for t in ax.texts if t.get_text()]) == 9  # one value label per bar
    assert [t.get_text() for t in ax.get_xticklabels()] == list(results)


def test_class_deltas_plot():
    classes = [f"c{i}" for i in range(40)]
    a = np.linspace(0, 1, 40)
    b = a[::-1].copy()
    b[5] = a[5]  # unchanged class is left out
    d = zs.class_deltas(a, b, classes)
    fig = plots.class_deltas(d, top=10)
    ax = fig.axes[0]
    assert len(ax.patches) == 20
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == d.index[0]  # tick labels run top to bottom: biggest gain first
    small = plots.class_deltas(d.head(3), top=10)
    assert len(small.axes[0].patches) == 3


def test_waveform_and_logmel():
    sr = 16000
    t = np.arange(2 * sr) / sr
    wave = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    fig = plots.waveform_and_logmel(wave, sr, title="tone")
    assert len(fig.axes) == 3  # waveform, mel, colorbar
    (im,) = _images(fig)
    assert im.get_array().shape[0] == 64
    assert im.get_extent()[1] == pytest.approx(2.0, abs=0.05)  # seconds
    given = np.zeros((1, 1, 1001, 64))
    fig2 = plots.waveform_and_logmel(wave, sr, given)
    (im2,) = _images(fig2)
    assert im2.get_array().shape == (64, 1001)
    assert im2.get_extent()[1] == pytest.approx(1001 * 480 / 48000)
    assert fig2.axes[2].get_ylabel() == "dB"


def test_compute_logmel_shape():
    mel = plots.compute_logmel(np.random.default_rng(0).normal(size=48000), 48000)
    assert mel.shape == (101, 64) and np.isfinite(mel).all()


def _offsets(fig: Figure) -> np.ndarray:
    return np.concatenate(
        [c.get_offsets() for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    )


@pytest.mark.parametrize("method", ["tsne", "pca"])
def test_embedding_map(toy, method):
    audio, labels, text, classes = toy
    audio = audio.copy()
    audio[3] = np.nan
    texts = {"label": text, "sentence": text[::-1].copy()}
    fig = plots.embedding_map(audio, labels, classes, texts, method=method, seed=0)
    ax = fig.axes[0]
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters) == len(classes) + 2  # one per class + one per text set
    assert sum(len(c.get_offsets()) for c in scatters) == len(audio) - 1 + 2 * len(classes)
    assert len(ax.texts) == len(classes)  # class names on the first text set
    again = plots.embedding_map(audio, labels, classes, texts, method=method, seed=0)
    np.testing.assert_allclose(_offsets(fig), _offsets(again), rtol=1e-6, atol=1e-6)


def test_embedding_coords_joint_projection(toy):
    audio, _, text, _ = toy
    xy, kept, txt = plots.embedding_coords(audio, {"t": text}, method="pca")
    assert xy.shape == (len(audio), 2) and kept.all() and txt["t"].shape == (len(text), 2)
    # PCA of the concatenation: the projected points are centred jointly
    both = np.concatenate([xy, txt["t"]])
    np.testing.assert_allclose(both.mean(axis=0), 0.0, atol=1e-9)


def test_per_fold_bars(toy):
    audio, labels, text, _ = toy
    df = zs.per_fold(audio, labels, np.tile([1, 2, 3, 4], len(labels) // 4), text)
    fig = plots.per_fold_bars(df)
    ax = fig.axes[0]
    assert len(ax.patches) == 4 * 3
    assert len(ax.get_lines()) == 3  # mean lines


def test_ap_bars():
    ap = np.array([0.5, np.nan, 0.9, 0.1])
    fig = plots.ap_bars(ap, ["a", "b", "c", "d"])
    ax = fig.axes[0]
    assert len(ax.patches) == 3
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "c",
        "a",
        "d",
    ]  # top to bottom: best first
    assert "1 without positives" in ax.get_title()


def test_save_writes_png(tmp_path):
    fig = plots.confusion_matrix(np.eye(3), ["a", "b", "c"])
    path = plots.save(fig, tmp_path / "sub" / "dir" / "conf")
    assert path.suffix == ".png" and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)


def test_nothing_shown(monkeypatch, toy):
    audio, labels, text, classes = toy
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show called"))
    plots.confusion_matrix(np.eye(6), classes)
    plots.embedding_map(audio, labels, classes, method="pca")
    plots.strategy_bars(pd.DataFrame({"top1": [0.5]}, index=["x"]))


# ------------------------------------------------------------------------- what a student sees
def test_model_name_keeps_machine_paths_out_of_titles():
    assert plots.model_name("laion/clap-htsat-unfused") == "clap-htsat-unfused"
    assert plots.model_name("/tmp/pytest-of-root/x/build/demo/tiny-clap/") == "tiny-clap"
    assert plots.model_name("tiny-clap") == "tiny-clap"


def test_save_marks_demo_figures_once(tmp_path, monkeypatch):
    fig, ax = plt.subplots()
    ax.set_title("ESC-50 zero-shot")
    plots.save(fig, tmp_path / "plain.png", close=False)
    assert ax.get_title() == "ESC-50 zero-shot"
    monkeypatch.setenv("CLAP_HELPERS_DEMO", "1")
    plots.save(fig, tmp_path / "a.png", close=False)
    plots.save(fig, tmp_path / "b.png")
    assert ax.get_title() == "demo · ESC-50 zero-shot"
    grid, axes = plt.subplots(1, 2)
    grid.suptitle("FMA-small")
    plots.save(grid, tmp_path / "c.png")
    assert grid.get_suptitle() == "demo · FMA-small"
    untitled, _ = plt.subplots(1, 2)
    plots.save(untitled, tmp_path / "d.png")
    assert untitled.get_suptitle().startswith("demo")


def _boxes(fig, texts):
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts]


def test_labels_of_coinciding_points_do_not_overlap():
    fig, ax = plt.subplots(figsize=(5, 4), layout="constrained")
    rng = np.random.default_rng(0)
    ax.scatter(*rng.normal(size=(2, 40)))
    xy = np.array([[0.0, 0.0], [0.01, 0.0], [0.0, 0.01], [0.5, 0.5], [0.5, 0.5]])
    names = ["siren", "rain", "car horn", "dog bark", "clock tick"]
    texts = plots.place_labels(ax, xy, names)
    fig.canvas.draw()
    assert [t.get_text() for t in texts] == names
    boxes = _boxes(fig, texts)
    for i in range(len(boxes)):
        for j in range(i):
            assert not boxes[i].overlaps(boxes[j]), (names[i], names[j])
    frame = ax.get_window_extent()
    assert all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for b in boxes)


def test_embedding_map_pca_axes_legend_and_readable_labels(toy):
    audio, labels, text, classes = toy
    texts = {"label": text, "sentence": text + 0.01}  # text points nearly on top of each other
    fig = plots.embedding_map(audio, labels, classes, texts, method="pca", seed=0)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("PC1 (") and ax.get_ylabel().endswith("% of variance)")
    legend_texts = [
        t.get_text() for legend in ax.findobj(matplotlib.legend.Legend) for t in legend.get_texts()
    ]
    assert "same class: label to sentence" in legend_texts
    fig.canvas.draw()
    boxes = _boxes(fig, ax.texts)
    assert not any(boxes[i].overlaps(boxes[j]) for i in range(len(boxes)) for j in range(i))
    tsne = plots.embedding_map(audio, labels, classes, texts, method="tsne", seed=0)
    assert tsne.axes[0].get_xlabel() == ""


def test_waveform_marks_the_repeat_padding():
    sr = 48000
    wave = np.sin(2 * np.pi * 440 * np.arange(5 * sr) / sr).astype(np.float32)
    fig = plots.waveform_and_logmel(wave, sr, np.zeros((1001, 64)))
    ax_w, ax_m = fig.axes[0], fig.axes[1]
    spans = [p for p in ax_m.patches if p.get_hatch() == "//"]
    assert len(spans) == 1 and any("repeated" in t.get_text() for t in ax_w.texts)
    assert spans[0].get_x() == pytest.approx(5.0)  # from the end of the clip to the window's end
    whole = plots.waveform_and_logmel(wave, sr, np.zeros((500, 64)))  # fills its window
    assert not [p for p in whole.axes[1].patches if p.get_hatch() == "//"]


def test_strategy_bars_draw_chance():
    table = pd.DataFrame({"top1": [0.3, 0.4], "top3": [0.7, 0.8]}, index=["a", "b"])
    fig = plots.strategy_bars(table, chance=zs.chance_levels((1, 3), 8))
    ax = fig.axes[0]
    levels = sorted(line.get_ydata()[0] for line in ax.get_lines())
    assert levels == pytest.approx([12.5, 37.5])
    assert "chance top1 (12.5)" in [t.get_text() for t in ax.get_legend().get_texts()]
