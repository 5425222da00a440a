"""Completeness |F(C\\K) − F(M\\K)|: the node sets, the families of K, the greedy search, the CLI, and a
hand-built model with two redundant heads where a faithful circuit is provably incomplete."""
import json

import numpy as np
import pytest
import torch

import hf_reference as ref
from circuit_core.ablation import Methodology, NodeSet
from circuit_core.circuit import Circuit, CircuitError
from circuit_core.cli import main
from circuit_core.completeness import c_minus, completeness, incompleteness_sets, m_minus
from circuit_core.criteria import circuit_node_set
from circuit_core.evaluate import Evaluator
from circuit_core.models import load_model
from circuit_core.tasks import build_dataset
from circuit_core.toy import save_random_gpt2

TOY = {"name": "toy", "classes": [{"name": "movers", "position": "END", "heads": ["2.1", "1.0", "2.3"]},
                                  {"name": "dup", "position": "S2", "heads": ["0.3", "1.2"]},
                                  {"name": "prev", "position": "S1+1", "heads": ["0.0"]}]}
SMALL = dict(n_random=1, greedy_k=2, greedy_steps=3, greedy_runs=1)


@pytest.fixture(scope="module")
def toy():
    return Circuit.from_dict(TOY)


@pytest.fixture(scope="module")
def ev16(tiny_model, tiny_dataset):
    """The tiny model on 16 prompts: enough for exact checks, quick on two cores."""
    return Evaluator(tiny_model, tiny_dataset.subset(range(16)), Methodology(n=16, seed=3, bootstrap=200))


# --- the node sets, exactly as defined ---------------------------------------------------------------
def test_c_minus_k_and_m_minus_k_are_the_papers_sets(toy):
    K = {(2, 1), (0, 3)}
    # C\K: the circuit minus K's heads, so K is ablated at every position.
    c = c_minus(toy, K)
    assert (c.nodes, c.complement) == ({(1, 0, "END"), (2, 3, "END"), (1, 2, "S2"), (0, 0, "S1+1")}, False)
    # M\K: everything intact except K's nodes at their kept class positions.
    m = m_minus(toy, K)
    assert (m.nodes, m.complement) == ({(2, 1, "END"), (0, 3, "S2")}, True)
    assert (c.label, m.label) == (r"C\{2.1,0.3}", r"M\{2.1,0.3}")
    # K = ∅ gives C and M; K = C gives ∅ and M without the circuit's nodes.
    c, m = incompleteness_sets(toy, set())
    assert (c.nodes, c.complement) == (circuit_node_set(toy).nodes, False)
    assert (m.nodes, m.complement) == (frozenset(), True)
    c, m = incompleteness_sets(toy, set(toy.heads))
    assert (c.nodes, c.complement) == (frozenset(), False)
    assert (m.nodes, m.complement) == (toy.nodes(), True)
    # Heads kept everywhere (positions='all'): M\K ablates K at every position too.
    assert m_minus(toy, K, "all").nodes == frozenset({(2, 1, "*"), (0, 3, "*")})
    assert (1, 0, "*") in c_minus(toy, K, "all").nodes


def test_keep_masks_of_c_minus_k_and_m_minus_k(toy, ev16):
    ds = ev16.dataset
    rows = torch.arange(ds.n)
    c, m = ev16.masks(incompleteness_sets(toy, {(2, 1)}))
    # C\K: 2.1 ablated everywhere, 1.0 kept only at END.
    assert not c[:, :, 2, 1].any()
    assert c[rows, ds.positions["END"], 1, 0].all() and c[:, :, 1, 0].sum() == ds.n
    # M\K: 2.1 ablated only at END, every other head-position intact.
    assert not m[rows, ds.positions["END"], 2, 1].any()
    assert (~m).sum() == ds.n


def test_user_k_must_lie_in_the_circuit(toy, ev16):
    with pytest.raises(CircuitError, match="2.2"):
        completeness(ev16, toy, user_k=["2.1,2.2"], n_random=0, greedy_runs=0)


