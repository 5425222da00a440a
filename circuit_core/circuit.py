"""A circuit: classes of attention heads, each kept at its class's token position.

JSON format (hand-writable):
    {"name": "...", "model": "gpt2", "task": "ioi",
     "classes": [{"name": "name mover", "position": "END", "heads": ["9.9", "10.0"], "color": "#1f77b4"}],
     "minimality_k": {"10.0": ["9.9"]}, "notes": "...",
     "edges": [{"from": "s-inhibition", "to": "name mover", "input": "q"},
               {"from": "name mover", "to": "logits"}]}

`edges` is optional. Without it a circuit is its nodes with every edge among them (what a node-level
claim means). With it, the listed edges are the only head -> head and head -> logits edges kept: an edge
between two kept heads that is not listed carries its sender's ablation value into its receiver. An
end is a class (all its heads) or a head ("9.6"); the receiver may be "logits" (the residual stream
into the unembedding). `input` is the receiver's q, k or v ("out" for logits, which may be omitted).
Embeddings and MLPs are not circuit nodes: their edges are always kept.
"""
from __future__ import annotations

import json
import numbers
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from .storage import atomic_write_text

Head = tuple[int, int]  # (layer, head)
ALL_POSITIONS = "*"  # a node kept at every position

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


class CircuitError(ValueError):
    """A circuit file or edit is malformed or does not fit the model/task; the message names the entry."""


# Bounds that no real circuit comes near; past them a file is refused before it costs time or memory.
MAX_FILE_BYTES = 1 << 20  # 1 MB, the size of the largest circuit file read or upload accepted
MAX_DEPTH = 16  # a circuit nests 5 deep: object > classes > class > heads > [layer, head]
MAX_INDEX = 100_000  # layer and head numbers are below this; the model then checks its own range
MAX_NAME = 200  # characters in a circuit, class or position name
CIRCUIT_FIELDS = ("name", "model", "task", "classes", "minimality_k", "notes", "edges")
CLASS_FIELDS = ("name", "position", "heads", "color")
EDGE_FIELDS = ("from", "to", "input")
LOGITS = "logits"  # the receiver that is the residual stream into the unembedding
HEAD_INPUTS = ("q", "k", "v")  # a head receiver's inputs
OUT = "out"  # the logits' only input
MAX_EDGES = 10_000


def snippet(value, limit: int = 40) -> str:
    """A value as a short, printable, one-line snippet for an error message, in JSON's terms."""
    if isinstance(value, str):
        return f"'{_printable(value[:limit])}{'…' if len(value) > limit else ''}'"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):  # str() of a 5000-digit int raises; say how long it is instead
        return str(value) if abs(value) < 10**15 else f"a {value.bit_length() * 30103 // 100000 + 1}-digit number"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        if len(value) <= 4 and not any(isinstance(x, (list, tuple, dict)) for x in value):
            return "[" + ", ".join(snippet(x, 12) for x in value) + "]"
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


_HEAD = re.compile(r"\s*([0-9]+)\s*\.\s*([0-9]+)\s*", re.ASCII)  # ASCII digits only: '٩.٦' is no head


def parse_head(text) -> Head:
    """'9.6' -> (9, 6). Also accepts [9, 6]. Anything else raises CircuitError."""
    if isinstance(text, (list, tuple)):
        # Whole numbers only: true is not layer 1 and 9.0 is not layer 9.
        if len(text) != 2 or not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in text):
            raise CircuitError(f"Head {snippet(text)} is not [layer, head] with two whole numbers (e.g. [9, 6]).")
        layer, head = int(text[0]), int(text[1])
    else:
        m = _HEAD.fullmatch(text) if isinstance(text, str) and len(text) <= 40 else None
        if not m:
            raise CircuitError(f"Head {snippet(text)} is not of the form 'layer.head' (e.g. '9.6').")
        if max(len(g.lstrip("0")) for g in m.groups()) > len(str(MAX_INDEX)):  # before int(): no 4300-digit parse
            layer = head = MAX_INDEX
        else:
            layer, head = int(m.group(1)), int(m.group(2))
    if not (0 <= layer < MAX_INDEX and 0 <= head < MAX_INDEX):
        raise CircuitError(f"Head {snippet(text)}: layer and head must be whole numbers from 0 to {MAX_INDEX - 1}.")
    return layer, head


