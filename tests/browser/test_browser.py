"""In a real browser: start the dashboard, click a head in the editor's grid, see faithfulness change."""
import os

import pytest

from scripts.browser import (browser_page, choose_local_folder, chromium_available, click_a_head, dashboard,
                             edit_summary, metric_value, wait_idle)

if not chromium_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Chromium for the browser test (.ci/run installs Debian's chromium).")
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)


def test_clicking_a_head_changes_faithfulness():
    with dashboard() as url, browser_page() as page:
        page.goto(f"{url}/Circuit_editor")
        wait_idle(page)
        assert "using the bundled demo model" in page.inner_text("body")  # offline: the fallback notice
        before, after, _ = click_a_head(page)
        assert after != before
        body = page.inner_text("body")
        assert "Added:" in body or "Removed:" in body or "Moved:" in body



def test_a_copied_link_opens_the_same_numbers_in_a_fresh_browser():
    from playwright.sync_api import sync_playwright

    from scripts.browser import CHROMIUM, CHROMIUM_ARGS

    with dashboard() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        first = browser.new_context(viewport={"width": 1600, "height": 1100}).new_page()
        first.goto(f"{url}/Faithfulness?model=demo&n=60&seed=3&ref=10&reps=0&ablation=resample")
        wait_idle(first)
        first.get_by_text("Share this view").click()
        link = first.locator('[data-testid="stSidebar"] [data-testid="stCode"]').inner_text().strip()
        assert "/Faithfulness?" in link and "ablation=resample" in link and "seed=3" in link
        shown = {label: metric_value(first, label) for label in ("F(M)", "F(C)", "Faithfulness", "Normalised")}

        fresh = browser.new_context(viewport={"width": 1600, "height": 1100}).new_page()  # no shared state
        fresh.goto(link)
        wait_idle(fresh)
        assert {label: metric_value(fresh, label) for label in shown} == shown
        browser.close()


def test_a_reload_of_an_edited_local_folder_session_restores_model_and_edits(tmp_path):
    """A new user's path: choose "local folder…", type the folder, click a head, reload the page. The
    address keeps the folder on a person's own dashboard, so the model and the edit come back."""
    import shutil

    from circuit_core.models import DEMO_MODEL_DIR

    folder = tmp_path / "my-model"
    shutil.copytree(DEMO_MODEL_DIR, folder)
    with dashboard() as url, browser_page() as page:
        page.goto(f"{url}/Circuit_editor")
        wait_idle(page)
        choose_local_folder(page, str(folder))
        wait_idle(page)
        assert "folder=" in page.url  # a person's own dashboard keeps the folder in the address
        before, after, _ = click_a_head(page)
        assert after != before
        changes = edit_summary(page)
        assert changes  # the click landed on a cell

        page.reload()
        wait_idle(page)
        sidebar = page.locator('[data-testid="stSidebar"]')
        assert sidebar.get_by_label("Folder").input_value() == str(folder)  # the model came back
        assert metric_value(page, "Faithfulness") == after  # and the edit with it
        assert edit_summary(page) == changes
        body = page.inner_text("body")
        assert "could not be brought back" not in body and "does not fit" not in body
