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
        # Click down the left column of the grid (head 0 of each layer) until a click lands on a cell:
        # the axis and title take some pixels whose exact size depends on fonts.
        after = before
        for frac in (0.45, 0.55, 0.35, 0.65, 0.25):
            page.mouse.click(box["x"] + 0.12 * box["width"], box["y"] + frac * box["height"])
            wait_idle(page)
            after = metric_value(page, "Faithfulness")
            if after != before:
                break
        assert after != before
        body = page.inner_text("body")
        assert "Added:" in body or "Removed:" in body or "Moved:" in body


def test_switching_pages_while_a_job_runs_keeps_the_sidebar_choices():
    caption = '[data-testid="stMain"] [data-testid="stCaptionContainer"]'
    with dashboard() as url, browser_page() as page:
        page.goto(f"{url}/Faithfulness")
        wait_idle(page)
        inputs = page.locator('[data-testid="stSidebar"] [data-testid="stNumberInput"] input')
        for i, value in ((1, "3"), (0, "2000")):  # seed 3; N = 2000 so that the job below takes a while
            inputs.nth(i).fill(value)
            inputs.nth(i).press("Enter")
            wait_idle(page)
        assert "N=2000, seed 3" in page.locator(caption).first.inner_text()
        n = page.get_by_label("Random circuits", exact=True).and_(page.locator("input"))
        n.fill("500")  # a baseline job long enough to be polled by its progress fragment
        n.press("Enter")
        page.wait_for_selector("text=Evaluating random circuits", timeout=60_000)
        page.get_by_role("link", name="Minimality").first.click()
        page.wait_for_timeout(1500)
        wait_idle(page, '[data-testid="stVegaLiteChart"]')
        assert "N=2000, seed 3" in page.locator(caption).first.inner_text()
