"""A local web app for sound search: type a description, hear the closest clips, see them on a map.

::

    python -m clap_helpers.apps.web --data-root downloads --model laion/clap-htsat-unfused \\
        --datasets esc50,urbansound8k            # then open http://127.0.0.1:7860

At start it loads the datasets that are downloaded (a missing one is skipped with a message naming
``bash dataset.sh NAME``; none at all is an error, exit status 2), loads the model once and
embeds the collection once (cached on disk, so the next start is quick). The page has a text
query box, a query-by-example box (upload or record a sound, or give the path of a clip of the
collection), the top-k clips with audio players, and a 2-D map of the collection with the query
and its hits marked: PCA at first, replaced by a t-SNE map computed in a background thread as
soon as it is ready (see :class:`clap_helpers.apps.search.EmbeddingMap` for how queries are placed).

Safety: it listens on 127.0.0.1 unless ``--listen`` (all interfaces) or ``--host`` says
otherwise, never makes a public share link, and serves audio only from the folders of the indexed
datasets (Gradio's ``allowed_paths`` are exactly :attr:`SoundIndex.roots`); a path outside the
collection gets a message, never a file. Queries are limited to
:data:`clap_helpers.apps.search.MAX_QUERY_CHARS` characters, uploads to ``--max-upload-seconds``
(default :data:`MAX_UPLOAD_SECONDS`; read from the file's header before decoding) and 50 MB.
An upload is decoded outside the model lock, so a slow upload never stalls other users' queries.

The handlers live in :class:`SearchApp` (plain Python, no Gradio); :func:`build_ui` only wires
them to widgets. Used by: ``python -m clap_helpers.apps.web``, tests/unit/apps/test_app_browser.py.
"""

from __future__ import annotations

import argparse
import html
import ipaddress
import math
import os
import sys
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import plots
from . import search

__all__ = [
    "Answer",
    "build_ui",
    "CSS",
    "DEFAULT_DATASETS",
    "FILE_ROUTE",
    "launch",
    "main",
    "MAX_UPLOAD_SECONDS",
    "parse_args",
    "SearchApp",
]

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home, before gradio loads
os.environ.setdefault("MPLBACKEND", "Agg")

FILE_ROUTE = "gradio_api/file="
"""Gradio's file route, relative to the page; serves only files under ``allowed_paths``."""

DEFAULT_DATASETS = "esc50"

MAX_UPLOAD_SECONDS = 600.0
"""Longest upload accepted by default, in seconds (``--max-upload-seconds``)."""


@dataclass
class Answer:
    """What one query shows: a status line (Markdown), the results (HTML with ``<audio>``
    players), the map figure and the state the map timer needs to redraw it."""

    message: str
    results_html: str
    figure: Any
    state: dict


