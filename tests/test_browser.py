"""In a real browser: start the dashboard, click a head in the editor's grid, see faithfulness change."""
import os

import pytest

from scripts.browser import browser_page, chromium_available, dashboard, metric_value, wait_idle

if not chromium_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Chromium for the browser test (.ci/run installs Debian's chromium).")
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)


def test_clicking_a_head_changes_faithfulness():
    with dashboard() as url, browser_page() as page:
        page.goto(f"{url}/Circuit_editor")
        wait_idle(page)
        assert "using the bundled demo model" in page.inner_text("body")  # offline: the fallback notice
        before = metric_value(page, "Faithfulness")
        chart = page.locator('[data-testid="stVegaLiteChart"]').first
        box = chart.bounding_box()
        # A cell in the lower-left part of the grid: a layer-0 head, outside the demo circuit.
        page.mouse.click(box["x"] + 70, box["y"] + box["height"] - 60)
        wait_idle(page)
        after = metric_value(page, "Faithfulness")
        assert after != before
        assert "Added:" in page.inner_text("body")
