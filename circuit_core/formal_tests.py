"""Formal hypothesis tests of a circuit (Shi et al. 2024, "Hypothesis Testing the Circuit Hypothesis in
LLMs", NeurIPS; their code: github.com/blei-lab/circuitry, circuitry/hypothesis_testing/).

Each test states a null hypothesis about the per-prompt logit differences f_S of node sets S
(`Evaluator.logit_diffs`), computes a statistic, a p-value and a verdict at level α ("reject" /
"not rejected"); `passes` and `meaning` say what the verdict means for the circuit.

1. equivalence_test   H0: |E[f_C − f_M]| ≥ ε·|F(M)| (C and M differ by more than the tolerance).
                      Two one-sided paired t-tests (TOST) on d = f_C − f_M. Reject → equivalent → passes.
2. independence_test  H0: f_{M\\C} is independent of f_M over prompts (M\\C: C's nodes ablated, the rest
                      intact). HSIC permutation test. Reject → the rest of the model still tracks the
                      model's behaviour → fails.
3. minimality_test    per head v, H0: v's knock-out effect |F(C) − F(C\\{v})| is no larger than that of a
                      random node u added to C, |F(C ∪ {u}) − F(C)| ("random inflations of C"). Rank
                      p-values, Holm-adjusted across heads; passes when every head is rejected.
4. beats_random_test  H0: F(C) is no larger than F of a random circuit of C's shape (as many heads in each
                      layer, at C's positions in that layer: `baseline.random_circuits`). Rank p-value;
                      reject → passes.
`formal_tests` runs all four (one batched evaluator call per test) with progress and stop hooks.

Where we depart from Shi et al., and why:
- Equivalence. They count prompts where the circuit beats the model (a sign statistic) and test
  H0: |P(Δ > 0) − ½| ≤ ε, so a rejection means *not* equivalent. Here the null is the non-equivalence,
  so "passes" must be earned at level α (the burden of proof is on the circuit), and the tolerance is
  on the logit difference itself, relative to |F(M)| as the dashboard's faithfulness is: a sign
  statistic ignores how far apart C and M are (a circuit 0.001 above M on every prompt has
  P(Δ > 0) = 1 and fails), and it is undefined where f_C = f_M on every prompt (C = M). Their share of
  prompts with f_C > f_M is kept in `details`. (Their code also passes the mean score difference where
  that share belongs.) The margin takes F(M) as known.
- Independence. Gaussian kernels with the median-heuristic bandwidth of each variable (their code uses
  one bandwidth, the median distance between X and Y, which for outputs of different scales can make
  one kernel nearly constant), and the +1 correction, (1 + #{null ≥ observed}) / (1 + B), which keeps
  a Monte Carlo p-value valid at finite B.
- Minimality and beats-random. Rank p-values, exact when C's value is exchangeable with the reference
  draws under the null, instead of their binomial test of "C beats the q = 0.9 quantile of the reference"
  (that p-value is kept in `details` as `quantile_test_p`). Minimality is per head (our nodes), not per
  edge, with Holm's correction across heads (their code leaves a correction as a TODO). Holm can reject
  all m heads only if B + 1 ≥ m/α, so the inflations are raised past that number when n_random is lower;
  the intersection-union p-value for "every head matters" (the largest raw p, no correction needed) is
  in `details` too. An added node is a head outside C kept at the position of a random head of C.
- Beats-random ranks F, the dashboard's quantity; they rank the faithfulness loss E[(f_R − f_M)²].
- Every test is conditional on the reference set (the ablation values): reference replicates are not
  used. Their partial-necessity test is not here.

    >>> tests = formal_tests(evaluator, circuit, alpha=0.05, n_random=100)
    >>> [(t.name, t.p_value, t.verdict) for t in tests]
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from .ablation import NodeSet
from .baseline import random_circuits
from .circuit import ALL_POSITIONS, Circuit, head_name
from .completeness import c_minus
from .criteria import circuit_node_set, removed_edges
from .progress import Cancelled, Progress, StopCheck, stop_requested


REJECT, NOT_REJECTED = "reject", "not rejected"


@dataclass(frozen=True)
class FormalTest:
    """One test's result. `passes`: what the verdict means for the circuit (None: the test could not run)."""

    name: str
    null: str  # the null hypothesis, in words
    statistic: float
    p_value: float
    alpha: float
    verdict: str  # "reject" / "not rejected"
    passes: bool | None
    statistic_name: str = ""
    meaning: str = ""  # the verdict for the circuit, in words
    details: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "FormalTest":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def formal_tests_to_json(tests: Sequence[FormalTest]) -> list[dict]:
    """JSON-ready list for a run record's `results.tests`."""
    return [t.to_dict() for t in tests]


