"""Bounded memory: evaluators share what they can, and every cache keeps at most its limit."""
import gc
import weakref

import pytest
import torch

from circuit_core.ablation import Methodology, NodeSet, TableCache, ablation_tables, storage_bytes
from circuit_core.cache import BoundedCache
from circuit_core.evaluate import Evaluator, EvaluatorCache, _Chunk, layer_keys
from circuit_core.tasks import build_dataset

METH = Methodology(n=40, seed=3)


def storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def test_position_scopes_share_the_table_tensors(tiny_model, tiny_dataset):
    a = Evaluator(tiny_model, tiny_dataset, METH)
    b = Evaluator(tiny_model, tiny_dataset, METH.replace(positions="all", bootstrap=200))
    assert a._table is b._table and a._table_index is b._table_index
    assert len(a._replicate_tables) == METH.ref_replicates
    assert all(x.values is y.values for x, y in zip(a._replicate_tables, b._replicate_tables))
    other = Evaluator(tiny_model, tiny_dataset, METH.replace(ablation="mean-pooled"))
    assert storage(other._table) != storage(a._table)  # other values, other tensors


def test_fewer_replicates_share_the_first_draws(tiny_model, tiny_dataset):
    full = Evaluator(tiny_model, tiny_dataset, METH)
    none = Evaluator(tiny_model, tiny_dataset, METH.replace(ref_replicates=0))
    assert none._table is full._table and none._replicate_tables == []


def test_shared_tables_equal_fresh_ones(tiny_model, tiny_dataset):
    ev = Evaluator(tiny_model, tiny_dataset, METH.replace(ref_replicates=2))
    fresh = ablation_tables(tiny_model, tiny_dataset, METH, 2)
    for (v, i), (fv, fi) in zip([(ev._table, ev._table_index)] + [tuple(t) for t in ev._replicate_tables], fresh):
        assert torch.equal(v, fv) and torch.equal(i, fi)


def test_zero_ablation_stores_one_number(tiny_model, tiny_dataset):
    ev = Evaluator(tiny_model, tiny_dataset, METH.replace(ablation="zero"))
    assert ev._table.untyped_storage().nbytes() <= 8  # a broadcast scalar, not a row per group
    assert ev._replicate_tables == [] and not ev.replicates
    assert torch.equal(ev.values, torch.zeros_like(ev.values))
    chunk = _Chunk(ev, 0, torch.arange(tiny_dataset.n))
    assert chunk.row_values(0).shape[0] == 1  # one row for the whole chunk


def test_chunk_keeps_values_per_table_row_not_per_prompt(tiny_evaluator, tiny_dataset):
    chunk = _Chunk(tiny_evaluator, 0, torch.arange(tiny_dataset.n))
    assert chunk.row_values(1).shape[0] == len(tiny_dataset.groups.unique()) < tiny_dataset.n
    per_prompt = tiny_evaluator._table[tiny_evaluator._table_index, :, 1]
    assert torch.equal(chunk.values(1), per_prompt)
    heads = torch.tensor([0, 2])
    assert torch.equal(chunk.head_values(1, heads, False), per_prompt[:, :, heads])
    end = tiny_dataset.positions["END"]
    assert torch.equal(chunk.head_values(1, heads, True), per_prompt[torch.arange(tiny_dataset.n), end][:, heads])


def test_resample_stores_only_the_reference_prompts_it_uses(tiny_model):
    ds = build_dataset("ioi", tiny_model.tokenizer, n=12, seed=5, ref_per_group=4)
    ev = Evaluator(tiny_model, ds, Methodology(n=12, seed=5, ref_per_group=4, ablation="resample", ref_replicates=2))
    assert len(ev._table) <= 3 * ds.n < len(ds.reference_tokens)
    assert all(r._table is ev._table for r in ev.replicates)  # one table, three draws of rows from it


def test_replicates_do_not_copy_the_dataset(tiny_evaluator):
    ev = tiny_evaluator
    reps = ev.replicates
    assert len(reps) == ev.methodology.ref_replicates
    for r in reps:
        assert r.dataset is ev.dataset and r._direction is ev._direction and r._memo is ev._memo
    tables = storage_bytes(t.values for t in ev._tables)
    held = storage_bytes(t for e in [ev, *reps] for t in e.held_tensors())
    assert held == storage_bytes(ev.held_tensors()) and held - tables < tables  # the dataset is the small part


