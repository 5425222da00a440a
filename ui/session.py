"""One person's dashboard session: edit histories, uploads, jobs, runs and what pages remember.

One `Session` object lives under one key of Streamlit's session state; nothing else in the dashboard
reads or writes that state by key. Pages change the session through its methods (`push_edit`,
`undo`, `redo`, `upload`, `open_record`, `request`), never through flags. The sidebar's widgets keep
their values in Streamlit's state under the names in `W`: `widget` and `request` are the only ways
to read or set them from outside a widget.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from circuit_core.ablation import Methodology
from circuit_core.circuit import Circuit, CircuitError
from circuit_core.editing import History

from ui.view import FOLDER, HUB, METHODOLOGY_PARAMS, View

_KEY = "circuit-dashboard-session"
MAX_UPLOADS = 32  # per session: uploads live in the server's memory


class W:
    """The sidebar widgets' keys."""

    MODEL, FOLDER, HUB = "model_choice", "model_folder", "model_hub"
    CIRCUIT, UPLOAD = "circuit_choice", "upload"
    METHODOLOGY = {fld: fld for fld, _ in METHODOLOGY_PARAMS.values()}  # a widget per Methodology field
    SIDEBAR = [MODEL, FOLDER, HUB, *METHODOLOGY.values(), CIRCUIT]


def _json(c: Circuit) -> str:
    import json

    return json.dumps(c.to_dict(), sort_keys=True)


@dataclass
class Edits:
    """What the editor remembers of one circuit entry besides its history."""

    version: int = 0  # bumped by each edit, so the grid and table widgets are drawn afresh
    before_edit: Any = None  # the figures before the last edit ("since last edit")
    last_figures: Any = None  # the last figures that could be computed (shown beside an error)
    save_question: str | None = None  # a name that exists: overwrite?
    save_said: tuple[str, str] | None = None  # ("success" | "error", message), shown once


