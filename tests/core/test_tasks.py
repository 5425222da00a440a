"""Tasks beyond IOI: prompts in the documented format, positions on the right tokens, twins aligned,
answers single tokens, with the word-level toy tokenizer and GPT-2's own; models that really do the
tasks (conftest: a wired Colored Objects model, a trained acronyms model) have F(M) > 0, and the
criteria run."""
import json
import re

import pytest
import torch

from circuit_core.ablation import Methodology, NodeSet
from circuit_core.circuit import Circuit, CircuitClass, CircuitError
from circuit_core.criteria import faithfulness
from circuit_core.evaluate import Evaluator
from circuit_core.tasks import REGISTRY, TaskError, build_dataset, get_task, task_roles
from circuit_core.tasks import colored_objects as co
from circuit_core.toy import gpt2_tokenizer, task_vocabulary, word_level_tokenizer

TOKENIZERS = {"gpt2": gpt2_tokenizer, "word-level": lambda: word_level_tokenizer(task_vocabulary("colored-objects"))}


@pytest.fixture(scope="module", params=list(TOKENIZERS))
def tok(request):
    return TOKENIZERS[request.param]()


def test_registered_with_its_positions():
    t = get_task("colored-objects")
    assert "colored-objects" in REGISTRY and t.roles == ("COLOR", "OBJECT", "QUERY", "END") and t.modes == ("mixed",)


def test_colored_objects_prompts_follow_the_papers_format(tok):
    ds = build_dataset("colored-objects", tok, n=30, seed=4)
    assert ds.task == "colored-objects" and ds.paired and torch.bincount(ds.groups).tolist() == [5] * 6
    for i in range(ds.n):
        text, twin = ds.prompts[i], ds.reference_prompts[i]
        example, query = text.split("\nQ: ")
        assert example.startswith("Q: On the ") and query.endswith("?\nA:") and "What color is the " in query
        asked = query.split("What color is the ")[1].split("?")[0]
        items = query.split(". What")[0]  # "On the desk, I see a red pen, an orange cup, and a blue ball"
        assert re.fullmatch(r"On the (table|desk|floor), (there is|you see|I see) an? \w+ \w+, an? \w+ \w+, and an? \w+ \w+",
                            items), items
        colours = {obj: col for art, col, obj in re.findall(r"\b(an?) (\w+) (\w+)(?=,|$)", items)}
        assert all((art == "an") == (col[0] in "aeiou") for art, col, _ in re.findall(r"\b(an?) (\w+) (\w+)(?=,|$)", items))
        assert len(colours) == 3 and set(colours.values()) <= set(co.COLORS)
        ex_objects = {w.strip(",.?") for w in example.split()} & set(co.OBJECTS)
        assert not (ex_objects & set(colours)) and len(ex_objects) == 3  # no shared object
        ex_answer = example.split("\nA: ")[1]
        ex_asked = example.split("What color is the ")[1].split("?")[0]
        assert ex_answer == [c.capitalize() for c in co.COLORS if f" {c} {ex_asked}" in example][0]
        # positions point at the right tokens
        word = lambda role: tok.decode([int(ds.tokens[i, ds.positions[role][i]])])
        assert word("COLOR") == " " + colours[asked] and word("OBJECT") == " " + asked
        assert word("QUERY") == " " + asked and word("END") == ":" and ds.positions["END"][i] == ds.lengths[i] - 1
        # the twin asks another object of the same list, token for token aligned
        twin_asked = twin.split("What color is the ")[-1].split("?")[0]
        assert twin_asked in colours and twin_asked != asked
        assert twin.replace(f"the {twin_asked}?", f"the {asked}?") == text
        differ = (ds.tokens[i] != ds.reference_tokens[i]).nonzero().flatten().tolist()
        assert differ == [int(ds.positions["QUERY"][i])]
        assert tok.decode([int(ds.answer_tokens[i, 0])]) == " " + colours[asked].capitalize()
        assert tok.decode([int(ds.answer_tokens[i, 1])]) == " " + colours[twin_asked].capitalize()


