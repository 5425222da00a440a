"""Circuits in and out of the graph JSON of EAP-IG and the MIB circuit-localisation track.

The format, as EAP-IG's `Graph.to_json` writes it and `Graph.from_json` reads it (hannamw/EAP-IG,
src/eap/graph.py; MIB's MIB_circuit_track/circuit_loading.py reads the same, and its example
circuits/ioi-eap-ig.json is one):

    {"cfg":   {"n_layers": 12, "n_heads": 12, "parallel_attn_mlp": false, "d_model": 768},
     "nodes": {"input": {"in_graph": true}, "a0.h0": {"in_graph": false, "score": 0.1}, ..., "m0": {...},
               ..., "logits": {"in_graph": true}},
     "edges": {"input->a0.h0<q>": {"score": -0.0003, "in_graph": false}, ..., "m11->logits": {...}}}

- Nodes: `input`, `a{layer}.h{head}` (attention head), `m{layer}` (MLP), `logits`. Each has `in_graph`;
  `score` only when the graph has node scores (NaN: not scored); `neurons` / `neurons_scores` for
  neuron-level graphs. `from_json` skips `logits` (always in the graph); nodes it is not given stay out.
- Edges: `{parent}->{child}`, with `<q>`, `<k>` or `<v>` when the child is a head (which input of the
  head). Each has `score` and `in_graph`; `from_json` needs both for every edge it is given and keeps the
  others out. The edges of a model (`Graph.from_model`): per layer, every earlier node (input, heads and
  MLPs of lower layers) feeds each head's q, k and v; then those and this layer's heads feed the MLP
  (with `parallel_attn_mlp`, the MLP reads only the earlier nodes); every node feeds `logits`.
- `from_json` builds the graph from `cfg` (it needs `n_layers`, `n_heads`, `parallel_attn_mlp` and
  `d_model`) and reads only `cfg`, `nodes` and `edges`: other top-level keys are ignored. MIB's
  binary-membership circuits are "nearly identical, but without the floating-point edge/node scores"
  (MIB-shared-task README), so scores are optional here.

This tool's circuits are attention heads kept at a position, with MLPs and embeddings never ablated
(Wang et al. 2022), and optionally a list of the head -> head (q, k, v) and head -> logits edges kept
among them (circuit.py). So an import takes the heads with `in_graph` true as one class at a position
the caller names, their in-graph head -> head and head -> logits edges as its edge list when some edge
between them is out (none: node-level), and says in its warnings what it could not carry (MLP
membership, edges from the input or MLPs or into MLPs, neurons). An export writes every node: heads in_graph for members, `input`, the MLPs and `logits` in
the graph; and (edges=True) every edge of the model, in_graph when both its ends are: the node-level
circuit EAP-IG's README describes ("for every node in the circuit, all of its outgoing edges are also
in the circuit"), which EAP-IG's `evaluate_graph` (it prunes nodes without in-graph edges) evaluates
as these heads; a circuit with an edge list writes its head -> head and head -> logits edges in_graph
as listed. Edge scores are written as 0.0 (these circuits have none; `from_json` needs the
field). EAP-IG graphs keep a node at every position: what EAP-IG evaluates is the circuit with
positions "all". The circuit itself travels along under the extra key "circuit" (ignored by EAP-IG),
so our classes and positions survive a round trip.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from .circuit import LOGITS, Circuit, CircuitClass, CircuitError, Edge, Head, head_name, parse_head

CIRCUIT_KEY = "circuit"  # our circuit JSON, carried along; EAP-IG's from_json reads only cfg/nodes/edges
HEAD = re.compile(r"a(\d{1,6})\.h(\d{1,6})")  # bounded: no 5,000-digit int() to parse
MLP = re.compile(r"m(\d{1,6})")
MAX_SIZE = 10_000  # layers, heads: far above any model, low enough that nothing sized by cfg runs away
EDGE = re.compile(r"([^<>]+)->([^<>]+?)(?:<([qkv])>)?")


def head_node(h: Head) -> str:
    return f"a{h[0]}.h{h[1]}"


def graph_nodes(n_layers: int, n_heads: int) -> list[str]:
    """Node names in EAP-IG's order: input, then per layer its heads and its MLP, then logits."""
    per_layer = [[head_node((layer, h)) for h in range(n_heads)] + [f"m{layer}"] for layer in range(n_layers)]
    return ["input"] + [n for nodes in per_layer for n in nodes] + ["logits"]


