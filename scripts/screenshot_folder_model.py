"""The editor on a model from a local folder (e.g. a GPT-2-medium-shaped random model, 24 x 16), as a
screenshot, with the time the page took to draw after the folder was entered:

    python -m scripts.screenshot_folder_model FOLDER OUT.png
"""
import sys
import time

from scripts.browser import browser_page, dashboard, wait_idle

folder, out = sys.argv[1], sys.argv[2]

with dashboard(timeout=180) as url, browser_page(1500, 1300) as page:
    page.goto(f"{url}/Circuit_editor")
    wait_idle(page, '[data-testid="stVegaLiteChart"]', timeout=600_000)
    box = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first
    box.click()
    page.keyboard.type("local")
    page.keyboard.press("Enter")
    page.wait_for_timeout(2000)
    page.get_by_label("Folder").fill(folder)
    page.get_by_label("Folder").press("Enter")
    t = time.time()
    page.wait_for_timeout(3000)
    wait_idle(page, '[data-testid="stVegaLiteChart"]', timeout=900_000)
    print(f"editor drawn {time.time() - t:.0f} s after the folder was entered", flush=True)
    page.screenshot(path=out, full_page=True)
