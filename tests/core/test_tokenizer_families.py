"""IOI, Colored Objects and Acronyms on every tokenizer family the dashboard supports, through offline
stand-ins (circuit_core.toy_tokenizers): GPT-2, GPT-NeoX (Pythia), Qwen2, Llama 3 (byte-level, BOS added),
Llama 1/2 (SentencePiece with a dummy prefix, BOS added) and Gemma (SentencePiece, BOS added).

A tokenizer that adds a BOS of its own gets it once at the start of every prompt and every position
counts from it; every role's position holds the word it names; the answers are the tokens the tokenizer
itself gives the answer word after the prompt; words that are not single tokens are dropped, and too
few left is an error that names them."""
import re

import pytest
import torch

from circuit_core import toy_tokenizers as tt
from circuit_core.tasks import TaskError, build_dataset
from circuit_core.tasks import acronyms as ac
from circuit_core.tasks import colored_objects as co
from circuit_core.tasks import ioi
from circuit_core.tasks.base import adds_own_bos, single_token_id

TASKS = ("ioi", "colored-objects", "acronyms")
N = 24


@pytest.fixture(scope="module")
def toks():
    return {f: tt.family_tokenizer(f) for f in tt.FAMILIES}


@pytest.fixture(scope="module")
def built(toks):
    return {(f, task): build_dataset(task, toks[f], n=N, seed=2) for f in tt.FAMILIES for task in TASKS}


def word(tok, token_id) -> str:
    """A token as text, without its leading space (however the tokenizer marks it)."""
    return tok.decode([int(token_id)]).strip()


def ids(ds, i, reference=False):
    rows, lengths = (ds.reference_tokens, ds.ref_lengths) if reference else (ds.tokens, ds.lengths)
    return rows[i, : lengths[i]].tolist()


def continuation(tok, prompt: str, answer: str) -> list[int]:
    """The tokens the tokenizer itself gives `answer` after `prompt` (" Mary" as running text)."""
    head, full = tok.encode(prompt, add_special_tokens=False), tok.encode(prompt + answer, add_special_tokens=False)
    assert full[: len(head)] == head
    return full[len(head):]


def test_the_stand_ins_behave_as_their_families(toks):
    assert [f for f in tt.FAMILIES if adds_own_bos(toks[f])] == list(tt.ADDS_BOS)
    assert toks["qwen2"].bos_token_id is None
    # other ids than GPT-2's for the same text
    assert toks["pythia"].encode(" Mary") != toks["gpt2"].encode(" Mary")
    # a dummy prefix: " Mary" alone is two tokens, but in running text it is one, "▁Mary"
    llama = toks["llama"]
    assert len(llama.encode(" Mary", add_special_tokens=False)) == 2
    mary = single_token_id(llama, " Mary")
    assert llama.convert_ids_to_tokens(mary) == "▁Mary"
    assert llama.encode("Then, Mary and John", add_special_tokens=False)[2] == mary
    assert llama.encode("Then")[0] == llama.bos_token_id  # encode adds <s>
    assert toks["gemma"].convert_ids_to_tokens(toks["gemma"].encode("Then, Mary")) == ["<bos>", "Then", ",", "▁Mary"]


@pytest.mark.parametrize("family", tt.FAMILIES)
@pytest.mark.parametrize("task", TASKS)
def test_bos_once_when_the_tokenizer_adds_its_own_and_never_otherwise(toks, built, family, task):
    tok, ds = toks[family], built[family, task]
    assert ds.n == N and ds.meta["bos"] == (family in tt.ADDS_BOS)
    for reference in (False, True):
        for i in range(len(ds.tokens if not reference else ds.reference_tokens)):
            row = ids(ds, i, reference)
            if family in tt.ADDS_BOS:
                assert row[0] == tok.bos_token_id and row.count(tok.bos_token_id) == 1, (family, task, i)
            else:
                assert tok.bos_token_id is None or tok.bos_token_id not in row
    assert torch.equal(ds.positions["END"], ds.lengths - 1)


