"""Minimality |F(C\\(K∪{v})) − F(C\\K)|: the K rules (file, class, search), the paper's Fig. 20 sets,
the numbers against one-by-one evaluation, a dead head that must be flagged, and the CLI."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from circuit_core.ablation import Methodology
from circuit_core.circuit import Circuit, load_circuit, parse_head
from circuit_core.cli import main
from circuit_core.completeness import c_minus
from circuit_core.evaluate import Evaluator
from circuit_core.verdicts import abs_interval, at_least
from circuit_core.minimality import minimality, minimality_k, minimality_sets
from circuit_core.models import load_model
from circuit_core.toy import save_random_gpt2

IOI = Path(__file__).resolve().parents[2] / "data" / "circuits" / "ioi-gpt2-small.json"
TOY = {"name": "toy", "classes": [{"name": "movers", "position": "END", "heads": ["2.1", "1.0", "2.3"]},
                                  {"name": "dup", "position": "S2", "heads": ["0.3", "1.2"]},
                                  {"name": "prev", "position": "S1+1", "heads": ["0.0"]}],
       "minimality_k": {"2.1": ["0.3"]}}


def heads(text: str) -> frozenset:
    return frozenset(parse_head(h) for h in text.split())


# --- K sets, no model needed -------------------------------------------------------------------------
def fig20_k_and_v() -> dict:
    """K ∪ {v} per head, read off the paper's App. K / Fig. 20."""
    chain = "9.9 10.0 9.6 10.10 10.6 10.2 10.1 11.2 9.7".split()
    out = {v: heads(" ".join(chain[: i + 1])) for i, v in enumerate(chain)}  # nested name movers, backups
    movers_backups_negative = heads(" ".join(chain) + " 9.0 11.9 10.7 11.10")
    out.update({"11.9": movers_backups_negative, "9.0": movers_backups_negative})
    for group in ("10.7 11.10", "7.3 7.9 8.6 8.10", "0.1 0.10 3.0", "2.2 4.11"):
        out.update({v: heads(group) for v in group.split()})
    out.update({"5.5": heads("5.5 5.8 5.9 6.9"), "6.9": heads("5.5 5.8 5.9 6.9"),
                "5.9": heads("11.10 10.7 5.9"), "5.8": heads("11.10 10.7 5.8")})
    return out


def test_ioi_file_k_sets_are_the_papers_fig20():
    circuit = load_circuit(IOI)
    ks = minimality_k(circuit, "file")
    expected = fig20_k_and_v()
    assert set(expected) == {f"{l}.{h}" for l, h in circuit.heads}
    for v_name, k_and_v in expected.items():
        v = parse_head(v_name)
        K, source = ks[v]
        assert source == "file" and v not in K
        assert K | {v} == k_and_v, v_name


def test_ioi_fig20_node_sets():
    circuit = load_circuit(IOI)
    all_nodes = circuit.nodes()
    ks = minimality_k(circuit, "file")
    # v = 10.0, K = {9.9}: C\K ablates 9.9; C\(K∪{v}) ablates 9.9 and 10.0 (at every position).
    c_k, c_kv = minimality_sets(circuit, (10, 0), ks[(10, 0)][0])
    assert c_k.nodes == all_nodes - {(9, 9, "END")} and not c_k.complement
    assert c_kv.nodes == all_nodes - {(9, 9, "END"), (10, 0, "END")}
    # v = 9.9, K = ∅: C against C without 9.9.
    c_k, c_kv = minimality_sets(circuit, (9, 9), ks[(9, 9)][0])
    assert c_k.nodes == all_nodes and c_kv.nodes == all_nodes - {(9, 9, "END")}
    # v = 5.9 (an S2 head), K = {11.10, 10.7}.
    c_k, c_kv = minimality_sets(circuit, (5, 9), ks[(5, 9)][0])
    assert all_nodes - c_k.nodes == {(11, 10, "END"), (10, 7, "END")}
    assert c_k.nodes - c_kv.nodes == {(5, 9, "S2")}
    # v = 4.11, K = {2.2}: the previous-token heads sit at S1+1.
    c_k, c_kv = minimality_sets(circuit, (4, 11), ks[(4, 11)][0])
    assert all_nodes - c_kv.nodes == {(2, 2, "S1+1"), (4, 11, "S1+1")}
    # Positions 'all': the same heads go, kept everywhere otherwise.
    c_k, c_kv = minimality_sets(circuit, (10, 0), ks[(10, 0)][0], "all")
    assert c_k.nodes == circuit.nodes("all") - {(9, 9, "*")} and (10, 0, "*") not in c_kv.nodes


