"""A new user's walk on a model folder, timed in a real browser until each page has settled (no
progress bar, no running script): open the editor, choose "local folder…" and type the folder, click a
head, reload the page. Prints each wait in seconds and in plain forward passes of the page's N prompts,
measured in the same run, and checks that the reload brought back the model and the edit.

    python -m bench.reload --model-dir DIR [--out bench/results/reload.json]

DIR: e.g. a GPT-2-small-shaped folder from `circuit_core.toy.save_random_gpt2(DIR, n_layer=12, n_head=12,
n_embd=768, gpt2_bpe=True)`.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def settle(page, timeout: float = 900) -> None:
    """Wait until the script has stopped and no progress bar is left (background jobs done)."""
    from scripts.browser import wait_idle

    wait_idle(page, timeout=timeout * 1000)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stProgress\"]')", timeout=timeout * 1000)
    wait_idle(page, timeout=timeout * 1000)


def forward_seconds(model_dir: str, n: int = 100) -> float:
    """One plain forward pass over the page's N clean prompts (the default methodology), median of 3."""
    import statistics

    import torch

    from circuit_core.ablation import Methodology
    from circuit_core.models import load_model
    from circuit_core.tasks import build_dataset

    model = load_model(model_dir, device="cpu")
    data = build_dataset("ioi", model.tokenizer, **Methodology(n=n).dataset_kwargs())
    times = []
    with torch.no_grad():
        for _ in range(3):
            t = time.perf_counter()
            model.bridge(data.tokens)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    from scripts.browser import browser_page, choose_local_folder, click_a_head, dashboard, edit_summary, metric_value

    fwd = forward_seconds(args.model_dir)
    waits = {}
    with dashboard(timeout=300) as url, browser_page() as page:
        page.goto(f"{url}/Circuit_editor")
        settle(page)
        t = time.perf_counter()
        choose_local_folder(page, args.model_dir)
        settle(page)
        waits["folder entered → settled"] = time.perf_counter() - t
        # F(C), not the ratio: a random model's F(M) is near 0, where F(C)/F(M) is undefined before and after
        before, after, waits["head clicked → settled"] = click_a_head(page, "F(C)", settle=settle)
        edited = edit_summary(page)
        t = time.perf_counter()
        page.reload()
        settle(page)
        waits["reload → settled"] = time.perf_counter() - t
        sidebar = page.locator('[data-testid="stSidebar"]')
        folder_back = sidebar.get_by_label("Folder").input_value() == args.model_dir
        edit_back = bool(edited) and edit_summary(page) == edited and metric_value(page, "F(C)") == after
        circuit = page.url.split("from=")[1].split("&")[0] if "from=" in page.url else ""
        restored = folder_back and edit_back and "circuit=" in page.url
    out = {"model": Path(args.model_dir).name, "forward_pass_s": fwd, "edit": edited,
           "F_C": {"before edit": before, "after edit": after}, "circuit_entry": circuit,
           "reload_restored": {"folder": folder_back, "edited F(C)": edit_back, "model_and_edit": restored},
           "waits": {k: {"seconds": round(v, 1), "forward_passes": round(v / fwd, 1)} for k, v in waits.items()}}
    print(f"plain forward pass (N=100): {fwd:.2f} s")
    for k, v in out["waits"].items():
        print(f"{k:<28}{v['seconds']:>8.1f} s  = {v['forward_passes']:>6.1f} forward passes")
    print(f"circuit entry: {circuit}; the click: {edited or 'no head toggled'}; F(C) {before} -> {after}")
    print(f"reload restored the folder: {folder_back}; the edit and its F(C): {edit_back}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