# --- the numbers -------------------------------------------------------------------------------------
def test_class_k_match_one_by_one_evaluation(toy, ev16):
    res = completeness(ev16, toy, n_random=1, greedy_runs=0, user_k=["2.1,0.0"])
    t = res.table
    assert list(t.family) == ["empty", "class", "class", "class", "random", "user"]
    ev = ev16
    for i, row in t.iterrows():
        K = {tuple(map(int, h.split("."))) for h in row.K}
        c, m = ev.F([c_minus(toy, K)])[0], ev.F([m_minus(toy, K)])[0]
        assert row.F_C_minus_K == pytest.approx(c, abs=1e-5)
        assert row.F_M_minus_K == pytest.approx(m, abs=1e-5)
        assert row.incompleteness == pytest.approx(abs(c - m), abs=1e-5)
        assert res.per_prompt["C_minus_K"][i].mean() == pytest.approx(row.F_C_minus_K)
        assert row.ci_low <= row.incompleteness + 1e-9 and row.incompleteness <= row.ci_high + 1e-9
    assert res.F_model == pytest.approx(ev.F([NodeSet.model()])[0], abs=1e-5)
    assert t.incompleteness_pct.iloc[0] == pytest.approx(100 * t.incompleteness.iloc[0] / abs(res.F_model))
    assert t.K[1] == ["2.1", "1.0", "2.3"] and t.K[5] == ["2.1", "0.0"]
    d = json.loads(json.dumps(res.to_dict()))
    assert len(d["K_sets"]) == len(t) and len(d["K_sets"][3]["per_prompt"]["M_minus_K"]) == ev.dataset.n


def test_m_minus_k_against_plain_hugging_face(toy, ev16, tiny_hf):
    """F(M\\K) recomputed without the project: K's heads replaced by group means at their positions only."""
    ds = ev16.dataset
    K = [(2, 1), (1, 2)]  # END and S2 heads
    keep = torch.ones(ds.n, ds.tokens.shape[1], 3, 4, dtype=torch.bool)
    for (l, h), role in zip(K, ("END", "S2")):
        keep[torch.arange(ds.n), ds.positions[role], l, h] = False
    means = ref.group_means(ref.head_outputs(tiny_hf, ds.reference_tokens), ds.groups, ds.lengths)
    expected = ref.logit_diffs(tiny_hf, ds.tokens, ds.positions["END"], ds.answer_tokens, keep, means)
    res = completeness(ev16, toy, classes=False, n_random=0, greedy_runs=0, user_k=[K])
    assert np.allclose(res.per_prompt["M_minus_K"][1], expected.numpy(), atol=1e-4)


def test_greedy_chooses_on_selection_prompts_runs_every_step_and_keeps_each_runs_best(toy, ev16):
    a = completeness(ev16, toy, classes=False, n_random=0, greedy_k=3, greedy_steps=3, greedy_runs=3, seed=7)
    b = completeness(ev16, toy, classes=False, n_random=0, greedy_k=3, greedy_steps=3, greedy_runs=3, seed=7)
    assert a.table.equals(b.table) and a.greedy_trace.equals(b.greedy_trace)
    sel = a.settings["selection"]
    assert sel["seed"] != ev16.methodology.seed and sel["n"] == 40 and sel["budget"] == 27
    tr = a.greedy_trace
    for run, steps in tr.groupby("run"):
        path = steps[steps.accepted].sort_values("step")
        assert path.step.tolist() == [0, 1, 2, 3]  # every run takes every step: no early stop
        for step, cands in steps[steps.step > 0].groupby("step"):
            assert len(cands) == 3 and cands.accepted.sum() == 1  # k candidates, it moves to the best
            assert cands[cands.accepted].incompleteness.iloc[0] == cands.incompleteness.max()
        for k0, k1 in zip(path.K.iloc[:-1], path.K.iloc[1:]):  # each step adds one head
            assert set(k0) < set(k1) and len(k1) == len(k0) + 1
    # A table row per run's best K (as chosen on the selection prompts), scored again on the report prompts.
    greedy = a.table[a.table.family == "greedy"]
    assert 1 <= len(greedy) <= 3
    for row in greedy.itertuples():
        visited = tr[(tr.run == row.run) & tr.accepted & (tr.step > 0)]
        assert row.selection_incompleteness == pytest.approx(visited.incompleteness.max())
        c, m = ev16.F(incompleteness_sets(toy, [tuple(map(int, h.split("."))) for h in row.K]))
        assert row.incompleteness == pytest.approx(abs(c - m))  # the report figure: ev16's own prompts
    # the trace is on the selection prompts, not the report prompts
    from circuit_core.selection import selection_evaluator
    sel_ev = selection_evaluator(ev16.model, ev16.methodology)
    last = tr.iloc[-1]
    c, m = sel_ev.F(incompleteness_sets(toy, [tuple(map(int, h.split("."))) for h in last.K]))
    assert last.incompleteness == pytest.approx(abs(c - m))


