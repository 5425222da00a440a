"""Model loading: local folders through the real path, clear errors, the demo fallback."""
import time

import pytest

from circuit_core import models
from circuit_core.models import ModelLoadError, load_model, load_model_or_demo


def test_local_folder_loads_through_the_bridge(tiny_model):
    assert tiny_model.source == "folder"
    assert (tiny_model.n_layers, tiny_model.n_heads, tiny_model.d_head) == (3, 4, 8)
    assert "blocks.2.attn.hook_z" in tiny_model.bridge.hook_dict
    facts = tiny_model.describe()
    assert facts["architecture"] == "GPT2LMHeadModel" and facts["n_heads"] == 4
    assert facts["engine"] == "blocks"  # the record says which path computed its numbers


def test_a_model_the_engine_does_not_take_says_so(tiny_model, monkeypatch):
    from circuit_core.models import LoadedModel

    monkeypatch.setattr(LoadedModel, "blocks", property(lambda self: None))
    assert tiny_model.describe()["engine"] == "hooks"


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_unreachable_hub_fails_fast_with_what_to_do(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(models, "_in_hub_cache", lambda name: False)
    t = time.time()
    with pytest.raises(ModelLoadError) as err:
        load_model("gpt2-not-a-real-model")
    assert time.time() - t < 5
    msg = str(err.value)
    assert "gpt2-not-a-real-model" in msg and "local folder" in msg and "HF_HUB_OFFLINE" in msg


def test_offline_cache_miss_is_wrapped(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="tried hub 'gpt2-not-a-real-model'"):
        load_model("gpt2-not-a-real-model")


def test_fallback_to_demo_says_so(monkeypatch, tiny_dir):
    monkeypatch.setattr(models, "DEMO_MODEL_DIR", tiny_dir)
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(models, "_in_hub_cache", lambda name: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model, notice = load_model_or_demo("gpt2")
    assert model.source == "demo" and "gpt2" in notice and "demo" in notice
    model, notice = load_model_or_demo(str(tiny_dir))
    assert notice is None and model.source == "folder"
