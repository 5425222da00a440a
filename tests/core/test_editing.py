"""The editor's logic as plain functions: toggle, class changes, table edits, undo/redo, diff."""
import pytest

from circuit_core.circuit import CircuitError, load_circuit
from circuit_core.editing import (History, add_class, diff, from_rows, remove_class, remove_head, rows,
                                  toggle_head, update_class)


@pytest.fixture
def paper():
    return load_circuit("data/circuits/ioi-gpt2-small.json")


def test_toggle_in_out_and_move(paper):
    c = toggle_head(paper, (1, 1), "induction")
    assert c.class_of((1, 1)).name == "induction" and paper.class_of((1, 1)) is None  # original untouched
    c2 = toggle_head(c, (1, 1), "induction")
    assert c2.class_of((1, 1)) is None
    moved = toggle_head(paper, (9, 9), "backup name mover")
    assert moved.class_of((9, 9)).name == "backup name mover" and len(moved.heads) == 26
    assert (9, 9) not in moved.minimality_k and all((9, 9) not in ks for ks in moved.minimality_k.values())
    moved.check_structure()


def test_removing_backups_and_diff(paper):
    c = paper
    for h in list(paper.classes[1].heads):
        c = remove_head(c, h)
    d = diff(paper, c)
    assert len(d["removed"]) == 8 and "10.10 (backup name mover)" in d["removed"] and not d["added"]
    c.check_structure()


def test_class_edits(paper):
    c = add_class(paper, "mover 2", "END")
    assert c.classes[-1].color not in {paper.color_of(cl) for cl in paper.classes}
    with pytest.raises(CircuitError, match="already"):
        add_class(c, "mover 2", "END")
    c = update_class(c, "induction", new_name="induction heads", position="S1+1", color="#000000")
    cl = c.class_of((5, 5))
    assert (cl.name, cl.position, cl.color) == ("induction heads", "S1+1", "#000000")
    assert diff(paper, c)["moved"][0].startswith("5.5: induction @ S2 → induction heads @ S1+1")
    c = remove_class(c, "previous token")
    assert (2, 2) not in c.heads and (2, 2) not in c.minimality_k
    c.check_structure()


def test_table_round_trip_and_errors(paper):
    per_class = lambda c: {cl.name: (cl.position, set(cl.heads)) for cl in c.classes}
    assert per_class(from_rows(paper, rows(paper))) == per_class(paper)
    table = rows(paper)
    next(r for r in table if r["head"] == "9.9")["class"] = "new class"
    table.append({"head": "", "class": "", "position": ""})  # an empty new row is ignored
    c = from_rows(paper, table)
    assert c.class_of((9, 9)).name == "new class" and c.class_of((9, 9)).position == "END"
    assert len(c.heads) == 26
    bad = rows(paper) + [{"head": "9.9", "class": "name mover", "position": "END"}]
    with pytest.raises(CircuitError, match="two rows"):
        from_rows(paper, bad)
    split = rows(paper)
    split[0]["position"] = "IO"
    with pytest.raises(CircuitError, match="two positions"):
        from_rows(paper, split)


def test_undo_redo(paper):
    h = History(paper)
    h.push(toggle_head(h.current, (1, 1), "induction"))
    h.push(toggle_head(h.current, (1, 2), "induction"))
    assert len(h.current.heads) == 28
    assert len(h.undo().heads) == 27 and len(h.undo().heads) == 26 and not h.can_undo
    assert len(h.redo().heads) == 27
    h.push(remove_head(h.current, (9, 9)))
    assert not h.can_redo  # a new edit clears the redo stack
    h.push(h.current)  # a no-op edit is not an undo step
    assert len(h.past) == 2
