"""Soak: several concurrent browser sessions against a dashboard on this machine, every figure checked.

    python -m scripts.soak [--sessions 4] [--minutes 3] [--max-actions 400] [--seed 0]

Starts the dashboard on 127.0.0.1 (offline, demo model), then runs `--sessions` headless Chromium
sessions at once, each for `--minutes` (and at most `--max-actions` actions in all). Each session,
seeded, picks actions at random: open the editor under a random methodology (through the page's
address), click a head in the grid, open completeness, run a greedy search, open minimality. After
each action it reads the figures on screen and recomputes them directly with circuit_core from the
state the address carries (model, methodology, circuit): F(C), F(C)/F(M), the largest incompleteness,
the number of heads under the minimality threshold. It prints errors (exceptions or error boxes on
the page, and figures that disagree), latency percentiles per action, and the server's peak memory.
Exit status 1 when anything went wrong. Loopback only; bounded in time and count.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

from scripts.browser import CHROMIUM, CHROMIUM_ARGS, dashboard, metric_value, wait_idle

ROOT = Path(__file__).resolve().parent.parent
ACTIONS = ["open editor", "click head", "completeness", "greedy search", "minimality"]


class Checker:
    """Recomputes what a page shows, from the state in its address (one evaluator per methodology)."""

    def __init__(self):
        from circuit_core.models import load_model

        self.model = load_model("demo", device="cpu")
        self.evaluators, self.lock = {}, threading.Lock()

    def state(self, url: str):
        from circuit_core.ablation import Methodology
        from circuit_core.circuit import load_circuit
        from circuit_core.links import decode_circuit

        q = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(url).query))
        meth = Methodology(task=q["task"], n=int(q["n"]), seed=int(q["seed"]), mode=q["mode"], ablation=q["ablation"],
                           positions=q["positions"], ref_per_group=int(q["ref"]), ref_replicates=int(q["reps"]))
        if q.get("circuit"):
            circuit = decode_circuit(q["circuit"])
        else:
            circuit = load_circuit(ROOT / "data" / "circuits" / (q["from"].removeprefix("preset: ") + ".json"))
        return meth, circuit

    def evaluator(self, meth):
        from circuit_core.evaluate import build_evaluator

        with self.lock:
            if meth not in self.evaluators:
                self.evaluators[meth] = build_evaluator(self.model, meth)
            return self.evaluators[meth]

    def faithfulness(self, url: str) -> dict:
        from circuit_core.criteria import faithfulness

        meth, circuit = self.state(url)
        f = faithfulness(self.evaluator(meth), circuit, reference_noise=False)
        return {"F(C)": f"{f.F_circuit:.3f}", "Faithfulness": "undefined" if f.undefined.get("ratio") else f"{f.ratio:.1%}"}

    def completeness(self, url: str, n_random: int = 10) -> str:
        from circuit_core.completeness import completeness

        meth, circuit = self.state(url)
        c = completeness(self.evaluator(meth), circuit, n_random=n_random, greedy_runs=0)
        return f"{c.table.incompleteness.max():.3f}"

    def minimality(self, url: str) -> int:
        from circuit_core.minimality import minimality

        meth, circuit = self.state(url)
        return len(minimality(self.evaluator(meth), circuit).flagged)


def settled(page, labels, tries: int = 10) -> tuple[str, dict]:
    """The address and the figures once two readings 1.5 s apart agree: a rerun updates the address
    (sidebar) before the figures, so one reading mid-run could pair a new address with old figures."""
    last = None
    for _ in range(tries):
        wait_idle(page)
        now = (page.url, {k: metric_value(page, k) for k in labels})
        if now == last:
            return now
        last = now
        page.wait_for_timeout(1500)
    return last


def page_errors(page) -> list[str]:
    out = []
    for sel in ('[data-testid="stException"]', '[data-testid="stAlertContentError"]'):
        for el in page.locator(sel).all():
            out.append(el.inner_text()[:200])
    return out


def session(idx: int, url: str, checker: Checker, args, deadline: float, counter: dict, log: list):
    from playwright.sync_api import sync_playwright

    rng = random.Random(args.seed * 1000 + idx)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(viewport={"width": 1500, "height": 1000}).new_page()
        query = ""
        while time.time() < deadline:
            with checker.lock:
                if counter["n"] >= args.max_actions:
                    break
                counter["n"] += 1
            action = "open editor" if not query else rng.choice(ACTIONS)
            t0 = t_done = time.time()
            problems = []
            try:
                if action == "open editor":
                    meth = {"model": "demo", "n": rng.choice([40, 60, 100]), "seed": rng.randrange(5),
                            "ablation": rng.choice(["mean", "mean-pooled", "resample", "zero"]),
                            "positions": rng.choice(["circuit", "all"]), "ref": rng.choice([0, 10, 50]),
                            "reps": rng.choice([0, 4])}
                    query = urllib.parse.urlencode(meth)
                    page.goto(f"{url}/Circuit_editor?{query}")
                    wait_idle(page)
                elif action == "click head":
                    if "/Circuit_editor" not in page.url:
                        page.goto(f"{url}/Circuit_editor?{urllib.parse.urlparse(page.url).query}")
                        wait_idle(page)
                    box = page.locator('[data-testid="stVegaLiteChart"]').first.bounding_box()
                    page.mouse.click(box["x"] + rng.uniform(0.15, 0.85) * box["width"],
                                     box["y"] + rng.uniform(0.2, 0.8) * box["height"])
                    wait_idle(page)
                elif action in ("completeness", "greedy search"):
                    page.goto(f"{url}/Completeness?{urllib.parse.urlparse(page.url).query}")
                    wait_idle(page, ready="text=Largest incompleteness")
                    if action == "greedy search":
                        page.get_by_role("button", name="Run greedy search").click()
                        wait_idle(page, ready="text=Largest incompleteness")
                    else:
                        t_done = time.time()
                        shown = re.search(r"Largest incompleteness: ([0-9.]+)", page.inner_text("body")).group(1)
                        want = checker.completeness(page.url)
                        if shown != want:
                            problems.append(f"largest incompleteness {shown} on screen, {want} computed")
                else:
                    page.goto(f"{url}/Minimality?{urllib.parse.urlparse(page.url).query}")
                    wait_idle(page, ready='[data-testid="stAlert"]')
                    t_done = time.time()
                    body = page.inner_text("body")
                    m = re.search(r"(\d+) head\(s\) under", body)
                    shown = int(m.group(1)) if m else 0 if "Every head scores at least" in body else None
                    want = checker.minimality(page.url)
                    if shown != want:
                        problems.append(f"{shown} heads under the threshold on screen, {want} computed")
                if t_done == t0:  # the latency a user sees; the checks below wait for a settled page
                    t_done = time.time()
                if action in ("open editor", "click head"):
                    url_now, shown = settled(page, ("F(C)", "Faithfulness"))
                    want = checker.faithfulness(url_now)
                    if shown != want:
                        problems.append(f"figures {shown} on screen, {want} computed")
                problems += page_errors(page)
            except Exception as e:  # a timeout or a missing element is an error of the run
                problems.append(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
            log.append({"session": idx, "action": action, "seconds": max(t_done - t0, 0.0), "problems": problems})
        browser.close()


def server_peak_mb() -> float:
    """Peak resident memory of the dashboard process (a child of this one), from /proc."""
    peak = 0.0
    for d in Path("/proc").iterdir():
        try:
            if not d.name.isdigit():
                continue
            stat = (d / "stat").read_text().split()
            if int(stat[3]) == os.getpid() and b"streamlit" in (d / "cmdline").read_bytes():
                for line in (d / "status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--max-actions", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not (1 <= args.sessions <= 16 and 0 < args.minutes <= 30 and 1 <= args.max_actions <= 5000):
        p.error("--sessions 1–16, --minutes up to 30, --max-actions up to 5000")
    checker = Checker()
    log, counter = [], {"n": 0}
    with dashboard() as url:
        deadline = time.time() + 60 * args.minutes
        threads = [threading.Thread(target=session, args=(i, url, checker, args, deadline, counter, log))
                   for i in range(args.sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = server_peak_mb()
    bad = [r for r in log if r["problems"]]
    print(f"{len(log)} actions in {args.sessions} concurrent sessions over {args.minutes:g} min; "
          f"{len(bad)} with errors; server peak memory {peak:.0f} MB")
    for action in ACTIONS:
        s = [r["seconds"] for r in log if r["action"] == action]
        if s:
            p50, p90, p99 = np.percentile(s, [50, 90, 99])
            print(f"  {action:<14} n={len(s):<4} latency p50 {p50:.1f} s  p90 {p90:.1f} s  p99 {p99:.1f} s")
    for r in bad[:20]:
        print(f"  session {r['session']} {r['action']}: {'; '.join(r['problems'])}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
