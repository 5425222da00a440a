"""Circuit validation: faithfulness, completeness and minimality of transformer circuits.

The science lives here, importable without Streamlit:
    from circuit_core import load_model, load_circuit, Methodology, build_evaluator, faithfulness
"""
__version__ = "0.1.0"

from .ablation import Ablation, Methodology, NodeSet, PositionScope  # noqa: E402
from .circuit import Circuit, CircuitClass, CircuitError, load_circuit  # noqa: E402
from .criteria import faithfulness  # noqa: E402
from .evaluate import Evaluator, build_evaluator  # noqa: E402
from .models import LoadedModel, ModelLoadError, load_model, load_model_or_demo  # noqa: E402

__all__ = [
    "Ablation", "Methodology", "NodeSet", "PositionScope", "Circuit", "CircuitClass", "CircuitError",
    "load_circuit", "faithfulness", "Evaluator", "build_evaluator", "LoadedModel", "ModelLoadError",
    "load_model", "load_model_or_demo",
]
