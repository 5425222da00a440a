"""The report's words about the model: a folder's name, never where it lives."""
from circuit_core.circuit import load_circuit
from ui.report import Report


def test_a_folder_model_is_named_by_its_last_component_in_the_report_title():
    circuit = load_circuit("data/circuits/ioi-demo.json")
    folder = Report(circuit, {"name": "/home/someone/models/gpt2-finetuned/", "source": "folder"}, "", {})
    assert "gpt2-finetuned" in folder.title and "/" not in folder.title and "someone" not in folder.title
    hub = Report(circuit, {"name": "openai-community/gpt2", "source": "hub"}, "", {})
    assert "openai-community/gpt2" in hub.title  # a hub name is a name, not a path
