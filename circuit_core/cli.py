"""Command line: `python -m circuit_core COMMAND ...`. Prints readable tables, writes run records."""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

import numpy as np

from .ablation import Ablation, Methodology, PositionScope, RefNoise
from .metrics import Metric
from .circuit import MAX_NAME, Circuit, CircuitError, snippet
from .interchange import load_any
from .models import DEFAULT_MODEL, ModelLoadError, load_model, load_model_or_demo
from .patching import PatchingError
from .selection import SELECTION_N, SELECTION_SEED_OFFSET, Selection
from .tasks import REGISTRY, Task, TaskError, get_task, task_roles


# Upper bounds: far beyond any sensible run, low enough that a typo fails now, not after hours.
MAX_N = 10_000
MAX_SEED = 2**32 - 1  # what numpy and torch seeding take everywhere


class UsageError(Exception):
    """An option or option combination refused before any work; main prints it as one line."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line refusal (no usage block), worded like every other error of the CLI."""

    def error(self, message):
        self.exit(2, f"error: {' '.join(message.split())}\n")



def _size(circuit) -> str:
    """'6 heads', or with an edge list '6 heads, 10 of 27 edges between them kept'."""
    if circuit.edges is None:
        return f"{len(circuit.heads)} heads"
    from .criteria import removed_edges

    kept = len(circuit.head_edges())
    return f"{len(circuit.heads)} heads, {kept} of {kept + len(removed_edges(circuit))} edges between them kept"

def whole(low: int = 0, high: int | None = None):
    """An argparse type: a whole number in [low, high], refused with a one-line message before any work."""
    def parse(text: str) -> int:
        # ASCII digits only (int() would take '１０'), and not thousands of them (int() refuses those).
        m = re.fullmatch(r"\s*([+-]?)([0-9]+)\s*", text)
        if not m:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {snippet(text)}")
        if len(m.group(2)) > 100:
            bound = f"≥ {low}" if m.group(1) == "-" else f"≤ {high:,}" if high is not None else "of sensible size"
            raise argparse.ArgumentTypeError(f"expected a whole number {bound}, got a {len(m.group(2)):,}-digit number")
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a whole number ≥ {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"expected a whole number ≤ {high:,}, got {value:,}")
        return value

    return parse


def number(low: float, high: float, low_open: bool = False):
    """An argparse type: a finite number in [low, high] ((low, high] with low_open); nan and inf refused."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {snippet(text)}") from None
        if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
            span = f"{'above' if low_open else 'from'} {low:g} {'and at most' if low_open else 'to'} {high:g}"
            raise argparse.ArgumentTypeError(f"expected a number {span}, got {snippet(text)}")
        return value

    return parse


def output_file(text: str) -> str:
    """An argparse type: a file we can write, checked now so a long run never ends on an unwritable path."""
    path = Path(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file name, got an empty one")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{snippet(text)} is a folder; give a file name in it")
    if path.exists() and not path.is_file():
        raise argparse.ArgumentTypeError(f"{snippet(text)} exists and is not a regular file")
    parent = path.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {snippet(str(parent))} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{snippet(text)} cannot be written (permission denied)")
    return text


def one_line_text(text: str) -> str:
    """An argparse type for names written into files: one line, at most MAX_NAME characters."""
    if not text.strip() or len(text) > MAX_NAME or not text.isprintable():
        raise argparse.ArgumentTypeError(f"expected one line of at most {MAX_NAME} printable characters, "
                                         f"got {snippet(text)}")
    return text


def device(text: str) -> str:
    """An argparse type: cpu, cuda, cuda:N or mps; CUDA refused up front where there is none."""
    if not re.fullmatch(r"cpu|cuda(:[0-9]{1,2})?|mps", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {snippet(text)}")
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError("CUDA is not available on this machine; use --device cpu")
        if ":" in text and int(text.split(":")[1]) >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return text


def dtype_arg(text: str) -> str:
    """An argparse type: float32, bfloat16 or float16 (bf16, fp16, fp32 too)."""
    from .models import dtype_name

    try:
        return dtype_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def receivers_arg(text: str):
    from .patching import PatchingError, parse_receivers

    try:
        return parse_receivers(text) and text
    except PatchingError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_task_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="ioi", choices=tuple(REGISTRY),
                   help="; ".join(f"{t.name}: {t.title}" for t in REGISTRY.values()))
    p.add_argument("--mode", default="mixed", choices=sorted({m for t in REGISTRY.values() for m in t.modes}),
                   help="which groups of prompts: " + "; ".join(f"{t.name}: {', '.join(t.modes)}" for t in REGISTRY.values()))


def add_common(p: argparse.ArgumentParser, circuit_required: bool = True) -> None:
    p.add_argument("--model", default=None,
                   help=f"hub name (e.g. gpt2, gpt2-medium), local Hugging Face folder, or 'demo' "
                        f"(default: {DEFAULT_MODEL}, falling back to the bundled demo when it cannot be loaded)")
    p.add_argument("--circuit", required=circuit_required, help="circuit JSON file")
    add_task_options(p)
    p.add_argument("--n", type=whole(1, MAX_N), default=100, help=f"number of prompts, 1 to {MAX_N:,} (default 100)")
    p.add_argument("--seed", type=whole(0, MAX_SEED), default=0, help="seed, 0 to 2^32 - 1 (default 0)")
    p.add_argument("--prepend-bos", action="store_true", help="prepend BOS to tokenizers that do not add their own (GPT-2, Pythia, Qwen2; off for GPT-2 as in "
                        "the paper); Llama's and Gemma's prompts always start with their BOS")
    p.add_argument("--ablation", default="mean", choices=[a.value for a in Ablation])
    p.add_argument("--positions", default="circuit", choices=[s.value for s in PositionScope])
    p.add_argument("--bootstrap", type=whole(1, 100_000), default=1000,
                   help="bootstrap resamples for 95%% intervals (default 1000)")
    p.add_argument("--ref-per-group", type=whole(0, 1000), default=DEFAULTS.ref_per_group,
                   help="reference prompts per group for the means, drawn on their own "
                        f"(default {DEFAULTS.ref_per_group}: where faithfulness stops moving); 0: each prompt's "
                        "twin (for IOI its ABC twin, as in the paper: about N/30 per group)")
    p.add_argument("--ref-replicates", type=whole(0, 100), default=DEFAULTS.ref_replicates,
                   help="bootstrap replicates of the reference set, so that intervals include its sampling "
                        f"noise (default {DEFAULTS.ref_replicates}); "
                        "0: prompts only")
    p.add_argument("--ref-noise", choices=[r.value for r in RefNoise], default=DEFAULTS.ref_noise,
                   help="how a set's values under each replicate are found: linear (default; to first order, one "
                        "backward pass per set on a stratified sample of the prompts) or exact (every set "
                        "evaluated again under every replicate)")
    add_metric_option(p)
    p.add_argument("--device", type=device, default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--dtype", type=dtype_arg, default=None,
                   help="the weights' floating-point type: float32 (default), bfloat16 or float16 (half the "
                        "memory; every figure within the README's stated tolerance of float32; on a GPU, faster)")
    p.add_argument("--out", type=output_file, default=None, help="write the run record (JSON) here")


DEFAULTS = Methodology()


def add_metric_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", choices=[m.value for m in Metric], default=DEFAULTS.metric,
                   help="what F reads at END: logit_diff (default; logit[correct] - logit[incorrect]), kl "
                        "(KL(P_model || P_S) of the next token, in nats: 0 for the model, as ACDC and MIB) or "
                        "prob_diff (prob[correct] - prob[incorrect])")


def methodology_from(args) -> Methodology:
    try:
        return Methodology(task=args.task, n=args.n, seed=args.seed, mode=args.mode, prepend_bos=args.prepend_bos,
                           ablation=args.ablation, positions=args.positions, bootstrap=args.bootstrap,
                           ref_per_group=args.ref_per_group, ref_replicates=getattr(args, "ref_replicates", 0),
                           ref_noise=getattr(args, "ref_noise", DEFAULTS.ref_noise),
                           metric=getattr(args, "metric", DEFAULTS.metric))
    except ValueError as exc:  # Methodology checks its own fields
        raise UsageError(f"methodology: {exc}") from None


def open_model(args):
    if args.model is None:
        model, notice = load_model_or_demo(DEFAULT_MODEL, args.device, getattr(args, "dtype", None))
        if notice:
            print(notice, file=sys.stderr)
        return model
    return load_model(args.model, args.device, getattr(args, "dtype", None))


def prepare(args) -> tuple[Methodology, Circuit | None]:
    """Every check that needs no model, run before the model is loaded: a mistake costs seconds."""
    circuit = None
    if getattr(args, "circuit", None):
        circuit = load_any(args.circuit).circuit  # ours, or an EAP-IG / MIB graph (heads kept at END)
        circuit.check_task(args.task)
        if getattr(args, "k", None):
            from .completeness import parse_heads

            for K in args.k:
                parse_heads(K, circuit)
        if args.out and _same_file(args.out, args.circuit):
            raise UsageError("--out names the circuit file itself; the run record would overwrite it.")
    if getattr(args, "record", None) and _same_file(args.record, args.out):
        raise UsageError("--record and --out name the same file.")
    if getattr(args, "k_source", None) == "search" and args.greedy_runs == 0:
        raise UsageError("--k-source search needs at least one greedy run (--greedy-runs ≥ 1).")
    return methodology_from(args), circuit


def _same_file(a: str, b: str) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def open_circuit(args, model, circuit: Circuit | None = None) -> Circuit:
    """The circuit (loaded and checked by `prepare`, or loaded now), checked against the model."""
    circuit = circuit or load_any(args.circuit).circuit
    circuit.validate(model.n_layers, model.n_heads, task_roles(args.task), task=args.task)
    return circuit


def progress_bar(desc: str):
    """A progress callback drawing a tqdm bar on stderr."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, file=sys.stderr, leave=False, disable=None)

    def update(done: int, total: int):
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def methodology_line(ev) -> str:
    """The evaluator's methodology in words (validate.describe_methodology, as the dashboard words it)."""
    from .validate import describe_methodology

    return describe_methodology(ev.methodology, min_group_size=ev.dataset.min_group_size)


