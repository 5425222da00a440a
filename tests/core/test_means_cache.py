"""The on-disk cache of ablation values: a second process reads exactly what the first computed,
and nothing is read back for other weights, prompts or methodology."""
import pytest
import torch

from circuit_core import ablation, means_cache
from circuit_core.ablation import Methodology, TableCache, ablation_tables
from circuit_core.models import load_model
from circuit_core.tasks import build_dataset
from circuit_core.toy import save_random_gpt2


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUIT_CACHE_DIR", str(tmp_path / "means"))
    return tmp_path / "means"


def no_compute(*args):
    raise AssertionError("computed again although the folder had it")


@pytest.mark.parametrize("kind", ["mean", "mean-pooled", "resample"])
def test_a_new_process_reads_back_exactly_what_was_computed(tiny_model, tiny_dataset, folder, monkeypatch, kind):
    meth = Methodology(n=40, seed=3, ablation=kind, ref_replicates=3)
    first = TableCache().tables(tiny_model, tiny_dataset, meth)
    assert list(folder.glob("*.safetensors"))
    monkeypatch.setattr(ablation, "_compute", no_compute)
    again = TableCache().tables(tiny_model, tiny_dataset, meth)  # a fresh in-memory cache: as after a restart
    for a, b in zip(first, again):
        assert torch.equal(a.values, b.values) and torch.equal(a.index, b.index)
    if kind == "resample":  # draws still share one table after the round trip
        assert all(t.values is again[0].values for t in again)


def test_read_back_equals_an_independent_computation(tiny_model, tiny_dataset, folder):
    meth = Methodology(n=40, seed=3, ref_replicates=2)
    TableCache().tables(tiny_model, tiny_dataset, meth)
    again = TableCache().tables(tiny_model, tiny_dataset, meth)
    for t, (v, i) in zip(again, ablation_tables(tiny_model, tiny_dataset, meth, 2)):
        assert torch.equal(t.values, v) and torch.equal(t.index, i)


def test_fewer_replicates_reuse_the_stored_draws(tiny_model, tiny_dataset, folder, monkeypatch):
    TableCache().tables(tiny_model, tiny_dataset, Methodology(n=40, seed=3, ref_replicates=3))
    monkeypatch.setattr(ablation, "_compute", no_compute)
    assert len(TableCache().tables(tiny_model, tiny_dataset, Methodology(n=40, seed=3, ref_replicates=1))) == 2


def test_other_weights_prompts_or_seed_are_not_read_back(tiny_model, tiny_dataset, folder, tmp_path):
    meth = Methodology(n=40, seed=3, ref_replicates=1)
    TableCache().tables(tiny_model, tiny_dataset, meth)
    keys = {p.name for p in folder.glob("*.safetensors")}
    other_dir = tmp_path / "other"
    save_random_gpt2(other_dir, n_layer=3, n_head=4, n_embd=32, init_std=0.3, seed=1)  # same shape, other weights
    other = load_model(str(other_dir), device="cpu")
    assert means_cache.model_fingerprint(other) != means_cache.model_fingerprint(tiny_model)
    for model, ds, m in [(other, tiny_dataset, meth),
                         (tiny_model, build_dataset("ioi", tiny_model.tokenizer, n=40, seed=4), meth.replace(seed=4)),
                         (tiny_model, tiny_dataset, meth.replace(seed=5))]:
        before = {p.name for p in folder.glob("*.safetensors")}
        TableCache().tables(model, ds, m)
        assert {p.name for p in folder.glob("*.safetensors")} - before, "expected a new file, not a hit"
    assert keys <= {p.name for p in folder.glob("*.safetensors")}


def test_a_damaged_file_is_recomputed_and_rewritten(tiny_model, tiny_dataset, folder):
    meth = Methodology(n=40, seed=3, ref_replicates=0)
    good = TableCache().tables(tiny_model, tiny_dataset, meth)[0]
    (path,) = folder.glob("*.safetensors")
    path.write_bytes(b"\x00not a safetensors file")
    again = TableCache().tables(tiny_model, tiny_dataset, meth)[0]
    assert torch.equal(again.values, good.values)
    assert means_cache.load(path) is not None  # rewritten whole


def test_off_writes_nothing(tiny_model, tiny_dataset, folder, monkeypatch):
    monkeypatch.setenv("CIRCUIT_CACHE_DIR", "off")
    TableCache().tables(tiny_model, tiny_dataset, Methodology(n=40, seed=3, ref_replicates=0))
    assert not folder.exists()


def test_an_unwritable_folder_only_costs_the_cache(tiny_model, tiny_dataset, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CIRCUIT_CACHE_DIR", str(blocker / "means"))  # cannot be created
    tables = TableCache().tables(tiny_model, tiny_dataset, Methodology(n=40, seed=3, ref_replicates=0))
    assert tables[0].values.shape[0] == len(tiny_dataset.groups.unique())


def test_the_folder_is_bounded(folder):
    folder.mkdir(parents=True)
    for i in range(5):
        (folder / f"{i}.safetensors").write_bytes(b"x" * 100)
    means_cache.evict(folder, max_bytes=250)
    assert len(list(folder.glob("*.safetensors"))) == 2
