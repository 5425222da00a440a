"""Serving a group: what a served dashboard offers, by the label the group sees, never by its path.

No Streamlit here: the sidebar turns a ServeConfigError into a page that names no server detail.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass

SERVE_ENV = "CIRCUIT_DASHBOARD_SERVE"


class ServeConfigError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServeConfig:
    models: dict[str, str]  # label -> hub name, "demo", or a model folder on the server


def serve_config() -> ServeConfig | None:
    """The configuration named by $CIRCUIT_DASHBOARD_SERVE, or None when the dashboard runs for one
    person. A set but unusable configuration raises: a served dashboard never falls back to open mode."""
    where = os.environ.get(SERVE_ENV, "").strip()
    if not where:
        return None
    try:
        with open(where, "rb") as fh:
            models = tomllib.load(fh).get("models")
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ServeConfigError(f"{SERVE_ENV}={where}: {e}") from None
    if not (isinstance(models, dict) and models
            and all(isinstance(v, str) and v.strip() and k.strip() for k, v in models.items())):
        raise ServeConfigError(f"{where}: [models] must map each label to a hub name, 'demo' or a model folder.")
    return ServeConfig({k.strip(): v.strip() for k, v in models.items()})