def fmt_ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def print_faithfulness(f, out=None, task: str | None = None) -> None:
    from .criteria import TAU_SHARE

    out = out or sys.stdout
    rows = [("F(M)", "F_model"), ("F(C)", "F_circuit"), ("F(∅)", "F_empty"), ("F(M) - F(C)", "gap"),
            ("F(C) / F(M)", "ratio"), ("(F(C)-F(∅)) / (F(M)-F(∅))", "normalized"),
            ("median f_C / f_M, f_M > τ", "median_of_ratios")]
    print(f"  {'quantity':<28}{'value':>9}   95% interval", file=out)
    for label, key in rows:
        why = f.undefined.get(key)  # e.g. a denominator indistinguishable from 0: no number, the reason
        print(f"  {label:<28}" + (f"{'undefined':>9}   {why}" if why else
                                   f"{f.stats[key]:>9.3f}   {fmt_ci(f.intervals[key])}"), file=out)
    kl = "under KL" in f.undefined.get("ratio", "")  # F(M) = 0: no τ, no accuracy (a divergence has no sign)
    if not kl:
        print(f"  (median over prompts with f_M > τ = {f.stats['median_of_ratios_tau']:.3f}, {TAU_SHARE:.0%} of the median "
              f"|f_M|: {f.stats['median_of_ratios_excluded']} of {len(f.per_prompt['model'])} prompts excluded)", file=out)
        label = get_task(task).accuracy_label if task else Task.accuracy_label  # the generic words without a task
        print(f"  accuracy (share of prompts with {label}):", file=out)
        print(f"  {'  model':<28}{f.stats['accuracy_model']:>9.1%}", file=out)
        print(f"  {'  circuit':<28}{f.stats['accuracy_circuit']:>9.1%}", file=out)
    if f.interval_method:
        print(f"  intervals: {f.interval_method}", file=out)
    for order, s in f.by_order.items():
        shown = {k: ("undefined (F(M) = 0 under KL)" if kl else f"undefined ({why})") if (why := s.undefined.get(k))
                 else f"{getattr(s, k):.3f}"
                 for k in ("ratio", "normalized")}
        print(f"  {order} (n={s.n}): F(M) {s.F_model:.3f}  F(C) {s.F_circuit:.3f}  "
              f"F(C)/F(M) {shown['ratio']}  (F(C)-F(∅))/(F(M)-F(∅)) {shown['normalized']}", file=out)


def cmd_faithfulness(args) -> int:
    from .criteria import faithfulness

    model, circuit, ev = _evaluator(args)
    f = faithfulness(ev, circuit, progress_bar("faithfulness"))
    print(f"Faithfulness of '{circuit.name}' ({_size(circuit)}) on {model.name}")
    print(f"  {methodology_line(ev)}")
    print_faithfulness(f, task=ev.methodology.task)
    baseline = _baseline(args, ev, circuit)
    _save(args, ev, circuit, {"faithfulness": f.to_dict(), **baseline, **_headline(f)})
    return 0


def _headline(f) -> dict:
    from .validate import headline

    return headline(f)


def _k_text(K) -> str:
    return "{" + ", ".join(K) + "}" if len(K) else "∅"


def _scale(result) -> str:
    """What a result's % figures are a share of: F(M), or under KL F(∅) − F(M)."""
    return result.scale_name.strip("|")


def _scale_value(result) -> str:
    return "" if result.scale_name == "|F(M)|" else f", {result.scale_name} = {result.scale:.3f}"


