"""Start the dashboard on localhost and drive it with headless Chromium (Playwright).

Used by the browser test and by `python -m scripts.screenshots`. Chromium comes from the system
(Debian's `chromium`); Playwright's own browser download is never used.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def chromium_available() -> bool:
    return Path(CHROMIUM).exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dashboard(timeout: float = 120, env: dict | None = None):
    """Run `streamlit run dashboard.py` on a free localhost port; yields its URL."""
    port = _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.headless=true",
           f"--server.port={port}", "--server.address=127.0.0.1", "--browser.gatherUsageStats=false",
           "--server.fileWatcherType=none"]
    # Offline on purpose: the default model (gpt2) then falls back to the bundled demo at once.
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise RuntimeError(f"dashboard did not start:\n{out[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def browser_page(width: int = 1600, height: int = 1100):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def wait_idle(page, ready: str = '[data-testid="stMetric"]', timeout: float = 180_000) -> None:
    """Wait until the page shows `ready` and Streamlit has stopped running the script."""
    page.wait_for_selector(ready, timeout=timeout)
    for _ in range(2):  # the status widget can flicker between reruns
        page.wait_for_timeout(700)
        page.wait_for_function(
            "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')?.innerText.includes('Stop')",
            timeout=timeout)


def metric_value(page, label_start: str) -> str:
    m = page.locator('[data-testid="stMetric"]', has_text=label_start).first
    return m.locator('[data-testid="stMetricValue"]').inner_text()


def choose_local_folder(page, folder: str) -> None:
    """In the sidebar: the model box's "local folder…", then the folder typed and entered."""
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="local folder…").click()
    box = sidebar.get_by_label("Folder")
    box.fill(folder)
    box.press("Enter")


def edit_summary(page) -> str:
    """The editor's lines of heads added, removed and moved against the loaded circuit, with the heads
    ("" if none)."""
    import re

    lines = page.locator('[data-testid="stMarkdownContainer"] p').filter(has_text=re.compile(r"^(Added|Removed|Moved):"))
    return " | ".join(lines.nth(i).inner_text() for i in range(lines.count()))


def click_a_head(page, label: str = "Faithfulness", settle=None) -> tuple[str, str, float]:
    """Click down the left column of the editor's grid (head 0 of each layer) until a click lands on a
    cell, which the editor's list of changes shows: the axis and title take some pixels whose exact size
    depends on fonts. Returns the metric `label` before and after, and the seconds from the landing
    click until `settle` (default `wait_idle`) returned."""
    import time

    settle = settle or wait_idle
    before = after = metric_value(page, label)
    changes = edit_summary(page)
    box = page.locator('[data-testid="stVegaLiteChart"]').first.bounding_box()
    seconds = 0.0
    for frac in (0.45, 0.55, 0.35, 0.65, 0.25):
        t = time.perf_counter()
        page.mouse.click(box["x"] + 0.12 * box["width"], box["y"] + frac * box["height"])
        settle(page)
        seconds = time.perf_counter() - t
        after = metric_value(page, label)
        if edit_summary(page) != changes:
            break
    return before, after, seconds