class SearchApp:
    """The app's behaviour without the UI: queries in, :class:`Answer` out; never raises.

    Args:
        index: the collection (with its encoder, for text and audio queries).
        k: default number of results.
        tsne: compute the t-SNE map in a background thread (else the PCA map stays).
        seed: seed of the maps.
        max_upload_seconds: longest uploaded/recorded sound accepted (read from its header).
    """

    def __init__(
        self,
        index: search.SoundIndex,
        k: int = 10,
        tsne: bool = True,
        seed: int = 0,
        max_upload_seconds: float = MAX_UPLOAD_SECONDS,
    ):
        self.index = index
        self.k = k
        self.max_upload_seconds = float(max_upload_seconds)
        self._model_lock = threading.Lock()  # one model call (and cache write) at a time
        self.pca = search.EmbeddingMap.fit(index.embeddings, "pca", seed)
        self.tsne: search.EmbeddingMap | None = None
        self.tsne_error: str | None = None
        self._tsne_thread = None
        if tsne:
            self._tsne_thread = threading.Thread(
                target=self._fit_tsne, args=(seed,), name="tsne-map", daemon=True
            )
            self._tsne_thread.start()

    def _fit_tsne(self, seed: int) -> None:
        try:
            self.tsne = search.EmbeddingMap.fit(self.index.embeddings, "tsne", seed)
        except Exception as exc:  # the PCA map stays; the status line says why
            self.tsne_error = f"{type(exc).__name__}: {exc}"

    @property
    def map(self) -> search.EmbeddingMap:
        """The t-SNE map once it is ready, the PCA map until then."""
        return self.tsne or self.pca

    def map_status(self) -> str:
        if self.tsne is not None:
            return "Map: **t-SNE** (a query sits at the weighted mean of its 10 nearest clips)."
        if self.tsne_error:
            return f"Map: **PCA** (t-SNE failed: {html.escape(self.tsne_error)})."
        if self._tsne_thread is None:
            return "Map: **PCA** (t-SNE turned off)."
        return "Map: **PCA**; the t-SNE map is being computed and replaces it when ready."

    @property
    def tsne_pending(self) -> bool:
        return self._tsne_thread is not None and self.tsne is None and self.tsne_error is None

    # -- queries ------------------------------------------------------------------------------
    def text_query(self, text: str, k: int | None = None) -> Answer:
        """Clips closest to a description."""

        def prepare():
            query = search.validate_query(text)
            return (lambda: self.index.embed_texts(query)[0]), f'"{query}"', None

        return self._run(prepare, k)

    def example_query(
        self, upload: str | None = None, clip_path: str | None = None, k: int | None = None
    ) -> Answer:
        """Clips closest to an example: ``clip_path`` (must be a clip of the collection; that
        clip is left out of the results) if given, else the uploaded/recorded file (at most
        ``max_upload_seconds`` long; decoded before the model lock is taken)."""
        if clip_path and str(clip_path).strip():

            def prepare():
                path = self.index.resolve_path(clip_path)
                row = self.index.row_of(path)
                return (lambda: self.index.embed_files(path)[0]), path.name, row

        elif upload:

            def prepare():
                row = self.index.row_of(upload)
                if row is not None and self.index.valid[row]:
                    emb = self.index.embeddings[row]
                    return (lambda: emb), "your sound", None
                wave = self.index.decode_query(upload, self.max_upload_seconds)
                return (lambda: self.index.embed_waveform(wave)), "your sound", None

        else:
            return self._error("Upload or record a sound, or give the path of a clip.")
        return self._run(prepare, k)

    def _run(self, prepare, k: int | None) -> Answer:
        """``prepare()`` checks and decodes the query without the model lock and returns
        ``(embed, label, exclude)``; only ``embed()`` (the model call) runs under the lock."""
        k = int(k or self.k)
        try:
            embed, label, exclude = prepare()
            with self._model_lock:
                q = embed()
            hits = self.index.search(q, k, exclude=[exclude])
        except search.QueryError as exc:
            return self._error(str(exc))
        except Exception as exc:  # no crash: show it, log it
            traceback.print_exc()
            return self._error(f"Search failed: {type(exc).__name__}: {exc}")
        state = {"query": q.tolist(), "label": label, "hits": hits["row"].tolist()}
        message = f"Top {len(hits)} of {len(self.index) - self.index.n_failed} clips for {label}."
        return Answer(html.escape(message), self.results_html(hits), self.figure(state), state)

    def _error(self, message: str) -> Answer:
        state: dict = {"query": None, "label": "", "hits": []}
        return Answer(f"⚠️ {html.escape(message)}", "", self.figure(state), state)

    # -- output -------------------------------------------------------------------------------
    def figure(self, state: dict):
        """The current map with the query of ``state`` (if any) and its hits; records the map
        method in ``state["method"]``."""
        emap = self.map
        state["method"] = emap.method
        query_xy = None if state.get("query") is None else emap.place(state["query"])
        return plots.query_map(
            emap, self.index.clips, query_xy, state.get("hits", ()), state.get("label") or "query"
        )

    def refresh_map(self, state: dict | None):
        """For the page's timer: a new figure if the t-SNE map became ready since ``state`` was
        drawn, else None."""
        state = dict(state or {"query": None, "hits": []})
        if state.get("method") == self.map.method:
            return None
        return self.figure(state), state

    def results_html(self, hits) -> str:
        """An ordered list of hits, each with an ``<audio>`` player served from the dataset
        folders (through Gradio's file route, which allows only :attr:`SoundIndex.roots`)."""
        items = []
        for hit in hits.itertuples():
            path = str(Path(hit.path).resolve())
            src = FILE_ROUTE + quote(path, safe="/")
            items.append(
                '<li class="hit">'
                f'<span class="score">{hit.score:.3f}</span> '
                f'<b class="label">{html.escape(str(hit.label))}</b> '
                f'<span class="dataset">{html.escape(str(hit.dataset))}</span> '
                f'<code title="{html.escape(path)}">{html.escape(Path(path).name)}</code><br>'
                f'<audio controls preload="metadata" src="{html.escape(src)}"></audio>'
                "</li>"
            )
        return '<ol class="hits">' + "".join(items) + "</ol>"