def print_completeness(c, out=None, top_greedy: int = 10) -> None:
    """Every fixed K, then the top greedy sets; the run record holds them all."""
    from .completeness import Cols as CC

    out = out or sys.stdout
    t = c.table
    greedy = t[t[CC.FAMILY] == "greedy"]
    shown = [t[t[CC.FAMILY] != "greedy"], greedy.nlargest(top_greedy, CC.INCOMPLETENESS)]
    tol = c.settings.get("tolerance_pct", 10.0)
    print(f"  F(M) = {c.F_model:.3f}{_scale_value(c)}; a K passes when the 95% interval of F(C\\K) - F(M\\K) stays within "
          f"±{tol:g}% of {c.scale_name}, fails when it lies wholly outside, else undecided", file=out)
    asked, drawn = c.settings.get("n_random", 0), c.settings.get("n_random_drawn", 0)
    if drawn < asked:
        print(f"  ({drawn} random K sets, not {asked}: the circuit has only {drawn} distinct non-empty subsets)",
              file=out)
    print("  " + "family".ljust(8) + "K".ljust(24) + "|K|".rjust(4) + "F(C\\K)".rjust(9) + "F(M\\K)".rjust(9)
          + "diff".rjust(9) + f"% {_scale(c)}".rjust(9) + "   95% interval of diff  verdict    members", file=out)
    for part in shown:
        for r in part.to_dict("records"):
            print(f"  {r[CC.FAMILY]:<8}{r[CC.NAME][:23]:<24}{r[CC.SIZE]:>4}{r[CC.F_C_MINUS_K]:>9.3f}"
                  f"{r[CC.F_M_MINUS_K]:>9.3f}{r[CC.D]:>9.3f}{r[CC.INCOMPLETENESS_PCT]:>8.1f}%   "
                  f"{fmt_ci((r[CC.D_LO], r[CC.D_HI])):<22}{r[CC.VERDICT]:<11}{_k_text(r[CC.K])}", file=out)
    if len(greedy) > top_greedy:
        print(f"  ... and {len(greedy) - top_greedy} more greedy sets (all in the run record)", file=out)
    sel = c.settings.get("selection")
    if sel and len(greedy):
        print(f"  Greedy K were chosen on {sel['n']} selection prompts (seed {sel['seed']}; "
              f"{c.settings['greedy_runs']} runs × {c.settings['greedy_steps']} steps × {c.settings['greedy_k']} "
              f"candidates = {sel['budget']} sets scored) and are reported above on the report prompts.", file=out)
        g = greedy.loc[greedy[CC.INCOMPLETENESS].idxmax()]
        print(f"  Worst greedy K on the report prompts: {g[CC.INCOMPLETENESS]:.3f}; the same K on the prompts that "
              f"chose it (selection, biased upward): {g[CC.SELECTION_INCOMPLETENESS]:.3f}", file=out)
    if len(t):
        b = c.best()
        print(f"  Largest incompleteness: {b[CC.INCOMPLETENESS]:.3f} ({b[CC.INCOMPLETENESS_PCT]:.1f}% of {_scale(c)}) for "
              f"K = {_k_text(b[CC.K])} ({b[CC.FAMILY]})", file=out)
        print(f"  Completeness {c.verdict.value}" + (f": {c.settings['no_verdict']}" if c.settings.get("no_verdict")
                                                      else ""), file=out)
    if c.cancelled:
        print("  (search cancelled: partial result)", file=out)


def print_minimality(m, out=None) -> None:
    from .minimality import Cols as MC

    out = out or sys.stdout
    print(f"  F(M) = {m.F_model:.3f}{_scale_value(m)}; a head passes when the 95% interval of F(C\\(K∪v)) - F(C\\K) lies beyond "
          f"±{m.threshold_pct:g}% of {m.scale_name}, fails when it lies within, else undecided", file=out)
    print("  " + "head".ljust(7) + "class".ljust(20) + "K from".ljust(8) + "F(C\\K)".rjust(9) + "F(C\\K∪v)".rjust(10)
          + "diff".rjust(9) + f"% {_scale(m)}".rjust(9) + "   95% interval of diff  verdict    K", file=out)
    for r in m.table.to_dict("records"):
        print(f"  {r[MC.HEAD]:<7}{r[MC.CLASS][:19]:<20}{r[MC.K_SOURCE]:<8}{r[MC.F_C_MINUS_K]:>9.3f}"
              f"{r[MC.F_C_MINUS_K_AND_V]:>10.3f}{r[MC.D]:>9.3f}{r[MC.PCT_OF_F_M]:>8.1f}%   "
              f"{fmt_ci((r[MC.D_LO], r[MC.D_HI])):<22}{r[MC.VERDICT]:<11}{_k_text(r[MC.K])}", file=out)
    sel = m.settings.get("selection")
    if sel:
        print(f"  K were searched on {sel['n']} selection prompts (seed {sel['seed']}; {sel['budget_per_head']} sets "
              f"scored per head) and are reported above on the report prompts.", file=out)
    print(f"  Fail (whole interval under {m.threshold_pct:g}%): {', '.join(m.flagged) or 'none'}", file=out)
    print(f"  Undecided (interval straddles {m.threshold_pct:g}%): {', '.join(m.undecided) or 'none'}", file=out)
    print(f"  Minimality {m.verdict.value}" + (f": {m.settings['no_verdict']}" if m.settings.get("no_verdict")
                                                  else ""), file=out)
    if m.cancelled:
        print("  (search cancelled: partial result)", file=out)


def _evaluator(args):
    from .evaluate import build_evaluator

    methodology, circuit = prepare(args)
    model = open_model(args)
    circuit = open_circuit(args, model, circuit)
    return model, circuit, build_evaluator(model, methodology)


def _completeness(args, ev, circuit):
    from .completeness import completeness

    runs = 10 if args.greedy_runs is None else args.greedy_runs
    return completeness(ev, circuit, n_random=args.random, user_k=args.k, greedy_k=args.greedy_k,
                        greedy_steps=args.greedy_steps, greedy_runs=runs, progress=progress_bar("completeness"),
                        selection=_selection(args), tolerance_pct=args.tolerance)


def _minimality(args, ev, circuit):
    from .minimality import minimality

    runs = 1 if args.greedy_runs is None else args.greedy_runs
    return minimality(ev, circuit, k_source=args.k_source, threshold_pct=args.threshold, search_k=args.greedy_k,
                      search_steps=args.greedy_steps, search_runs=runs, progress=progress_bar("minimality"),
                      selection=_selection(args))


def _selection(args):
    """Where searches choose: their own prompts, apart from the report prompts (selection.py)."""
    sel = Selection(n=args.selection_n, seed=args.selection_seed)
    try:  # refused before any work: a search scored on its own prompts is a winner's-curse figure
        sel.seed_for(methodology_from(args))
    except ValueError as exc:
        raise UsageError(f"--selection-seed: {exc}") from None
    return sel


