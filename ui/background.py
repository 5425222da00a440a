"""The editor grid's background: which per-head score colours each cell, and computing it off-thread."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from circuit_core.attribution import ESTIMATE, EXACT, attribution, exact_toggles, rank_agreement, toggle_estimates
from circuit_core.criteria import circuit_node_set
from circuit_core.heads import ABLATION, ablation_effects
from ui import jobs
from ui.state import Context, circuit_json, role_scores

PATCH_NOISE = "activation patching: corrupt one head (noise)"
PATCH_DENOISE = "activation patching: restore one head (denoise)"
PATH_CLASS = "path patching into the target class's heads"
PATH_LOGITS = "path patching to the logits (direct effect)"
PATCHING = (PATCH_NOISE, PATCH_DENOISE, PATH_CLASS, PATH_LOGITS)

# Role scores any task has; the attention scores ("attn Q→K") come from the task (heads.attention_pairs).
ROLE_METRICS = ["direct effect", "previous token", "duplicate token", "induction"]


def background_metrics(task: str, estimate: bool = True) -> list[str]:
    """The scores the grid can show; the attention scores are the task's. Without the estimate
    (`estimate_unavailable`) the first, the default, is the direct effect: a few passes on any model."""
    from circuit_core.heads import attention_pairs
    from circuit_core.tasks import task_roles

    attention = list(attention_pairs(list(task_roles(task)), task))
    roles = ROLE_METRICS
    if not estimate:
        return ["direct effect", EXACT, ABLATION, *PATCHING] + [m for m in roles if m != "direct effect"] + attention
    return [ESTIMATE, EXACT, ABLATION, *PATCHING] + roles + attention


def estimate_unavailable(ev) -> str | None:
    """Why the one-pass estimate cannot colour the grid for this model (None when it can)."""
    if ev.blocks is not None:
        return None
    arch = type(getattr(ev.model.bridge, "original_model", ev.model.bridge)).__name__
    return (f"The one-pass estimate is not offered for this architecture ({arch}): attribution patching reads the "
            "weights as plain-tensor blocks, and blocks.py does not describe this model. The other backgrounds "
            "work on any model; the exact change costs one evaluation per head.")


def background_caption(metric: str, target: str, task_metric: str = "the task's logit difference at END") -> str:
    return {
        ESTIMATE: f"estimated change of F(C) if the head were clicked (into / out of '{target}'): gradient × "
                  "(own output − ablation value), one forward and one backward pass on the current circuit "
                  "(attribution patching). An estimate: choose the exact values to check it.",
        EXACT: f"exact change of F(C) if the head were clicked (into / out of '{target}'): one evaluation per head.",
        ABLATION: "F(M without the head, ablated everywhere) − F(M); blue cells hurt the task when removed.",
        "direct effect": f"the head's direct contribution to {task_metric}.",
        PATCH_NOISE: "share of F(clean) − F(corrupted) lost when this head's output at the chosen position "
                     "is taken from the prompt's corrupted twin (1: it alone carries the behaviour).",
        PATCH_DENOISE: "share of F(clean) − F(corrupted) restored when this head's clean output at the chosen "
                       "position is put into the corrupted run (1: it alone restores the behaviour).",
        PATH_CLASS: f"share of F(clean) − F(corrupted) that flows from this head into the queries, keys and values "
                    f"of '{target}' (at its position) alone, every other head frozen (Wang et al.'s path patching); "
                    "each receiver hears only heads in earlier layers, so a head between the class's layers reaches "
                    "its later heads only; heads in or after its last layer have no such path (shown as 0).",
        PATH_LOGITS: "share of F(clean) − F(corrupted) that flows from this head straight to the logits (through "
                     "MLPs only, every other head frozen).",
    }.get(metric, f"{metric} score of each head.")


def agreement_note(ctx: Context, ev, target: str) -> str | None:
    """Spearman ρ between the estimate and the exact values, once both exist for this circuit."""
    cj, base = circuit_json(ctx.circuit), (ctx.model_key, ctx.methodology)
    est, exact = jobs.get(("attribution", *base, cj)), jobs.get(("exact", *base, cj, target))
    if est is None or exact is None or est.result is None or exact.result is None or est.running or exact.running:
        return None
    rho = rank_agreement(toggle_estimates(ev, ctx.circuit, target, est.result), exact.result)
    return f"Estimate against exact values for this circuit: Spearman ρ = {rho:.2f} over {len(exact.result)} heads."


PATCH_N = 20  # prompt pairs patched by default: every head and position costs a partial forward pass each


def selection_seed_key(ctx: Context) -> str:
    # One key per report seed, so the default follows the sidebar's seed (report seed + 10,000).
    return f"disc_sel_seed::{ctx.methodology.seed}"


def selection_seed(ctx: Context) -> int:
    """The selection seed the editor's searches use (the discovery expander's widget, or the default)."""
    from circuit_core.selection import Selection

    default = Selection().seed_for(ctx.methodology)
    seed = int(ctx.session.widget(selection_seed_key(ctx), default))
    return default if seed == ctx.methodology.seed else seed  # the widget says it is refused; maps keep going


def patching_job(ctx: Context, metric: str, target: str, n: int = PATCH_N, seed: int | None = None) -> jobs.Job:
    """The patching result behind `metric` on `n` prompt pairs of the *selection* prompts (`seed`, default
    `selection_seed`): heads picked from the map, by eye or by "Add strongest heads", are then scored on the
    report prompts, which took no part in picking them. It depends on the prompts, not on the circuit being
    edited (path patching into a class: on that class's heads), so edits reuse it."""
    from circuit_core import patching as pt
    from circuit_core.selection import Selection

    model = ctx.model
    meth = Selection(n, selection_seed(ctx) if seed is None else seed).methodology(ctx.methodology)
    key_meth = (meth.task, meth.n, meth.seed, meth.mode, meth.prepend_bos, meth.metric)
    if metric in (PATCH_NOISE, PATCH_DENOISE):
        direction = "noise" if metric == PATCH_NOISE else "denoise"
        return jobs.start(("patching", ctx.model_key, key_meth, direction), f"Activation patching ({direction})",
                          lambda job: pt.activation_patching(model, pt.paired_dataset(model, meth), direction,
                                                             seed=meth.seed, progress=job.progress,
                                                             should_stop=job.should_stop, metric=meth.metric))
    if metric == PATH_LOGITS:
        receivers, role, what = "logits", None, "the logits"
    else:
        cls = next(c for c in ctx.circuit.classes if c.name == target)
        receivers, role = sorted(cls.heads), None if cls.position == "*" else cls.position
        what = f"'{target}'"
    return jobs.start(("path", ctx.model_key, key_meth, str(receivers), role), f"Path patching into {what}",
                      lambda job: pt.path_patching(model, pt.paired_dataset(model, meth), receivers, "qkv", role,
                                                   seed=meth.seed, progress=job.progress, should_stop=job.should_stop,
                                                   metric=meth.metric))


def strongest_outside(scores: pd.DataFrame, circuit, k: int) -> list[tuple[int, int]]:
    """The k heads of a map (layer, head, score) with the largest score that are not in the circuit yet."""
    inside = set(circuit.heads)
    outside = scores[[(l, h) not in inside for l, h in zip(scores["layer"], scores["head"])]]
    top = outside.sort_values("score", ascending=False).head(int(k))
    return [(int(l), int(h)) for l, h in zip(top["layer"], top["head"])]


def patching_scores(result, position: str) -> pd.DataFrame:
    """layer, head, score, lo, hi of a patching result (activation patching: at `position`)."""
    frame = result.frame()
    if result.kind == "activation":
        frame = frame[frame.position == position]
    return frame.rename(columns={"effect": "score"}).fillna({"score": 0.0})[["layer", "head", "score", "lo", "hi"]]


def background(ctx: Context, ev, metric: str, target: str, position: str = "*",
               patch_n: int = PATCH_N) -> tuple[jobs.Job | None, pd.DataFrame | None]:
    """(the job computing it, or None; the scores once there): a frame of layer, head, score."""
    cj = circuit_json(ctx.circuit)
    base = (ctx.model_key, ctx.methodology)
    if metric in PATCHING:
        job = patching_job(ctx, metric, target, patch_n)
        job.wait(1.0)
        if job.running or job.result is None:
            return job, None
        return job, patching_scores(job.result, position)
    if metric == ESTIMATE and estimate_unavailable(ev):  # e.g. a link made on GPT-2: the direct effect instead
        metric = "direct effect"
    if metric in ROLE_METRICS or metric.startswith("attn "):
        scores = role_scores(*base)
        return None, scores[scores.metric == metric]
    if metric == ESTIMATE:
        circuit, key = ctx.circuit, ("attribution", *base, cj)
        jobs.stop_others("attribution", key)  # an estimate of a circuit no longer shown is not worth the CPU
        job = jobs.start(key, "Estimating every head's effect",
                         lambda job: attribution(ev, circuit_node_set(circuit, ev.methodology.positions),
                                                 job.progress, job.should_stop))
        job.wait(1.0)
        done = job.result if not job.running else None
        return job, None if done is None else toggle_estimates(ev, circuit, target, done)
    if metric == EXACT:
        circuit = ctx.circuit
        job = jobs.start(("exact", *base, cj, target), f"Exact effect of clicking each head ('{target}')",
                         lambda job: exact_toggles(ev, circuit, target, job.progress, job.should_stop))
    else:
        job = jobs.start(("ablation", *base), "Ablation effect of every head",
                         lambda job: ablation_effects(ev, job.progress, job.should_stop))
    job.wait(1.0)
    return job, None if job.running else job.result
