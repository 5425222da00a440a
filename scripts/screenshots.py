"""Screenshots of every dashboard page for the README (docs/*.png), taken in headless Chromium.

    python -m scripts.screenshots            # every page, presentation mode, the editor's edges
    python -m scripts.screenshots edges      # only the editor's edges (docs/editor-edges.png)
"""
from __future__ import annotations

from scripts.browser import ROOT, browser_page, dashboard, wait_idle

PAGES = {"home": "", "editor": "Circuit_editor", "faithfulness": "Faithfulness", "completeness": "Completeness",
         "minimality": "Minimality", "compare": "Compare", "report": "Report"}
PRESENT = ["circuit", "faithfulness", "completeness", "minimality", "baseline"]  # presentation mode's steps


def edges(out):
    """The editor's edges on the demo's edge preset: the diagram weighted by path patching, the kept edges, and
    what removing each does to F(C) with its interval (clipped from the heading to that table's caption)."""
    from urllib.parse import urlencode

    with dashboard() as url, browser_page(1500, 4200) as page:
        page.goto(f"{url}/Circuit_editor?{urlencode({'model': 'demo', 'from': 'preset: ioi-demo-edges'})}")
        wait_idle(page, '[data-testid="stVegaLiteChart"]')
        caption = page.get_by_text("Removing one kept edge at a time")
        caption.wait_for(timeout=300_000)
        wait_idle(page, '[data-testid="stVegaLiteChart"]')
        top = page.get_by_role("heading", name="Edges", exact=True).bounding_box()
        bottom = caption.bounding_box()
        page.screenshot(path=str(out / "editor-edges.png"),
                        clip={"x": top["x"] - 20, "y": top["y"] - 10, "width": 1500 - top["x"],
                              "height": bottom["y"] + bottom["height"] - top["y"] + 30})
        print("docs/editor-edges.png")


def main(argv=None):
    import sys

    out = ROOT / "docs"
    out.mkdir(exist_ok=True)
    if (argv or sys.argv[1:]) == ["edges"]:
        return edges(out)
    with dashboard() as url, browser_page(1500, 1000) as page:
        for name, path in PAGES.items():
            page.goto(f"{url}/{path}")
            ready = {"home": '[data-testid="stMetric"]', "report": '[data-testid="stTable"]'}.get(
                name, '[data-testid="stVegaLiteChart"]')
            wait_idle(page, ready)
            if name == "completeness":  # show the greedy sets too
                page.get_by_role("button", name="Run greedy search").click()
                page.wait_for_timeout(1000)
                wait_idle(page, ready)
            page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            print(f"docs/{name}.png")
    # Presentation mode at a projector's 1280 × 720, one screen per step
    with dashboard() as url, browser_page(1280, 720) as page:
        page.goto(f"{url}/Report")
        wait_idle(page, '[data-testid="stTable"]')
        page.get_by_text("Presentation mode").click()
        for i, step in enumerate(PRESENT):
            wait_idle(page, '[data-testid="stVegaLiteChart"]')
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / f"present-{step}.png"))
            print(f"docs/present-{step}.png")
            if i < len(PRESENT) - 1:
                page.get_by_role("button", name="Next →").click()
    edges(out)


if __name__ == "__main__":
    main()
