"""The sound-search web app (clap_helpers.apps.web): its handlers, its command line, and end to end in
real headless Chromium (Debian's ``chromium`` + Playwright for Python) against a server started
as a subprocess on the fixtures with the tiny CLAP.

The browser test skips only where playwright cannot be imported or no Chromium binary is found
(``CLAP_CHROMIUM``, /usr/bin/chromium, or ``chromium`` on PATH). ``CLAP_SAVE_SCREENSHOT=1`` also
writes the screenshot to figs/app_screenshot.png (for usage.md).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from clap_helpers.apps import search
from clap_helpers.paths import project_root

ROOT = project_root(Path(__file__).parent)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TOP_K = 5
N_SAMPLES = 8  # clips per dataset: keeps the first embedding short


def chromium_path() -> str | None:
    for candidate in [os.environ.get("CLAP_CHROMIUM"), "/usr/bin/chromium", "chromium"]:
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


def server_env(tmp: Path) -> dict:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(tmp / "gradio"),
        MPLBACKEND="Agg",
        PYTHONUNBUFFERED="1",
    )
    return env


# ---------------------------------------------------------------------- handlers (no browser)
@pytest.fixture(scope="module")
def search_app(data_root, tiny_clap, tmp_path_factory):
    from clap_helpers.apps.web import SearchApp
    from clap_helpers.embedding.loading import load_clap

    enc = load_clap(tiny_clap, "cpu", "fp32", cache_dir=tmp_path_factory.mktemp("cache"))
    enc.num_workers = 0
    index = search.SoundIndex.build(
        enc, ["esc50"], data_root, n_samples=N_SAMPLES, batch_size=8, progress=False
    )
    app = SearchApp(index, k=3, tsne=True)
    app._tsne_thread.join(timeout=120)
    return app


def test_app_handlers_answer_bad_input_with_messages(search_app, tmp_path):
    for query, expected in [("   ", "empty"), ("x" * 501, "limit is 500")]:
        answer = search_app.text_query(query, 3)
        assert expected in answer.message and answer.results_html == ""
        assert answer.figure is not None
    outside = tmp_path / "secret.wav"
    shutil.copy(search_app.index.clips["path"][0], outside)
    answer = search_app.example_query(None, str(outside), 3)
    assert "not a clip of the indexed collection" in answer.message
    assert answer.results_html == "" and "secret" not in answer.results_html
    assert "Upload or record" in search_app.example_query(None, " ", 3).message


def test_app_handlers_search(search_app):
    answer = search_app.text_query("a dog barking", 3)
    assert answer.results_html.count("<audio") == 3 and answer.state["method"] == "tsne"
    assert len(answer.state["hits"]) == 3 and search_app.refresh_map(answer.state) is None
    assert search_app.refresh_map({**answer.state, "method": "pca"}) is not None
    clip = search_app.index.clips["path"][2]
    similar = search_app.example_query(None, clip, 3)
    assert similar.results_html.count("<audio") == 3 and 2 not in similar.state["hits"]
    uploaded = search_app.example_query(clip, None, 3)  # an uploaded copy keeps itself
    assert uploaded.state["hits"][0] == 2
    for root in search_app.index.roots:
        assert root.is_dir()
    for hit in similar.state["hits"]:
        path = Path(search_app.index.clips["path"][hit]).resolve()
        assert any(path.is_relative_to(r) for r in search_app.index.roots)


def test_upload_is_decoded_outside_the_model_lock(search_app, tmp_path, monkeypatch):
    """A slow upload used to hold the model lock while it was decoded: every other user waited."""
    import threading

    import clap_helpers.data.audio
    import clap_helpers.embedding.encoder

    real = clap_helpers.data.audio.load_audio
    decoding, release = threading.Event(), threading.Event()

    def slow_load_audio(*args, **kwargs):
        decoding.set()
        release.wait(120)
        return real(*args, **kwargs)

    monkeypatch.setattr(clap_helpers.data.audio, "load_audio", slow_load_audio)
    monkeypatch.setattr(clap_helpers.embedding.decoding, "load_audio", slow_load_audio)
    upload = tmp_path / "my_sound.wav"  # a new path: not in the embedding cache
    shutil.copy(search_app.index.clips["path"][1], upload)
    answers = {}
    uploader = threading.Thread(
        target=lambda: answers.update(upload=search_app.example_query(str(upload), None, 3))
    )
    texter = threading.Thread(
        target=lambda: answers.update(text=search_app.text_query("a cat meowing", 3))
    )
    try:
        uploader.start()
        assert decoding.wait(60), "the upload was never decoded"
        texter.start()
        texter.join(60)
        text_done_while_decoding = not texter.is_alive()
    finally:
        release.set()
        uploader.join(120)
        texter.join(120)
    assert text_done_while_decoding, "a text query waited for an upload being decoded"
    assert answers["text"].results_html.count("<audio") == 3
    assert answers["upload"].state["hits"][0] == 1, answers["upload"].message


def test_upload_duration_is_capped_from_the_header(search_app, tmp_path, monkeypatch):
    import soundfile as sf

    import clap_helpers.data.audio
    from clap_helpers.apps.web import MAX_UPLOAD_SECONDS, SearchApp

    assert search_app.max_upload_seconds == MAX_UPLOAD_SECONDS == 600
    capped = SearchApp(search_app.index, k=3, tsne=False, max_upload_seconds=2)
    clip = search_app.index.clips["path"][0]  # a 5 s fixture clip
    long_upload = tmp_path / "long.wav"
    shutil.copy(clip, long_upload)

    def never(*args, **kwargs):
        raise AssertionError("a too-long upload was decoded")

    monkeypatch.setattr(clap_helpers.data.audio, "load_audio", never)
    answer = capped.example_query(str(long_upload), None, 3)
    assert "long.wav is 5.0 s long; the limit is 2 s" in answer.message
    assert "shorter sound" in answer.message and answer.results_html == ""
    monkeypatch.undo()
    x, sr = sf.read(clip, dtype="float32")
    short = tmp_path / "short.wav"
    sf.write(short, x[:sr], sr)  # 1 s
    assert capped.example_query(str(short), None, 3).results_html.count("<audio") == 3
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    message = capped.example_query(str(junk), None, 3).message
    assert "could not read junk.wav as audio" in message


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["--device", "cuda"],
            "--device cuda: CUDA is not available on this machine; use --device cpu",
        ),
        (["--device", "gpu"], "--device gpu: unknown device; use auto, cpu, cuda, cuda:N or mps"),
        (["--batch-size", "0"], "--batch-size must be at least 1 (e.g. 32), got 0"),
        (["--n-samples", "-3"], "--n-samples must be at least 1"),
        (
            ["--max-upload-seconds", "0"],
            "--max-upload-seconds must be a positive number of seconds",
        ),
        (["--max-upload-seconds", "nan"], "--max-upload-seconds must be a positive number"),
        (["--max-upload-seconds", "ten"], "argument --max-upload-seconds: invalid float value"),
        (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
    ],
)
def test_cli_rejects_bad_arguments_with_one_line(argv, expected, monkeypatch, capsys):
    import torch

    from clap_helpers.apps.web import main, parse_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("python -m clap_helpers.apps.web: error: ")
    assert parse_args(["--device", "cpu", "--max-upload-seconds", "30"]).max_upload_seconds == 30


def test_cli_exits_clearly_without_datasets(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "clap_helpers.apps.web", "--data-root", str(tmp_path)]
        + ["--datasets", "esc50,urbansound8k", "--model", str(tmp_path / "no-model")],
        capture_output=True,
        text=True,
        timeout=120,
        env=server_env(tmp_path),
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert "bash dataset.sh esc50" in proc.stderr and "bash dataset.sh urbansound8k" in proc.stderr
    assert "nothing to search" in proc.stderr


# -------------------------------------------------------------------------------- the browser
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    pytest.fail(f"the app did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(data_root, tiny_clap, tmp_path_factory):
    """The app on a free loopback port, over ESC-50 and UrbanSound8K (AudioSet is asked for but
    missing from this data root); stopped at teardown whatever happened."""
    tmp = tmp_path_factory.mktemp("app")
    root = tmp / "data"
    root.mkdir()
    for folder in ["ESC-50-master", "UrbanSound8K"]:
        (root / folder).symlink_to(data_root / folder)
    port = free_port()
    log = tmp / "server.log"
    cmd = [sys.executable, "-m", "clap_helpers.apps.web", "--data-root", str(root)]
    cmd += ["--model", str(tiny_clap), "--datasets", "esc50,urbansound8k,audioset"]
    cmd += ["--n-samples", str(N_SAMPLES), "--top-k", str(TOP_K), "--cache-dir", str(tmp / "cache")]
    cmd += ["--device", "cpu", "--precision", "fp32", "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=server_env(tmp), cwd=ROOT
        )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(url, proc, log)
        yield {"url": url, "data_root": data_root, "tmp": tmp, "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium binary (apt-get install -y chromium, or set CLAP_CHROMIUM)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def test_search_in_browser(browser, server, tmp_path):
    url = server["url"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(url, wait_until="domcontentloaded")
    status = page.locator("#status")
    box = page.get_by_label("Describe a sound")

    # the missing dataset is named on the page, with its download command
    page.get_by_text("bash dataset.sh audioset", exact=False).first.wait_for()

    # bad queries: a message, no results
    page.click("#search")
    page.wait_for_function("document.querySelector('#status').innerText.includes('empty')")
    box.fill("a dog " * 100)
    page.click("#search")
    page.wait_for_function("document.querySelector('#status').innerText.includes('limit is 500')")
    assert page.locator("#results audio").count() == 0

    # a path outside the collection: refused by the app ...
    outside = tmp_path / "secret.wav"
    shutil.copy(next((server["data_root"] / "ESC-50-master" / "audio").glob("*.wav")), outside)
    page.get_by_text("Search by example").click()
    page.locator("#clip_path textarea, #clip_path input").first.fill(str(outside))
    page.click("#similar")
    page.wait_for_function(
        "document.querySelector('#status').innerText.includes('not a clip of the indexed')"
    )
    assert page.locator("#results audio").count() == 0

    # an uploaded copy of a clip finds that clip first
    from clap_helpers.data.loaders import load

    clip = load("esc50", server["data_root"], n_samples=N_SAMPLES)[0]["path"].iloc[0]
    upload = tmp_path / "my_sound.wav"
    shutil.copy(clip, upload)
    page.locator("#clip_path textarea, #clip_path input").first.fill("")
    page.locator("#upload input[type=file]").set_input_files(str(upload))
    page.locator("#upload audio, #upload .waveform-container, #upload button").first.wait_for()
    page.click("#similar")
    page.wait_for_function("document.querySelector('#status').innerText.includes('your sound')")
    assert page.locator("#results audio").count() == TOP_K
    assert page.locator("#results code").first.inner_text() == Path(clip).name

    # ... and by the file route: only the indexed datasets' folders are served
    for path in [
        outside,
        ROOT / "pyproject.toml",  # the server's working folder
        server["data_root"] / "audioset" / "manifest.csv",  # a dataset that is not indexed
        server["log"],
    ]:
        response = page.request.get(url + "gradio_api/file=" + str(path))
        assert response.status in (403, 404), f"{path} was served ({response.status})"

    # a text query: results with audio players that play files of the collection
    box.fill("a dog barking")
    page.click("#search")
    page.wait_for_function(
        f"document.querySelectorAll('#results audio').length === {TOP_K}", timeout=120_000
    )
    assert "Top 5 of 16 clips" in status.inner_text()
    labels = page.locator("#results .label").all_inner_texts()
    assert len(labels) == TOP_K and all(labels)
    src = page.locator("#results audio").first.get_attribute("src")
    served = page.request.get(url + src)
    assert served.status == 200 and served.headers["content-type"].startswith("audio/")

    # the t-SNE map replaces the PCA one once it is computed
    page.wait_for_function(
        "document.querySelector('#map_status').innerText.includes('t-SNE')", timeout=120_000
    )
    page.locator("#map img, #map canvas, #map svg").first.wait_for()

    shot = tmp_path / "app_screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("CLAP_SAVE_SCREENSHOT") == "1":
        (ROOT / "figs").mkdir(exist_ok=True)
        shutil.copy(shot, ROOT / "figs" / "app_screenshot.png")
    page.close()