def head_name(h: Head) -> str:
    return f"{h[0]}.{h[1]}"


@dataclass
class CircuitClass:
    name: str
    position: str
    heads: list[Head]
    color: str | None = None


@dataclass(frozen=True)
class Edge:
    """sender -> receiver at the receiver's input. Ends are class names or head names ("9.6");
    the receiver may be LOGITS (input OUT)."""
    sender: str
    receiver: str
    input: str

    def to_dict(self) -> dict:
        d = {"from": self.sender, "to": self.receiver}
        if self.receiver != LOGITS:
            d["input"] = self.input
        return d

    def label(self) -> str:
        return f"{self.sender} → {self.receiver}" + ("" if self.receiver == LOGITS else f" ({self.input})")


HeadEdge = tuple[Head, "Head | str", str]  # (sender head, receiver head or LOGITS, input)


@dataclass
class Circuit:
    name: str
    classes: list[CircuitClass]
    model: str | None = None
    task: str = "ioi"
    minimality_k: dict[Head, list[Head]] = field(default_factory=dict)
    notes: str = ""
    edges: list[Edge] | None = None  # None: every edge among the circuit's nodes

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

    def heads_of(self, end: str) -> list[Head]:
        """The heads an edge end names: a class's heads, or one head of the circuit ([] if neither)."""
        cls = next((c for c in self.classes if c.name == end), None)
        if cls is not None:
            return list(cls.heads)
        try:
            head = parse_head(end)
        except CircuitError:
            return []
        return [head] if head in self.heads else []

    def head_edges(self) -> frozenset | None:
        """The kept edges as (sender head, receiver head or LOGITS, input); None when the circuit has
        no `edges` (all edges among its nodes are kept). A class -> class edge stands for every pair of
        their heads in which the sender's layer is below the receiver's (no other pair is an edge)."""
        if self.edges is None:
            return None
        out = set()
        for e in self.edges:
            senders = self.heads_of(e.sender)
            if e.receiver == LOGITS:
                out.update((s, LOGITS, OUT) for s in senders)
            else:
                out.update((s, r, e.input) for s in senders for r in self.heads_of(e.receiver) if s[0] < r[0])
        return frozenset(out)

    def all_edges(self) -> list[Edge]:
        """Every class -> class edge (q, k, v) and class -> logits edge a node-level circuit keeps:
        the edges an edge list starts from. Classes with no sender below a receiver are left out."""
        out = []
        for a in self.classes:
            for b in self.classes:
                if a.heads and b.heads and min(l for l, _ in a.heads) < max(l for l, _ in b.heads):
                    out += [Edge(a.name, b.name, x) for x in HEAD_INPUTS]
        return out + [Edge(a.name, LOGITS, OUT) for a in self.classes if a.heads]

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
        if self.edges is not None:
            d["edges"] = [e.to_dict() for e in self.edges]
        return d

    @classmethod
    def from_dict(cls, d) -> "Circuit":
        """A circuit from parsed JSON. Anything malformed raises CircuitError naming the entry."""
        if not isinstance(d, dict):
            raise CircuitError(f"A circuit must be a JSON object with 'name' and 'classes', not {snippet(d)}.")
        unknown = [k for k in d if k not in CIRCUIT_FIELDS]
        if unknown:
            raise CircuitError(f"Unknown circuit field(s): {', '.join(sorted(map(snippet, unknown)))} "
                               f"(known: {', '.join(CIRCUIT_FIELDS)}).")
        if not isinstance(d.get("classes"), list) or not d["classes"]:
            raise CircuitError("Field 'classes' must be a non-empty list of classes.")
        classes = [_parse_class(i, c) for i, c in enumerate(d["classes"])]
        if not any(c.heads for c in classes):
            raise CircuitError("The circuit has no heads; a circuit needs at least one.")
        circuit = cls(
            name=_text(d, "name", "The circuit") or "unnamed circuit",
            classes=classes,
            model=_text(d, "model", "The circuit", limit=4096),
            task=_parse_task(d.get("task")),
            minimality_k=_parse_minimality_k(d.get("minimality_k")),
            notes=_text(d, "notes", "The circuit", limit=None, one_line=False) or "",
            edges=_parse_edges(d.get("edges"), "edges" in d),
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
        for i, e in enumerate(self.edges or []):
            where = f"edge #{i + 1} ({e.label()})"
            if not self.heads_of(e.sender):
                raise CircuitError(f"{where}: {snippet(e.sender)} is neither a class of the circuit nor one of its heads.")
            if e.receiver != LOGITS and not self.heads_of(e.receiver):
                raise CircuitError(f"{where}: {snippet(e.receiver)} is neither a class of the circuit, one of its "
                                   f"heads, nor '{LOGITS}'.")
            if e.receiver != LOGITS and not any(s[0] < r[0] for s in self.heads_of(e.sender)
                                                for r in self.heads_of(e.receiver)):
                raise CircuitError(f"{where}: no head of {snippet(e.sender)} is in a layer below a head of "
                                   f"{snippet(e.receiver)}, so no such edge exists.")
        if self.edges is not None and len(set(self.edges)) < len(self.edges):
            raise CircuitError("An edge is listed twice in 'edges'.")

    def check_task(self, task: str) -> None:
        """CircuitError unless the circuit is for `task`: its positions and K sets mean nothing on another."""
        from .tasks import TASKS

        if self.task not in TASKS:
            raise CircuitError(f"Circuit {snippet(self.name)} is for task {snippet(self.task)}, which is not a known "
                               f"task (known: {', '.join(TASKS)}).")
        if self.task != task:
            raise CircuitError(f"Circuit {snippet(self.name)} is for task '{self.task}', not '{task}': choose "
                               f"task '{self.task}' or a circuit made for '{task}'.")

    def validate(self, n_layers: int, n_heads: int, roles, task: str | None = None) -> None:
        """Checks against a model and task: at least one head, heads in range, positions known to the
        task; with `task`, also that the circuit was made for it (check_task)."""
        self.check_structure()
        if not self.heads:
            raise CircuitError(f"Circuit {snippet(self.name)} has no heads; a circuit needs at least one.")
        if task is not None:
            self.check_task(task)
        for c in self.classes:
            if c.position not in roles and c.position != ALL_POSITIONS:
                raise CircuitError(
                    f"Class '{c.name}': position {snippet(c.position)} is not known to the task "
                    f"(known: {', '.join(roles)}, or '*' for all positions)."
                )
            for (l, h) in c.heads:
                if not (0 <= l < n_layers and 0 <= h < n_heads):
                    raise CircuitError(
                        f"Class '{c.name}': head {l}.{h} does not exist in this model "
                        f"({n_layers} layers x {n_heads} heads: layers 0-{n_layers - 1}, heads 0-{n_heads - 1})."
                    )

    def save(self, path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")


# --- parsing helpers: each raises CircuitError naming the entry -----------------------------------
def _bad_char(text: str, one_line: bool) -> str | None:
    """The first character that would break a one-line message or cannot be written as UTF-8."""
    bad = ("Cc", "Cs", "Zl", "Zp") if one_line else ("Cs",)
    return next((ch for ch in text if unicodedata.category(ch) in bad), None)


def _text(d: dict, key: str, where: str, limit: int | None = MAX_NAME, one_line: bool = True,
          required: bool = False) -> str | None:
    """d[key] as text; None when absent or null (an error when required)."""
    value = d.get(key)
    if value is None or (required and isinstance(value, str) and not value.strip()):
        if required:
            raise CircuitError(f"{where}: '{key}' is empty.")
        return None
    if not isinstance(value, str):
        raise CircuitError(f"{where}: '{key}' must be text, not {snippet(value)}.")
    if limit is not None and len(value) > limit:
        raise CircuitError(f"{where}: '{key}' is {len(value):,} characters long; at most {limit} are allowed.")
    ch = _bad_char(value, one_line)
    if ch is not None:
        raise CircuitError(f"{where}: '{key}' {snippet(value)} contains the character {ascii(ch)}, which is not allowed.")
    return value


def _parse_task(value) -> str:
    from .tasks import TASKS

    if value is None:  # files from before tasks were named are IOI circuits
        return "ioi"
    if not isinstance(value, str) or value not in TASKS:
        raise CircuitError(f"Field 'task' is {snippet(value)}, which is not a known task (known: {', '.join(TASKS)}).")
    return value


def _parse_class(i: int, c) -> CircuitClass:
    where = f"class #{i + 1}"
    if not isinstance(c, dict):
        raise CircuitError(f"{where} must be an object with 'name', 'position' and 'heads', not {snippet(c)}.")
    if isinstance(c.get("name"), str):
        where = f"class #{i + 1} ({snippet(c['name'])})"
    for key in ("name", "position", "heads"):
        if key not in c:
            raise CircuitError(f"{where} has no '{key}'.")
    _known_fields(c, CLASS_FIELDS, where)
    name = _text(c, "name", where, required=True)
    position = _text(c, "position", where, required=True)
    if not isinstance(c["heads"], list):
        raise CircuitError(f"{where}: 'heads' must be a list like [\"9.6\", \"10.0\"], not {snippet(c['heads'])}.")
    try:
        heads = [parse_head(h) for h in c["heads"]]
    except CircuitError as e:
        raise CircuitError(f"{where}: {e}") from None
    color = c.get("color")
    if color is not None and not (isinstance(color, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", color)):
        raise CircuitError(f"{where}: color {snippet(color)} is not a #rrggbb colour.")
    return CircuitClass(name, position, heads, color)


def _parse_minimality_k(mk) -> dict[Head, list[Head]]:
    if mk is None:
        return {}
    if not isinstance(mk, dict):
        raise CircuitError(f"Field 'minimality_k' must map a head to a list of heads "
                           f"(e.g. {{\"10.0\": [\"9.9\"]}}), not {snippet(mk)}.")
    out: dict[Head, list[Head]] = {}
    try:
        for v, ks in mk.items():
            head = parse_head(v)
            if head in out:
                raise CircuitError(f"head {head_name(head)} has two entries.")
            if not isinstance(ks, list):
                raise CircuitError(f"the K of {snippet(v)} must be a list of heads, not {snippet(ks)}.")
            out[head] = [parse_head(k) for k in ks]
            if len(set(out[head])) < len(out[head]):
                raise CircuitError(f"the K of {snippet(v)} lists a head twice.")
    except CircuitError as e:
        raise CircuitError(f"minimality_k: {e}") from None
    return out


def _known_fields(d: dict, known: tuple, where: str) -> None:
    bad = [k for k in d if k not in known]
    if bad:
        raise CircuitError(f"{where} has unknown field(s): {', '.join(sorted(map(snippet, bad)))} "
                           f"(known: {', '.join(known)}).")


def _parse_edges(value, present: bool) -> list[Edge] | None:
    if not present:
        return None
    if not isinstance(value, list):
        raise CircuitError(f"Field 'edges' must be a list like [{{\"from\": \"s-inhibition\", \"to\": \"name mover\", "
                           f"\"input\": \"q\"}}], not {snippet(value)}.")
    if len(value) > MAX_EDGES:
        raise CircuitError(f"Field 'edges' lists {len(value):,} edges; at most {MAX_EDGES:,} are allowed.")
    out = []
    for i, e in enumerate(value):
        where = f"edge #{i + 1}"
        if not isinstance(e, dict):
            raise CircuitError(f"{where} must be an object with 'from', 'to' and 'input', not {snippet(e)}.")
        _known_fields(e, EDGE_FIELDS, where)
        sender = _text(e, "from", where, required=True)
        receiver = _text(e, "to", where, required=True)
        if sender == LOGITS:
            raise CircuitError(f"{where}: '{LOGITS}' can only receive an edge.")
        default = OUT if receiver == LOGITS else None
        x = e.get("input", default)
        allowed = (OUT,) if receiver == LOGITS else HEAD_INPUTS
        if x not in allowed:
            raise CircuitError(f"{where}: input {snippet(x)} must be one of {', '.join(allowed)}"
                               f"{'' if receiver == LOGITS else ' (the receiving head’s query, key or value)'}.")
        out.append(Edge(sender, receiver, x))
    return out


def _deeper_than(value, limit: int) -> bool:
    """Whether lists/objects nest more than `limit` levels (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (list, dict)):
            if depth > limit:
                return True
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return False


def _unique_keys(pairs):
    """JSON object hook: a key given twice would silently drop the first value (e.g. two 'heads')."""
    d = {}
    for k, v in pairs:
        if k in d:
            raise CircuitError(f"key {snippet(k)} appears twice in one object.")
        d[k] = v
    return d


def _small_int(digits: str) -> int:
    # Python refuses to parse ints past 4300 digits with a ValueError; no circuit needs more than a few.
    if len(digits.lstrip("-")) > 18:
        raise CircuitError(f"a number has {len(digits.lstrip('-')):,} digits; circuit numbers are small whole numbers.")
    return int(digits)


def _no_constant(name: str):
    raise CircuitError(f"{name} is not valid JSON.")


def _decode(data: bytes, source: str) -> str:
    """UTF-8 text (a UTF-8 byte order mark is accepted); a clear message for anything else."""
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        line = body[:e.start].count(b"\n") + 1
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            hint = "it is UTF-16 text"
        elif b"\x00" in data:
            hint = "it looks like a binary file"
        else:
            hint = "it may be Latin-1 or Windows-1252 text"
        raise CircuitError(f"{source}: not UTF-8 text (byte 0x{body[e.start]:02x} on line {line}); {hint}. "
                           "Save it as UTF-8.") from None
    if "\x00" in text:  # valid UTF-8, but JSON never holds NUL: UTF-16 without a byte order mark, or binary
        raise CircuitError(f"{source}: contains NUL bytes, so it is UTF-16/UTF-32 or binary, not UTF-8 JSON. "
                           "Save it as UTF-8.")
    return text


_TOO_DEEP = object()


def _printable(text: str) -> str:
    """Control characters, line breaks and lone surrogates escaped, so a message stays one line."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def circuit_from_bytes(data: bytes, source: str = "circuit file") -> Circuit:
    """Parse a circuit file's bytes (read from disk or uploaded); `source` (a file name) starts every
    message. Raises only CircuitError, whatever the bytes."""
    source = _printable(source)
    if len(data) > MAX_FILE_BYTES:
        raise CircuitError(f"{source}: larger than {MAX_FILE_BYTES // 1024:,} KB; a circuit file is at most "
                           f"{MAX_FILE_BYTES // 1024:,} KB.")
    text = _decode(data, source)
    if not text.strip():
        raise CircuitError(f"{source}: the file is empty.")
    try:
        d = json.loads(text, object_pairs_hook=_unique_keys, parse_int=_small_int, parse_constant=_no_constant)
    except CircuitError as e:
        raise CircuitError(f"{source}: {e}") from None
    except json.JSONDecodeError as e:
        raise CircuitError(f"{source}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}).") from None
    except RecursionError:  # the parser's own depth limit, far past ours
        d = _TOO_DEEP
    if d is _TOO_DEEP or _deeper_than(d, MAX_DEPTH):
        raise CircuitError(f"{source}: nested more than {MAX_DEPTH} levels deep; a circuit nests 5 "
                           "(object, classes, class, heads, head).")
    try:
        return Circuit.from_dict(d)
    except CircuitError as e:
        raise CircuitError(f"{source}: {e}") from None


def load_circuit(path) -> Circuit:
    """Read a circuit JSON file; CircuitError (with the file name) when it cannot be read or is malformed."""
    path = Path(path)
    shown = _printable(str(path))
    try:
        if path.exists() and not path.is_file():  # a folder, a pipe, a device: never block or read on
            raise CircuitError(f"Cannot read circuit file {shown}: not a regular file.")
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # bounded, whatever the file claims
    except OSError as e:
        raise CircuitError(f"Cannot read circuit file {shown}: {e.strerror or e}.") from None
    except CircuitError:
        raise
    except ValueError as e:  # a path holding a NUL byte
        raise CircuitError(f"Cannot read circuit file {shown}: {e}.") from None
    return circuit_from_bytes(data, path.name)