def test_variant_shares_results(tiny_model, tiny_dataset):
    ev = Evaluator(tiny_model, tiny_dataset, METH)
    f_model = ev.model_diffs
    other = ev.variant(METH.replace(positions="all"))
    assert other._table is ev._table and other.methodology.positions == "all"
    assert other._memo.get((0, layer_keys(NodeSet.model(), 3, 4))) is not None  # F(M) not recomputed
    assert torch.equal(other.model_diffs, f_model)
    try:
        ev.variant(METH.replace(ablation="zero"))
        assert False, "another ablation is not a variant"
    except ValueError:
        pass


def test_evaluator_cache_keeps_at_most_its_limit(tiny_model):
    cache = EvaluatorCache(tiny_model, max_entries=2)
    refs = [weakref.ref(cache.get(Methodology(n=20, seed=s, ref_replicates=1))) for s in range(4)]
    gc.collect()
    assert len(cache) == 2 and sum(r() is not None for r in refs) == 2 and refs[-1]() is not None
    scoped = cache.get(Methodology(n=20, seed=3, ref_replicates=1, positions="all"))
    assert scoped._table is refs[-1]()._table  # a variant of the cached one, not a new build


def test_evaluator_cache_is_bounded_in_bytes(tiny_model):
    cache = EvaluatorCache(tiny_model, max_entries=10, max_bytes=1)
    first = weakref.ref(cache.get(Methodology(n=20, seed=0, ref_replicates=0)))
    cache.get(Methodology(n=20, seed=1, ref_replicates=0))
    gc.collect()
    assert len(cache) == 1 and first() is None  # the newest one stays even when alone over the bound
    assert cache.bytes > 1


def test_model_evaluators_are_one_bounded_cache(tiny_model):
    assert tiny_model.evaluators is tiny_model.evaluators
    assert tiny_model.evaluators.max_entries == tiny_model.max_evaluators


def test_table_cache_keeps_a_bounded_tail_and_drops_the_rest(tiny_model):
    cache = TableCache(max_entries=2)
    made = [cache.tables(tiny_model, build_dataset("ioi", tiny_model.tokenizer, n=20, seed=s),
                         Methodology(n=20, seed=s, ref_replicates=0)) for s in range(4)]
    refs = [weakref.ref(m[0]) for m in made]
    del made
    gc.collect()
    assert len(cache._recent) == 2 and [r() is not None for r in refs] == [False, False, True, True]


def test_table_cache_bounded_in_bytes(tiny_model, tiny_dataset):
    cache = TableCache(max_bytes=1)
    held = cache.tables(tiny_model, tiny_dataset, METH)
    assert cache.bytes == 0 and len(cache._recent) == 0  # nothing kept beyond its holders...
    again = cache.tables(tiny_model, tiny_dataset, METH)
    assert all(x is y for x, y in zip(held, again))  # ...which still share it


def test_memo_is_bounded_in_entries_and_bytes():
    lru = BoundedCache(max_bytes=1 << 30, max_entries=3)
    for i in range(5):
        lru.put(i, torch.zeros(10, dtype=torch.float64))
    assert len(lru) == 3 and lru.get(0) is None and lru.get(4) is not None
    small = BoundedCache(max_bytes=1000, overhead=200)  # a key's cost counts too
    for i in range(10):
        small.put(i, torch.zeros(10, dtype=torch.float64))  # 80 + 200 bytes each
    assert len(small) == 3 and small.bytes <= 1000


def test_evaluator_memo_bounds(tiny_evaluator):
    memo = tiny_evaluator._memo
    assert memo.max_entries is not None and memo.max_bytes <= 256 << 20 and memo.overhead > 0


# --- one copy of the weights (models.py, blocks.py: share_weights) -------------------------------------------
ARCHS = ["gpt2", "gpt-neox", "llama", "qwen2", "gemma2", "gptj"]


