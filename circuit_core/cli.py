"""Command line: `python -m circuit_core COMMAND ...`. Prints readable tables, writes run records."""
from __future__ import annotations

import argparse
import sys

from .ablation import Ablation, Methodology, PositionScope
from .circuit import CircuitError, load_circuit
from .models import DEFAULT_MODEL, ModelLoadError, load_model, load_model_or_demo
from .tasks import TASKS, TaskError, task_roles
from .tasks.ioi import MODES


def add_common(p: argparse.ArgumentParser, circuit_required: bool = True) -> None:
    p.add_argument("--model", default=None,
                   help=f"hub name (e.g. gpt2, gpt2-medium), local Hugging Face folder, or 'demo' "
                        f"(default: {DEFAULT_MODEL}, falling back to the bundled demo when it cannot be loaded)")
    p.add_argument("--circuit", required=circuit_required, help="circuit JSON file")
    p.add_argument("--task", default="ioi", choices=TASKS)
    p.add_argument("--n", type=int, default=100, help="number of prompts (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", default="mixed", choices=MODES, help="template order(s)")
    p.add_argument("--prepend-bos", action="store_true", help="prepend BOS (off for GPT-2, as in the paper)")
    p.add_argument("--ablation", default="mean", choices=[a.value for a in Ablation])
    p.add_argument("--positions", default="circuit", choices=[s.value for s in PositionScope])
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    p.add_argument("--out", default=None, help="write the run record (JSON) here")


def methodology_from(args) -> Methodology:
    return Methodology(task=args.task, n=args.n, seed=args.seed, mode=args.mode, prepend_bos=args.prepend_bos,
                       ablation=args.ablation, positions=args.positions, bootstrap=args.bootstrap)


def open_model(args):
    if args.model is None:
        model, notice = load_model_or_demo(DEFAULT_MODEL, args.device)
        if notice:
            print(notice, file=sys.stderr)
        return model
    return load_model(args.model, args.device)


def open_circuit(args, model):
    circuit = load_circuit(args.circuit)
    circuit.validate(model.n_layers, model.n_heads, task_roles(args.task))
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


def describe_methodology(m: Methodology, dataset=None) -> str:
    groups = f", >= {dataset.meta['min_group_size']} prompts per group" if dataset is not None else ""
    abl = {"mean": "mean over reference prompts of the same template", "mean-pooled": "mean over all reference prompts",
           "resample": "resampled reference prompt", "zero": "zero"}[m.ablation]
    pos = "circuit heads kept at their class positions" if m.positions == "circuit" else "circuit heads kept at all positions"
    return f"N={m.n}, seed {m.seed}, {m.mode} templates{groups}; ablation: {abl}; {pos}"


def fmt_ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def print_faithfulness(f, out=sys.stdout) -> None:
    rows = [("F(M)", "F_model"), ("F(C)", "F_circuit"), ("F(∅)", "F_empty"), ("F(M) - F(C)", "gap"),
            ("F(C) / F(M)", "ratio"), ("(F(C)-F(∅)) / (F(M)-F(∅))", "normalized")]
    print(f"  {'quantity':<28}{'value':>9}   95% interval", file=out)
    for label, key in rows:
        print(f"  {label:<28}{f.stats[key]:>9.3f}   {fmt_ci(f.intervals[key])}", file=out)
    print(f"  {'accuracy (IO > S): model':<28}{f.stats['accuracy_model']:>9.1%}", file=out)
    print(f"  {'accuracy (IO > S): circuit':<28}{f.stats['accuracy_circuit']:>9.1%}", file=out)
    for order, s in f.by_order.items():
        print(f"  {order} (n={s['n']}): F(M) {s['F_model']:.3f}  F(C) {s['F_circuit']:.3f}  "
              f"F(C)/F(M) {s['ratio']:.3f}", file=out)


def cmd_faithfulness(args) -> int:
    from .criteria import faithfulness
    from .evaluate import build_evaluator
    from .report import run_record, save_record

    model = open_model(args)
    circuit = open_circuit(args, model)
    ev = build_evaluator(model, methodology_from(args))
    f = faithfulness(ev, circuit, progress_bar("faithfulness"))
    print(f"Faithfulness of '{circuit.name}' ({len(circuit.heads)} heads) on {model.name}")
    print(f"  {describe_methodology(ev.methodology, ev.dataset)}")
    print_faithfulness(f)
    if args.out:
        path = save_record(run_record(ev, circuit, {"faithfulness": f.to_dict(), **_headline(f)}), args.out)
        print(f"Run record written to {path}")
    return 0


def _headline(f) -> dict:
    # Top-level copies so a reader finds the headline numbers without knowing the criteria layout.
    return {"F_model": f.stats["F_model"], "F_circuit": f.stats["F_circuit"], "F_empty": f.stats["F_empty"],
            "per_prompt": {k: v.tolist() for k, v in f.per_prompt.items()}}


COMMANDS = {"faithfulness": cmd_faithfulness}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m circuit_core",
                                     description="Validate a transformer circuit by mean ablation (Wang et al. 2022).")
    sub = parser.add_subparsers(dest="command", required=True)
    add_common(sub.add_parser("faithfulness", help="F(M), F(C), F(∅) and faithfulness with 95%% intervals"))
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ModelLoadError, CircuitError, TaskError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
