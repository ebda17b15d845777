"""The usage.md screenshot of the sound-search app, taken on the demo fixtures.

``python -m clap_helpers.devtools.screenshot [--root build/demo] [--out figs/app_screenshot.png]``
builds (or reuses) the fixtures of ``make demo`` under ``--root``, starts the app
(:mod:`clap_helpers.apps.web`) over ESC-50 and UrbanSound8K with the tiny CLAP on a free loopback
port, searches "a dog barking" in headless Chromium (Debian's ``chromium`` driven by Playwright,
as in the browser test; ``make chromium`` installs it) once the t-SNE map is drawn, and saves a
full-page screenshot. Every dataset asked for is on disk, so the page has no "not found" note;
the model appears by its short name and results by file name, so no machine path shows.

Used by: whoever refreshes figs/app_screenshot.png (usage.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from ..paths import project_root
from .runner import FixtureEnv

__all__ = ["QUERY", "main", "take_screenshot"]

QUERY = "a dog barking"
_CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"the app did not answer within {timeout:.0f} s")


def take_screenshot(env: FixtureEnv, out: Path, chromium: str = "chromium") -> Path:
    """Start the app on ``env``'s fixtures, search :data:`QUERY`, write the page to ``out``."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which(chromium)
    if executable is None:
        raise FileNotFoundError(f"no {chromium} binary: run `make chromium`")
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "clap_helpers.apps.web", "--data-root", str(env.data_root)]
        cmd += ["--model", str(env.model), "--datasets", "esc50,urbansound8k", "--top-k", "5"]
        cmd += ["--cache-dir", str(env.cache_dir), "--device", "cpu", "--precision", "fp32"]
        cmd += ["--port", str(port)]
        server_env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
        server_env.update(GRADIO_TEMP_DIR=tmp, MPLBACKEND="Agg")
        log = open(Path(tmp) / "server.log", "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=server_env)
        try:
            url = f"http://127.0.0.1:{port}/"
            _wait_until_up(url, proc)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=executable, args=_CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(120_000)
                page.goto(url, wait_until="domcontentloaded")
                page.get_by_label("Describe a sound").fill(QUERY)
                page.click("#search")
                page.wait_for_function("document.querySelectorAll('#results audio').length > 0")
                page.wait_for_function(
                    "document.querySelector('#map_status').innerText.includes('t-SNE')"
                )
                page.locator("#map img, #map canvas, #map svg").first.wait_for()
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out), full_page=True)
                browser.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    return out


def main(argv: list[str] | None = None) -> int:
    root = project_root(Path(__file__).parent)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=root / "build" / "demo")
    parser.add_argument("--out", type=Path, default=root / "figs" / "app_screenshot.png")
    args = parser.parse_args(argv)
    env = FixtureEnv(args.root.resolve()).build()
    print(take_screenshot(env, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