@pytest.mark.parametrize("family", tt.FAMILIES)
def test_ioi_positions_hold_the_names_and_answers_are_the_tokenizers_own(toks, built, family):
    tok, ds = toks[family], built[family, "ioi"]
    for i, prompt in enumerate(ds.prompts):
        row = ids(ds, i)
        counts = {n: len(re.findall(rf"\b{n}\b", prompt)) for n in ioi.NAMES}
        io = next(n for n, c in counts.items() if c == 1)
        s = next(n for n, c in counts.items() if c == 2)
        at = {r: int(ds.positions[r][i]) for r in ioi.ROLES}
        assert (word(tok, row[at["IO"]]), word(tok, row[at["S1"]]), word(tok, row[at["S2"]])) == (io, s, s)
        assert at["S1"] < at["S2"] and at["S1+1"] == at["S1"] + 1
        assert word(tok, row[at["END"]]) == prompt.split()[-1]
        assert ds.answer_tokens[i].tolist() == continuation(tok, prompt, " " + io) + continuation(tok, prompt, " " + s)
        # the tokens are the tokenizer's own, after the BOS it adds (if any)
        assert row[len(row) - len(tok.encode(prompt, add_special_tokens=False)):] == tok.encode(prompt, add_special_tokens=False)
        assert len(ids(ds, i, reference=True)) == len(row)


@pytest.mark.parametrize("family", tt.FAMILIES)
def test_colored_objects_positions_hold_their_words(toks, built, family):
    tok, ds = toks[family], built[family, "colored-objects"]
    for i, prompt in enumerate(ds.prompts):
        row = ids(ds, i)
        query = prompt.split("\nQ: ")[-1]
        obj = re.search(r"What color is the (\w+)\?", query).group(1)
        color = re.search(rf"(\w+) {obj}[,.]", query).group(1)
        at = {r: int(ds.positions[r][i]) for r in co.ROLES}
        assert (word(tok, row[at["COLOR"]]), word(tok, row[at["OBJECT"]]), word(tok, row[at["QUERY"]])) == (color, obj, obj)
        assert at["OBJECT"] == at["COLOR"] + 1 < at["QUERY"] < at["END"] == len(row) - 1
        assert word(tok, row[at["END"]]) == ":"
        assert ds.answer_tokens[i, 0].item() == continuation(tok, prompt, " " + color.capitalize())[0]
        assert word(tok, ds.answer_tokens[i, 1]) != color.capitalize()


@pytest.mark.parametrize("family", tt.FAMILIES)
def test_acronym_positions_hold_their_letters(toks, built, family):
    tok, ds = toks[family], built[family, "acronyms"]
    lead = 1 if family in tt.ADDS_BOS else 0
    for i, prompt in enumerate(ds.prompts):
        row = ids(ds, i)
        words = prompt.split(" (")[0].split()[1:]
        at = {r: int(ds.positions[r][i]) for r in ac.ROLES}
        assert word(tok, row[lead]) == "The"
        assert [word(tok, row[at[r]]) for r in ("W1", "W2", "W3")] == [w[0] for w in words]
        assert [word(tok, row[at[r]]) for r in ("PAREN", "A1", "END")] == ["(", words[0][0], words[1][0]]
        assert at["W1"] == lead + 1 and at["END"] == len(row) - 1
        assert word(tok, ds.answer_tokens[i, 0]) == words[2][0]


@pytest.mark.parametrize("family", ["gpt2", "pythia"])
@pytest.mark.parametrize("task", TASKS)
def test_prepend_bos_shifts_every_position_by_one_and_keeps_the_answers(toks, built, family, task):
    tok, plain = toks[family], built[family, task]
    bos = build_dataset(task, tok, n=N, seed=2, prepend_bos=True)
    assert bos.prompts == plain.prompts and bos.meta["bos"] and not plain.meta["bos"]
    assert (bos.tokens[:, 0] == tok.bos_token_id).all() and (bos.reference_tokens[:, 0] == tok.bos_token_id).all()
    assert torch.equal(bos.lengths, plain.lengths + 1)
    assert all(torch.equal(bos.positions[r], plain.positions[r] + 1) for r in plain.roles)
    assert torch.equal(bos.answer_tokens, plain.answer_tokens)
    assert all(bos.token_lists()[i][1:] == plain.token_lists()[i] for i in range(N))


