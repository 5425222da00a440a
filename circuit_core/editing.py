"""Editing a circuit as plain functions: every edit returns a new Circuit, so undo is a list.

The dashboard's editor calls these; the tests call them directly.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from .circuit import LOGITS, PALETTE, Circuit, CircuitClass, CircuitError, Edge, Head, head_name


def _copy(c: Circuit) -> Circuit:
    return copy.deepcopy(c)


def _cls(c: Circuit, name: str) -> CircuitClass:
    for cl in c.classes:
        if cl.name == name:
            return cl
    raise CircuitError(f"No class named '{name}'.")


def toggle_head(c: Circuit, head: Head, class_name: str) -> Circuit:
    """A click on a head: out -> into `class_name`; in `class_name` -> out; in another class -> moved."""
    new = _copy(c)
    target = _cls(new, class_name)
    current = new.class_of(head)
    if current is not None:
        current.heads.remove(head)
        new.minimality_k = _without_head(new.minimality_k, head)
        if current is target:
            return _tidy_edges(new)
    target.heads.append(head)
    return _tidy_edges(new)


def remove_head(c: Circuit, head: Head) -> Circuit:
    new = _copy(c)
    cl = new.class_of(head)
    if cl is not None:
        cl.heads.remove(head)
        new.minimality_k = _without_head(new.minimality_k, head)
    return _tidy_edges(new)


def _tidy_edges(c: Circuit) -> Circuit:
    """Drop edges an edit left without an end or without any sender below a receiver (c is a fresh copy)."""
    if c.edges is not None:
        c.edges = [e for e in c.edges if c.heads_of(e.sender) and (e.receiver == LOGITS or any(
            s[0] < r[0] for s in c.heads_of(e.sender) for r in c.heads_of(e.receiver)))]
    return c


def toggle_edge(c: Circuit, edge: Edge) -> Circuit:
    """A click on an edge: kept -> removed, removed -> kept. A circuit without an edge list first gets
    every edge among its classes (`Circuit.all_edges`), which is what it meant before the click."""
    new = _copy(c)
    edges = list(new.edges) if new.edges is not None else new.all_edges()
    if edge in edges:
        edges.remove(edge)
    else:
        edges.append(edge)
    new.edges = edges
    new.check_structure()
    return new


def _without_head(mk: dict, head: Head) -> dict:
    # A K set that names a removed head would no longer validate: drop it from every K.
    return {v: [k for k in ks if k != head] for v, ks in mk.items() if v != head}


def add_class(c: Circuit, name: str, position: str, color: str | None = None) -> Circuit:
    name = name.strip()
    if not name:
        raise CircuitError("A class needs a name.")
    if any(cl.name == name for cl in c.classes):
        raise CircuitError(f"There is already a class named '{name}'.")
    new = _copy(c)
    used = {c.color_of(cl) for cl in c.classes}
    color = color or next((p for p in PALETTE if p not in used), PALETTE[len(c.classes) % len(PALETTE)])
    new.classes.append(CircuitClass(name, position, [], color))
    return new


def update_class(c: Circuit, name: str, *, new_name: str | None = None, position: str | None = None,
                 color: str | None = None) -> Circuit:
    """Rename, move to another position, or recolour a class."""
    new = _copy(c)
    cl = _cls(new, name)
    if new_name is not None and new_name.strip() != name:
        if not new_name.strip():
            raise CircuitError("A class needs a name.")
        if any(o.name == new_name.strip() for o in new.classes):
            raise CircuitError(f"There is already a class named '{new_name.strip()}'.")
        cl.name = new_name.strip()
        if new.edges is not None:  # the class's edges follow it
            rename = {name: cl.name}
            new.edges = [Edge(rename.get(e.sender, e.sender), rename.get(e.receiver, e.receiver), e.input)
                         for e in new.edges]
    if position is not None:
        cl.position = position
    if color is not None:
        cl.color = color
    return new


def remove_class(c: Circuit, name: str) -> Circuit:
    new = _copy(c)
    cl = _cls(new, name)
    for h in list(cl.heads):
        new.minimality_k = _without_head(new.minimality_k, h)
    new.classes.remove(cl)
    return _tidy_edges(new)


def rows(c: Circuit) -> list[dict]:
    """One row per head (head, class, position): the editor's table."""
    return [{"head": head_name(h), "class": cl.name, "position": cl.position}
            for cl in c.classes for h in sorted(cl.heads)]


def from_rows(c: Circuit, table: list[dict]) -> Circuit:
    """Apply an edited table: heads may change class; a class's position is taken from its rows.

    Rows with an empty head are ignored; a class named in a row that does not exist is created.
    """
    from .circuit import parse_head

    new = _copy(c)
    positions: dict[str, str] = {}
    for cl in new.classes:
        cl.heads = []
    seen: set[Head] = set()
    for r in table:
        if not str(r.get("head") or "").strip():
            continue
        h = parse_head(r["head"])
        if h in seen:
            raise CircuitError(f"Head {head_name(h)} appears in two rows.")
        seen.add(h)
        name = str(r.get("class") or "").strip()
        if not name:
            raise CircuitError(f"Head {head_name(h)} has no class.")
        pos = str(r.get("position") or "").strip()
        if not any(cl.name == name for cl in new.classes):
            new = add_class(new, name, pos or "END")
        cl = _cls(new, name)
        if pos:
            if name in positions and positions[name] != pos:
                raise CircuitError(f"Class '{name}' is given two positions ({positions[name]}, {pos}); "
                                   "a class keeps all its heads at one position.")
            positions[name] = pos
            cl.position = pos
        cl.heads.append(h)
    kept = {h for cl in new.classes for h in cl.heads}
    new.minimality_k = {v: [k for k in ks if k in kept] for v, ks in new.minimality_k.items() if v in kept}
    return _tidy_edges(new)


def diff(before: Circuit, after: Circuit) -> dict[str, list[str]]:
    """Heads added, removed, and moved to another class (or position) between two circuits."""
    def where(c):
        return {h: (cl.name, cl.position) for cl in c.classes for h in cl.heads}

    a, b = where(before), where(after)
    return {
        "added": [f"{head_name(h)} ({b[h][0]})" for h in sorted(set(b) - set(a))],
        "removed": [f"{head_name(h)} ({a[h][0]})" for h in sorted(set(a) - set(b))],
        "moved": [f"{head_name(h)}: {a[h][0]} @ {a[h][1]} → {b[h][0]} @ {b[h][1]}"
                  for h in sorted(set(a) & set(b)) if a[h] != b[h]],
    }


@dataclass
class History:
    """Undo / redo over circuits. `push` after each edit; `undo`/`redo` return the circuit to show."""

    current: Circuit
    past: list[Circuit] = field(default_factory=list)
    future: list[Circuit] = field(default_factory=list)

    def push(self, c: Circuit) -> Circuit:
        if c.to_dict() != self.current.to_dict():
            self.past.append(self.current)
            self.current = c
            self.future.clear()
        return self.current

    def undo(self) -> Circuit:
        if self.past:
            self.future.append(self.current)
            self.current = self.past.pop()
        return self.current

    def redo(self) -> Circuit:
        if self.future:
            self.past.append(self.current)
            self.current = self.future.pop()
        return self.current

    @property
    def can_undo(self) -> bool:
        return bool(self.past)

    @property
    def can_redo(self) -> bool:
        return bool(self.future)