def add_selection_options(p: argparse.ArgumentParser, what: str = "the searches choose on") -> None:
    p.add_argument("--selection-n", type=whole(1, MAX_N), default=SELECTION_N,
                   help=f"prompts {what}, apart from the report prompts (--n, --seed) (default {SELECTION_N})")
    p.add_argument("--selection-seed", type=whole(0, MAX_SEED), default=None,
                   help=f"seed of the selection prompts (default: --seed + {SELECTION_SEED_OFFSET:,}); must differ "
                        "from --seed")


def _save(args, ev, circuit, results: dict) -> None:
    from .report import run_record, save_record

    if args.out:
        print(f"Run record written to {save_record(run_record(ev, circuit, results), args.out)}")


def cmd_completeness(args) -> int:
    model, circuit, ev = _evaluator(args)
    c = _completeness(args, ev, circuit)
    print(f"Completeness of '{circuit.name}' ({_size(circuit)}) on {model.name}: |F(C\\K) - F(M\\K)|")
    print(f"  {methodology_line(ev)}")
    print_completeness(c)
    _save(args, ev, circuit, {"completeness": c.to_dict()})
    return 0


def cmd_minimality(args) -> int:
    model, circuit, ev = _evaluator(args)
    m = _minimality(args, ev, circuit)
    print(f"Minimality of '{circuit.name}' ({_size(circuit)}) on {model.name}: |F(C\\(K∪{{v}})) - F(C\\K)|")
    print(f"  {methodology_line(ev)}")
    print_minimality(m)
    _save(args, ev, circuit, {"minimality": m.to_dict()})
    return 0


def validation_spec(args):
    """The CLI's options as a ValidationSpec; an option left out keeps the spec's default, except the
    greedy search, which the CLI runs by default (10 runs; --greedy-runs 0 turns it off)."""
    from .validate import ValidationSpec

    return ValidationSpec(n_random=args.random, user_k=tuple(args.k), greedy_k=args.greedy_k,
                          greedy_steps=args.greedy_steps, greedy_runs=10 if args.greedy_runs is None else args.greedy_runs,
                          tolerance_pct=args.tolerance, k_source=args.k_source, threshold_pct=args.threshold,
                          search_runs=1 if args.greedy_runs is None else args.greedy_runs,
                          faithfulness_tolerance_pct=args.faithfulness_tolerance, selection=_selection(args),
                          n_baseline=args.baseline, formal_tests=not args.no_tests, alpha=args.alpha,
                          test_n_random=args.n_random, epsilon=args.epsilon, permutations=args.permutations)


def cmd_validate(args) -> int:
    from .report import save_record
    from .validate import validate

    model, circuit, ev = _evaluator(args)
    spec = validation_spec(args)  # a bad selection seed is refused before any work
    print(f"Validation of '{circuit.name}' ({_size(circuit)}) on {model.name}")
    print(f"  {methodology_line(ev)}")
    v = validate(ev, circuit, spec, stage_progress=progress_bar)
    print("Faithfulness")
    print_faithfulness(v.faithfulness, task=ev.methodology.task)
    if v.baseline is not None:
        print_baseline(v.baseline)
    print("Completeness: F(C\\K) - F(M\\K)")
    print_completeness(v.completeness)
    print("Minimality: F(C\\(K∪{v})) - F(C\\K)")
    print_minimality(v.minimality)
    if v.tests is not None:
        print("Formal tests (Shi et al. 2024)")
        print_formal_tests(v.tests)
    print("Verdicts (from the 95% intervals)")
    for name, verdict in v.verdicts.items():
        if name != "overall":
            print(f"  {name:<13}{verdict['verdict']:<11}{verdict['rule']}")
    print(f"  {'overall':<13}{v.verdicts['overall']}")
    if args.out:
        print(f"Run record written to {save_record(v.record(), args.out)}")
    if args.strict and v.verdicts["overall"] == "fails":
        print("strict: a criterion fails", file=sys.stderr)
        return 1
    return 0


def add_baseline_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", type=whole(0, 10_000), default=0,
                   help="also evaluate this many random circuits with C's number of heads per layer (0: none)")


def _baseline(args, ev, circuit) -> dict:
    """Random circuits of C's shape: printed, and returned for the record (empty when not asked)."""
    if not getattr(args, "baseline", 0):
        return {}
    from .baseline import random_circuit_baseline

    b = random_circuit_baseline(ev, circuit, args.baseline, progress=progress_bar("random circuits"))
    print_baseline(b)
    return {"baseline": b.to_dict()}


def print_baseline(b) -> None:
    q = np.percentile(b.F_random / b.F_model, [5, 50, 95]) if b.F_model else [float("nan")] * 3
    print(f"Random circuits of the same shape (n={len(b.F_random)}): F/F(M) median {q[1]:.3f} "
          f"(90% of them in {q[0]:.3f} – {q[2]:.3f}); C: {b.F_circuit / b.F_model if b.F_model else float('nan'):.3f}; "
          f"share at least as good as C: {b.share_at_least_as_good:.0%}")


def add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--greedy-k", type=whole(1, 1000), default=10,
                   help="candidates sampled per greedy step (paper: 10 for the full IOI circuit, 5 for the naive one)")
    p.add_argument("--greedy-steps", type=whole(1, 1000), default=10, help="greedy steps per run (default 10)")
    p.add_argument("--greedy-runs", type=whole(0, 1000), default=None,
                   help="greedy runs (default: 10 for completeness, 0 turns it off; 1 for the minimality search)")
    add_selection_options(p)


def add_completeness_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--random", type=whole(0, 10_000), default=10, metavar="N",
                   help="random K (each head in with probability 1/2; default 10)")
    p.add_argument("--k", action="append", default=[], metavar="'l.h,l.h'", help="a K of your own (repeatable)")
    p.add_argument("--tolerance", type=number(0, 1000), default=10.0,
                   help="a K passes when its whole 95%% interval of F(C\\K) - F(M\\K) is within this %% of |F(M)| "
                        "(default 10)")


def add_minimality_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k-source", default="file", choices=["file", "class", "search"],
                   help="K per head: the circuit file's minimality_k (class rule where it has none), the class rule, "
                        "or a greedy search (default: file)")
    p.add_argument("--threshold", type=number(0, 100), default=1.0,
                   help="a head passes when its whole 95%% interval is beyond this %% of |F(M)|, fails when it is "
                        "within, 0 to 100 (default 1)")


DISCOVER_HELP = """Propose a circuit by greedy pruning (circuit_core/discover.py).

1. Head scores: repeated-token scores and, on the prompts, attention and direct effects (forward passes).
2. A position per head: the role where keeping the head alone restores F(M) best, from one batched
   evaluation of 2 + H(1 + R) node sets (H heads, R position roles).
3. All heads at their positions; widened back to all positions if that is not faithful.
4. Greedy pruning: each step evaluates C without each head (|C| node sets) and removes the one
   leaving F(C) closest to F(M), while threshold <= F(C)/F(M) <= 2 - threshold (with --normalized:
   (F(C)-F(∅))/(F(M)-F(∅)), MIB's score, better when F(∅) is close to F(M)).
5. Classes from (position, head-score label), coloured; written as a circuit JSON.
Cost: at most 2 + H(1 + R) + 1 + H(H + 1)/2 node sets of N prompts each: seconds for a toy model,
~11,000 node sets for GPT-2 small (use a GPU)."""