def test_class_rule_and_per_head_fallback():
    toy = Circuit.from_dict(TOY)
    ks = minimality_k(toy, "file")
    assert ks[(2, 1)] == (heads("0.3"), "file")  # from the file
    assert ks[(1, 0)] == (heads("2.1 2.3"), "class")  # the file says nothing: the rest of the class
    assert ks[(0, 0)] == (frozenset(), "class")  # alone in its class
    assert minimality_k(toy, "class")[(2, 1)] == (heads("1.0 2.3"), "class")
    no_file = Circuit.from_dict({k: v for k, v in TOY.items() if k != "minimality_k"})
    assert {src for _, src in minimality_k(no_file).values()} == {"class"}
    with pytest.raises(ValueError):
        minimality_k(toy, "search")


# --- the numbers -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ev16(tiny_model, tiny_dataset):
    return Evaluator(tiny_model, tiny_dataset.subset(range(16)), Methodology(n=16, seed=3, bootstrap=200))


def test_scores_match_direct_evaluation(ev16):
    toy = Circuit.from_dict(TOY)
    seen = []
    res = minimality(ev16, toy, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1]
    t = res.table
    assert list(t.columns[:13]) == ["head", "class", "K", "k_source", "F_C_minus_K", "F_C_minus_K_and_v", "d", "d_lo",
                                    "d_hi", "score", "pct_of_F_M", "ci_low", "ci_high"]
    assert t.k_source.tolist() == ["file", "class", "class", "class", "class", "class"]
    # The same node sets built by hand from the table's K, all in one Evaluator.F call (no cache, no dedup).
    sets = []
    for _, row in t.iterrows():
        K = {parse_head(h) for h in row.K}
        sets += [c_minus(toy, K), c_minus(toy, K | {parse_head(row["head"])})]
    direct = ev16.F(sets)
    for i, row in t.iterrows():
        base, knocked = direct[2 * i], direct[2 * i + 1]
        assert row.F_C_minus_K == pytest.approx(base, abs=1e-5)
        assert row.F_C_minus_K_and_v == pytest.approx(knocked, abs=1e-5)
        assert row.score == pytest.approx(abs(knocked - base), abs=1e-5)
        assert row.pct_of_F_M == pytest.approx(100 * row.score / abs(res.F_model))
        assert row.d == pytest.approx(knocked - base, abs=1e-5) and row.d_lo <= row.d <= row.d_hi
        assert row.below_threshold == (row.pct_of_F_M < 1.0)
        # the verdict follows d's interval against ±1% of |F(M)|, not the point estimate
        assert row.verdict == at_least(row.d_lo, row.d_hi, *res.settings["threshold_abs"]).value
        assert (row.ci_low, row.ci_high) == pytest.approx(abs_interval(row.d_lo, row.d_hi))
        assert res.per_prompt["C_minus_K_and_v"][i].mean() == pytest.approx(row.F_C_minus_K_and_v)
    d = json.loads(json.dumps(res.to_dict()))
    assert len(d["heads"]) == 6 and len(d["heads"][0]["per_prompt"]["C_minus_K"]) == 16
    assert d["flagged"] == res.flagged


def test_search_chooses_on_selection_prompts_and_reports_on_the_pages(ev16):
    toy = Circuit.from_dict(TOY)
    a = minimality(ev16, toy, k_source="search", search_k=2, search_steps=2, seed=5)
    b = minimality(ev16, toy, k_source="search", search_k=2, search_steps=2, seed=5)
    assert a.table.equals(b.table) and a.search_trace.equals(b.search_trace)
    assert set(a.table.k_source) == {"search"}
    sel = a.settings["selection"]
    assert sel["seed"] != ev16.methodology.seed and sel["budget_per_head"] == 4
    for _, row in a.table.iterrows():
        assert row["head"] not in row.K and len(row.K) <= 2
        seen = a.search_trace[a.search_trace["head"] == row["head"]]
        assert sorted(seen[seen.accepted].step) == [0, 1, 2]  # every step taken
        # its K is the best it visited on the selection prompts (∅ included) ...
        assert row.selection_score == pytest.approx(seen[seen.accepted].score.max())
        # ... and the reported score is that K's on the report prompts
        K = {parse_head(h) for h in row.K}
        base, knocked = ev16.F([c_minus(toy, K), c_minus(toy, K | {parse_head(row["head"])})])
        assert row.score == pytest.approx(abs(knocked - base), abs=1e-6)
    stopped = minimality(ev16, toy, k_source="search", should_stop=lambda: True)
    assert stopped.cancelled and all(K == [] for K in stopped.table.K)  # where every search starts


# --- a dead head -------------------------------------------------------------------------------------
DEAD = (1, 2)


