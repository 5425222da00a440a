"""Every resampling the criteria stand on, in one place.

Three kinds of draw:
- Over prompts (paired): one draw resamples the N prompts with replacement, and every array and row
  of that draw takes the same prompts, so a difference or a ratio is resampled as a pair. As index
  draws (`bootstrap_draws`), as weight rows in numpy (`prompt_weights`, a row at a time) or as count
  rows in torch (`prompt_counts_torch`, one [draws, N] matrix so a matmul does every cell at once).
  The numpy and torch draws are different streams: each caller keeps its own, so results stay put.
- Jointly over prompts and the reference set: with the methodology's reference replicates (the same
  node sets under another draw of the ablation values, ablation.py), draw j also takes its values
  from replicate j mod B (`bootstrap_draws`, `boot_means`). Resampling references with replacement
  leaves fewer distinct ones, and fewer references lower F (the README's curve): the replicates are
  shifted together so their average matches the full reference set's; they keep their spread, which
  is the reference noise.
- Per group: prompts resampled within their own group (`group_bootstrap_means`, the per-group
  breakdown), reference prompts resampled within their group for a replicate of the means
  (`group_counts`), and resample ablation's draw of a reference prompt of each prompt's own group
  (`resample_sources`).

Two ways to read an interval off the draws:
- percentile (`percentile_interval`): the 2.5% and 97.5% points of the draws; faithfulness, whose
  ratios are not means, and the per-group breakdown.
- studentised, bootstrap-t (`studentised`): each draw's deviation divided by its own standard error;
  for means and differences of means (completeness, minimality), whose per-prompt values are skewed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

STUDENTISED = ", studentised (bootstrap-t)"  # how completeness and minimality intervals are read off the draws


# --- over prompts ------------------------------------------------------------------------------------
def prompt_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n]: each row the share of each prompt in one bootstrap resample (numpy, a row at a time)."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)]) / n


def prompt_counts_torch(n: int, draws: int, seed: int) -> torch.Tensor:
    """[draws, n] float64 multinomial counts: each row one resample of the prompts, from torch's
    generator in one call (a different stream from `prompt_weights`)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (draws, n), generator=gen)
    return torch.zeros(draws, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(draws, n, dtype=torch.float64))


# --- jointly with the reference replicates --------------------------------------------------------------
def bootstrap_draws(per_prompt: dict[str, np.ndarray], statistic, n_boot: int = 1000, seed: int = 0,
                    replicates: list[dict[str, np.ndarray]] = (), batched=None) -> dict[str, np.ndarray]:
    """`n_boot` draws of every key `statistic` returns. Each draw resamples the prompts (paired); with
    reference `replicates`, draw j also takes its per-prompt values from replicate j mod B (arrays a
    replicate lacks, such as the intact model's, which ablates nothing, come from `per_prompt`),
    recentred as the module doc says.

    batched: the same statistic over [draws, N] arrays, returning [draws] arrays: every draw in one
    call (the same draws; a figure's intervals then cost milliseconds, not a loop of n_boot calls)."""
    if replicates:
        offset = {k: np.mean([np.mean(r[k]) for r in replicates]) - np.mean(per_prompt[k]) for k in replicates[0]}
        replicates = [{k: v - offset[k] for k, v in r.items()} for r in replicates]
    n = len(next(iter(per_prompt.values())))
    rng = np.random.default_rng(seed)
    if batched is not None:
        idx = rng.integers(0, n, (n_boot, n))  # the same stream as n_boot draws of n, one after another
        which = np.arange(n_boot) % max(1, len(replicates))
        source = {k: (np.stack([r[k] for r in replicates])[which[:, None], idx] if replicates and k in replicates[0]
                      else np.asarray(v)[idx]) for k, v in per_prompt.items()}
        return {k: np.asarray(v, dtype=float) for k, v in batched(**source).items()}
    draws: dict[str, list[float]] = {}
    for j in range(n_boot):
        source = {**per_prompt, **replicates[j % len(replicates)]} if replicates else per_prompt
        idx = rng.integers(0, n, n)
        for k, v in statistic(**{name: arr[idx] for name, arr in source.items()}).items():
            draws.setdefault(k, []).append(v)
    return {k: np.asarray(v, dtype=float) for k, v in draws.items()}