CO_EXAMPLE = ("Q: On the desk, I see a brown mug, a black plate, and a yellow lighter. What color is the lighter?\n"
              "A: Yellow\nQ: On the floor, I see a green pen, a purple bottle, and a blue notebook. What color is the {}?\nA:")


def test_colored_objects_example_checked_by_hand(tok):
    ds = build_dataset("colored-objects", tok, n=2, seed=0)
    assert ds.prompts[0] == CO_EXAMPLE.format("notebook") and ds.reference_prompts[0] == CO_EXAMPLE.format("pen")
    assert ds.group_names[int(ds.groups[0])] == "asks 3, twin asks 1"
    assert [tok.decode([int(t)]) for t in ds.answer_tokens[0]] == [" Blue", " Green"]
    piece = lambda role: tok.decode([int(ds.tokens[0, ds.positions[role][0]])])
    assert [piece(r) for r in co.ROLES] == [" blue", " notebook", " notebook", ":"]
    assert ds.meta["dropped_words"] == {"colors": [], "objects": []}  # all 8 colours, 17 objects, both tokenizers
    assert (ds.answer_tokens[:, 0] != ds.answer_tokens[:, 1]).all()


def test_colored_objects_bos_and_bad_input(tok):
    plain = build_dataset("colored-objects", tok, n=12, seed=3)
    bos = build_dataset("colored-objects", tok, n=12, seed=3, prepend_bos=True)
    assert bos.prompts == plain.prompts and (bos.tokens[:, 0] == tok.bos_token_id).all()
    assert torch.equal(bos.tokens[:, 1:], plain.tokens) and torch.equal(bos.reference_tokens[:, 1:], plain.reference_tokens)
    assert all(torch.equal(bos.positions[r], plain.positions[r] + 1) for r in co.ROLES)
    with pytest.raises(TaskError, match="at least 1"):
        build_dataset("colored-objects", tok, n=0)


def test_colored_objects_groups_references_and_seeds(tok):
    ds = build_dataset("colored-objects", tok, n=24, seed=1)
    for g in ds.groups.unique():
        rows = (ds.groups == g).nonzero().flatten()
        for role in ds.roles:  # a group shares its layout: per-group means line up
            assert ds.positions[role][rows].unique().numel() == 1
    drawn = build_dataset("colored-objects", tok, n=24, seed=1, ref_per_group=5)
    assert drawn.prompts == ds.prompts and torch.bincount(drawn.reference_groups).tolist() == [5] * 6
    assert build_dataset("colored-objects", tok, n=24, seed=1).prompts == ds.prompts
    assert build_dataset("colored-objects", tok, n=24, seed=2).prompts != ds.prompts
    with pytest.raises(TaskError, match="mode"):
        build_dataset("colored-objects", tok, n=4, mode="ABBA")


def test_too_few_single_token_words_is_a_clear_error():
    tok = word_level_tokenizer([w for w in task_vocabulary("colored-objects") if w.strip().lower() not in co.COLORS[:4]])
    with pytest.raises(TaskError, match="6 colours"):
        build_dataset("colored-objects", tok, n=4)


def test_circuit_files_name_the_task_and_its_positions():
    c = Circuit("co", [CircuitClass("colour movers", "END", [(1, 0)]), CircuitClass("finders", "QUERY", [(0, 2)])],
                task="colored-objects")
    c.validate(2, 4, task_roles("colored-objects"), task="colored-objects")
    with pytest.raises(CircuitError):
        c.validate(2, 4, task_roles("ioi"), task="ioi")
    with pytest.raises(CircuitError):
        Circuit("bad", [CircuitClass("x", "S2", [(0, 0)])], task="colored-objects").validate(
            2, 4, task_roles("colored-objects"), task="colored-objects")


@pytest.fixture(scope="module")
def co_toy(tmp_path_factory):
    """A random toy model with Colored Objects' vocabulary (a model trained on the task is still to come:
    the numbers here check the machinery, not a behaviour)."""
    from circuit_core.models import load_model
    from circuit_core.toy import save_random_gpt2

    folder = tmp_path_factory.mktemp("co-toy")
    save_random_gpt2(folder, n_layer=2, n_head=4, n_embd=32, words=task_vocabulary("colored-objects"),
                     n_positions=96, seed=2, init_std=0.3)
    return folder, load_model(str(folder), device="cpu")