def _plain(x):
    """numpy scalars and arrays to plain Python, recursively (a record is JSON)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    return x


def _verdict(p: float, alpha: float) -> str:
    return REJECT if p <= alpha else NOT_REJECTED


# --- statistics on plain arrays (tested on synthetic data) --------------------------------------------
def rank_p_value(observed: float, reference: np.ndarray) -> float:
    """(1 + #{reference ≥ observed}) / (1 + B): a valid p-value when `observed` is exchangeable with the
    B reference draws under the null (ties count against the observed value)."""
    reference = np.asarray(reference, dtype=float)
    tol = 1e-12 * max(1.0, abs(observed))  # round-off must not break a tie
    return float((1 + np.sum(reference >= observed - tol)) / (1 + len(reference)))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error over the m tests), in the input order."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def tost_paired(d: np.ndarray, margin: float) -> dict:
    """Two one-sided t-tests of H0: |E[d]| ≥ margin against |E[d]| < margin.

    p = max(P(T ≥ t_lower), P(T ≤ t_upper)), T ~ t(n − 1); t = min(t_lower, −t_upper) (large: equivalent).
    With no spread (every d equal) the mean is known: p = 0 inside the margin, 1 outside."""
    from scipy import stats  # scikit-learn's dependency

    d = np.asarray(d, dtype=float)
    n, mean = len(d), float(np.mean(d))
    se = float(np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    if margin <= 0 or n < 2:
        return {"t": float("nan"), "p": 1.0, "mean": mean, "se": se, "t_lower": float("nan"), "t_upper": float("nan")}
    if se == 0:
        inside = abs(mean) < margin
        return {"t": math.inf if inside else -math.inf, "p": 0.0 if inside else 1.0, "mean": mean, "se": 0.0,
                "t_lower": math.inf, "t_upper": -math.inf}
    t_lower, t_upper = (mean + margin) / se, (mean - margin) / se
    p = max(float(stats.t.sf(t_lower, n - 1)), float(stats.t.cdf(t_upper, n - 1)))
    return {"t": min(t_lower, -t_upper), "p": p, "mean": mean, "se": se, "t_lower": t_lower, "t_upper": t_upper}


def _bandwidth(x: np.ndarray) -> float:
    """Median of the pairwise distances (the median heuristic); the mean of the non-zero ones if the
    median is 0 (many ties); 0 for a constant."""
    dist = np.abs(x[:, None] - x[None, :])[np.triu_indices(len(x), 1)]
    med = float(np.median(dist)) if dist.size else 0.0
    if med > 0:
        return med
    nonzero = dist[dist > 0]
    return float(nonzero.mean()) if nonzero.size else 0.0


def _centred_gram(x: np.ndarray, sigma: float) -> np.ndarray:
    k = np.exp(-((x[:, None] - x[None, :]) ** 2) / (2 * sigma**2))
    return k - k.mean(0, keepdims=True) - k.mean(1, keepdims=True) + k.mean()  # H K H


def hsic_test(x: np.ndarray, y: np.ndarray, n_permutations: int = 1000, seed: int = 0) -> dict:
    """HSIC (Gretton et al. 2007) of x and y with Gaussian kernels, and its permutation p-value.

    HSIC = tr(K̃ L̃) / (n − 1)² with K̃ = HKH (Shi et al.'s normalisation); each permutation π of y gives
    tr(K̃ L̃[π, π]). A constant variable is independent of anything: HSIC 0, p = 1."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    sx, sy = _bandwidth(x), _bandwidth(y)
    if sx == 0 or sy == 0 or n < 3:
        return {"hsic": 0.0, "p": 1.0, "sigma_x": sx, "sigma_y": sy, "null_q95": 0.0}
    kc, lc = _centred_gram(x, sx), _centred_gram(y, sy)
    scale = (n - 1) ** 2
    observed = float(np.sum(kc * lc) / scale)
    rng = np.random.default_rng([seed, 13])
    null = np.empty(n_permutations)
    for b in range(n_permutations):
        perm = rng.permutation(n)
        null[b] = np.sum(kc * lc[np.ix_(perm, perm)]) / scale
    return {"hsic": observed, "p": rank_p_value(observed, null), "sigma_x": sx, "sigma_y": sy,
            "null_q95": float(np.quantile(null, 0.95)) if n_permutations else float("nan")}


def quantile_test_p(wins: int, n: int, q: float = 0.9) -> float:
    """Shi et al.'s form: H0: P(C beats a reference draw) ≤ q, from `wins` of n (binomial, one-sided)."""
    from scipy import stats

    return float(stats.binomtest(int(wins), n, q, alternative="greater").pvalue) if n else float("nan")


# --- the tests ---------------------------------------------------------------------------------------
def _diffs(evaluator, sets: Sequence[NodeSet], progress: Progress | None, should_stop: StopCheck | None) -> np.ndarray:
    return evaluator.logit_diffs(list(sets), progress, should_stop).numpy()


def equivalence_test(evaluator, circuit: Circuit, *, epsilon: float = 0.1, alpha: float = 0.05,
                     progress: Progress | None = None, should_stop: StopCheck | None = None) -> FormalTest:
    """TOST on d = f_C − f_M with margin ε·|F(M)|: reject → C and M agree within the tolerance."""
    pos = evaluator.methodology.positions
    kl = getattr(evaluator.methodology, "metric", "logit_diff") == "kl"
    sets = [NodeSet.model(), circuit_node_set(circuit, pos)] + ([NodeSet.empty()] if kl else [])
    f = _diffs(evaluator, sets, progress, should_stop)
    f_model, d = float(f[0].mean()), f[1] - f[0]
    # the margin's scale: |F(M)|, or under KL (F(M) = 0) F(∅) − F(M)
    scale, scale_name = (float(f[2].mean()) - f_model, "F(∅) − F(M)") if kl else (abs(f_model), "|F(M)|")
    margin = epsilon * abs(scale)
    r = tost_paired(d, margin)
    verdict = _verdict(r["p"], alpha)
    half = _t_quantile(1 - alpha, len(d) - 1) * r["se"] if r["se"] == r["se"] else float("nan")
    rel = f"{epsilon:.0%} of {scale_name} = {margin:.3f}"
    return FormalTest(
        "equivalence", f"the circuit and the model differ by at least ε = {rel}: |E[f_C − f_M]| ≥ {margin:.3f}",
        r["t"], r["p"], alpha, verdict, verdict == REJECT, "TOST t = min(t_lower, −t_upper)",
        (f"passes: C and M agree within ±{rel} ({1 - 2 * alpha:.0%} interval of the mean difference inside the margin)"
         if verdict == REJECT else f"fails: not shown that C and M agree within ±{rel}"),
        {"epsilon": epsilon, "margin": margin, "F_model": f_model, "F_circuit": float(f[1].mean()),
         "mean_difference": r["mean"], "relative_difference": r["mean"] / abs(scale) if scale else float("nan"),
         "se": r["se"], "t_lower": r["t_lower"], "t_upper": r["t_upper"], "n": len(d),
         "interval": [r["mean"] - half, r["mean"] + half], "interval_level": 1 - 2 * alpha,
         "share_circuit_above_model": float(np.mean(d > 0)), "share_tied": float(np.mean(d == 0))})


def _t_quantile(q: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df)) if df > 0 else float("nan")


def independence_test(evaluator, circuit: Circuit, *, n_permutations: int = 1000, seed: int | None = None,
                      alpha: float = 0.05, progress: Progress | None = None,
                      should_stop: StopCheck | None = None) -> FormalTest:
    """HSIC permutation test of f_{M\\C} against f_M: reject → M\\C still carries the task → fails."""
    meth = evaluator.methodology
    seed = meth.seed if seed is None else seed
    sets = [NodeSet.model(), NodeSet(circuit.nodes(meth.positions), complement=True, label="M\\C")]
    f = _diffs(evaluator, sets, progress, should_stop)
    r = hsic_test(f[1], f[0], n_permutations, seed)
    verdict = _verdict(r["p"], alpha)
    return FormalTest(
        "independence", "the output of M\\C (the model with C's nodes ablated) is independent of the model's "
                        "output, prompt by prompt", r["hsic"], r["p"], alpha, verdict, verdict == NOT_REJECTED, "HSIC",
        ("fails: the model without C still follows the model's behaviour prompt by prompt (C is not all of it)"
         if verdict == REJECT else "passes: no evidence that the model without C still follows the model's behaviour"),
        {"F_model": float(f[0].mean()), "F_complement": float(f[1].mean()), "n_permutations": n_permutations,
         "seed": seed, "sigma_complement": r["sigma_x"], "sigma_model": r["sigma_y"], "null_q95": r["null_q95"],
         "pearson_r": _pearson(f[1], f[0]), "n": int(f.shape[1])})


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1]) if np.std(x) > 0 and np.std(y) > 0 else 0.0