def graph_edges(n_layers: int, n_heads: int, parallel_attn_mlp: bool = False) -> list[tuple[str, str, str | None]]:
    """(parent, child, qkv) for every edge of the model, in the order of EAP-IG's `Graph.from_model`."""
    edges, residual = [], ["input"]
    for layer in range(n_layers):
        heads = [head_node((layer, h)) for h in range(n_heads)]
        mlp = f"m{layer}"
        if parallel_attn_mlp:  # the MLP reads what the heads read, each parent's edges together
            edges += [e for p in residual for e in [(p, a, x) for a in heads for x in "qkv"] + [(p, mlp, None)]]
            residual = residual + heads + [mlp]
        else:
            edges += [(p, a, x) for p in residual for a in heads for x in "qkv"]
            residual = residual + heads
            edges += [(p, mlp, None) for p in residual]
            residual = residual + [mlp]
    return edges + [(p, "logits", None) for p in residual]


def edge_name(parent: str, child: str, qkv: str | None = None) -> str:
    return f"{parent}->{child}" + (f"<{qkv}>" if qkv else "")


# --- export ----------------------------------------------------------------------------------------
def graph_cfg(model) -> dict:
    """The `cfg` EAP-IG needs, from a loaded model (models.LoadedModel)."""
    cfg = model.bridge.cfg
    return {"n_layers": int(cfg.n_layers), "n_heads": int(cfg.n_heads),
            "parallel_attn_mlp": bool(getattr(cfg, "parallel_attn_mlp", False)), "d_model": int(cfg.d_model)}


def to_eap_graph(circuit: Circuit, cfg: dict, edges: bool = True, head_scores: dict[Head, float] | None = None,
                 keep_circuit: bool = True) -> dict:
    """The circuit as an EAP-IG graph dict (json.dump it). cfg: n_layers, n_heads, d_model and
    parallel_attn_mlp (see `graph_cfg`). edges=False writes "edges": {} (EAP-IG's `evaluate_graph` would
    then prune every node: for node-level readers only). head_scores become the heads' node `score`.
    keep_circuit=False leaves out our circuit under "circuit" (a file with only EAP-IG's keys)."""
    n_layers, n_heads = _cfg_shape(cfg)
    outside = [f"{l}.{h}" for l, h in circuit.heads if not (0 <= l < n_layers and 0 <= h < n_heads)]
    if outside:
        raise CircuitError(f"Head(s) {', '.join(outside)} do not exist in a model of {n_layers} layers x {n_heads} heads.")
    members = {head_node(h) for h in circuit.heads}
    in_graph = {n: (n in members if HEAD.fullmatch(n) else True) for n in graph_nodes(n_layers, n_heads)}
    nodes = {}
    for n, kept in in_graph.items():
        nodes[n] = {"in_graph": kept}
        m = HEAD.fullmatch(n)
        if head_scores and m and (int(m[1]), int(m[2])) in head_scores:
            nodes[n]["score"] = float(head_scores[(int(m[1]), int(m[2]))])
    d = {"cfg": dict(cfg), "nodes": nodes, "edges": {}}
    if edges:
        listed = circuit.head_edges()  # None: every edge between two nodes in the graph
        names = {} if listed is None else {(head_node(s), "logits" if r == LOGITS else head_node(r), None if r == LOGITS else x)
                                           for s, r, x in listed}

        def kept(p, c, x):
            if listed is not None and HEAD.fullmatch(p) and (c == "logits" or HEAD.fullmatch(c)):
                return (p, c, x) in names
            return in_graph[p] and in_graph[c]

        d["edges"] = {edge_name(p, c, x): {"score": 0.0, "in_graph": kept(p, c, x)}
                      for p, c, x in graph_edges(n_layers, n_heads, bool(cfg.get("parallel_attn_mlp", False)))}
    if keep_circuit:
        d[CIRCUIT_KEY] = circuit.to_dict()
    return d


# --- import ----------------------------------------------------------------------------------------
@dataclass
class Imported:
    """A circuit read from a file, with what the file said beyond it."""

    circuit: Circuit
    head_scores: dict[Head, float] = field(default_factory=dict)  # importance per head, for the ROC
    warnings: list[str] = field(default_factory=list)
    cfg: dict | None = None  # the graph's cfg (None: the file was our own circuit JSON)
    # The graph's score of each head -> head and head -> logits edge (sender, receiver or "logits", input),
    # signed as written: what a faithfulness curve over edges ranks by.
    edge_scores: dict[tuple, float] = field(default_factory=dict)

    def check_fits(self, n_layers: int, n_heads: int) -> None:
        """CircuitError when the graph was made for a model of another shape."""
        if self.cfg is not None and _cfg_shape(self.cfg) != (n_layers, n_heads):
            a, b = _cfg_shape(self.cfg)
            raise CircuitError(f"The graph is for a model of {a} layers x {b} heads; this one has "
                               f"{n_layers} x {n_heads}.")