def test_accuracy_is_the_top_colour_among_eight(co_toy):
    from transformers import GPT2LMHeadModel

    folder, model = co_toy
    ds = build_dataset("colored-objects", model.tokenizer, n=24, seed=3)
    hf = GPT2LMHeadModel.from_pretrained(folder).eval()
    ids = torch.tensor([model.tokenizer.encode(" " + c.capitalize(), add_special_tokens=False)[0] for c in co.COLORS])
    with torch.no_grad():
        logits = hf(ds.tokens).logits[torch.arange(ds.n), ds.positions["END"]][:, ids]
    want = (ids[logits.argmax(-1)] == ds.answer_tokens[:, 0]).float().mean().item()
    assert co.accuracy(model, ds) == pytest.approx(want)


def test_criteria_and_patching_run_on_colored_objects(co_toy):
    from circuit_core import patching as pt

    _, model = co_toy
    meth = Methodology(task="colored-objects", n=24, seed=5, ref_per_group=4, ref_replicates=2, bootstrap=200)
    ds = build_dataset("colored-objects", model.tokenizer, **meth.dataset_kwargs())
    ev = Evaluator(model, ds, meth)
    heads = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)]
    whole = Circuit("all", [CircuitClass("all", "*", heads)], task="colored-objects")
    r = faithfulness(ev, whole)
    assert r.F_circuit == pytest.approx(r.F_model)
    part = Circuit("part", [CircuitClass("movers", "END", heads[4:]), CircuitClass("finders", "QUERY", heads[:2])],
                   task="colored-objects")
    assert faithfulness(ev, part).F_circuit != pytest.approx(r.F_model)
    result = pt.activation_patching(model, pt.paired_dataset(model, meth), "noise", bootstrap=50)
    assert result.roles == ["COLOR", "OBJECT", "QUERY", "END", "*"] and result.task == "colored-objects"
    # the twin differs only at QUERY: patching any head anywhere before it changes nothing
    assert torch.allclose(result.effects[:, :, :2], torch.zeros(2, 4, 2), atol=1e-5)


def test_generic_wording_comes_from_the_task(co_toy):
    """Faithfulness breaks down by order only for a task with orders (IOI's ABBA / BABA), and every
    task words its accuracy and its breakdown itself."""
    from circuit_core.criteria import breakdown_by_group

    for name, task in REGISTRY.items():
        assert task.accuracy_label and task.breakdown_label and all(task.group_label), name
        assert (task.order_of("BABA-00") is None) == (not task.orders), name
    assert get_task("ioi").orders == ("ABBA", "BABA") and get_task("colored-objects").orders == ()
    _, model = co_toy
    meth = Methodology(task="colored-objects", n=12, seed=1, ref_per_group=2, ref_replicates=0, bootstrap=50)
    ev = Evaluator(model, build_dataset("colored-objects", model.tokenizer, **meth.dataset_kwargs()), meth)
    heads = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)]
    f = faithfulness(ev, Circuit("all", [CircuitClass("all", "*", heads)], task="colored-objects"))
    assert f.by_order == {} and not {"ABBA", "BABA"} & set(f.to_dict()["by_order"])
    table = breakdown_by_group(ev.dataset, f.per_prompt, n_boot=20)
    assert "order" not in table.columns and len(table) == 3 * len(set(ev.dataset.groups.tolist()))


# --- acronyms ---------------------------------------------------------------------------------------------
from circuit_core.tasks import acronyms as ac  # noqa: E402

ACRO_TOKENIZERS = {"gpt2": gpt2_tokenizer, "word-level": lambda: word_level_tokenizer(task_vocabulary("acronyms"))}