def inflation_nodes(circuit: Circuit, n_layers: int, n_heads: int, count: int, seed: int,
                    positions: str = "circuit") -> list[tuple[int, int, str]]:
    """`count` random nodes to add to C, drawn with replacement: a head outside C (uniform), kept at the
    position of a uniformly drawn head of C (so positions are as frequent as in C)."""
    inside = set(circuit.heads)
    outside = [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in inside]
    roles = [c.position if positions == "circuit" else ALL_POSITIONS for c in circuit.classes for _ in c.heads]
    if not outside or not roles:
        return []
    rng = np.random.default_rng([seed, 11])
    heads, at = rng.integers(len(outside), size=count), rng.integers(len(roles), size=count)
    return [(*outside[i], roles[j]) for i, j in zip(heads.tolist(), at.tolist())]


def n_inflations(m: int, n_random: int, alpha: float) -> int:
    """n_random, raised where needed so that Holm can reject all m heads: m / (B + 1) < α."""
    return max(n_random, math.floor(m / alpha) if m else 0)


def minimality_test(evaluator, circuit: Circuit, *, n_random: int = 100, seed: int | None = None,
                    alpha: float = 0.05, progress: Progress | None = None,
                    should_stop: StopCheck | None = None) -> FormalTest:
    """Each head's knock-out effect ranked among random inflations' (Holm across heads). The number of
    inflations is raised when lower than m/α (`n_inflations`), so that every head can be rejected."""
    meth = evaluator.methodology
    seed = meth.seed if seed is None else seed
    heads = circuit.heads
    m = len(heads)
    count = n_inflations(m, n_random, alpha)
    extra = inflation_nodes(circuit, evaluator.n_layers, evaluator.n_heads, count, seed, meth.positions)
    null = "some head v of C matters no more than a random head added to C: |F(C) − F(C\\{v})| is no larger " \
           "than |F(C ∪ {u}) − F(C)| for a random node u outside C"
    if not m or not extra:
        why = "the circuit has no heads" if not m else "every head of the model is in C: nothing to add"
        return FormalTest("minimality", null, float("nan"), float("nan"), alpha, NOT_REJECTED, None,
                          "weakest head's |F(C) − F(C\\{v})|", f"not run: {why}", {"skipped": why})
    nodes = circuit.nodes(meth.positions)
    removed = removed_edges(circuit)
    sets = ([circuit_node_set(circuit, meth.positions)] + [c_minus(circuit, {v}, meth.positions) for v in heads]
            + [NodeSet(nodes | {u}, label="C+" + _node_name(u), removed_edges=removed) for u in extra])
    F = _diffs(evaluator, sets, progress, should_stop).mean(1)
    effects, reference = np.abs(F[0] - F[1 : 1 + m]), np.abs(F[1 + m :] - F[0])
    raw = np.array([rank_p_value(e, reference) for e in effects])
    adjusted = holm(raw)
    needed = adjusted <= alpha
    weakest = int(np.argmax(adjusted))
    p = float(adjusted[weakest])  # the circuit passes iff every head is rejected after Holm
    verdict = _verdict(p, alpha)
    rows = [{"head": head_name(v), "class": circuit.class_of(v).name, "effect": float(e), "p_raw": float(pr),
             "p_holm": float(pa), "verdict": _verdict(pa, alpha), "needed": bool(k)}
            for v, e, pr, pa, k in zip(heads, effects, raw, adjusted, needed)]
    weak = [r["head"] for r in rows if not r["needed"]]
    return FormalTest(
        "minimality", null, float(effects[weakest]), p, alpha, verdict, verdict == REJECT,
        "weakest head's |F(C) − F(C\\{v})|",
        (f"passes: each of the {m} heads matters more than a random head added to C (Holm, α = {alpha:g})"
         if verdict == REJECT else
         f"fails: {len(weak)} of {m} heads not shown to matter more than a random added head: {', '.join(weak)}"),
        {"heads": rows, "F_circuit": float(F[0]), "n_inflations": count, "n_distinct_inflations": len(set(extra)),
         "n_random_asked": n_random, "seed": seed,
         "reference_effects": reference, "inflations": [_node_name(u) for u in extra],
         "reference_q95": float(np.quantile(reference, 0.95)),
         "p_all_heads_iut": float(raw.max()),
         "min_attainable_holm_p": m / (count + 1)})


