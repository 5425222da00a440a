"""A circuit: classes of attention heads, each kept at its class's token position.

JSON format (hand-writable):
    {"name": "...", "model": "gpt2", "task": "ioi",
     "classes": [{"name": "name mover", "position": "END", "heads": ["9.9", "10.0"], "color": "#1f77b4"}],
     "minimality_k": {"10.0": ["9.9"]}, "notes": "..."}
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

Head = tuple[int, int]  # (layer, head)
ALL_POSITIONS = "*"  # a node kept at every position

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


class CircuitError(ValueError):
    """A circuit file or edit is malformed or does not fit the model/task; the message names the entry."""


def parse_head(text) -> Head:
    """'9.6' -> (9, 6). Also accepts [9, 6]."""
    if isinstance(text, (list, tuple)) and len(text) == 2 and all(isinstance(x, int) for x in text):
        return int(text[0]), int(text[1])
    m = re.fullmatch(r"\s*(\d+)\s*\.\s*(\d+)\s*", str(text))
    if not m:
        raise CircuitError(f"Head '{text}' is not of the form 'layer.head' (e.g. '9.6').")
    return int(m.group(1)), int(m.group(2))


def head_name(h: Head) -> str:
    return f"{h[0]}.{h[1]}"


@dataclass
class CircuitClass:
    name: str
    position: str
    heads: list[Head]
    color: str | None = None


@dataclass
class Circuit:
    name: str
    classes: list[CircuitClass]
    model: str | None = None
    task: str = "ioi"
    minimality_k: dict[Head, list[Head]] = field(default_factory=dict)
    notes: str = ""

    # --- views -------------------------------------------------------------------------------
    @property
    def heads(self) -> list[Head]:
        return [h for c in self.classes for h in c.heads]

    def class_of(self, head: Head) -> CircuitClass | None:
        return next((c for c in self.classes if head in c.heads), None)

    def nodes(self, positions: str = "circuit") -> frozenset[tuple[int, int, str]]:
        """(layer, head, position) for every head; positions='all' keeps heads everywhere."""
        return frozenset(
            (l, h, c.position if positions == "circuit" else ALL_POSITIONS)
            for c in self.classes
            for (l, h) in c.heads
        )

    def color_of(self, cls: CircuitClass) -> str:
        return cls.color or PALETTE[self.classes.index(cls) % len(PALETTE)]

    # --- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "model": self.model,
            "task": self.task,
            "classes": [
                {"name": c.name, "position": c.position, "heads": [head_name(h) for h in c.heads],
                 "color": self.color_of(c)}
                for c in self.classes
            ],
            "minimality_k": {head_name(v): [head_name(k) for k in ks] for v, ks in self.minimality_k.items()},
            "notes": self.notes,
        }
        return d

    @classmethod
    def from_dict(cls, d) -> "Circuit":
        if not isinstance(d, dict):
            raise CircuitError("A circuit must be a JSON object with 'name' and 'classes'.")
        unknown = set(d) - {"name", "model", "task", "classes", "minimality_k", "notes"}
        if unknown:
            raise CircuitError(f"Unknown circuit field(s): {', '.join(sorted(unknown))}.")
        if not isinstance(d.get("classes"), list) or not d["classes"]:
            raise CircuitError("Field 'classes' must be a non-empty list of classes.")
        classes = []
        for i, c in enumerate(d["classes"]):
            where = f"class #{i + 1}"
            if not isinstance(c, dict):
                raise CircuitError(f"{where} must be an object with 'name', 'position' and 'heads'.")
            where = f"class #{i + 1} ('{c.get('name', '?')}')"
            for key in ("name", "position", "heads"):
                if key not in c:
                    raise CircuitError(f"{where} has no '{key}'.")
            bad = set(c) - {"name", "position", "heads", "color"}
            if bad:
                raise CircuitError(f"{where} has unknown field(s): {', '.join(sorted(bad))}.")
            if not isinstance(c["heads"], list):
                raise CircuitError(f"{where}: 'heads' must be a list like [\"9.6\", \"10.0\"].")
            try:
                heads = [parse_head(h) for h in c["heads"]]
            except CircuitError as e:
                raise CircuitError(f"{where}: {e}") from None
            color = c.get("color")
            if color is not None and not re.fullmatch(r"#[0-9a-fA-F]{6}", str(color)):
                raise CircuitError(f"{where}: color '{color}' is not a #rrggbb colour.")
            classes.append(CircuitClass(str(c["name"]), str(c["position"]), heads, color))
        mk = d.get("minimality_k") or {}
        if not isinstance(mk, dict):
            raise CircuitError("Field 'minimality_k' must map a head to a list of heads.")
        try:
            minimality_k = {parse_head(v): [parse_head(k) for k in ks] for v, ks in mk.items()}
        except (CircuitError, TypeError) as e:
            raise CircuitError(f"minimality_k: {e}") from None
        circuit = cls(
            name=str(d.get("name") or "unnamed circuit"),
            classes=classes,
            model=d.get("model"),
            task=str(d.get("task") or "ioi"),
            minimality_k=minimality_k,
            notes=str(d.get("notes") or ""),
        )
        circuit.check_structure()
        return circuit

    def check_structure(self) -> None:
        """Checks that need no model: no head twice, K sets inside the circuit."""
        seen: dict[Head, str] = {}
        names = set()
        for c in self.classes:
            if c.name in names:
                raise CircuitError(f"Two classes are named '{c.name}'.")
            names.add(c.name)
            for h in c.heads:
                if h in seen:
                    where = "twice in" if seen[h] == c.name else f"in both '{seen[h]}' and"
                    raise CircuitError(f"Head {head_name(h)} is {where} '{c.name}'.")
                seen[h] = c.name
        for v, ks in self.minimality_k.items():
            if v not in seen:
                raise CircuitError(f"minimality_k names head {head_name(v)}, which is not in the circuit.")
            for k in ks:
                if k not in seen:
                    raise CircuitError(f"minimality_k for {head_name(v)} names head {head_name(k)}, which is not in the circuit.")
                if k == v:
                    raise CircuitError(f"minimality_k for {head_name(v)} contains the head itself.")

    def validate(self, n_layers: int, n_heads: int, roles) -> None:
        """Checks against a model and task: heads in range, positions known to the task."""
        self.check_structure()
        for c in self.classes:
            if c.position not in roles and c.position != ALL_POSITIONS:
                raise CircuitError(
                    f"Class '{c.name}': position '{c.position}' is not known to the task "
                    f"(known: {', '.join(roles)}, or '*' for all positions)."
                )
            for (l, h) in c.heads:
                if not (0 <= l < n_layers and 0 <= h < n_heads):
                    raise CircuitError(
                        f"Class '{c.name}': head {l}.{h} does not exist in this model "
                        f"({n_layers} layers x {n_heads} heads: layers 0-{n_layers - 1}, heads 0-{n_heads - 1})."
                    )

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def load_circuit(path) -> Circuit:
    """Read a circuit JSON file; CircuitError (with the file name) when it is malformed."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise CircuitError(f"Cannot read circuit file {path}: {e.strerror or e}.") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise CircuitError(f"{path.name}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}).") from None
    try:
        return Circuit.from_dict(d)
    except CircuitError as e:
        raise CircuitError(f"{path.name}: {e}") from None