def cmd_discover(args) -> int:
    from .discover import discover_and_report
    from .evaluate import build_evaluator
    from .report import run_record, save_record

    methodology, _ = prepare(args)
    selection = _selection(args)  # refused before the model loads
    if Path(args.out).exists() and not args.overwrite:  # a circuit file is work: never replaced silently
        raise UsageError(f"{snippet(args.out)} exists; choose another --out, or pass --overwrite to replace it")
    model = open_model(args)
    ev = build_evaluator(model, methodology)  # the report prompts: they only measure the proposal
    try:
        d = discover_and_report(ev, args.threshold, selection, progress_bar("discover (selection prompts)"),
                                name=args.name, normalized=args.normalized,
                                start_from_patching=args.start_from_patching,
                                report_progress=progress_bar("faithfulness (report prompts)"))
    except ValueError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    c, sel, held = d.circuit, d.selection, d.held_out
    if d.start:
        print(f"Starting from {len(d.start)} heads of activation patching (noise) on the selection prompts: "
              + ", ".join(f"{l}.{h}@{p}" for (l, h), p in d.start.items()))
    print(f"Discovered circuit on {model.name}: {len(c.heads)} of {model.n_layers * model.n_heads} heads, "
          f"{d.n_node_sets} node sets evaluated")
    print(f"  searched on selection prompts: N={sel.n}, seed {sel.seed}; reported on: "
          f"{methodology_line(ev)}")
    print(f"  on the prompts that chose it (selection): F(M) {d.F_model:.3f}  F(C) {d.F_circuit:.3f}  "
          f"F(∅) {d.F_empty:.3f}  F(C)/F(M) {d.ratio:.3f}  (F(C)-F(∅))/(F(M)-F(∅)) {d.normalized_score:.3f}  "
          f"(threshold {args.threshold} on the {'normalized score' if args.normalized else 'ratio'})")
    f = held.faithfulness
    print(f"  held out (report prompts, N={held.n}, seed {held.seed}): F(C)/F(M) {held.ratio:.3f} "
          f"{fmt_ci(held.interval)}  (F(C)-F(∅))/(F(M)-F(∅)) {f.stats['normalized']:.3f} "
          f"{fmt_ci(f.intervals['normalized'])}  (95%: {f.interval_method})")
    if d.empty_passes and not args.normalized:
        print(f"  note: F(∅)/F(M) = {d.F_empty / d.F_model:.3f} already meets the threshold, so the ratio barely "
              "constrains the circuit here; --normalized measures from F(∅) instead.")
    for cls in c.classes:
        print(f"  {cls.name:<28}{cls.position:<6}{', '.join(f'{l}.{h}' for l, h in cls.heads)}")
    c.save(args.out)
    print(f"Circuit written to {args.out}")
    if args.record:
        results = {"discovery": d.to_dict(), "faithfulness": f.to_dict(), "head_scores": d.scores.to_dict("records"),
                   **_headline(f)}
        print(f"Run record written to {save_record(run_record(ev, c, results), args.record)}")
    return 0


def add_discover_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help=f"hub name, local Hugging Face folder, or 'demo' (default: {DEFAULT_MODEL})")
    add_task_options(p)
    p.add_argument("--n", type=whole(1, MAX_N), default=100, help=f"number of prompts, 1 to {MAX_N:,} (default 100)")
    p.add_argument("--seed", type=whole(0, MAX_SEED), default=0, help="seed of the report prompts (default 0)")
    p.add_argument("--prepend-bos", action="store_true", help="prepend BOS to tokenizers that do not add their own (GPT-2, Pythia, Qwen2; off for GPT-2 as in "
                        "the paper); Llama's and Gemma's prompts always start with their BOS")
    p.add_argument("--ablation", default="mean", choices=[a.value for a in Ablation])
    p.add_argument("--ref-per-group", type=whole(0, 1000), default=DEFAULTS.ref_per_group,
                   help=f"reference prompts per group (default {DEFAULTS.ref_per_group}; 0: each "
                        "prompt's twin, as in the IOI paper)")
    p.add_argument("--threshold", type=number(0, 1, low_open=True), default=0.8,
                   help="keep threshold <= F(C)/F(M) <= 2 - threshold while pruning (default 0.8)")
    p.add_argument("--normalized", action="store_true",
                   help="apply the threshold to (F(C)-F(∅))/(F(M)-F(∅)) instead of F(C)/F(M)")
    p.add_argument("--name", type=one_line_text, default=None, help="circuit name (default: says model and threshold)")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--dtype", type=dtype_arg, default=None,
                   help="the weights' floating-point type: float32 (default), bfloat16 or float16 (half the "
                        "memory; every figure within the README's stated tolerance of float32; on a GPU, faster)")
    p.add_argument("--out", type=output_file, required=True, help="write the circuit JSON here (a new file)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--record", type=output_file, default=None,
                   help="also write a run record (steps, head scores, prompts) here")
    p.add_argument("--start-from-patching", type=whole(1, 100_000), default=None, metavar="K",
                   help="start from the K heads with the largest activation-patching effect (noise, on the "
                        "selection prompts), each at its best position, instead of every head: far fewer node "
                        "sets on a large model")
    add_selection_options(p, "the search runs on")
    p.add_argument("--ref-replicates", type=whole(0, 100), default=DEFAULTS.ref_replicates,
                   help="reference-set replicates in the held-out interval (default "
                        f"{DEFAULTS.ref_replicates}; 0: prompts only)")
    p.set_defaults(positions=PositionScope.CIRCUIT.value, bootstrap=1000)
    # Said here because the figure a reader sees first must not be the one the search fitted.
    p.description = (p.description or "") + (
        "\n\nSelection apart from report: the search runs on --selection-n prompts drawn with --selection-seed "
        "and the proposed circuit's F(C)/F(M) is reported, with its 95% interval, on the --n prompts of --seed, "
        "which took no part in choosing it (the figure on the selection prompts is printed too, labelled).")


PATCH_HELP = """Activation patching per head and position, or path patching to receivers (circuit_core/patching.py).

Each prompt is paired with its corrupted twin (for IOI, the paper's p_ABC). Activation patching
(default): --direction noise puts one head's corrupted output into the clean run (effect 1: that
alone destroys the behaviour); denoise puts its clean output into the corrupted run (effect 1: that
alone restores it). Path patching (--receivers logits, or heads such as 7.3,8.6): each sender head's
corrupted output reaches only the receivers' inputs (--receiver-input q, k, v or qkv); every other
head is frozen to its clean output. Each receiver hears only senders in earlier layers, so receivers
may sit in several layers; senders in or after the last receiver's layer get NaN. Effects are shares of F(clean) - F(corrupted), with 95% intervals
(bootstrap over prompt pairs). Writes a JSON record (--out)."""