def _node_name(u) -> str:
    return f"{u[0]}.{u[1]}@{u[2]}"


def beats_random_test(evaluator, circuit: Circuit, *, n_random: int = 100, seed: int | None = None,
                      alpha: float = 0.05, progress: Progress | None = None,
                      should_stop: StopCheck | None = None) -> FormalTest:
    """F(C) ranked among random circuits of C's shape: reject → C beats them → passes."""
    meth = evaluator.methodology
    seed = meth.seed if seed is None else seed
    # The same draws as the report's random-circuit baseline (same seed): the evaluator memoises them.
    sets = random_circuits(circuit, evaluator.n_layers, evaluator.n_heads, n_random, seed, meth.positions)
    F = _diffs(evaluator, [NodeSet.model(), circuit_node_set(circuit, meth.positions)] + sets,
               progress, should_stop).mean(1)
    f_model, f_circuit, f_random = float(F[0]), float(F[1]), F[2:]
    p = rank_p_value(f_circuit, f_random)
    verdict = _verdict(p, alpha)
    wins = int(np.sum(f_circuit > f_random))
    return FormalTest(
        "beats random", "C does the task no better than a random circuit with as many heads in each layer, at "
                        "C's positions in that layer: F(C) is exchangeable with F(random)",
        f_circuit, p, alpha, verdict, verdict == REJECT, "F(C)",
        (f"passes: F(C) is above {wins} of {len(f_random)} random circuits of its shape" if verdict == REJECT
         else f"fails: {len(f_random) - wins} of {len(f_random)} random circuits of its shape do at least as well"),
        {"F_model": f_model, "F_circuit": f_circuit, "F_random": f_random, "n_random": len(f_random), "seed": seed,
         "share_at_least_as_good": float(np.mean(f_random >= f_circuit)) if len(f_random) else float("nan"),
         "F_random_quantiles": dict(zip(("q05", "median", "q95"),
                                        np.quantile(f_random, [0.05, 0.5, 0.95]).tolist())) if len(f_random) else {},
         "quantile_test_p": quantile_test_p(wins, len(f_random), 0.9),
         "rule": "same number of heads per layer, C's positions in that layer shuffled"})