def boot_means(arrays: Sequence[np.ndarray], n_boot: int, seed: int, replicates: Sequence[Sequence[np.ndarray]] = (),
               with_se: bool = False):
    """Bootstrap draws of the row means of each [rows, N] array: [rows, n_boot] each.

    One draw = one weight vector over prompts (`prompt_weights`), shared by every array and row
    (paired). With reference `replicates` (one tuple of arrays per replicate), draw j takes its values
    from replicate j mod B, recentred as the module doc says.
    with_se: (means, standard errors) per array, each draw's standard error of its mean over prompts
    (weighted spread / √N), for studentised intervals (`studentised`).
    """
    rows, n = arrays[0].shape
    weights = prompt_weights(n, n_boot, seed)
    if not replicates:
        if not with_se:
            return [a @ weights.T for a in arrays]
        replicates, shift = [arrays], [np.zeros(rows) for _ in arrays]  # one "replicate": the values themselves
    else:
        shift = [np.mean([r[i].mean(1) for r in replicates], axis=0) - a.mean(1) for i, a in enumerate(arrays)]
    out = [np.empty((rows, n_boot)) for _ in arrays]
    se = [np.empty((rows, n_boot)) for _ in arrays]
    for k, rep in enumerate(replicates):
        cols = slice(k, None, len(replicates))
        w = weights[cols]
        for i, r in enumerate(rep):
            centre = arrays[i].mean(1)[:, None]  # centred before squaring: no cancellation in the spread
            x = r - shift[i][:, None] - centre
            m = x @ w.T
            out[i][:, cols] = m + centre
            if with_se:
                se[i][:, cols] = np.sqrt(np.maximum((x * x) @ w.T - m * m, 0) / n)
    return list(zip(out, se)) if with_se else out