def cmd_patch(args) -> int:
    from .patching import activation_patching, paired_dataset, parse_receivers, path_patching
    from .storage import atomic_write_text
    import json

    methodology = methodology_from(args)
    receivers = parse_receivers(args.receivers) if args.receivers else None
    # Options that belong to the other kind of patching are refused, not ignored: a run costs minutes.
    if receivers is None and (args.receiver_input or args.receiver_position):
        raise UsageError("--receiver-input and --receiver-position are for path patching: add --receivers")
    if receivers == "logits" and (args.receiver_input or args.receiver_position):
        raise UsageError("--receivers logits reads the final residual at END: it takes no --receiver-input or "
                         "--receiver-position")
    if receivers is not None and args.direction:
        raise UsageError("path patching always noises (a sender's corrupted output in the clean run): drop --direction")
    if args.receiver_position and args.receiver_position not in task_roles(args.task):
        raise UsageError(f"--receiver-position {snippet(args.receiver_position)} is not a position of task "
                         f"{args.task} ({', '.join(task_roles(args.task))})")
    if Path(args.out).exists() and not args.overwrite:
        raise UsageError(f"{snippet(args.out)} exists; choose another --out, or pass --overwrite to replace it")
    model = open_model(args)
    dataset = paired_dataset(model, methodology)
    if receivers is None:
        r = activation_patching(model, dataset, args.direction or "noise", bootstrap=args.bootstrap, seed=args.seed,
                                progress=progress_bar("activation patching"), metric=methodology.metric)
    else:
        r = path_patching(model, dataset, receivers, args.receiver_input or "qkv", args.receiver_position,
                          bootstrap=args.bootstrap, seed=args.seed, progress=progress_bar("path patching"),
                          metric=methodology.metric)
    print(f"{'Path patching to ' + r.receivers if r.kind == 'path' else 'Activation patching (' + r.direction + ')'} "
          f"on {model.name}, task {r.task}, N={r.n}: F(clean) {r.F_clean:.3f}, F(corrupted) {r.F_corrupted:.3f}")
    frame = r.frame().dropna(subset=["effect"]).sort_values("effect", ascending=False).head(10)
    for row in frame.itertuples():
        print(f"  {row.name:>6} {row.position:<6} {row.effect:+.3f}  [{row.lo:+.3f}, {row.hi:+.3f}]")
    atomic_write_text(Path(args.out), json.dumps({**r.to_dict(), "model": model.describe(),
                                                  "methodology": methodology.to_dict()}, indent=1))
    print(f"Written to {args.out}")
    return 0


COMMANDS = {"faithfulness": cmd_faithfulness, "completeness": cmd_completeness, "minimality": cmd_minimality,
            "validate": cmd_validate, "discover": cmd_discover}


def cmd_convert(args) -> int:
    """EAP-IG interchange: our circuits to graph JSON and back, with what did not carry over."""
    import json

    from .interchange import to_eap_graph
    from .storage import atomic_write_text

    if Path(args.output).exists() and not args.overwrite:
        raise UsageError(f"{snippet(args.output)} exists; choose another output, or pass --overwrite to replace it")
    imported = load_any(args.input, position=args.position)
    for note in imported.warnings:
        print(f"note: {note}")
    c = imported.circuit
    if args.to == "circuit":
        c.save(args.output)
    else:
        cfg = imported.cfg or {"n_layers": args.n_layers or 1 + max(l for l, _ in c.heads),
                               "n_heads": args.n_heads or 1 + max(h for _, h in c.heads),
                               "parallel_attn_mlp": False, "d_model": args.d_model}
        atomic_write_text(args.output, json.dumps(to_eap_graph(c, cfg)))
    print(f"{args.to} JSON of '{c.name}' ({len(c.heads)} heads) written to {args.output}")
    return 0


COMMANDS["convert"] = cmd_convert
COMMANDS["patch"] = cmd_patch


def cmd_test(args) -> int:
    """Shi et al.'s formal tests (circuit_core/formal_tests.py): each null, statistic, p-value and verdict."""
    from .formal_tests import formal_tests, formal_tests_to_json

    model, circuit, ev = _evaluator(args)
    print(f"Formal tests of '{circuit.name}' ({_size(circuit)}) on {model.name}, α = {args.alpha:g}")
    print(f"  {methodology_line(ev)}")
    tests = _formal_tests(args, ev, circuit)
    _save(args, ev, circuit, {"tests": formal_tests_to_json(tests)})
    return 0


def _formal_tests(args, ev, circuit):
    """Run and print the formal tests (for `test` and `validate`)."""
    from .formal_tests import formal_tests

    tests = formal_tests(ev, circuit, alpha=args.alpha, n_random=args.n_random, epsilon=args.epsilon,
                         n_permutations=args.permutations, progress=progress_bar("formal tests"))
    print_formal_tests(tests)
    return tests


def print_formal_tests(tests) -> None:
    for t in tests:
        print(f"{t.name}\n  H0: {t.null}\n  {t.statistic_name} = {t.statistic:.4g}   p = {t.p_value:.4g}   "
              f"{t.verdict} at α = {t.alpha:g}\n  {t.meaning}")
        for r in t.details.get("heads", []):
            print(f"    {r['head']:<7}{r['class'][:19]:<20}effect {r['effect']:>8.3f}   p {r['p_raw']:.4f}   "
                  f"Holm {r['p_holm']:.4f}   {r['verdict']}")


def add_test_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", type=number(0, 1, low_open=True), default=0.05, help="level of every test (default 0.05)")
    p.add_argument("--epsilon", type=number(0, 10, low_open=True), default=0.1,
                   help="equivalence tolerance, as a share of |F(M)| (default 0.1)")
    p.add_argument("--n-random", type=whole(1, 100_000), default=100,
                   help="random circuits and (at least) random inflations of C (default 100; the inflations are "
                        "raised to |C|/alpha so that Holm can reject every head)")
    p.add_argument("--permutations", type=whole(1, 100_000), default=1000, help="HSIC permutations (default 1000)")


COMMANDS["test"] = cmd_test


CURVE_HELP = """Faithfulness as the circuit grows along a ranking of heads (circuit_core/curves.py), at MIB's fractions
(0.1% .. 100% of the heads, k = int(fraction x heads)), with MIB's CPR (area under f) and CMD (area between
f and 1), f = (F(top k) - F(∅)) / (F(M) - F(∅)); every point, CPR and CMD with a 95% interval (joint
bootstrap over prompts and reference replicates), beside the curve of random rankings. The ranking is made
on selection prompts (--selection-n, --selection-seed) and the curve measured on the report prompts
(--n, --seed). Heads are kept where --positions says: with 'circuit', the circuit's heads at their class's
position and every other head at every position."""