TESTS = ("equivalence", "independence", "minimality", "beats random")


def formal_tests(evaluator, circuit: Circuit, alpha: float = 0.05, n_random: int = 100, seed: int | None = None,
                 *, epsilon: float = 0.1, n_permutations: int = 1000, progress: Progress | None = None,
                 should_stop: StopCheck | None = None) -> list[FormalTest]:
    """The four tests in order (TESTS), each one batched evaluator call. seed defaults to the methodology's.

    progress(done, total) counts node sets (memoised ones included); should_stop() is checked between
    and within tests: on stop the tests finished so far are returned (a shorter list, not an error)."""
    m = len(circuit.heads)
    sizes = [2, 2, 1 + m + n_inflations(m, n_random, alpha), 2 + n_random]
    total, done = sum(sizes), [0]
    runs = [lambda pr: equivalence_test(evaluator, circuit, epsilon=epsilon, alpha=alpha, progress=pr,
                                        should_stop=should_stop),
            lambda pr: independence_test(evaluator, circuit, n_permutations=n_permutations, seed=seed, alpha=alpha,
                                         progress=pr, should_stop=should_stop),
            lambda pr: minimality_test(evaluator, circuit, n_random=n_random, seed=seed, alpha=alpha, progress=pr,
                                       should_stop=should_stop),
            lambda pr: beats_random_test(evaluator, circuit, n_random=n_random, seed=seed, alpha=alpha, progress=pr,
                                         should_stop=should_stop)]
    out: list[FormalTest] = []
    if progress is not None:
        progress(0, total)
    for size, run in zip(sizes, runs):
        if stop_requested(should_stop):
            break
        inner = (lambda d, t, size=size: progress(done[0] + round(size * d / t), total)) if progress else None
        try:
            out.append(run(inner))
        except Cancelled:
            break
        done[0] += size
        if progress is not None:
            progress(done[0], total)
    return out


__all__ = ["FormalTest", "formal_tests", "formal_tests_to_json", "equivalence_test", "independence_test",
           "minimality_test", "beats_random_test", "inflation_nodes", "holm", "rank_p_value", "tost_paired",
           "hsic_test", "quantile_test_p", "TESTS"]