@pytest.mark.parametrize("which", list(ACRO_TOKENIZERS))
def test_acronyms_follow_the_papers_layout(which):
    tok = ACRO_TOKENIZERS[which]()
    ds = build_dataset("acronyms", tok, n=40, seed=2)
    assert ds.task == "acronyms" and ds.roles == list(ac.ROLES) and ds.tokens.shape == (40, 10)
    if which == "gpt2":  # every listed word splits as ' ' + capital and one more token
        assert ds.meta["dropped_words"] == []
    for i in range(ds.n):
        m = re.fullmatch(r"The ([A-Z][a-z]+) ([A-Z][a-z]+) ([A-Z][a-z]+) \(([A-Z])([A-Z])", ds.prompts[i])
        assert m, ds.prompts[i]
        words = m.groups()[:3]
        assert m.group(4) == words[0][0] and m.group(5) == words[1][0] and len({w[0] for w in words}) == 3
        piece = lambda role: tok.decode([int(ds.tokens[i, ds.positions[role][i]])])
        assert [piece(r) for r in ("W1", "W2", "W3", "PAREN", "A1", "END")] == [
            " " + words[0][0], " " + words[1][0], " " + words[2][0], " (", words[0][0], words[1][0]]
        assert tok.decode(ds.tokens[i].tolist()) == ds.prompts[i]  # the ids spell the prompt
        if which == "gpt2":
            for k, w in enumerate(words):  # each word as GPT-2 itself splits it
                assert ds.tokens[i, 1 + 2 * k: 3 + 2 * k].tolist() == tok.encode(" " + w, add_special_tokens=False)
        twin = re.fullmatch(r"The ([A-Z])[a-z]+ ([A-Z])[a-z]+ ([A-Z])[a-z]+ \((..)", ds.reference_prompts[i]).groups()
        assert all(t != w[0] for t, w in zip(twin, words))  # other capitals everywhere
        assert tok.decode([int(ds.answer_tokens[i, 0])]) == words[2][0]
        assert tok.decode([int(ds.answer_tokens[i, 1])]) == twin[2]
    drawn = build_dataset("acronyms", tok, n=40, seed=2, ref_per_group=7)
    assert drawn.prompts == ds.prompts and len(drawn.reference_tokens) == 7
    with pytest.raises(TaskError, match="mode"):
        build_dataset("acronyms", tok, n=4, mode="BABA")


def test_acronyms_example_checked_by_hand():
    for tok in (ACRO_TOKENIZERS["gpt2"](), ACRO_TOKENIZERS["word-level"]()):
        ds = build_dataset("acronyms", tok, n=2, seed=0)
        assert ds.prompts == ["The Poodle Riddle Cinder (PR", "The Fawn Mule Zinc (FM"]
        assert ds.reference_prompts == ["The Mule Umpire Oatmeal (MU", "The Waffle Fudge Mango (WF"]
        assert [tok.decode([int(t)]) for t in ds.answer_tokens[0]] == ["C", "O"]
        assert [tok.decode([t]) for t in ds.tokens[0].tolist()] == [
            "The", " P", "oodle", " R", "iddle", " C", "inder", " (", "P", "R"]


@pytest.mark.parametrize("which", list(ACRO_TOKENIZERS))
def test_acronyms_twins_groups_seeds_and_bos(which):
    tok = ACRO_TOKENIZERS[which]()
    ds = build_dataset("acronyms", tok, n=30, seed=4)
    assert ds.paired and ds.reference_tokens.shape == ds.tokens.shape and ds.group_names == ["all"]
    assert (ds.groups == 0).all() and (ds.answer_tokens[:, 0] != ds.answer_tokens[:, 1]).all()
    for role in ds.roles:  # one layout for every prompt and its twin
        assert ds.positions[role].unique().numel() == 1
    # the twin keeps "The" and " (" and changes the three words and the letters
    same = (ds.tokens == ds.reference_tokens).all(0).nonzero().flatten().tolist()
    assert same == [0, int(ds.positions["PAREN"][0])]
    for role in ("W1", "W2", "W3", "A1", "END"):
        p = ds.positions[role]
        assert (ds.tokens[torch.arange(30), p] != ds.reference_tokens[torch.arange(30), p]).all()
    assert build_dataset("acronyms", tok, n=30, seed=4).prompts == ds.prompts
    assert build_dataset("acronyms", tok, n=30, seed=5).prompts != ds.prompts
    bos = build_dataset("acronyms", tok, n=30, seed=4, prepend_bos=True)
    assert bos.prompts == ds.prompts and (bos.tokens[:, 0] == tok.bos_token_id).all()
    assert torch.equal(bos.tokens[:, 1:], ds.tokens) and torch.equal(bos.reference_tokens[:, 1:], ds.reference_tokens)
    assert all(torch.equal(bos.positions[r], ds.positions[r] + 1) for r in ac.ROLES)
    assert torch.equal(bos.lengths, ds.lengths + 1)
    with pytest.raises(TaskError, match="at least 1"):
        build_dataset("acronyms", tok, n=0)