class _Landscape:
    """A stand-in for FCache whose 'F' of a node set is a hand-made function of the heads it drops."""

    def __init__(self, circuit, value):
        self.circuit, self.value = circuit, value

    def get(self, node_sets):
        kept = lambda s: {n[:2] for n in s.nodes}
        return np.array([[self.value(frozenset(self.circuit.heads) - kept(s))] for s in node_sets])


def test_the_worst_k_behind_a_dip_is_found_only_by_a_search_that_does_not_stop_early(toy):
    """Knocking out K = ∅ scores 1; any one head scores less (a pair member 0.6, others 0.5), both heads of
    {2.1, 1.0} together score 5. A search that stops when a step's best does not beat the run's score
    stops at step 1 and reports 1; the paper's search takes every step and finds the pair."""
    from circuit_core.search import Search, best_per_run, greedy_search

    pair = {(2, 1), (1, 0)}

    def score(K):
        if not K:
            return 1.0
        return 5.0 if pair <= K else (0.6 if len(K) == 1 and K <= pair else 0.5 - 0.01 * len(K))

    search = Search(pool=list(toy.heads), sets=lambda K: [c_minus(toy, K)], score=lambda m: float(m[0]),
                    columns=("score",))
    trace, _ = greedy_search(_Landscape(toy, score), [search], k=len(toy.heads), steps=3, runs=1, seed=0)
    first = [r for r in trace if r["step"] == 1]
    assert max(r["score"] for r in first) < 1.0  # the early-stopping rule would end here, at ∅
    best = best_per_run(trace)[(0, 0)]
    assert best["score"] == 5.0 and best["K"] == frozenset(pair)
    assert [r["step"] for r in trace if r["accepted"]] == [0, 1, 2, 3]  # and it goes on after the best


def test_progress_and_cancel(toy, ev16):
    seen = []
    completeness(ev16, toy, **SMALL, progress=lambda d, t: seen.append((d, t)))
    # one bar in node sets and greedy steps, then the reference noise: it only moves forward, ends full
    assert seen[-1][0] == seen[-1][1] and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    assert len({t for _, t in seen}) == 1 and seen[-1][1] > SMALL["greedy_steps"]
    res = completeness(ev16, toy, **SMALL, should_stop=lambda: True)  # checked before each step
    assert res.cancelled and res.greedy_trace.step.max() == 0
    assert {"empty", "class", "random"} <= set(res.table.family)  # the partial result is still whole for them


# --- a model whose answer is known: two redundant heads --------------------------------------------
D_HEAD, WIDTH, A, B = 8, 32, (2, 0), (2, 1)


def build_redundant_model(folder):
    """Layer 2 holds two identical heads A = 2.0 and B = 2.1; everything else writes nothing.

    Each attends uniformly (zero queries and keys) and writes −100 × the name part of the tokens it
    reads: name embeddings live in the first 8 coordinates, every other token outside them. So the
    final residual at END points along −(IO + 2·S) and IO beats S; with nothing written F = 0. The final
    layer norm is scale-invariant, so A alone (B mean-ablated) gives nearly what A and B give: the
    backup-head situation in miniature.
    """
    from transformers import PreTrainedTokenizerFast

    from circuit_core.tasks.base import single_token_id
    from circuit_core.tasks.ioi import NAMES

    hf = save_random_gpt2(folder, n_layer=3, n_head=4, n_embd=WIDTH, init_std=0.3, seed=0)
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    names = [i for i in (single_token_id(tok, " " + n) for n in NAMES) if i is not None]
    g = torch.Generator().manual_seed(0)
    tr = hf.transformer
    with torch.no_grad():
        wte = torch.zeros_like(tr.wte.weight)
        wte[:, D_HEAD:] = torch.randn(len(wte), WIDTH - D_HEAD, generator=g)
        wte[names] = 0
        wte[names, :D_HEAD] = torch.randn(len(names), D_HEAD, generator=g)
        wte -= wte.sum(1, keepdim=True) / torch.where(wte != 0, 1.0, 0.0).sum(1, keepdim=True) * (wte != 0)
        wte[names] /= wte[names].norm(dim=1, keepdim=True)
        tr.wte.weight.copy_(wte)
        tr.wpe.weight.zero_()
        tr.ln_f.bias.zero_()
        for blk in tr.h:
            for p in (blk.attn.c_proj.weight, blk.attn.c_proj.bias, blk.mlp.c_proj.weight, blk.mlp.c_proj.bias,
                      blk.ln_1.bias):
                p.zero_()
        attn = tr.h[2].attn
        for h in (A[1], B[1]):
            cols = torch.arange(h * D_HEAD, (h + 1) * D_HEAD)
            for part in range(3):
                attn.c_attn.weight[:, part * WIDTH + cols] = 0
                attn.c_attn.bias[part * WIDTH + cols] = 0
            attn.c_attn.weight[:D_HEAD, 2 * WIDTH + cols] = torch.eye(D_HEAD)
            attn.c_proj.weight[cols, :D_HEAD] = -100 * torch.eye(D_HEAD)
    hf.save_pretrained(folder)