def _cfg_shape(cfg) -> tuple[int, int]:
    if not isinstance(cfg, dict):
        raise CircuitError("Graph field 'cfg' must be an object with n_layers and n_heads.")
    shape = []
    for key in ("n_layers", "n_heads"):
        v = cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_SIZE:
            raise CircuitError(f"Graph cfg.{key} must be a whole number from 1 to {MAX_SIZE} (got {str(v)[:40]!r}).")
        shape.append(v)
    return shape[0], shape[1]


def _parse_node(name: str, n_layers: int, n_heads: int) -> tuple[str, Head | int | None]:
    """('head', (l, h)) / ('mlp', l) / ('input' | 'logits', None); CircuitError for anything else."""
    if name in ("input", "logits"):
        return name, None
    m = HEAD.fullmatch(name)
    if m and int(m[1]) < n_layers and int(m[2]) < n_heads:
        return "head", (int(m[1]), int(m[2]))
    m2 = MLP.fullmatch(name)
    if m2 and int(m2[1]) < n_layers:
        return "mlp", int(m2[1])
    if m or m2:
        raise CircuitError(f"Graph node '{name}' does not exist in a model of {n_layers} layers x {n_heads} heads.")
    raise CircuitError(f"Graph node '{name}' is not 'input', 'logits', 'a<layer>.h<head>' or 'm<layer>'.")


