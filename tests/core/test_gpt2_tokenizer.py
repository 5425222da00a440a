"""The IOI dataset built with GPT-2's own tokenizer is the paper's (data/tokenizers/gpt2, MIT)."""
import pytest

from circuit_core.tasks import build_dataset
from circuit_core.tasks.ioi import BABA_TEMPLATES, NAMES, OBJECTS, PLACES
from circuit_core.toy import gpt2_tokenizer


@pytest.fixture(scope="module")
def tok():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def dataset(tok):
    return build_dataset("ioi", tok, n=30 * 6, seed=0)  # 6 prompts of every template in both orders


def test_it_is_gpt2s_tokenizer(tok):
    assert len(tok) == 50257
    assert tok.encode(" John gave a drink to Mary", add_special_tokens=False) == [1757, 2921, 257, 4144, 284, 5335]
    assert tok.bos_token_id == 50256  # <|endoftext|>


def test_every_name_place_and_object_is_one_token(tok, dataset):
    for word in NAMES + PLACES + OBJECTS:
        assert len(tok.encode(" " + word, add_special_tokens=False)) == 1, word
    assert dataset.meta["dropped_words"] == {"names": [], "places": [], "objects": []}


def test_every_template_in_both_orders(dataset):
    names = sorted(set(dataset.group_names[g] for g in dataset.groups.tolist()))
    assert len(names) == 2 * len(BABA_TEMPLATES) == 30
    assert dataset.meta["min_group_size"] == 6


def test_named_positions_are_right_for_every_prompt(tok, dataset):
    pos = dataset.positions
    for i in range(dataset.n):
        toks = dataset.tokens[i, : dataset.lengths[i]].tolist()
        io, s = dataset.answer_tokens[i].tolist()
        text = lambda role: tok.decode([toks[int(pos[role][i])]])
        assert toks[int(pos["IO"][i])] == io and toks[int(pos["S1"][i])] == s and toks[int(pos["S2"][i])] == s
        assert toks.count(io) == 1 and toks.count(s) == 2
        assert pos["S1"][i] < pos["S2"][i] and pos["S1+1"][i] == pos["S1"][i] + 1
        assert int(pos["END"][i]) == len(toks) - 1 and text("END") == " to"
        order = dataset.group_names[int(dataset.groups[i])].split("-")[0]
        # ABBA: IO comes first ("A and B"), BABA: S comes first
        assert (pos["IO"][i] < pos["S1"][i]) == (order == "ABBA")
        assert dataset.prompts[i].endswith(" to") and tok.decode(toks) == dataset.prompts[i]


def test_abc_references_align_with_their_prompts(tok, dataset):
    pos = dataset.positions
    for i in range(dataset.n):
        L = int(dataset.lengths[i])
        clean, ref = dataset.tokens[i, :L].tolist(), dataset.reference_tokens[i, :L].tolist()
        name_at = {int(pos[r][i]) for r in ("IO", "S1", "S2")}
        assert all(c == r for j, (c, r) in enumerate(zip(clean, ref)) if j not in name_at)
        fresh = [ref[j] for j in sorted(name_at)]
        assert len(set(fresh)) == 3  # three distinct names ...
        assert not set(fresh) & set(dataset.answer_tokens[i].tolist())  # ... none of the originals