@dataclass
class Session:
    histories: dict[tuple[str, str], History] = field(default_factory=dict)  # (model key, entry) -> History
    edits: dict[tuple[str, str], Edits] = field(default_factory=dict)
    uploads: dict[str, Circuit] = field(default_factory=dict)  # "uploaded: name" -> Circuit, in order
    last_upload: str | None = None  # the file id of the upload taken in, so it is taken in once
    compare_uploads: dict = field(default_factory=dict)
    compare_seen: set = field(default_factory=set)
    jobs: dict = field(default_factory=dict)  # ui.jobs
    runs: list = field(default_factory=list)  # ui.runs
    present_step: int = 0
    view: View | None = None  # the view last drawn
    model_shown: str | None = None  # the model key of the last run, to notice a change of model
    circuit_for: dict[str, str] = field(default_factory=dict)  # model key -> its circuit entry, last chosen
    address_read: bool = False  # the address has been read (once per session: a reload or a link)
    waiting: dict | None = None  # the address's circuit until its model is loaded: {"model", "from", "circuit"}
    notes: list[str] = field(default_factory=list)  # shown once in the sidebar (import notes)
    warnings: dict[str, str] = field(default_factory=dict)  # "address", "circuit", "fallback" -> message
    circuit_warning_for: str | None = None  # the circuit entry the address warning is about
    _requested: dict = field(default_factory=dict)  # widget values to set before the widgets are drawn
    _kept: dict = field(default_factory=dict)  # the sidebar's widget values, across page switches

    # --- one object per browser session ---------------------------------------------------------------
    @classmethod
    def current(cls) -> "Session":
        if _KEY not in st.session_state:
            st.session_state[_KEY] = cls()
        return st.session_state[_KEY]

    @classmethod
    def of(cls, app) -> "Session":
        """The session of a Streamlit AppTest (tests build and read sessions through this)."""
        if _KEY not in app.session_state:
            app.session_state[_KEY] = cls()
        return app.session_state[_KEY]

    # --- widgets ----------------------------------------------------------------------------------------
    def request(self, **values) -> None:
        """Widget values for the next run, set before the widgets are drawn (Streamlit refuses changes
        to a drawn widget's value)."""
        self._requested.update(values)

    def apply_requests(self) -> set[str]:
        """Set the requested widget values; returns the widgets set."""
        for k, v in self._requested.items():
            st.session_state[k] = v
        done = set(self._requested)
        self._requested.clear()
        return done

    def keep_alive(self) -> None:
        """Keep the sidebar's widget values on a page that has not drawn them yet."""
        # Widget values are dropped when a run does not draw the widget; re-assigning keeps them across
        # page switches (Streamlit's documented pattern), and the kept copy covers a switch while a job's
        # progress fragment was polling.
        for k in W.SIDEBAR:
            if k in st.session_state:
                st.session_state[k] = st.session_state[k]
            elif k in self._kept:
                st.session_state[k] = self._kept[k]

    def keep_widgets(self) -> None:
        self._kept = {k: st.session_state[k] for k in W.SIDEBAR if k in st.session_state}

    @staticmethod
    def widget(key: str, default=None):
        return st.session_state.get(key, default)

    @staticmethod
    def set_widget(key: str, value) -> None:
        """Set a widget's value before it is drawn in this run."""
        st.session_state[key] = value

    @staticmethod
    def forget(key: str) -> None:
        """Let a widget start from its default (e.g. a choice another task does not have)."""
        st.session_state.pop(key, None)

    def start_from(self, view: View) -> None:
        """A fresh session opened at `view` (a reload or a link): its widgets, and its circuit kept
        until the view's model is loaded."""
        self.address_read = True
        want = {W.MODEL: view.model.choice, **{W.METHODOLOGY[f]: getattr(view.methodology, f)
                                                for f in W.METHODOLOGY}}
        if view.model.choice == FOLDER:
            want[W.FOLDER] = view.model.name
        elif view.model.choice == HUB:
            want[W.HUB] = view.model.name
        for k, v in want.items():
            st.session_state.setdefault(k, v)
        if view.circuit_from or view.circuit:
            self.waiting = {"model": view.model, "from": view.circuit_from, "circuit": view.circuit}

    # --- circuits and their edits -----------------------------------------------------------------------
    def history(self, model_key: str, entry: str, loaded: Circuit) -> History:
        """The edit history of a circuit entry on a model, started at `loaded`: one per (model, entry),
        so switching circuits or models loses nothing."""
        return self.histories.setdefault((model_key, entry), History(loaded))

    def history_of(self, model_key: str, entry: str) -> History:
        return self.histories[(model_key, entry)]

    def edits_of(self, key: tuple[str, str]) -> Edits:
        return self.edits.setdefault(key, Edits())

    def push_edit(self, key: tuple[str, str], circuit: Circuit, figures_before=None) -> None:
        self.histories[key].push(circuit)
        self._edited(key, figures_before)

    def undo(self, key: tuple[str, str], figures_before=None) -> None:
        self.histories[key].undo()
        self._edited(key, figures_before)

    def redo(self, key: tuple[str, str], figures_before=None) -> None:
        self.histories[key].redo()
        self._edited(key, figures_before)

    def _edited(self, key, figures_before) -> None:
        e = self.edits_of(key)
        e.before_edit, e.version = figures_before, e.version + 1

    def upload(self, kind: str, file_name: str, circuit: Circuit) -> str:
        """Add `circuit` to the circuit list as "<kind>: <name>", with its own history; the same content
        uploaded again selects the entry it already has, so its edits are kept. Returns the entry."""
        same = next((k for k, c in self.uploads.items() if _json(c) == _json(circuit)), None)
        if same is not None:
            return same
        if len(self.uploads) >= MAX_UPLOADS:
            raise CircuitError(f"This session holds {MAX_UPLOADS} uploaded circuits already; save the ones "
                               "you need and reload the page to start afresh.")
        stem = file_name.removesuffix(".json").strip()[:60] or "circuit"
        key, n = f"{kind}: {stem}", 2
        while key in self.uploads:  # another file of the same name: both stay selectable
            key, n = f"{kind}: {stem} ({n})", n + 1
        self.uploads[key] = circuit
        return key

    def choose_circuit(self, entry: str) -> None:
        self.request(**{W.CIRCUIT: entry})

    def open_record(self, record: dict, choices) -> None:
        """Open a saved run record: its model (when this dashboard offers it), methodology and circuit,
        from the next run on. Raises CircuitError or ValueError for a record it cannot open."""
        if not (isinstance(record, dict) and isinstance(record.get("methodology"), dict)
                and isinstance(record.get("circuit"), dict)):
            raise CircuitError("a run record is an object with 'methodology' and 'circuit' objects")
        meth = Methodology(**{k: v for k, v in record["methodology"].items() if k in Methodology.__dataclass_fields__})
        circuit = Circuit.from_dict(record["circuit"])
        key = (record.get("run") or {}).get("model_key") or (record.get("model") or {}).get("name")
        want = {}
        if key in choices and key not in (FOLDER, HUB):
            want[W.MODEL] = key
        for fld, ok in METHODOLOGY_PARAMS.values():
            value = getattr(meth, fld)
            if not ok(value):
                raise ValueError(f"{fld} = {value} is outside what the sidebar offers")
            want[W.METHODOLOGY[fld]] = value
        want[W.CIRCUIT] = self.upload("reopened", circuit.name, circuit)
        self.request(**want)
