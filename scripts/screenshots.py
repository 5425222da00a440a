"""Screenshots of every dashboard page for the README (docs/*.png), taken in headless Chromium.

    python -m scripts.screenshots
"""
from __future__ import annotations

from scripts.browser import ROOT, browser_page, dashboard, wait_idle

PAGES = {"home": "", "editor": "Circuit_editor", "faithfulness": "Faithfulness", "completeness": "Completeness",
         "minimality": "Minimality"}


def main():
    out = ROOT / "docs"
    out.mkdir(exist_ok=True)
    with dashboard() as url, browser_page(1500, 1000) as page:
        for name, path in PAGES.items():
            page.goto(f"{url}/{path}")
            ready = '[data-testid="stMetric"]' if name == "home" else '[data-testid="stVegaLiteChart"]'
            wait_idle(page, ready)
            if name == "completeness":  # show the greedy sets too
                page.get_by_role("button", name="Run greedy search").click()
                page.wait_for_timeout(1000)
                wait_idle(page, ready)
            page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            print(f"docs/{name}.png")


if __name__ == "__main__":
    main()