def _graph(args):
    """The EAP-IG graph whose head scores rank the heads (--ranking graph), read before the model loads."""
    if args.items == "edges" and args.ranking not in (None, "graph"):
        raise UsageError("--items edges ranks by the edge scores of an EAP-IG graph: --ranking graph --graph FILE")
    if args.items == "edges":
        args.ranking = "graph"
    if args.ranking != "graph":
        if args.graph:
            raise UsageError("--graph is for --ranking graph")
        return None
    if not (args.graph or args.circuit):
        raise UsageError("--ranking graph needs an EAP-IG graph: --graph FILE (or --circuit FILE when it is one)")
    graph = load_any(args.graph or args.circuit)
    if args.items == "edges":
        if not getattr(graph, "edge_scores", None):
            raise UsageError(f"{snippet(args.graph or args.circuit)} holds no scores on head -> head or head -> logits "
                             "edges to rank the edges by")
        return graph
    if not graph.head_scores:
        raise UsageError(f"{snippet(args.graph or args.circuit)} holds no per-head scores (node or edge scores of an "
                         "EAP-IG graph) to rank by; give one with --graph")
    return graph


def _ranking(args, ev, circuit, graph=None):
    """The ranking the curve follows, chosen on selection prompts apart from the report prompts."""
    from .curves import DEFAULT_SOURCE, rank_heads
    from .selection import selection_evaluator

    source = args.ranking or DEFAULT_SOURCE
    print(f"Ranking heads by {source}" + (" (the default: one forward and one backward pass)" if not args.ranking else ""))
    if graph is not None:
        graph.check_fits(ev.n_layers, ev.n_heads)
    sel = selection_evaluator(ev.model, ev.methodology, _selection(args))
    try:
        return rank_heads(ev, source, circuit, sel, absolute=args.absolute,
                          graph_scores=graph.head_scores if graph is not None else None)
    except (ValueError, NotImplementedError) as exc:
        raise UsageError(f"--ranking {source}: {exc}") from None


def print_curve(c, out=None) -> None:
    out = out or sys.stdout
    print(f"  {'fraction':>9}{'k':>6}{'f':>9}   95% interval" + ("      random orders (mean)" if c.baseline else ""),
          file=out)
    for i, p in enumerate(c.points):
        b = c.baseline.points[i] if c.baseline else None
        print(f"  {p.fraction:>9.1%}{p.k:>6}{p.f:>9.3f}   {fmt_ci(p.interval)}"
              + (f"   {b.f:>7.3f} {fmt_ci(b.interval)}" if b else ""), file=out)
    print(f"  CPR (area under f; higher is better)   {c.cpr.value:.3f} {fmt_ci(c.cpr.interval)}"
          + (f"   random: {c.baseline.cpr.value:.3f} {fmt_ci(c.baseline.cpr.interval)}" if c.baseline else ""), file=out)
    print(f"  CMD (area between f and 1; lower)      {c.cmd.value:.3f} {fmt_ci(c.cmd.interval)}"
          + (f"   random: {c.baseline.cmd.value:.3f} {fmt_ci(c.baseline.cmd.interval)}" if c.baseline else ""), file=out)
    if c.cpr_minus_baseline:
        print(f"  CPR - random CPR                       {c.cpr_minus_baseline.value:+.3f} "
              f"{fmt_ci(c.cpr_minus_baseline.interval)} (paired)", file=out)
    if c.undefined:
        print(f"  note: f is not a number: {c.undefined}", file=out)
    print(f"  heads kept: {c.positions}; intervals: {c.interval_method}", file=out)


def cmd_curve(args) -> int:
    import time

    from .curves import edge_curve, head_curve, model_edges, rank_edges_by_graph
    from .evaluate import build_evaluator

    methodology, circuit = prepare(args)
    graph = _graph(args)
    _selection(args)  # refused before the model loads
    model = open_model(args)
    circuit = open_circuit(args, model, circuit) if args.circuit else None
    ev = build_evaluator(model, methodology)
    start = time.perf_counter()
    if args.items == "edges":
        graph.check_fits(ev.n_layers, ev.n_heads)
        print("Ranking edges by the scores stored in the graph")
        ranking = rank_edges_by_graph(graph.edge_scores, model_edges(ev.n_layers, ev.n_heads), args.absolute)
    else:
        ranking = _ranking(args, ev, circuit, graph)
    print(f"  {ranking.note}; top 10: {', '.join(ranking.names()[:10])}")
    curve = edge_curve if args.items == "edges" else head_curve
    c = curve(ev, ranking, circuit, args.random_orders, progress=progress_bar("curve"))
    took = time.perf_counter() - start
    print(f"Faithfulness curve along the {c.ranking} ranking of {c.n_items} {args.items} on {model.name}"
          + (f" (circuit '{circuit.name}')" if circuit else ""))
    print(f"  {methodology_line(ev)}")
    print_curve(c)
    print(f"  {took:.1f} s (ranking and curve)")
    _save(args, ev, circuit, {"curve": {**c.to_dict(), "seconds": round(took, 2)}})
    return 0


def add_curve_options(p: argparse.ArgumentParser) -> None:
    from .curves import DEFAULT_SOURCE, RANDOM_ORDERS, SOURCES

    p.add_argument("--ranking", choices=SOURCES, default=None,
                   help=f"what orders the heads (default {DEFAULT_SOURCE}): attribution (EAP's gradient x activation "
                        "difference at the full model), activation (activation patching, noise; needs the task's "
                        "corrupted twins), discovery (circuit discovery's pruning order; costly), graph (the scores "
                        "stored in an EAP-IG graph: --graph, or --circuit when it is one)")
    p.add_argument("--graph", default=None, help="EAP-IG / MIB graph JSON whose per-head scores rank the heads")
    p.add_argument("--items", choices=("heads", "edges"), default="heads",
                   help="what the curve grows by: heads (default) or edges (head -> head at q/k/v and head -> logits; "
                        "ranked by an EAP-IG graph's edge scores, --graph; every other edge among the kept heads "
                        "removed)")
    p.add_argument("--absolute", action="store_true",
                   help="rank by |score| (MIB's abs=True, what its CMD table reads) instead of the signed score")
    p.add_argument("--random-orders", type=whole(0, 100), default=RANDOM_ORDERS,
                   help=f"random rankings averaged for the baseline curve (default {RANDOM_ORDERS}; 0: none)")
    add_selection_options(p, "the ranking is made on")
    p.description = CURVE_HELP


COMMANDS["curve"] = cmd_curve


