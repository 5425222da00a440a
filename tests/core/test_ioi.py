"""The IOI dataset: templates, positions, answers, references, groups, dropped words."""
import pytest
import torch

from circuit_core.tasks import TaskError, build_dataset
from circuit_core.tasks.ioi import ABBA_TEMPLATES, BABA_TEMPLATES, NAMES, make_ioi_dataset
from circuit_core.toy import ioi_vocabulary, word_level_tokenizer


@pytest.fixture(scope="module")
def tok():
    return word_level_tokenizer(ioi_vocabulary())


def test_thirty_templates_abba_swaps_first_names():
    assert len(BABA_TEMPLATES) == 15 and len(ABBA_TEMPLATES) == 15
    assert ABBA_TEMPLATES[0].startswith("Then, [A] and [B] went") and "[B] gave a [OBJECT] to [A]" in ABBA_TEMPLATES[0]


def test_roles_point_at_the_right_tokens(tok):
    ds = make_ioi_dataset(tok, n=90, seed=1)
    rows = torch.arange(ds.n)
    io, s = ds.answer_tokens[:, 0], ds.answer_tokens[:, 1]
    assert torch.equal(ds.tokens[rows, ds.positions["IO"]], io)
    assert torch.equal(ds.tokens[rows, ds.positions["S1"]], s)
    assert torch.equal(ds.tokens[rows, ds.positions["S2"]], s)
    assert torch.equal(ds.positions["S1+1"], ds.positions["S1"] + 1)
    assert torch.equal(ds.positions["END"], ds.lengths - 1)
    assert all(tok.decode(ds.tokens[i, ds.positions["END"][i]]) == " to" for i in range(ds.n))
    assert (ds.positions["S2"] > ds.positions["IO"]).all()
    # BABA: S comes first; ABBA: IO comes first
    order = [ds.group_names[g][:4] for g in ds.groups]
    for i, o in enumerate(order):
        assert (ds.positions["S1"][i] < ds.positions["IO"][i]) == (o == "BABA")


def test_reference_prompts_align_with_three_fresh_names(tok):
    ds = make_ioi_dataset(tok, n=60, seed=2)
    for i in range(ds.n):
        L = int(ds.lengths[i])
        clean, refp = ds.tokens[i, :L], ds.reference_tokens[i, :L]
        name_pos = sorted(int(ds.positions[r][i]) for r in ("IO", "S1", "S2"))
        other = [p for p in range(L) if p not in name_pos]
        assert torch.equal(clean[other], refp[other])  # same template, place and object
        fresh = refp[name_pos].tolist()
        assert len(set(fresh)) == 3 and not set(fresh) & set(ds.answer_tokens[i].tolist())


def test_groups_are_balanced_and_share_layout(tok):
    ds = make_ioi_dataset(tok, n=95, seed=0)
    sizes = torch.bincount(ds.groups, minlength=30)
    assert len(ds.group_names) == 30 and sizes.min() >= 3 and sizes.max() <= 4
    for g in range(30):
        members = ds.groups == g
        assert len(set(ds.lengths[members].tolist())) == 1
        for role in ds.roles:
            assert len(set(ds.positions[role][members].tolist())) == 1


def test_modes_and_seed(tok):
    a = make_ioi_dataset(tok, n=20, seed=5, mode="ABBA")
    assert all(name.startswith("ABBA") for name in a.group_names)
    assert make_ioi_dataset(tok, n=20, seed=5).prompts == make_ioi_dataset(tok, n=20, seed=5).prompts
    assert make_ioi_dataset(tok, n=20, seed=5).prompts != make_ioi_dataset(tok, n=20, seed=6).prompts
    with pytest.raises(TaskError, match="mode"):
        make_ioi_dataset(tok, n=10, mode="AABB")


def test_bos_shifts_positions(tok):
    plain = make_ioi_dataset(tok, n=10, seed=1)
    bos = make_ioi_dataset(tok, n=10, seed=1, prepend_bos=True)
    assert (bos.tokens[:, 0] == tok.bos_token_id).all()
    assert torch.equal(bos.positions["S2"], plain.positions["S2"] + 1)


def test_words_that_are_not_one_token_are_dropped_and_reported():
    # A tokenizer that lacks some names maps them to <unk> (or splits them): they must be dropped.
    missing = ["Aaron", "Zelda"]
    words = [w for w in ioi_vocabulary() if w.strip() not in ("Aaron",)]
    tok = word_level_tokenizer(words)
    ds = build_dataset("ioi", tok, n=30, seed=0, names=NAMES + ["Zelda"])
    assert set(ds.meta["dropped_words"]["names"]) == set(missing)
    assert not any("Aaron" in p or "Zelda" in p for p in ds.prompts + ds.reference_prompts)


def test_too_few_names_is_a_clear_error():
    tok = word_level_tokenizer([w for w in ioi_vocabulary() if w.strip() not in NAMES[3:]])
    with pytest.raises(TaskError, match="names"):
        make_ioi_dataset(tok, n=10)


def test_an_independent_reference_set_has_its_own_size(tiny_model):
    from circuit_core.tasks import build_dataset

    paired = build_dataset("ioi", tiny_model.tokenizer, n=40, seed=3)
    ds = build_dataset("ioi", tiny_model.tokenizer, n=40, seed=3, ref_per_group=7)
    assert ds.prompts == paired.prompts  # the clean prompts do not depend on the reference set
    groups = sorted(set(ds.groups.tolist()))
    assert len(ds.reference_tokens) == 7 * len(groups)
    assert torch.bincount(ds.ref_groups).tolist() == [7 if g in groups else 0 for g in range(max(groups) + 1)]
    for r in range(len(ds.reference_tokens)):  # aligned with its group's layout
        g = int(ds.ref_groups[r])
        i = ds.groups.tolist().index(g)
        assert int(ds.ref_lengths[r]) == int(ds.lengths[i])
    assert len(ds.token_lists(reference=True)) == len(ds.reference_tokens)


def test_means_over_an_independent_reference_set(tiny_model, tiny_hf):
    import hf_reference as ref
    from circuit_core.ablation import Methodology, ablation_values
    from circuit_core.tasks import build_dataset

    ds = build_dataset("ioi", tiny_model.tokenizer, n=40, seed=3, ref_per_group=5)
    values = ablation_values(tiny_model, ds, Methodology(ref_per_group=5))
    z_ref = ref.head_outputs(tiny_hf, ds.reference_tokens)
    for i in range(0, ds.n, 7):
        members = [r for r in range(len(z_ref)) if int(ds.ref_groups[r]) == int(ds.groups[i])]
        assert len(members) == 5
        length = int(ds.lengths[i])
        assert {int(ds.ref_lengths[r]) for r in members} == {length}  # a group is one template
        assert torch.allclose(values[i, :length], z_ref[members, :length].mean(0), atol=1e-4)
        assert not values[i, length:].any()  # past the group's prompts: nothing computed