def _stock_bridge(folder):
    """The bridge as TransformerLens makes it, with none of load_model's memory savings."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(folder), device="cpu")
    bridge.enable_compatibility_mode(disable_warnings=True, fold_value_biases=False)
    return bridge.eval()


def _storages(tensors) -> dict[int, int]:
    return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}


def _bridge_tensors(bridge) -> list[torch.Tensor]:
    return [t for m in bridge.modules() for t in m._parameters.values() if isinstance(t, torch.Tensor)]


@pytest.fixture(scope="module", params=ARCHS)
def arch_folder(request, tmp_path_factory):
    from circuit_core.toy import save_random_decoder

    folder = tmp_path_factory.mktemp(f"mem-{request.param}")
    save_random_decoder(folder, request.param, n_layer=3, n_head=4, n_embd=32, init_std=0.3, seed=0)
    return request.param, folder


def test_lean_loading_gives_the_stock_weights_bit_for_bit(arch_folder):
    """load_model skips TransformerLens' defensive copies while processing the weights and makes the
    bridge's parameters views of the engine's tensors: every weight the bridge exposes, and its logits,
    are still exactly what TransformerLens' own loading gives."""
    from circuit_core.models import load_model

    name, folder = arch_folder
    stock, ours = _stock_bridge(folder), load_model(str(folder), device="cpu")
    assert ours.blocks is not None
    names = ["W_E", "W_U", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "b_Q", "b_K", "b_V", "b_O", "b_in", "b_out",
             "W_gate", "W_pos"]
    compared = 0
    for n in names:
        try:
            a = getattr(stock, n)
        except (AttributeError, RuntimeError):
            continue
        if a is None:
            continue
        assert torch.equal(a, getattr(ours.bridge, n)), n
        compared += 1
    assert compared >= 8
    tokens = torch.randint(0, int(stock.cfg.d_vocab), (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (stock(tokens) - ours.bridge(tokens)).abs().max() < 1e-5


def test_the_weights_are_held_once(arch_folder):
    """The engine's blocks add no copy of the bridge's weights (a few small tensors at most: rotary tables,
    norms made explicit), and the bridge holds nothing the blocks hold again."""
    from circuit_core.models import load_model

    name, folder = arch_folder
    model = load_model(str(folder), device="cpu")
    hf = _storages(model.bridge.original_model.parameters())
    bridge = _storages(_bridge_tensors(model.bridge))
    blocks = _storages(model.blocks.held_tensors())
    everything = {**hf, **bridge, **blocks}
    weights = sum(p.numel() * p.element_size() for p in _stock_bridge(folder).original_model.parameters())
    extra_blocks = sum(v for k, v in blocks.items() if k not in {**hf, **bridge})
    assert extra_blocks < 0.1 * weights, (name, extra_blocks, weights)
    # one copy of the weights, plus at most what TransformerLens itself adds (an untied unembedding)
    assert sum(everything.values()) < 1.35 * weights, (name, sum(everything.values()), weights)


def test_nothing_writes_into_the_shared_weights(tiny_model, tiny_dataset):
    """The bridge's parameters are views of the blocks' tensors: evaluating (blocks and hooks), the means,
    gradients for the reference noise and patching leave every one of them as it was."""
    from circuit_core.ablation import NodeSet
    from circuit_core.patching import activation_patching

    before = [t.clone() for t in _bridge_tensors(tiny_model.bridge)]
    ev = Evaluator(tiny_model, tiny_dataset, METH.replace(ref_replicates=2))
    sets = [NodeSet.model(), NodeSet.empty(), NodeSet(frozenset({(1, 2, "END"), (0, 1, "S2")}))]
    ev.logit_diffs(sets)
    ev.replicate_diffs(sets[1:])
    Evaluator(tiny_model, tiny_dataset, METH.replace(ref_replicates=0), use_blocks=False).logit_diffs(sets)
    activation_patching(tiny_model, build_dataset("ioi", tiny_model.tokenizer, n=8, seed=1), bootstrap=20)
    after = _bridge_tensors(tiny_model.bridge)
    assert len(before) == len(after) and all(torch.equal(a, b) for a, b in zip(before, after))