def _flag(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise CircuitError(f"{where}: 'in_graph' must be true or false (got {value!r}).")
    return value


def _score(value, where: str) -> float | None:
    """A finite score, or None (absent, null or NaN: not scored)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CircuitError(f"{where}: 'score' must be a number (got {value!r}).")
    return float(value) if math.isfinite(value) else None


def _read_nodes(nodes, n_layers: int, n_heads: int):
    """(heads in the graph, MLP layers in it, node scores per head, whether neurons were given).
    A node the file does not list is out of the graph, as in EAP-IG's from_json."""
    if not isinstance(nodes, dict):
        raise CircuitError("Graph field 'nodes' must map node names to {\"in_graph\": ...}.")
    heads, mlps_in, scores, neurons = [], [], {}, False
    for name, info in nodes.items():
        kind, where = _parse_node(str(name), n_layers, n_heads), f"Graph node '{name}'"
        if not isinstance(info, dict) or "in_graph" not in info:
            raise CircuitError(f"{where} must be an object with 'in_graph'.")
        kept = _flag(info["in_graph"], where)
        score = _score(info.get("score"), where)
        neurons |= "neurons" in info
        if kind[0] == "head":
            if kept:
                heads.append(kind[1])
            if score is not None:
                scores[kind[1]] = abs(score)  # importance, either sign (EAP-IG's apply_topn: absolute=True)
        elif kind[0] == "mlp" and kept:
            mlps_in.append(kind[1])
    return heads, mlps_in, scores, neurons


def _is_edge(parent: tuple, child: tuple, qkv: str | None, parallel: bool) -> bool:
    """Whether EAP-IG's graph has this edge (the rule `graph_edges` enumerates), from parsed nodes."""
    if parent[0] == "logits" or child[0] == "input" or (child[0] == "head") != bool(qkv):
        return False
    if parent[0] == "input" or child[0] == "logits":
        return True
    p_layer = parent[1][0] if parent[0] == "head" else parent[1]
    c_layer = child[1][0] if child[0] == "head" else child[1]
    same_layer_head_into_mlp = child[0] == "mlp" and parent[0] == "head" and not parallel
    return p_layer < c_layer or (p_layer == c_layer and same_layer_head_into_mlp)


def _read_edges(edges, n_layers: int, n_heads: int, parallel: bool, kept_nodes: set[str]):
    """(|Σ outgoing edge scores| per head, edges out of the graph between two kept nodes that a circuit
    cannot carry (from input or an MLP, into an MLP), and the head -> head and head -> logits edges in the
    graph as (sender, receiver or "logits", input))."""
    if not isinstance(edges, dict):
        raise CircuitError("Graph field 'edges' must map edge names to {\"score\": ..., \"in_graph\": ...}.")
    sums: dict[Head, float] = {}
    dropped, head_edges, edge_scores = 0, set(), {}
    for name, info in edges.items():
        m = EDGE.fullmatch(str(name))
        if not m:
            raise CircuitError(f"Graph edge '{name}' is not of the form 'parent->child' or 'parent->a<l>.h<h><q|k|v>'.")
        parent, child = _parse_node(m[1], n_layers, n_heads), _parse_node(m[2], n_layers, n_heads)
        if not _is_edge(parent, child, m[3], parallel):  # e.g. a later node feeding an earlier one
            raise CircuitError(f"Graph edge '{name}' is not an edge of EAP-IG's graph of this model.")
        where = f"Graph edge '{name}'"
        if not isinstance(info, dict) or "in_graph" not in info:
            raise CircuitError(f"{where} must be an object with 'in_graph' (and usually 'score').")
        kept = _flag(info["in_graph"], where)
        score = _score(info.get("score"), where)
        if parent[0] == "head" and score is not None:
            sums[parent[1]] = sums.get(parent[1], 0.0) + score
        between_kept = m[1] in kept_nodes and m[2] in kept_nodes
        if parent[0] == "head" and child[0] in ("head", "logits"):  # an edge a circuit's edge list carries
            edge = (parent[1], child[1] if child[0] == "head" else "logits", m[3] or "out")
            if kept:
                head_edges.add(edge)
            if score is not None:
                edge_scores[edge] = score
        else:
            dropped += not kept and between_kept
    return {h: abs(s) for h, s in sums.items()}, dropped, head_edges, edge_scores


def from_eap_graph(d, position: str = "END", name: str = "imported EAP-IG graph", class_name: str = "imported",
                   task: str = "ioi") -> Imported:
    """An EAP-IG / MIB graph (dict, or its JSON text) as a circuit: the heads with in_graph true, one
    class kept at `position`. A file this module exported gets its own classes back (key "circuit").

    head_scores: |node score| per head where the graph has node scores, else |Σ of the head's outgoing
    edge scores| (to first order a node's effect is the sum of its outgoing edges' effects: the
    gradient at its output is the sum of its children's input gradients). Warnings say what the
    circuit does not carry. Anything malformed raises CircuitError.
    """
    d = _as_dict(d)
    if "cfg" not in d or "nodes" not in d:
        raise CircuitError("An EAP-IG graph needs 'cfg' and 'nodes' (and usually 'edges').")
    n_layers, n_heads = _cfg_shape(d["cfg"])
    heads, mlps_in, scores, neurons = _read_nodes(d["nodes"], n_layers, n_heads)
    if not heads:
        raise CircuitError("No attention head of the graph has in_graph true: there is no head circuit to import.")
    kept_nodes = {head_node(h) for h in heads} | {"input", "logits"} | {f"m{layer}" for layer in mlps_in}
    parallel = d["cfg"].get("parallel_attn_mlp", False)
    if not isinstance(parallel, bool):
        raise CircuitError(f"Graph cfg.parallel_attn_mlp must be true or false (got {str(parallel)[:40]!r}).")
    edge_scores, dropped, head_edges, scored_edges = _read_edges(d.get("edges", {}), n_layers, n_heads, parallel,
                                                                 kept_nodes)
    mlps_out = [layer for layer in range(n_layers) if layer not in mlps_in]
    warnings = []
    if mlps_out:
        warnings.append(f"MLP nodes are not represented (circuits here are attention heads; MLPs are never "
                        f"ablated): the graph leaves out {len(mlps_out)} of {n_layers} MLPs "
                        f"({', '.join(f'm{layer}' for layer in mlps_out[:6])}{', …' if len(mlps_out) > 6 else ''}).")
    if dropped:
        warnings.append(f"Edge-level detail dropped: {dropped} edge(s) from the input or an MLP, or into an MLP, "
                        "between nodes in the graph are out of it; here embeddings and MLPs keep all their "
                        "connections (only head -> head and head -> logits edges are a circuit's).")
    if neurons:
        warnings.append("Neuron-level membership is not represented: a head counts as in when its node is.")
    edge_list = _edge_list(head_edges, set(heads))
    if len(edge_list) < len(_every_head_edge(heads)):  # EAP-IG: an edge the file does not list is out too
        warnings.append(f"Edges: the graph keeps {len(edge_list)} of the {len(_every_head_edge(heads))} head -> head and "
                        "head -> logits edges among its heads; the circuit lists them as its edges.")
    else:
        edge_list = None  # every edge among the heads: the node-level circuit
    circuit = _carried_circuit(d, heads, warnings)
    if circuit is None:
        warnings.append(f"Positions: EAP-IG keeps nodes at every position; the imported heads are kept at "
                        f"{position}.")
        circuit = Circuit(name=name, classes=[CircuitClass(class_name, position, sorted(heads))], task=task,
                          notes=f"Imported from an EAP-IG graph ({n_layers} layers x {n_heads} heads).",
                          edges=edge_list)
    scores = scores or edge_scores
    if not any(scores.values()):  # all zero, as in an export of ours: no ranking to draw a ROC from
        scores = {}
    return Imported(circuit, scores, warnings, dict(d["cfg"]),
                    {e: v for e, v in scored_edges.items() if math.isfinite(v)} if any(scored_edges.values()) else {})


def _every_head_edge(heads) -> set:
    return ({(s, r, x) for s in heads for r in heads if s[0] < r[0] for x in "qkv"}
            | {(s, "logits", "out") for s in heads})


def _edge_list(head_edges: set, heads: set) -> list[Edge]:
    """The graph's head -> head and head -> logits edges between heads of the circuit, as its edge list."""
    out = [Edge(head_name(s), LOGITS if r == "logits" else head_name(r), x) for s, r, x in head_edges
           if s in heads and (r == "logits" or r in heads)]
    return sorted(out, key=lambda e: (parse_head(e.sender), e.receiver == LOGITS,
                                      () if e.receiver == LOGITS else parse_head(e.receiver), e.input))


def _carried_circuit(d: dict, heads: list[Head], warnings: list[str]) -> Circuit | None:
    """Our circuit under "circuit", if it is there and still matches the graph's heads."""
    if CIRCUIT_KEY not in d:
        return None
    circuit = Circuit.from_dict(d[CIRCUIT_KEY])
    if set(circuit.heads) != set(heads):
        warnings.append("The graph's heads no longer match the circuit stored with it (edited in EAP-IG?): "
                        "its classes are ignored.")
        return None
    return circuit


def _as_dict(d) -> dict:
    if isinstance(d, (bytes, str)):
        try:
            d = json.loads(d)  # NaN allowed: EAP-IG writes it for unscored nodes
        except RecursionError:
            raise CircuitError("Not valid JSON: nested too deep.") from None
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an over-long integer
            raise CircuitError(f"Not valid JSON: {str(e).splitlines()[0][:200]}.") from None
    if not isinstance(d, dict):
        raise CircuitError("A circuit file must be a JSON object.")
    return d


def is_eap_graph(d) -> bool:
    return isinstance(d, dict) and "nodes" in d and "cfg" in d


def read_circuit(data, position: str = "END", name: str = "imported EAP-IG graph") -> Imported:
    """Either kind of file (dict, JSON text or bytes): our circuit JSON, or an EAP-IG / MIB graph."""
    if isinstance(data, (bytes, str)) and b'"nodes"' not in (data if isinstance(data, bytes) else data.encode()):
        from .circuit import circuit_from_bytes

        # ours: the circuit-file parser, with its size, depth and encoding checks
        return Imported(circuit_from_bytes(data if isinstance(data, bytes) else data.encode(), name))
    d = _as_dict(data)
    if is_eap_graph(d):
        return from_eap_graph(d, position=position, name=name)
    return Imported(Circuit.from_dict(d))


MAX_GRAPH_BYTES = 64 << 20  # an EAP-IG graph lists every edge: ~1.8 MB for GPT-2 small, ~13 MB for medium


def load_any(path, position: str = "END") -> Imported:
    """A circuit file on disk, either kind; CircuitError (naming the file) when it cannot be read."""
    from pathlib import Path

    path = Path(path)
    try:
        if path.exists() and not path.is_file():
            raise CircuitError(f"Cannot read circuit file {path.name}: not a regular file.")
        with open(path, "rb") as f:
            data = f.read(MAX_GRAPH_BYTES + 1)
    except OSError as e:
        raise CircuitError(f"Cannot read circuit file {path.name}: {e.strerror or e}.") from None
    if len(data) > MAX_GRAPH_BYTES:
        raise CircuitError(f"{path.name}: larger than {MAX_GRAPH_BYTES >> 20} MB; no circuit file is this large.")
    if b'"nodes"' not in data:  # ours: the circuit-file parser names the file in its messages
        from .circuit import circuit_from_bytes

        return Imported(circuit_from_bytes(data, path.name))
    try:
        return read_circuit(data, position=position, name=path.stem)
    except CircuitError as e:
        raise CircuitError(f"{path.name}: {e}") from None


__all__ = ["load_any", "to_eap_graph", "from_eap_graph", "read_circuit", "is_eap_graph", "Imported", "graph_cfg", "graph_nodes",
           "graph_edges", "edge_name", "head_node", "CIRCUIT_KEY"]