def cmd_evidence(args) -> int:
    """Each class's evidence (circuit_core/evidence.py) on --n prompt pairs; the record's results.evidence."""
    from types import SimpleNamespace

    from .evidence import circuit_evidence
    from .patching import paired_dataset
    from .report import run_record, save_record

    methodology, circuit = prepare(args)
    model = open_model(args)
    circuit = open_circuit(args, model, circuit)
    prompts = tuple(int(x) for x in args.prompts.replace(",", " ").split())
    dataset = paired_dataset(model, methodology)
    e = circuit_evidence(model, dataset, circuit, prompts, bootstrap=args.bootstrap, seed=args.seed,
                         progress=progress_bar("edges"), metric=methodology.metric)
    print(f"Evidence for '{circuit.name}' on {model.name}, task {dataset.task}: {dataset.n} prompt pairs, "
          f"{e.n_tokens} name tokens, {e.n_sequences} random sequences; 95% intervals")
    for ce in e.classes:
        print(f"  {ce.name} ({', '.join(ce.heads)} at {ce.position})")
        for c in ce.copy:
            print(f"    {c.head:>6} {c.label:<20} {c.score:6.1%}  [{c.interval.lo:.1%}, {c.interval.hi:.1%}]")
        for r in ce.roles:
            print(f"    {r.head:>6} {r.metric:<20} {r.score:6.3f}  [{r.interval.lo:.3f}, {r.interval.hi:.3f}]")
        for x in ce.incoming:
            print(f"    {x.edge.label():<40} {x.effect:+.3f}  [{x.interval.lo:+.3f}, {x.interval.hi:+.3f}]")
    if args.out:
        ev = SimpleNamespace(methodology=methodology, model=model, dataset=dataset)  # what run_record reads
        print(f"Run record written to {save_record(run_record(ev, circuit, {'evidence': e.to_dict()}), args.out)}")
    return 0


COMMANDS["evidence"] = cmd_evidence


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m circuit_core",
                    description="Validate a transformer circuit by mean ablation (Wang et al. 2022).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("faithfulness", help="F(M), F(C), F(∅) and faithfulness with 95%% intervals")
    add_common(p)
    add_baseline_option(p)
    p = sub.add_parser("completeness", help="|F(C\\K) - F(M\\K)| for K = ∅, classes, random, greedy and your own")
    add_common(p)
    add_completeness_options(p)
    add_search_options(p)
    p = sub.add_parser("minimality", help="|F(C\\(K∪{v})) - F(C\\K)| for every head v, as %% of F(M)")
    add_common(p)
    add_minimality_options(p)
    add_search_options(p)
    p = sub.add_parser("validate", help="faithfulness, completeness and minimality in one run record")
    add_common(p)
    p.add_argument("--faithfulness-tolerance", type=number(0, 1000), default=20.0,
                   help="faithfulness passes when the 95%% interval of F(M) - F(C) is within this %% of |F(M)| "
                        "(default 20)")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when any criterion fails (its whole interval on the wrong side)")
    p.add_argument("--no-tests", action="store_true",
                   help="skip the formal tests (on GPT-2 small on a CPU they cost about 100 forward passes)")
    add_test_options(p)
    add_baseline_option(p)
    add_completeness_options(p)
    add_minimality_options(p)
    add_search_options(p)
    p = sub.add_parser("discover", help="propose a circuit by greedy pruning and write it as JSON",
                       description=DISCOVER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_discover_options(p)
    p = sub.add_parser("patch", help="activation patching per head and position, or path patching to receivers",
                       description=PATCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help=f"hub name, local Hugging Face folder, or 'demo' (default: {DEFAULT_MODEL})")
    add_task_options(p)
    p.add_argument("--n", type=whole(1, MAX_N), default=100, help=f"prompt pairs, 1 to {MAX_N:,} (default 100)")
    p.add_argument("--seed", type=whole(0, MAX_SEED), default=0, help="dataset and bootstrap seed (default 0)")
    p.add_argument("--prepend-bos", action="store_true", help="prepend BOS to tokenizers that do not add their own (GPT-2, Pythia, Qwen2; off for GPT-2 as in "
                        "the paper); Llama's and Gemma's prompts always start with their BOS")
    p.add_argument("--direction", choices=["noise", "denoise"], default=None, help="activation patching (default noise)")
    p.add_argument("--receivers", type=receivers_arg, default=None,
                   help="path patching: 'logits' or receiver heads, e.g. 7.3,8.6")
    p.add_argument("--receiver-input", choices=["q", "k", "v", "qkv"], default=None,
                   help="path patching into heads: which of their inputs (default qkv)")
    p.add_argument("--receiver-position", default=None,
                   help="path patching into heads: patch their input at this position only (default: every position)")
    p.add_argument("--bootstrap", type=whole(1, 100_000), default=1000, help="bootstrap resamples (default 1000)")
    add_metric_option(p)
    p.add_argument("--device", type=device, default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--dtype", type=dtype_arg, default=None,
                   help="the weights' floating-point type: float32 (default), bfloat16 or float16 (half the "
                        "memory; every figure within the README's stated tolerance of float32; on a GPU, faster)")
    p.add_argument("--out", type=output_file, required=True, help="write the result JSON here (a new file)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(ablation="mean", positions=PositionScope.CIRCUIT.value, ref_per_group=0, mode="mixed")
    p = sub.add_parser("convert", help="convert a circuit between this tool's JSON and EAP-IG / MIB graph JSON")
    p.add_argument("input", help="a circuit file of either kind")
    p.add_argument("output", type=output_file, help="the file to write (a new file)")
    p.add_argument("--to", choices=["eap-ig", "circuit"], default="eap-ig",
                   help="eap-ig: graph JSON with every node and edge (default); circuit: this tool's JSON")
    p.add_argument("--n-layers", type=whole(1, 1000), default=None, help="the model's layers (eap-ig; default: "
                   "from the circuit's heads)")
    p.add_argument("--n-heads", type=whole(1, 1000), default=None, help="heads per layer (eap-ig)")
    p.add_argument("--d-model", type=whole(1, 100_000), default=768, help="d_model in the graph's cfg (default 768)")
    p.add_argument("--position", default="END", help="the position imported heads are kept at (default END)")
    p.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    p = sub.add_parser("curve", help="faithfulness as the circuit grows along a ranking of heads; MIB's CPR and CMD",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p, circuit_required=False)
    add_curve_options(p)
    p = sub.add_parser("test", help="formal hypothesis tests (Shi et al. 2024): equivalence, independence, "
                                    "minimality, beats random circuits; null, statistic, p-value, verdict")
    add_common(p)
    add_test_options(p)
    p = sub.add_parser("evidence", help="each class's attention, copy scores, role scores and incoming edges' "
                                        "path-patching effects, with 95%% intervals")
    add_common(p)
    p.add_argument("--prompts", default="0,1,2", help="prompts whose attention is shown one by one (default 0,1,2)")
    p.set_defaults(n=20, ref_per_group=0)  # prompt pairs: every edge costs hooked passes over them
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UsageError, ModelLoadError, CircuitError, TaskError, PatchingError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:  # paths are checked up front, so this is what changed since: a full disk, a removed folder
        where = f" ({snippet(str(exc.filename), 200)})" if exc.filename else ""
        print(f"error: {' '.join(str(exc.strerror or exc).split())}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