def test_acronyms_words_gpt2_splits_as_the_paper_needs():
    tok = gpt2_tokenizer()
    kept = [w for w in ac.WORDS if tok.encode(" " + w) == [tok.encode(" " + w[0])[0], tok.encode(w[1:])[0]]]
    assert kept == ac.WORDS and len(kept) == 60 and len({w[0] for w in kept}) >= 20
    # a word that GPT-2 keeps whole (" Table") or splits otherwise is dropped and reported
    assert ac._pieces(tok, "Table") is None and ac._pieces(tok, "Ketchup") is not None


def test_acronyms_refuse_a_tokenizer_without_the_split():
    tok = word_level_tokenizer(["The", " ("] + list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))  # no word pieces
    with pytest.raises(TaskError, match="6 letters"):
        build_dataset("acronyms", tok, n=4)


def test_criteria_and_patching_run_on_acronyms(tmp_path):
    from circuit_core import patching as pt
    from circuit_core.models import load_model
    from circuit_core.toy import save_random_gpt2

    save_random_gpt2(tmp_path, n_layer=2, n_head=4, n_embd=32, words=task_vocabulary("acronyms"), seed=3, init_std=0.3)
    model = load_model(str(tmp_path), device="cpu")
    meth = Methodology(task="acronyms", n=24, seed=5, ref_per_group=10, ref_replicates=2, bootstrap=200)
    ev = Evaluator(model, build_dataset("acronyms", model.tokenizer, **meth.dataset_kwargs()), meth)
    heads = [(l, h) for l in range(2) for h in range(4)]
    r = faithfulness(ev, Circuit("all", [CircuitClass("all", "*", heads)], task="acronyms"))
    assert r.F_circuit == pytest.approx(r.F_model)
    movers = Circuit("movers", [CircuitClass("letter movers", "END", heads[4:]),
                                CircuitClass("word readers", "W3", heads[:2])], task="acronyms")
    movers.validate(2, 4, task_roles("acronyms"), task="acronyms")
    assert faithfulness(ev, movers).F_circuit != pytest.approx(r.F_model)
    result = pt.activation_patching(model, pt.paired_dataset(model, meth), "denoise", bootstrap=50)
    assert result.roles == list(ac.ROLES) + ["*"]


@pytest.fixture(scope="module")
def acronyms_trained(acronyms_model):
    """conftest's acronyms model (2 layers trained here in a few seconds: the third letter sits at a
    fixed offset, so it is learnt in a hundred or two steps)."""
    return acronyms_model, None


def test_a_tiny_trained_model_does_acronyms_and_patching_finds_where(acronyms_trained):
    from circuit_core import patching as pt

    model, stats = acronyms_trained
    meth = Methodology(task="acronyms", n=60, seed=5, ref_per_group=20, ref_replicates=2, bootstrap=300)
    ds = build_dataset("acronyms", model.tokenizer, **meth.dataset_kwargs())
    ev = Evaluator(model, ds, meth)
    heads = [(l, h) for l in range(2) for h in range(4)]
    r = faithfulness(ev, Circuit("all", [CircuitClass("all", "*", heads)], task="acronyms"))
    assert r.intervals["F_model"][0] > 1 and r.F_empty < r.F_model / 2  # it does the task, through its heads
    assert (ev.logit_diffs([NodeSet.model()])[0] > 0).double().mean() > 0.9  # the right letter beats the twin's
    result = pt.activation_patching(model, pt.paired_dataset(model, meth), "noise", bootstrap=100)
    end, every = result.effects[..., result.roles.index("END")], result.effects[..., -1]
    assert float(end.max()) > 0.1  # some head's output at END carries the letter
    assert torch.allclose(end, every, atol=0.02)  # and it is at END that it matters