@pytest.mark.parametrize("family", tt.ADDS_BOS)
@pytest.mark.parametrize("task", TASKS)
def test_prepend_bos_does_not_double_a_tokenizers_own_bos(toks, built, family, task):
    again = build_dataset(task, toks[family], n=N, seed=2, prepend_bos=True)
    assert torch.equal(again.tokens, built[family, task].tokens)
    assert all(torch.equal(again.positions[r], built[family, task].positions[r]) for r in again.roles)


def test_a_gpt2_tokenizer_set_to_add_endoftext_keeps_gpt2s_layout(toks, built, tmp_path):
    # TransformerLens reloads every tokenizer with add_bos_token=True: GPT-2's then adds <|endoftext|>,
    # which is its EOS too. GPT-2 is still run without BOS unless asked (as in the IOI paper).
    from transformers import AutoTokenizer
    from transformer_lens.model_bridge.sources._hf_format import setup_tokenizer

    toks["gpt2"].save_pretrained(tmp_path)
    bridged = setup_tokenizer(AutoTokenizer.from_pretrained(tmp_path))
    assert bridged.encode("Then")[0] == bridged.bos_token_id  # it does add it
    for task in TASKS:
        assert torch.equal(build_dataset(task, bridged, n=N, seed=2).tokens, built["gpt2", task].tokens)


def test_prepend_bos_without_a_bos_token_is_a_clear_error(toks):
    with pytest.raises(TaskError, match="no BOS token"):
        build_dataset("ioi", toks["qwen2"], n=4, prepend_bos=True)


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_words_that_are_not_single_tokens_are_dropped_and_reported(built, family):
    missing = tt.MISSING
    assert built[family, "ioi"].meta["dropped_words"] == {"names": missing["names"], "places": [], "objects": []}
    assert built[family, "colored-objects"].meta["dropped_words"] == {
        "colors": missing["colors"], "objects": sorted(missing["objects"], key=co.OBJECTS.index)}
    assert built[family, "acronyms"].meta["dropped_words"] == missing["acronyms"]
    for task in TASKS:
        ds = built[family, task]
        text = " ".join(ds.prompts + ds.reference_prompts)
        dropped = [w for ws in missing.values() for w in ws]
        assert not any(re.search(rf"\b{w}\b", text) for w in dropped), task


def _error(task, tok, **kwargs) -> str:
    with pytest.raises(TaskError) as e:
        build_dataset(task, tok, n=10, **kwargs)
    return str(e.value)


def test_too_few_names_names_the_words(toks):
    names = ["Adam", "Kelly", "Christina", "Elizabeth", "Jessica", "Sullivan"]
    for family in ("llama", "gemma"):
        msg = _error("ioi", toks[family], names=names)
        assert all(n in msg for n in names[2:]) and "Adam" not in msg and "Kelly" not in msg
        assert "it has 2 names" in msg and "--prepend-bos" in msg and "smaller N" in msg


def test_too_few_colours_and_objects_names_the_words():
    tok = tt.llama_like({"colors": ["Red", "orange", "Yellow"], "objects": co.OBJECTS[:12]})
    msg = _error("colored-objects", tok)
    assert all(w in msg for w in ["Red", "orange", "Yellow"] + co.OBJECTS[:12])
    assert "it has 5 colours and 5 objects" in msg and "Blue" not in msg and co.OBJECTS[-1] not in msg


def test_too_few_acronym_letters_names_the_words():
    kept = {w for w in ac.WORDS if w[0] in "BCDEF"}  # 5 letters: one short
    tok = tt.gemma_like({"acronyms": [w for w in ac.WORDS if w not in kept]})
    msg = _error("acronyms", tok)
    assert "it has 5 such letters" in msg
    assert all(w in msg for w in ac.WORDS if w not in kept) and not any(re.search(rf"\b{w}\b", msg) for w in kept)
