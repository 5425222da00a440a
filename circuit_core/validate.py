"""Every criterion on one circuit, once: faithfulness, completeness and minimality (Wang et al. 2022),
with the random-circuit baseline and the formal tests (Shi et al. 2024) when asked, and the verdicts.

The CLI's `validate`, the dashboard's report and its Compare page all run `validate`, so one set of
defaults (`ValidationSpec`) decides which K sets, thresholds and tolerances a circuit is judged by.

    >>> v = validate(evaluator, circuit)                     # the defaults
    >>> v.verdicts["overall"], v.faithfulness.ratio
    >>> save_record(v.record(), "run.json")
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .circuit import Circuit
from .completeness import TOLERANCE_PCT
from .search import Progress, StopCheck
from .selection import Selection
from .verdicts import FAITHFULNESS_TOLERANCE_PCT


@dataclass(frozen=True)
class ValidationSpec:
    """What `validate` runs, and against which thresholds.

    Completeness: K = ∅, each class (classes), n_random random subsets, user_k, and the greedy search
    (greedy_runs > 0; off by default: it costs greedy_runs × greedy_steps × greedy_k sets, chosen on
    `selection` prompts). Minimality: K per head from k_source, a head passes beyond threshold_pct % of
    |F(M)| (search_runs: the minimality search's runs when k_source = 'search'). n_baseline random
    circuits of C's shape (0: none); formal_tests: Shi et al.'s four tests with their own settings.
    reference_noise: intervals include the reference set's noise (one evaluation per replicate)."""

    # completeness
    classes: bool = True
    n_random: int = 10
    user_k: tuple = ()
    greedy_k: int = 10
    greedy_steps: int = 10
    greedy_runs: int = 0
    tolerance_pct: float = TOLERANCE_PCT
    # minimality
    k_source: str = "file"
    threshold_pct: float = 1.0
    search_runs: int = 1
    # faithfulness's verdict: the gap's interval within ± this % of |F(M)|
    faithfulness_tolerance_pct: float = FAITHFULNESS_TOLERANCE_PCT
    selection: Selection | None = None  # where the searches choose (None: selection.py's default)
    reference_noise: bool = True
    n_baseline: int = 0
    formal_tests: bool = False
    alpha: float = 0.05
    test_n_random: int = 100
    epsilon: float = 0.1
    permutations: int = 1000


@dataclass(frozen=True, eq=False)
class Validation:
    """The results of `validate` on one evaluator and circuit, typed; `record()` is the run record."""

    evaluator: object
    circuit: Circuit
    spec: ValidationSpec
    faithfulness: object  # criteria.Faithfulness
    completeness: object  # completeness.Completeness
    minimality: object  # minimality.Minimality
    baseline: object | None = None  # baseline.Baseline
    tests: list | None = None  # [formal_tests.FormalTest]
    verdicts: dict = field(default_factory=dict)  # verdicts.verdict_summary

    @property
    def cancelled(self) -> bool:
        return bool(self.completeness.cancelled or self.minimality.cancelled)

    def results(self) -> dict:
        """The record's `results`: every criterion's `to_dict()`, the verdicts, and top-level copies of the
        headline figures so a reader finds them without knowing the criteria layout."""
        from .formal_tests import formal_tests_to_json

        f = self.faithfulness
        out = {"faithfulness": f.to_dict(), "completeness": self.completeness.to_dict(),
               "minimality": self.minimality.to_dict(), "verdicts": self.verdicts}
        if self.tests:
            out["tests"] = formal_tests_to_json(self.tests)
        if self.baseline is not None:
            out["baseline"] = self.baseline.to_dict()
        return {**out, **headline(f)}

    def record(self) -> dict:
        from .report import run_record

        return run_record(self.evaluator, self.circuit, self.results())


def headline(f) -> dict:
    """The record's top-level copies of F(M), F(C), F(∅) and the per-prompt values behind them."""
    return {"F_model": f.F_model, "F_circuit": f.F_circuit, "F_empty": f.F_empty,
            "per_prompt": {k: v.tolist() for k, v in f.per_prompt.items()}}


Stage = Callable[[str], Progress | None]  # a criterion's name -> its own progress callback


def validate(evaluator, circuit: Circuit, spec: ValidationSpec = ValidationSpec(), progress: Progress | None = None,
             should_stop: StopCheck | None = None, stage_progress: Stage | None = None) -> Validation:
    """Faithfulness, completeness, minimality, then (as `spec` asks) the baseline and the formal tests, on
    `evaluator` (it memoises node sets, so what one criterion computed the next does not recompute).

    progress(done, total) counts criteria; stage_progress(name) may instead give each criterion a progress
    callback of its own (the CLI's bars). should_stop as each criterion takes it: a stopped search returns
    its partial result (`cancelled`), a stopped evaluation raises evaluate.Cancelled."""
    from .baseline import random_circuit_baseline
    from .completeness import completeness
    from .criteria import faithfulness
    from .formal_tests import formal_tests
    from .minimality import minimality
    from .verdicts import verdict_summary

    names = ["faithfulness", "completeness", "minimality"] + (["random circuits"] if spec.n_baseline else []) + \
        (["formal tests"] if spec.formal_tests else [])
    own = stage_progress or (lambda name: None)

    def tick(i: int) -> None:
        if progress is not None:
            progress(i, len(names))

    tick(0)
    f = faithfulness(evaluator, circuit, own("faithfulness"), reference_noise=spec.reference_noise,
                     should_stop=should_stop)
    tick(1)
    c = completeness(evaluator, circuit, classes=spec.classes, n_random=spec.n_random, user_k=spec.user_k,
                     greedy_k=spec.greedy_k, greedy_steps=spec.greedy_steps, greedy_runs=spec.greedy_runs,
                     progress=own("completeness"), should_stop=should_stop, reference_noise=spec.reference_noise,
                     selection=spec.selection, tolerance_pct=spec.tolerance_pct)
    tick(2)
    m = minimality(evaluator, circuit, k_source=spec.k_source, threshold_pct=spec.threshold_pct,
                   search_k=spec.greedy_k, search_steps=spec.greedy_steps, search_runs=spec.search_runs,
                   progress=own("minimality"), should_stop=should_stop, reference_noise=spec.reference_noise,
                   selection=spec.selection)
    tick(3)
    b = random_circuit_baseline(evaluator, circuit, spec.n_baseline, progress=own("random circuits"),
                                should_stop=should_stop) if spec.n_baseline else None
    if b is not None:
        tick(4)
    tests = formal_tests(evaluator, circuit, alpha=spec.alpha, n_random=spec.test_n_random, epsilon=spec.epsilon,
                         n_permutations=spec.permutations, progress=own("formal tests"),
                         should_stop=should_stop) if spec.formal_tests else None
    tick(len(names))
    verdicts = verdict_summary(f, c, m, spec.faithfulness_tolerance_pct, evaluator.methodology.metric)
    return Validation(evaluator, circuit, spec, f, c, m, b, tests, verdicts)


# --- the methodology in words ----------------------------------------------------------------------------
ABLATION_WORDS = {"mean": "mean ablation per {group}", "mean-pooled": "pooled mean ablation",
                  "resample": "resample ablation", "zero": "zero ablation"}


def describe_methodology(methodology, model_name: str | None = None, circuit: Circuit | None = None,
                         min_group_size: int | None = None) -> str:
    """The methodology in one line, as every page's caption and the CLI print it: the model and the
    circuit when given, the prompts (and the smallest group, when known), the references, the ablation
    and where the circuit's heads are kept."""
    from .metrics import metric_label
    from .tasks import get_task

    m, task = methodology, get_task(methodology.task)
    ref = f"{m.ref_per_group} reference prompts per group" if m.ref_per_group else f"each prompt's {task.twin_label}"
    if m.ref_replicates:
        how = ", to first order" if m.ref_noise == "linear" and m.ablation != "resample" else ""
        ref += f" ({m.ref_replicates} replicates in the intervals{how})"
    prompts = f"N={m.n}, seed {m.seed}, {m.mode}" + (f", ≥ {min_group_size} prompts per group"
                                                     if min_group_size is not None else "")
    parts = ([model_name] if model_name else []) + [m.task.upper(), prompts, ref,
                                                     ABLATION_WORDS[m.ablation].format(group=task.group_label[0]),
                                                     "circuit positions" if m.positions == "circuit" else "all positions"]
    if getattr(m, "metric", "logit_diff") != "logit_diff":  # the default goes unsaid, as it always did
        parts.append(f"F = {metric_label(m.metric)}")
    if circuit is not None:
        parts.append(f"circuit '{circuit.name}' ({len(circuit.heads)} heads)")
    return " · ".join(parts)


__all__ = ["ValidationSpec", "Validation", "validate", "describe_methodology", "headline"]