# ------------------------------------------------------------------------------------------ UI
CSS = """
#results ol.hits { padding-left: 1.6em; }
#results li.hit { margin-bottom: 0.6em; }
#results .score { font-family: monospace; color: #555; }
#results .dataset { color: #777; font-size: 0.85em; }
#results audio { height: 32px; width: 100%; max-width: 420px; }
"""


def build_ui(app: SearchApp):
    """The Gradio page over ``app``: returns the ``gr.Blocks`` (launch it with :func:`launch`)."""
    import gradio as gr

    index = app.index
    datasets = ", ".join(_unique(index.clips["dataset"]))
    with gr.Blocks(title="CLAP sound search") as demo:
        model = plots.model_name(index.encoder.model_id) if index.encoder is not None else "?"
        gr.Markdown(
            f"# CLAP sound search\n{len(index)} clips of {datasets}, model `{model}`. "
            "Describe a sound, or give an example, to find the closest clips."
        )
        if index.missing:
            gr.Markdown("\n".join(f"- ⚠️ {html.escape(m)}" for m in index.missing.values()))
        with gr.Row():
            with gr.Column(scale=1):
                query = gr.Textbox(
                    label="Describe a sound",
                    placeholder="e.g. a dog barking in the rain",
                    elem_id="query",
                )
                k = gr.Slider(1, 50, value=app.k, step=1, label="Results", elem_id="top_k")
                go = gr.Button("Search", variant="primary", elem_id="search")
                with gr.Accordion("Search by example", open=False):
                    upload = gr.Audio(
                        sources=["upload", "microphone"],
                        type="filepath",
                        label=f"A sound (at most {app.max_upload_seconds:g} s)",
                        elem_id="upload",
                    )
                    clip = gr.Textbox(
                        label="...or the path of a clip of the collection", elem_id="clip_path"
                    )
                    similar = gr.Button("Find similar", elem_id="similar")
                status = gr.Markdown(elem_id="status")
                results = gr.HTML(elem_id="results")
            with gr.Column(scale=1):
                plot = gr.Plot(value=app.figure({"query": None}), label="Map", elem_id="map")
                map_status = gr.Markdown(app.map_status(), elem_id="map_status")
        state = gr.State({"query": None, "hits": [], "method": app.pca.method})
        outputs = [status, results, plot, state, map_status]

        def show(answer: Answer):
            return (
                answer.message,
                answer.results_html,
                answer.figure,
                answer.state,
                app.map_status(),
            )

        def on_text(text, n):
            return show(app.text_query(text, n))

        def on_example(audio, path, n):
            return show(app.example_query(audio, path, n))

        def on_tick(st):
            new = app.refresh_map(st)
            timer_update = gr.Timer(active=app.tsne_pending)
            if new is None:
                return gr.skip(), gr.skip(), app.map_status(), timer_update
            fig, st = new
            return fig, st, app.map_status(), timer_update

        go.click(on_text, [query, k], outputs)
        query.submit(on_text, [query, k], outputs)
        similar.click(on_example, [upload, clip, k], outputs)
        timer = gr.Timer(1.5, active=app.tsne_pending)
        timer.tick(on_tick, [state], [plot, state, map_status, timer])
    return demo


def _unique(values) -> list[str]:
    return [str(v) for v in dict.fromkeys(values)]


def launch(demo, app: SearchApp, host: str = "127.0.0.1", port: int = 7860, **kwargs):
    """Serve ``demo``: no share link, files only from the dataset folders; blocks."""
    import gradio as gr

    return demo.queue(default_concurrency_limit=2).launch(
        server_name=host,
        server_port=port,
        share=False,
        allowed_paths=[str(r) for r in app.index.roots],
        max_file_size="50mb",
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        enable_monitoring=False,
        inbrowser=False,
        theme=gr.themes.Default(),
        css=CSS,
        **kwargs,
    )


