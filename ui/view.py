"""What a page shows, as a value: model, methodology and circuit. The page's address is its serialisation.

`View.from_query(params)` reads an address (untrusted: every field is checked, and a field that
cannot be used is named in the problems returned, never an exception); `view.to_query()` writes one.
No Streamlit here, so both are tested as plain functions.

A served dashboard offers models by label and never reads or writes a folder path. On a person's own
dashboard the address keeps a local folder too, so a reload or a link on the same machine brings back
the model and the edits.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from circuit_core.ablation import Ablation, Methodology, PositionScope, RefNoise
from circuit_core.metrics import Metric
from circuit_core.tasks import REGISTRY

HUB = "hub name…"  # any model TransformerLens supports, by its hub name
FOLDER = "local folder…"  # a Hugging Face model folder on this machine (never offered when serving)
MODEL_CHOICES = ("gpt2", "gpt2-medium", "demo", HUB, FOLDER)
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?")  # "gpt2-large", "EleutherAI/pythia-160m"


@dataclass(frozen=True)
class ModelRef:
    """The sidebar's model: one of the offered choices; for HUB and FOLDER, `name` is the hub name or path."""

    choice: str = MODEL_CHOICES[0]
    name: str = ""

    def key(self, serve_models: Mapping[str, str] | None = None) -> str:
        """What the model is loaded by: a hub name, "demo", a folder, or what a served label stands for."""
        if serve_models is not None:
            return serve_models[self.choice]
        return self.name if self.choice in (HUB, FOLDER) else self.choice


# The methodology in the address: every field written out, so a link opens the same figures even
# after the defaults change. Name in the address -> (Methodology field, check).
METHODOLOGY_PARAMS = {
    "task": ("task", lambda v: v in REGISTRY),
    "n": ("n", lambda v: 10 <= v <= 2000),
    "seed": ("seed", lambda v: 0 <= v <= 10_000),
    "mode": ("mode", lambda v: any(v in t.modes for t in REGISTRY.values())),
    "ref": ("ref_per_group", lambda v: 0 <= v <= 500),
    "reps": ("ref_replicates", lambda v: 0 <= v <= 50),
    "noise": ("ref_noise", lambda v: v in [r.value for r in RefNoise]),
    "ablation": ("ablation", lambda v: v in [a.value for a in Ablation]),
    "positions": ("positions", lambda v: v in [p.value for p in PositionScope]),
    "metric": ("metric", lambda v: v in [m.value for m in Metric]),
}
_TEXT_FIELDS = {"task", "mode", "ablation", "positions", "ref_noise", "metric"}


def methodology_from_query(query: Mapping[str, str], base: Methodology | None = None) -> tuple[Methodology, list[str]]:
    """The address's methodology (fields it does not name from `base`), and the settings refused
    ("name=value") as unreadable or out of what the sidebar offers."""
    values, bad = {}, []
    for name, (fld, ok) in METHODOLOGY_PARAMS.items():
        text = query.get(name)
        if text is None:
            continue
        if fld in _TEXT_FIELDS:
            value = text
        else:
            value = int(text) if text.isascii() and text.isdigit() else None
        if value is None or not ok(value):
            bad.append(f"{name}={text[:20]}")
        else:
            values[fld] = value
    base = base or Methodology()
    if "task" in values and values["task"] != base.task and "mode" not in values:
        values["mode"] = "mixed"  # another task's default mode may not exist in this one
    try:
        return base.replace(**values), bad
    except ValueError:  # e.g. a mode the task does not have: the task stays, the mode goes
        bad.append(f"mode={values.pop('mode', '')[:20]}")
        return base.replace(**{**values, "mode": "mixed"}), bad


def methodology_to_query(m: Methodology) -> dict[str, str]:
    return {name: str(getattr(m, fld)) for name, (fld, _) in METHODOLOGY_PARAMS.items()}


@dataclass(frozen=True)
class View:
    """A page's model, methodology and circuit: `circuit_from` names the circuit list's entry, and
    `circuit` carries the circuit itself (links.encode_circuit) unless it is that entry's file unedited."""

    model: ModelRef = field(default_factory=ModelRef)
    methodology: Methodology = field(default_factory=Methodology)
    circuit_from: str | None = None
    circuit: str | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str], choices: Sequence[str] = MODEL_CHOICES,
                   serving: bool = False) -> tuple["View", list[str]]:
        """The view an address names, and its settings that could not be used (each "name=value").

        `choices` are the models offered (a served dashboard's labels). Outside serving, `model` may
        also be another hub name and `folder` a local folder; a served dashboard reads neither.
        """
        meth, bad = methodology_from_query(query)
        model = ModelRef(choices[0])
        wanted, folder = query.get("model"), query.get("folder")
        if folder and not serving and FOLDER in choices:
            model = ModelRef(FOLDER, folder)
        elif wanted in choices and wanted not in (HUB, FOLDER):
            model = ModelRef(wanted)
        elif wanted and not serving and HUB in choices and is_hub_name(wanted):
            model = ModelRef(HUB, wanted)
        elif wanted:
            bad.append(f"model={wanted[:40]}")
        circuit_from = query.get("from") or None
        return cls(model, meth, circuit_from, query.get("circuit") or None), bad

    def to_query(self, serving: bool = False) -> dict[str, str]:
        """The address of this view. A served dashboard's address never holds a path."""
        q = {}
        if self.model.choice == FOLDER:
            if not serving and self.model.name:
                q["folder"] = self.model.name
        elif self.model.choice == HUB:
            if self.model.name:
                q["model"] = self.model.name
        else:
            q["model"] = self.model.choice
        q.update(methodology_to_query(self.methodology))
        if self.circuit_from:
            q["from"] = self.circuit_from
        if self.circuit:
            q["circuit"] = self.circuit
        return q


def is_hub_name(text: str) -> bool:
    """A hub name a link may name: never a path, on this machine or elsewhere."""
    return bool(HUB_NAME.fullmatch(text)) and ".." not in text and not Path(text).exists()
