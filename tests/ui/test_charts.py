"""Charts read as they should at GPT-2's size (12 layers × 12 heads): checked on their Vega-Lite spec,
and where a merge of layers decides it, on the Vega that vl-convert compiles (as the browser would)."""
import json

import pandas as pd
import vl_convert as vlc

from circuit_core.circuit import Circuit, CircuitClass
from ui.charts import OUT_OF_CIRCUIT, completeness_scatter, head_grid, minimality_bars


def gpt2_circuit() -> Circuit:
    return Circuit(name="ioi-like", classes=[
        CircuitClass("name mover heads, renamed to something long", "END", [(9, 6), (9, 9), (10, 0)]),
        CircuitClass("induction", "S2", [(5, 5), (6, 9)]),
        CircuitClass("duplicate token", "S2", [(0, 1), (0, 10), (3, 0)])])


def grid_cells(circuit: Circuit, n_layers: int = 12, n_heads: int = 12) -> pd.DataFrame:
    where = {h: c for c in circuit.classes for h in c.heads}
    rows = [{"layer": l, "head": h, "score": 0.1 * ((l + h) % 5) - 0.2, "label": f"{l}.{h}",
             "class": where[(l, h)].name if (l, h) in where else OUT_OF_CIRCUIT,
             "position": where[(l, h)].position if (l, h) in where else ""}
            for l in range(n_layers) for h in range(n_heads)]
    return pd.DataFrame(rows)


def test_the_editor_grid_on_12_layers_has_readable_rows_every_layer_labelled_and_whole_class_names():
    circuit = gpt2_circuit()
    spec = head_grid(grid_cells(circuit), circuit, "estimate").to_dict()
    # the height is the grid's own: legends and axes do not eat into it (Streamlit's default "fit" does)
    assert spec["autosize"]["type"] in ("fit-x", "pad")
    assert spec["height"] >= 24 * 12
    rect, members = spec["layer"]
    y = rect["encoding"]["y"]
    assert y.get("axis", {}).get("labelOverlap") is False or y.get("axis", {}).get("values") == list(range(12))
    assert members["encoding"]["color"]["legend"]["labelLimit"] == 0  # long class names not cut


def test_the_completeness_scatter_has_a_legend_for_the_k_families():
    table = pd.DataFrame({
        "family": ["empty", "class", "random"], "name": ["∅", "induction", "random 1"],
        "K": [[], ["5.5"], ["1.1"]], "F_M_minus_K": [1.0, 0.5, 0.7], "F_C_minus_K": [1.1, 0.4, 0.6],
        "incompleteness": [0.1, 0.1, 0.1], "ci_low": [0.0] * 3, "ci_high": [0.2] * 3,
        "F_C_lo": [1.0, 0.3, 0.5], "F_C_hi": [1.2, 0.5, 0.7], "F_M_lo": [0.9, 0.4, 0.6], "F_M_hi": [1.1, 0.6, 0.8],
        "verdict": ["passes", "fails", "undecided"]})
    vega = vlc.vegalite_to_vega(completeness_scatter(table).to_dict())
    vega = json.loads(vega) if isinstance(vega, str) else vega
    assert "K family" in [legend.get("title") for legend in vega.get("legends", [])]


def scatter_domains(table):
    spec = completeness_scatter(table).to_dict()
    points = spec["layer"][-1]["encoding"]
    diag = spec["layer"][0]
    xs = [r["x"] for r in spec["datasets"][diag["data"]["name"]]] if "datasets" in spec else diag["data"]["values"]
    return points["x"]["scale"]["domain"], points["y"]["scale"]["domain"], xs


def test_the_completeness_scatter_fits_points_far_from_zero_and_shows_zero_when_near():
    far = pd.DataFrame({
        "family": ["empty", "random", "random"], "name": ["∅", "random 1", "random 2"], "K": [[], ["1.1"], ["2.2"]],
        "F_M_minus_K": [1.30, 1.12, 1.25], "F_C_minus_K": [1.38, 1.10, 1.21], "incompleteness": [0.08, 0.02, 0.04],
        "ci_low": [0.0] * 3, "ci_high": [0.1] * 3,
        "F_C_lo": [1.35, 1.08, 1.19], "F_C_hi": [1.40, 1.13, 1.24], "F_M_lo": [1.28, 1.10, 1.22], "F_M_hi": [1.33, 1.15, 1.27],
        "verdict": ["passes"] * 3})
    x, y, diag = scatter_domains(far)
    assert x == y and 1.0 < x[0] < 1.08 and 1.40 < x[1] < 1.45  # the data's range, not 0 to 1.4
    assert diag == x  # the diagonal runs over the same range
    near = far.assign(**{c: far[c] - 1.05 for c in ["F_M_minus_K", "F_C_minus_K", "F_C_lo", "F_C_hi", "F_M_lo", "F_M_hi"]})
    x, _, _ = scatter_domains(near)
    assert x[0] <= 0  # 0 is near the data (0.03 away, over a range of 0.32): shown


def test_minimality_bars_order_heads_by_class_then_layer_and_head_as_numbers():
    circuit = gpt2_circuit()
    heads = [(c.name, f"{l}.{h}") for c in reversed(circuit.classes) for l, h in reversed(c.heads)]
    table = pd.DataFrame({"head": [h for _, h in heads], "class": [c for c, _ in heads], "K": [[]] * len(heads),
                          "k_source": "class", "pct_of_F_M": [float(i) for i in range(len(heads))],
                          "score": 0.1, "ci_low_pct": 0.0, "ci_high_pct": 1.0, "verdict": "passes"})
    spec = minimality_bars(table, circuit, 1.0).to_dict()
    expected = ["9.6", "9.9", "10.0", "5.5", "6.9", "0.1", "0.10", "3.0"]  # 0.10 after 0.1, 10.0 after 9.9
    sorts = [layer["encoding"]["x"].get("sort") for layer in spec["layer"]
             if isinstance(layer["encoding"].get("x"), dict) and layer["encoding"]["x"].get("field") == "head"]
    assert len(sorts) == 3 and all(s == expected for s in sorts)  # bars, error bars and verdict marks alike