# --- models that do the tasks -------------------------------------------------------------------------------
from circuit_core.circuit import load_circuit  # noqa: E402
from circuit_core.demo.train_task import WIRED_COLORED_OBJECTS  # noqa: E402

TASK_MODELS = {"colored-objects": ("colored_objects_model", co.accuracy, 1 / 8),
               "acronyms": ("acronyms_model", ac.accuracy, 1 / 26)}


def _all_heads(model, task):
    heads = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)]
    return Circuit("all", [CircuitClass("all", "*", heads)], task=task)


@pytest.fixture(scope="module", params=list(TASK_MODELS))
def task_model(request):
    fixture, accuracy, chance = TASK_MODELS[request.param]
    model = request.getfixturevalue(fixture)
    meth = Methodology(task=request.param, n=48, seed=3, ref_per_group=8, ref_replicates=2, bootstrap=200)
    ds = build_dataset(request.param, model.tokenizer, **meth.dataset_kwargs())
    return request.param, model, ds, Evaluator(model, ds, meth), accuracy, chance


def test_models_do_their_task(task_model):
    task, model, ds, ev, accuracy, chance = task_model
    r = faithfulness(ev, _all_heads(model, task))
    assert r.F_circuit == pytest.approx(r.F_model)
    assert r.F_model > 1 and r.intervals["F_model"][0] > 0  # the right answer beats the twin's, clearly
    assert accuracy(model, ds) > max(0.8, 4 * chance)
    assert r.F_empty < r.F_model / 2  # ablating every head takes most of it away


def test_circuit_files_for_the_new_tasks_validate(task_model, tmp_path):
    task, model, *_ = task_model
    roles = task_roles(task)
    c = Circuit(f"{task} sketch", [CircuitClass("movers", "END", [(1, 0)]), CircuitClass("readers", roles[0], [(0, 1)])],
                task=task)
    c.save(tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text())["task"] == task
    loaded = load_circuit(tmp_path / "c.json")
    loaded.validate(model.n_layers, model.n_heads, roles, task=task)
    other = "ioi"
    with pytest.raises(CircuitError, match="for task"):
        loaded.validate(model.n_layers, model.n_heads, task_roles(other), task=other)


def test_the_wired_colored_objects_circuit_is_faithful(colored_objects_model):
    model = colored_objects_model
    meth = Methodology(task="colored-objects", n=48, seed=4, ref_per_group=8, ref_replicates=0, bootstrap=200)
    ev = Evaluator(model, build_dataset("colored-objects", model.tokenizer, **meth.dataset_kwargs()), meth)
    classes = [CircuitClass(name, role, [head]) for name, (head, role) in WIRED_COLORED_OBJECTS.items()]
    known = Circuit("wired", classes, task="colored-objects")
    known.validate(model.n_layers, model.n_heads, task_roles("colored-objects"), task="colored-objects")
    r = faithfulness(ev, known)
    assert r.normalized > 0.9
    for drop in WIRED_COLORED_OBJECTS:  # each of its three heads is needed
        part = Circuit("part", [c for c in classes if c.name != drop], task="colored-objects")
        assert faithfulness(ev, part, reference_noise=False).normalized < 0.5, drop


def test_discovery_recovers_the_wired_colored_objects_circuit(colored_objects_model):
    """Discovery works on any registered task: on the model whose circuit is known it proposes exactly
    that circuit, each head at the position where its work is read, named after what it does."""
    from circuit_core.discover import discover

    model = colored_objects_model
    meth = Methodology(task="colored-objects", n=48, seed=4, ref_per_group=8, ref_replicates=0, bootstrap=200)
    ev = Evaluator(model, build_dataset("colored-objects", model.tokenizer, **meth.dataset_kwargs()), meth)
    found = discover(ev, 0.8)
    assert {(l, h): p for l, h, p in found.circuit.nodes()} == {head: role for head, role in WIRED_COLORED_OBJECTS.values()}
    names = {c.name: c.heads for c in found.circuit.classes}
    assert names == {"previous token": [(0, 0)], "mover (QUERY)": [(0, 1)], "mover (OBJECT)": [(1, 0)]}
    assert found.circuit.task == "colored-objects" and 0.8 <= found.ratio <= 1.2