@pytest.fixture(scope="module")
def redundant_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("redundant")
    build_redundant_model(folder)
    return load_model(str(folder), device="cpu")


# Zero ablation makes the redundancy exact (an ablated head writes nothing). Per-template means over
# a prompt or two still write a random name vector, which blurs F(C) without changing the logic.
@pytest.mark.parametrize("ablation, min_ratio", [("zero", 0.97), ("mean", 0.75)])
def test_one_of_two_redundant_heads_is_faithful_but_incomplete(redundant_model, ablation, min_ratio):
    ds = build_dataset("ioi", redundant_model.tokenizer, n=40, seed=3)
    ev = Evaluator(redundant_model, ds, Methodology(n=40, seed=3, ablation=ablation, bootstrap=200))
    one = Circuit.from_dict({"name": "A only", "classes": [{"name": "mover", "position": "END", "heads": ["2.0"]}]})
    res = completeness(ev, one, n_random=0, greedy_runs=0)
    f_model = res.F_model
    f_empty = ev.F([NodeSet.empty()])[0]
    assert f_model > 1.5 and f_model - f_empty > 1.0  # IO beats S, and only A and B do it
    empty, mover = res.table.iloc[0], res.table.iloc[1]
    # Faithful: F(C) is close to F(M) (K = ∅ scores low) ...
    assert empty.F_C_minus_K / f_model > min_ratio
    # ... but incomplete: with A knocked out, M still has B and C has nothing.
    assert mover.F_C_minus_K == pytest.approx(f_empty, abs=1e-6)
    assert mover.incompleteness_pct > 50 and mover.ci_low > 0.3 * f_model
    # Holding both heads makes the circuit complete for every K.
    both = Circuit.from_dict({"name": "A and B",
                              "classes": [{"name": "mover", "position": "END", "heads": ["2.0", "2.1"]}]})
    res2 = completeness(ev, both, n_random=0, user_k=["2.0", "2.1"], greedy_runs=0)
    assert res2.table.incompleteness_pct.max() < 2
    # The greedy search finds the hole in the one-head circuit.
    res3 = completeness(ev, one, n_random=0, classes=False, greedy_k=1, greedy_steps=1, greedy_runs=1)
    assert res3.best("greedy").K == ["2.0"] and res3.best().incompleteness_pct > 50