# --- intervals ---------------------------------------------------------------------------------------
def percentile_interval(draws: np.ndarray, estimate: float, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the finite draws (NaN when there are none, or no estimate).

    Why not a bias-corrected (BC) interval to keep the estimate inside: the percentile interval holds
    the estimate exactly when the share of draws below it lies in [2.5%, 97.5%], and BC's ends,
    Φ(2·z0 ∓ 1.96) with z0 = Φ⁻¹(that share), bracket it under the same condition; BCa's acceleration
    has no clean jackknife for the joint prompts × replicates draws. An estimate outside its own
    interval is one in the far tail of its own resampling distribution (in practice: a ratio over a
    near-zero denominator), which no choice of ends repairs: `criteria.faithfulness_figures` calls it
    unstable."""
    d = draws[np.isfinite(draws)]
    if not len(d) or not np.isfinite(estimate):
        return float("nan"), float("nan")
    lo, hi = np.percentile(d, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    # a draw equal to the estimate in exact arithmetic (the same prompts in another order, a replicate
    # recentred on it) can differ from it in the last bits: rounding, not evidence against it
    tol = 1e-9 * max(1.0, abs(estimate))
    lo, hi = (min(lo, estimate) if lo - tol <= estimate else lo), (max(hi, estimate) if hi + tol >= estimate else hi)
    return float(lo), float(hi)


def bootstrap_intervals(per_prompt: dict[str, np.ndarray], statistic, n_boot: int = 1000, seed: int = 0,
                        level: float = 0.95, replicates: list[dict[str, np.ndarray]] = ()) -> dict[str, tuple[float, float]]:
    """Percentile intervals (`percentile_interval`) for every key `statistic` returns, from the joint
    draws of `bootstrap_draws`; the estimate each must hold is `statistic(**per_prompt)`."""
    estimate = statistic(**per_prompt)
    draws = bootstrap_draws(per_prompt, statistic, n_boot, seed, replicates)
    return {k: percentile_interval(v, estimate[k], level) for k, v in draws.items()}


def studentised(x: np.ndarray, n_boot: int, seed: int, level: float = 0.95,
                replicates: Sequence[np.ndarray] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Studentised (bootstrap-t) intervals of mean(x) per row of x [rows, N]; `replicates` [x_k] as in
    `boot_means` (the same draws). Each draw's deviation from the estimate is divided by the draw's own
    standard error over prompts, t* = (m* − m) / se*, and the interval is [m − t*_hi·se, m − t*_lo·se].

    Why not the percentiles of m*: per-prompt differences are skewed (a few prompts move F a lot), so a
    sample short of those prompts has both a low mean and a small spread, and the percentile interval
    then misses the truth on one side more often (the demo's minimality bars, 1,200 of them over seeds
    0-199 at N = 100: percentile 93.6% coverage, missing on the large-|d| side 47 times and the small
    side 30; studentised 95.2%, 29 and 29; coverage by `python -m bench.references --criteria-only`). The reference
    replicates' spread sits in the numerators, so t* carries the reference noise too. se* counts as at
    least half the full sample's se, so a resample that repeats a few prompts cannot make the interval
    unbounded; a row with no spread over prompts gets the percentile interval of its draws.
    """
    n = x.shape[1]
    ((m_star, se_star),) = boot_means([x], n_boot, seed, [(r,) for r in replicates], with_se=True)
    m, se = x.mean(1), x.std(1) / np.sqrt(n)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (m_star - m[:, None]) / np.maximum(se_star, se[:, None] / 2)
    t_lo, t_hi = np.percentile(t, q, axis=1)
    lo, hi = m - t_hi * se, m - t_lo * se
    flat = se == 0
    if flat.any():
        lo[flat], hi[flat] = np.percentile(m_star[flat], q, axis=1)
    return lo, hi


def diff_intervals(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int, level: float = 0.95,
                   replicates: Sequence[tuple[np.ndarray, np.ndarray]] = ()):
    """95% studentised intervals of the SIGNED mean(a) − mean(b) per row (`studentised`), resampling prompts
    (paired) and, with `replicates` [(a_k, b_k)], the reference set too (see `boot_means`). Signed, because the
    percentiles of |d*| are biased upward near 0; |d|'s interval for display is `verdicts.abs_interval`.

    a, b: [rows, N] per-prompt values. One resample = one weight vector over prompts, shared by rows.
    """
    rows, n = a.shape
    if n_boot <= 0 or rows == 0:
        return np.full(rows, np.nan), np.full(rows, np.nan)
    return studentised(a - b, n_boot, seed, level, [ak - bk for ak, bk in replicates])


def mean_intervals(a: np.ndarray, n_boot: int, seed: int, level: float = 0.95, replicates: Sequence[np.ndarray] = ()):
    """95% studentised intervals of mean(a) per row (`studentised`), resampling prompts (the same draws as
    `diff_intervals`) and, with `replicates` [a_k], the reference set."""
    rows, n = a.shape
    if n_boot <= 0 or rows == 0:
        return np.full(rows, np.nan), np.full(rows, np.nan)
    return studentised(a, n_boot, seed, level, list(replicates))


# --- per group ---------------------------------------------------------------------------------------
def group_bootstrap_means(groups: np.ndarray, per_prompt: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0,
                          replicates: list[dict[str, np.ndarray]] = ()):
    """[(group, its prompts (bool mask), {which: n_boot draws of the group's mean})], groups in sorted
    order. Prompts are resampled within their group (one draw shared by every `which`: paired); with
    reference `replicates`, jointly with the reference set as in `bootstrap_draws`, recentred per group."""
    out = []
    rng = np.random.default_rng(seed)
    for g in np.unique(groups):
        sel = groups == g
        n = int(sel.sum())
        draws = rng.integers(0, n, (n_boot, n))
        boots = {}
        for which, values in per_prompt.items():
            if replicates and which in replicates[0]:
                reps = np.stack([r[which][sel] for r in replicates])
                reps = reps - (reps.mean() - values[sel].mean())
                boots[which] = np.take_along_axis(reps[np.arange(n_boot) % len(reps)], draws, 1).mean(1)
            else:
                boots[which] = values[sel][draws].mean(1)
        out.append((g, sel, boots))
    return out


def group_counts(groups: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Multinomial counts over reference prompts: each group's members resampled with replacement, as
    many as it has (one bootstrap replicate of the reference set, for its means)."""
    w = torch.zeros(len(groups))
    for g in groups.unique():
        members = torch.nonzero(groups == g).flatten()
        picks = members[torch.randint(len(members), (len(members),), generator=gen)]
        w.index_add_(0, picks, torch.ones(len(picks)))
    return w


def resample_sources(dataset, gen: torch.Generator) -> torch.Tensor:
    """Resample ablation: the reference prompt each prompt takes, a different one of its own group
    when there is one."""
    n = dataset.n
    source = torch.empty(n, dtype=torch.long)
    if not dataset.paired:  # an independent set: any reference prompt of the group, drawn uniformly
        for g in dataset.groups.unique():
            members = torch.nonzero(dataset.groups == g).flatten()
            pool = torch.nonzero(dataset.ref_groups == g).flatten()
            source[members] = pool[torch.randint(len(pool), (len(members),), generator=gen)]
        return source
    for g in dataset.groups.unique():
        members = torch.nonzero(dataset.groups == g).flatten()
        if len(members) == 1:
            source[members] = members
            continue
        shift = torch.randint(1, len(members), (len(members),), generator=gen)
        source[members] = members[(torch.arange(len(members)) + shift) % len(members)]
    return source


__all__ = ["STUDENTISED", "prompt_weights", "prompt_counts_torch", "bootstrap_draws", "boot_means",
           "percentile_interval", "bootstrap_intervals", "studentised", "diff_intervals", "mean_intervals",
           "group_bootstrap_means", "group_counts", "resample_sources"]