@pytest.fixture(scope="module")
def dead_head_evaluator(tmp_path_factory, tiny_dataset):
    """The conftest tiny model with head 1.2's W_O slice zeroed: whatever it reads, it writes nothing.
    (c_proj's bias is shared by all heads of the layer, so it is no part of any one head.)"""
    from conftest import TINY

    folder = tmp_path_factory.mktemp("dead-head")
    hf = save_random_gpt2(folder, **TINY)
    d_head = hf.config.n_embd // hf.config.n_head
    with torch.no_grad():
        hf.transformer.h[DEAD[0]].attn.c_proj.weight[DEAD[1] * d_head : (DEAD[1] + 1) * d_head] = 0
    hf.save_pretrained(folder)
    model = load_model(str(folder), device="cpu")
    return Evaluator(model, tiny_dataset.subset(range(16)), Methodology(n=16, seed=3, bootstrap=200))


@pytest.mark.parametrize("k_source", ["class", "search"])
def test_dead_head_is_flagged(dead_head_evaluator, k_source):
    toy = Circuit.from_dict(TOY)  # 1.2 sits in 'dup' with 0.3
    res = minimality(dead_head_evaluator, toy, k_source=k_source, search_k=2, search_steps=1)
    t = res.table.set_index("head")
    assert t.loc["1.2", "score"] < 1e-6 and bool(t.loc["1.2", "below_threshold"])
    assert t.loc["1.2", "verdict"] == "fails" and "1.2" in res.flagged  # its whole interval is under 1%
    assert not t.below_threshold.all() and t.pct_of_F_M.max() > 1.0  # live heads are not flagged


# --- the command line -------------------------------------------------------------------------------
def test_minimality_cli(tmp_path, tiny_dir, capsys):
    cpath = tmp_path / "c.json"
    cpath.write_text(json.dumps(TOY))
    out = tmp_path / "run.json"
    rc = main(["minimality", "--model", str(tiny_dir), "--circuit", str(cpath), "--n", "16", "--bootstrap", "50",
               "--threshold", "5", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "F(C\\K∪v)" in printed and "beyond ±5% of |F(M)|" in printed and "Fail (whole interval under 5%)" in printed
    rec = json.loads(out.read_text())["results"]["minimality"]
    assert rec["threshold_pct"] == 5 and [h["k_source"] for h in rec["heads"]][:2] == ["file", "class"]
    assert rec["flagged"] == [h["head"] for h in rec["heads"] if h["verdict"] == "fails"]
    assert rec["undecided"] == [h["head"] for h in rec["heads"] if h["verdict"] == "undecided"]
    t, t_hi = rec["settings"]["threshold_abs"]  # 5% of |F(M)|, a range when F(M) is indistinguishable from 0
    if not rec["settings"]["no_verdict"]:
        assert t == t_hi == pytest.approx(0.05 * abs(rec["F_model"]))
    for h in rec["heads"]:  # fails: the whole interval of d within ±t
        assert (h["verdict"] == "fails") == (-t <= h["d_lo"] and h["d_hi"] <= t)
    rc = main(["minimality", "--model", str(tiny_dir), "--circuit", str(cpath), "--n", "16", "--bootstrap", "10",
               "--k-source", "search", "--greedy-k", "2", "--greedy-steps", "1"])
    assert rc == 0 and "search" in capsys.readouterr().out


def test_a_head_at_the_threshold_is_undecided_not_flagged(ev16):
    """With the threshold set at a head's own score, the point estimate sits on it and its interval
    straddles it: neither passes nor fails, whatever side the point estimate falls on."""
    toy = Circuit.from_dict(TOY)
    first = minimality(ev16, toy, k_source="class").table.iloc[0]
    assert first.d_hi > first.d_lo  # a real interval
    res = minimality(ev16, toy, k_source="class", threshold_pct=float(first.pct_of_F_M) * (1 + 1e-9))
    row = res.table.iloc[0]
    assert bool(row.below_threshold)  # the old rule would have flagged it
    assert row.verdict == "undecided" and row["head"] in res.undecided and row["head"] not in res.flagged
    assert res.verdict.value in ("undecided", "fails")


def test_a_threshold_relative_to_an_F_M_indistinguishable_from_0_is_a_range():
    """When F(M)'s interval includes 0, % of F(M) is known only up to a range; verdicts must hold across it."""
    from circuit_core.completeness import relative_threshold

    rng = np.random.default_rng(0)
    t, t_hi, why = relative_threshold(1.0, rng.normal(0, 1, 100), 500, 0)
    assert t == 0 and 0 < t_hi < 0.01 and "indistinguishable from 0" in why
    t, t_hi, why = relative_threshold(1.0, rng.normal(3, 1, 100), 500, 0)
    assert t == t_hi == pytest.approx(0.03, rel=0.2) and why == ""
    # a head whose every prompt moves by exactly 0 fails whatever the threshold; a real effect passes
    # only beyond the range's top; anything else is undecided
    assert at_least(0.0, 0.0, 0.0, 0.02).value == "fails"
    assert at_least(0.03, 0.05, 0.0, 0.02).value == "passes" and at_least(0.01, 0.05, 0.0, 0.02).value == "undecided"