# ----------------------------------------------------------------------------------------- CLI
class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default; options without one say theirs in words."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m clap_helpers.apps.web",
        description="Local web app: search sound datasets with text or example audio (CLAP).",
        formatter_class=_DefaultsHelp,
    )
    p.add_argument("--data-root", default="downloads", help="the --dest of dataset.sh")
    p.add_argument("--model", default="laion/clap-htsat-unfused", help="hub id or local folder")
    p.add_argument(
        "--datasets",
        default=DEFAULT_DATASETS,
        help="comma-separated, from esc50,urbansound8k,fma_small,audioset",
    )
    p.add_argument("--n-samples", type=int, default=None, help="clips per dataset (default: all)")
    p.add_argument("--seed", type=int, default=0, help="chooses the --n-samples subset")
    p.add_argument("--top-k", type=int, default=10, help="results shown at first")
    p.add_argument("--batch-size", type=int, default=32, help="clips per embedding batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="audio tower"
    )
    p.add_argument(
        "--max-upload-seconds",
        type=float,
        default=MAX_UPLOAD_SECONDS,
        help="longest uploaded or recorded sound accepted, in seconds",
    )
    p.add_argument(
        "--cache-dir", default=None, help="embedding cache (default: ~/.cache/clap_helpers)"
    )
    p.add_argument("--no-tsne", action="store_true", help="keep the PCA map, skip t-SNE")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--host", default="127.0.0.1", help="address to listen on")
    where.add_argument(
        "--listen",
        action="store_true",
        help="listen on all interfaces (0.0.0.0): anyone who can reach this machine can use it",
    )
    args = p.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    from ..data.loaders import NAMES

    unknown = [d for d in args.datasets if d not in NAMES]
    if unknown or not args.datasets:
        p.error(f"unknown dataset(s) {unknown}; choose from {','.join(NAMES)}")
    if args.top_k < 1:
        p.error("--top-k must be at least 1")
    if args.batch_size < 1:
        p.error(f"--batch-size must be at least 1 (e.g. 32), got {args.batch_size}")
    if args.n_samples is not None and args.n_samples < 1:
        p.error(f"--n-samples must be at least 1 (or left out for all clips), got {args.n_samples}")
    if not (math.isfinite(args.max_upload_seconds) and args.max_upload_seconds > 0):
        p.error(
            "--max-upload-seconds must be a positive number of seconds "
            f"(default {MAX_UPLOAD_SECONDS:g}), got {args.max_upload_seconds:g}"
        )
    problem = _device_problem(args.device)
    if problem:
        p.error(f"--device {args.device}: {problem}")
    return args


def _device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used here (None if it can): unknown, or no such accelerator."""
    if device in ("auto", "cpu"):
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return "unknown device; use auto, cpu, cuda, cuda:N or mps"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available on this machine; use --device cpu (or auto)"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA device(s); use cuda:0"
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return "Apple MPS is not available on this machine; use --device cpu (or auto)"
    elif dev.type != "cpu":
        return "unsupported device; use auto, cpu, cuda, cuda:N or mps"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    clips, missing = search.load_collection(
        args.datasets, args.data_root, args.n_samples, args.seed, skip_missing=True
    )
    for name, message in missing.items():
        print(f"warning: skipping {name}: {message}", file=sys.stderr)
    if clips.empty:
        print(
            "error: none of the datasets is downloaded, nothing to search. Download one with "
            + " or ".join(f"`bash dataset.sh {n}`" for n in args.datasets)
            + f" (into {args.data_root}, or pass --data-root).",
            file=sys.stderr,
        )
        return 2
    from ..embedding.loading import load_clap

    print(f"loading {args.model} ...", file=sys.stderr)
    enc = load_clap(args.model, args.device, args.precision, cache_dir=args.cache_dir)
    print(f"embedding {len(clips)} clips (cached after the first run) ...", file=sys.stderr)
    emb = enc.embed_audio(clips["path"], batch_size=args.batch_size)
    roots = search.collection_roots(clips["dataset"].unique(), args.data_root)
    index = search.SoundIndex(clips, emb, enc, missing, roots)
    if index.n_failed:
        print(f"warning: {index.n_failed} clips could not be embedded; left out", file=sys.stderr)
    app = SearchApp(
        index,
        k=args.top_k,
        tsne=not args.no_tsne,
        seed=args.seed,
        max_upload_seconds=args.max_upload_seconds,
    )
    host = "0.0.0.0" if args.listen else args.host
    if not _is_loopback(host):
        print(
            f"warning: listening on {host}: other machines on the network can use this app",
            file=sys.stderr,
        )
    demo = build_ui(app)
    try:
        launch(demo, app, host=host, port=args.port)
    except OSError as exc:
        print(f"error: cannot listen on {host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