# --- the command line -------------------------------------------------------------------------------
def test_completeness_and_validate_cli(tmp_path, tiny_dir, capsys):
    cpath = tmp_path / "c.json"
    cpath.write_text(json.dumps({**TOY, "minimality_k": {"2.1": ["1.0"]}}))
    out = tmp_path / "run.json"
    common = ["--model", str(tiny_dir), "--circuit", str(cpath), "--n", "20", "--bootstrap", "50"]
    rc = main(["completeness", *common, "--random", "2", "--greedy-k", "2", "--greedy-steps", "2", "--greedy-runs", "2",
               "--k", "2.1,0.0", "--k", "1.2", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "F(M\\K)" in printed and "Largest incompleteness" in printed and "{2.1, 0.0}" in printed
    rec = json.loads(out.read_text())["results"]["completeness"]
    families = [r["family"] for r in rec["K_sets"]]
    assert families[:7] == ["empty", "class", "class", "class", "random", "random", "user"] and families[7] == "user"
    assert all(len(r["per_prompt"]["C_minus_K"]) == 20 for r in rec["K_sets"])
    assert rec["greedy_trace"] and rec["settings"]["greedy_runs"] == 2
    assert main(["completeness", *common, "--k", "3.0", "--greedy-runs", "0"]) == 2
    assert "not in it: 3.0" in capsys.readouterr().err

    rc = main(["validate", *common, "--random", "0", "--greedy-runs", "0", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Faithfulness" in printed and "Completeness" in printed and "Fail (whole interval under" in printed
    res = json.loads(out.read_text())["results"]
    assert {"faithfulness", "completeness", "minimality", "F_model", "verdicts", "tests"} <= set(res)
    assert [t["name"] for t in res["tests"]] == ["equivalence", "independence", "minimality", "beats random"]
    assert all({"null", "statistic", "p_value", "verdict"} <= set(t) for t in res["tests"])
    assert res["minimality"]["heads"][0]["k_source"] == "file"
    v = res["verdicts"]
    assert v["completeness"]["verdict"] == res["completeness"]["verdict"]
    assert v["overall"] in ("passes", "fails", "undecided") and "rule" in v["minimality"]
    # --strict: the exit status follows the verdicts. The tiny random model's F(M) is indistinguishable from 0,
    # so nothing is decided there; on the demo, no head moves F by 100% of F(M): minimality fails.
    demo = ["--model", "demo", "--circuit", "data/circuits/ioi-demo.json", "--n", "40", "--bootstrap", "200",
            "--random", "0", "--greedy-runs", "0", "--no-tests", "--strict"]
    assert main(["validate", *common, "--random", "0", "--greedy-runs", "0", "--strict", "--no-tests"]) == 0
    assert "F(M) is indistinguishable from 0" in capsys.readouterr().out
    assert main(["validate", *demo, "--threshold", "100"]) == 1 and "strict: a criterion fails" in capsys.readouterr().err
    assert main(["validate", *demo, "--threshold", "0",
                 "--tolerance", "1000", "--faithfulness-tolerance", "1000"]) == 0  # nothing can fail
    # the selection seed must differ from the report seed
    assert main(["completeness", *common, "--selection-seed", "0"]) == 2
    assert "selection seed must differ" in capsys.readouterr().err


def test_random_k_sets_are_distinct_and_non_empty():
    from circuit_core.completeness import random_subsets

    heads = [(0, 0), (1, 1), (2, 2)]
    sets = random_subsets(heads, 20, seed=0)
    assert len(sets) == 7  # every non-empty subset of 3 heads, once
    assert len(set(sets)) == 7 and all(sets)
    big = random_subsets([(l, h) for l in range(4) for h in range(4)], 10, seed=1)
    assert len(set(big)) == 10 and all(big)
    assert big == random_subsets([(l, h) for l in range(4) for h in range(4)], 10, seed=1)  # seeded


def test_every_point_and_bar_carries_its_intervals(tiny_evaluator):
    from circuit_core.circuit import Circuit, CircuitClass
    from circuit_core.completeness import completeness
    from circuit_core.minimality import minimality

    c = Circuit("t", [CircuitClass("a", "END", [(2, 1), (1, 0)]), CircuitClass("b", "S2", [(0, 3)])])
    t = completeness(tiny_evaluator, c, n_random=3, greedy_runs=0).table
    assert (t.F_C_lo <= t.F_C_minus_K + 1e-12).all() and (t.F_C_minus_K <= t.F_C_hi + 1e-12).all()
    assert (t.F_M_lo <= t.F_M_minus_K + 1e-12).all() and (t.F_M_minus_K <= t.F_M_hi + 1e-12).all()
    m = minimality(tiny_evaluator, c, k_source="class")
    ratio = m.table.ci_high_pct / m.table.ci_high  # same unit as the bars: % of |F(M)|
    assert abs(ratio - 100 / abs(m.F_model)).max() < 1e-9


def test_joint_intervals_keep_only_the_spread_of_the_reference_replicates():
    from circuit_core.resampling import diff_intervals, mean_intervals

    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, (3, 200)), rng.normal(0, 1, (3, 200))
    plain = mean_intervals(a, 500, 0)
    # replicates that only shift every value by the same amount carry no noise: the shift is recentred away
    shifted = mean_intervals(a, 500, 0, replicates=[a + 0.7] * 4)
    assert np.allclose(plain, shifted)
    # replicates that disagree with each other widen the interval, around the full reference set's value
    noisy = [a + s for s in (-1.0, -0.5, 0.5, 1.0)]
    lo, hi = mean_intervals(a, 500, 0, replicates=noisy)
    assert np.all(hi - lo > plain[1] - plain[0] + 1.0)
    assert np.all((lo < a.mean(1)) & (a.mean(1) < hi))
    d_plain = diff_intervals(a, b, 500, 0)
    d_noisy = diff_intervals(a, b, 500, 0, replicates=[(x, b) for x in noisy])
    assert np.all(d_noisy[1] - d_noisy[0] > d_plain[1] - d_plain[0])
