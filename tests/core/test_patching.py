"""Activation and path patching: the blocks' fast path against plain Hugging Face hooks (independent
computations) and hooked bridge passes (the fallback), exact identities, intervals, errors, the CLI."""
import dataclasses
import json

import pytest
import torch

import hf_reference as ref
from circuit_core import patching as pt
from circuit_core.cli import main
from circuit_core.progress import Cancelled
from circuit_core.tasks import build_dataset


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a loaded 2-core machine its synchronisation
    made hooked passes about 90x slower (14 s instead of 0.16 s measured); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pairs(tiny_model):
    return build_dataset("ioi", tiny_model.tokenizer, n=16, seed=3, ref_per_group=0)


@pytest.fixture(scope="module")
def denoise(tiny_model, pairs):
    return pt.activation_patching(tiny_model, pairs, "denoise", bootstrap=200)


@pytest.fixture(scope="module")
def noise(tiny_model, pairs):
    return pt.activation_patching(tiny_model, pairs, "noise", bootstrap=200)


@pytest.fixture
def no_blocks(tiny_model, monkeypatch):
    """The model as one blocks.py does not describe: everything goes through hooked bridge passes."""
    monkeypatch.setattr(type(tiny_model), "blocks", property(lambda self: None))


def hf_metric(hf, ds, tokens, replace=None):
    """Per-prompt logit difference of a plain HF forward; replace = (z [N, S, L, H, d], where [N, S, L, H])
    puts z in where `where` holds (at the input of attn.c_proj)."""
    if replace is None:
        return ref.logit_diffs(hf, tokens, ds.positions["END"], ds.answer_tokens)
    z, where = replace
    return ref.logit_diffs(hf, tokens, ds.positions["END"], ds.answer_tokens, ~where, z)


def at(ds, layer, head, role):
    """[N, S, L, H] bool: this head at this role ("*": everywhere)."""
    N, S = ds.tokens.shape
    where = torch.zeros(N, S, 3, 4, dtype=torch.bool)
    where[:, :, layer, head] = (torch.ones(N, S, dtype=torch.bool) if role == "*"
                                else torch.arange(S)[None] == ds.positions[role][:, None])
    return where


# --- independent computations -----------------------------------------------------------------------------
def test_cells_match_plain_hugging_face_hooks(tiny_hf, pairs, denoise, noise):
    clean, corr = hf_metric(tiny_hf, pairs, pairs.tokens), hf_metric(tiny_hf, pairs, pairs.reference_tokens)
    gap = clean.mean() - corr.mean()
    assert denoise.F_clean == pytest.approx(clean.mean().item(), abs=1e-4)
    assert noise.F_corrupted == pytest.approx(corr.mean().item(), abs=1e-4)
    z_clean, z_corr = ref.head_outputs(tiny_hf, pairs.tokens), ref.head_outputs(tiny_hf, pairs.reference_tokens)
    for layer, head, role in [(0, 1, "S2"), (1, 3, "END"), (2, 0, "*"), (1, 0, "IO"), (0, 2, "*")]:
        i = denoise.roles.index(role)
        restored = hf_metric(tiny_hf, pairs, pairs.reference_tokens, (z_clean, at(pairs, layer, head, role)))
        destroyed = hf_metric(tiny_hf, pairs, pairs.tokens, (z_corr, at(pairs, layer, head, role)))
        # float32 forwards; the tiny random model's small gap magnifies their error in the ratio
        assert float(denoise.effects[layer, head, i]) == pytest.approx(((restored.mean() - corr.mean()) / gap).item(),
                                                                       rel=2e-4, abs=1e-4)
        assert float(noise.effects[layer, head, i]) == pytest.approx(((clean.mean() - destroyed.mean()) / gap).item(),
                                                                     rel=2e-4, abs=1e-4)


def hf_path(hf, ds, sender, receivers, inputs="qkv", role=None):
    """Wang et al.'s path patching with plain HF hooks. (b): every head's z frozen to its clean value, the
    sender's corrupted; the receivers' q/k/v (slices of attn.c_attn's output) recorded. (c): the clean run
    with only those slices put in (at `role`, or everywhere). receivers "logits": (b)'s own logits."""
    z = ref.head_outputs(hf, ds.tokens)
    z[:, :, sender[0], sender[1]] = ref.head_outputs(hf, ds.reference_tokens)[:, :, sender[0], sender[1]]
    frozen = torch.ones(*ds.tokens.shape, 3, 4, dtype=torch.bool)
    if receivers == "logits":
        return hf_metric(hf, ds, ds.tokens, (z, frozen))
    d, layers = 8, sorted({l for l, _ in receivers})  # n_embd 32 / 4 heads
    seen = {}
    grab = [hf.transformer.h[l].attn.c_attn.register_forward_hook(lambda m, a, out, l=l: seen.__setitem__(l, out))
            for l in layers]
    hf_metric(hf, ds, ds.tokens, (z, frozen))
    for h in grab:
        h.remove()
    S = ds.tokens.shape[1]
    where = torch.ones(len(ds.tokens), S, 1, dtype=torch.bool) if role is None else \
        (torch.arange(S)[None] == ds.positions[role][:, None])[..., None]

    def put(module, args, out, l):
        out = out.clone()
        for layer, head in receivers:
            for c in inputs if layer == l else "":
                cols = slice("qkv".index(c) * 32 + head * d, "qkv".index(c) * 32 + (head + 1) * d)
                out[..., cols] = torch.where(where, seen[l][..., cols], out[..., cols])
        return out

    hooks = [hf.transformer.h[l].attn.c_attn.register_forward_hook(lambda m, a, o, l=l: put(m, a, o, l))
             for l in layers]
    try:
        return hf_metric(hf, ds, ds.tokens)
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("receivers,inputs,role", [("logits", "qkv", None), ([(2, 1), (2, 3)], "qkv", None),
                                                   ([(1, 0), (2, 2)], "k", "S2"), ([(2, 1)], "v", None)])
def test_path_patching_matches_plain_hugging_face_hooks(tiny_model, tiny_hf, pairs, receivers, inputs, role):
    res = pt.path_patching(tiny_model, pairs, receivers, inputs, role, bootstrap=20)
    clean, corr = hf_metric(tiny_hf, pairs, pairs.tokens), hf_metric(tiny_hf, pairs, pairs.reference_tokens)
    for sender in [(0, 0), (0, 3), (1, 2)] if receivers == "logits" or min(receivers)[0] == 2 else [(0, 1), (0, 2)]:
        patched = hf_path(tiny_hf, pairs, sender, receivers, inputs, role)
        want = (clean.mean() - patched.mean()) / (clean.mean() - corr.mean())
        assert float(res.effects[sender]) == pytest.approx(want.item(), rel=2e-4, abs=1e-4), sender


@pytest.mark.parametrize("receivers,inputs,role", [([(0, 1), (2, 2)], "qkv", None), ([(1, 0), (2, 2)], "k", "S2")])
def test_receivers_in_two_layers_each_hear_the_senders_before_them(tiny_model, tiny_hf, pairs, receivers, inputs,
                                                                   role, monkeypatch):
    # hf_path patches every receiver with (b)'s inputs: one in the sender's layer or earlier gets its clean input
    # back by causality, and (b) freezes the earlier receiver, so the later one hears the sender directly.
    fast = pt.path_patching(tiny_model, pairs, receivers, inputs, role, bootstrap=20)
    assert fast.effects[2].isnan().all() and not fast.effects[:2].isnan().any()  # NaN only from the last layer on
    clean, corr = hf_metric(tiny_hf, pairs, pairs.tokens), hf_metric(tiny_hf, pairs, pairs.reference_tokens)
    # (1, 3): between the receivers' layers or in the earlier one's; (0, 2): before both in the second case
    for sender in [(1, 3), (0, 2)]:
        patched = hf_path(tiny_hf, pairs, sender, receivers, inputs, role)
        want = (clean.mean() - patched.mean()) / (clean.mean() - corr.mean())
        assert float(fast.effects[sender]) == pytest.approx(want.item(), abs=1e-4), sender
    # Senders in the earlier receiver's layer or later reach the later receiver alone: the same as patching it only
    later = pt.path_patching(tiny_model, pairs, receivers[1:], inputs, role, bootstrap=20)
    from_ = receivers[0][0]
    assert torch.allclose(fast.effects[from_:2], later.effects[from_:2], atol=1e-6)
    monkeypatch.setattr(type(tiny_model), "blocks", property(lambda self: None))
    slow = pt.path_patching(tiny_model, pairs, receivers, inputs, role, bootstrap=20)
    assert slow.settings["engine"] == "hooks" and torch.equal(slow.effects.isnan(), fast.effects.isnan())
    assert torch.allclose(fast.effects.nan_to_num(), slow.effects.nan_to_num(), rtol=2e-4, atol=1e-4)


def test_a_window_from_any_position_gives_what_the_whole_model_gives(tiny_model, tiny_hf, pairs):
    # The fast path runs each prompt only from its patched position to END, reusing the unpatched run's keys and
    # values before it (and the last layer at END only, without the unembedding). A change to the residual
    # entering a layer at one position per prompt, run that way, must give the plain HF model's logit difference
    # with the same change (every position, every layer, full logits).
    N, end = pairs.n, pairs.positions["END"]
    r = pt._Runner(tiny_model, pairs)
    base = r.run(pairs.tokens[:, : int(end.max()) + 1])
    gen = torch.Generator().manual_seed(0)
    start = (torch.rand(N, generator=gen) * (end + 1)).long()  # anywhere from 0 to END
    start[0], start[1] = 0, end[1]
    w = pt._Window(start, end, int(end.max()) + 1)
    for layer in range(tiny_model.n_layers):
        push = torch.randn(2, N, 32, generator=gen)  # two changes per prompt, side by side
        x = w.gather(base["resid"][layer]).repeat(2, 1, 1)
        x[:, w.first] += push
        got = r.metric(r.onward(x, layer, base, w, fresh=w.first).flatten(0, 1), torch.arange(N)).view(2, N)
        for g in range(2):
            add = torch.zeros(*pairs.tokens.shape, 32)
            add[torch.arange(N), start] = push[g]

            def pre(mod, args, kwargs, add=add):
                if args:
                    return (args[0] + add, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": kwargs["hidden_states"] + add}

            hook = tiny_hf.transformer.h[layer].register_forward_pre_hook(pre, with_kwargs=True)
            try:
                want = hf_metric(tiny_hf, pairs, pairs.tokens)
            finally:
                hook.remove()
            assert torch.allclose(got[g], want, atol=2e-4), (layer, g)
    assert not torch.allclose(got[0], hf_metric(tiny_hf, pairs, pairs.tokens), atol=1e-2)  # the change mattered


def test_a_head_patched_after_end_changes_nothing(tiny_model, pairs):
    # A role after END reaches nothing: the fast path runs no window for it, and must still give effect 0.
    extra = lambda t: torch.cat([t, pairs.tokens[:, :1]], 1)
    later = dataclasses.replace(pairs, tokens=extra(pairs.tokens), reference_tokens=extra(pairs.reference_tokens),
                                positions={**pairs.positions, "LATE": pairs.positions["END"] + 1})
    res = pt.activation_patching(tiny_model, later, "noise", roles=["LATE", "END"], bootstrap=10)
    assert res.effects[..., 0].abs().max() < 1e-5 and res.effects[..., 1].abs().max() > 1e-2


# --- the fallback ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("direction", pt.DIRECTIONS)
def test_hooked_bridge_fallback_gives_the_same_activation_patching(tiny_model, pairs, direction, denoise, noise,
                                                                   no_blocks):
    slow = pt.activation_patching(tiny_model, pairs, direction, roles=["S2", "END"], bootstrap=200)
    fast = denoise if direction == "denoise" else noise
    assert slow.settings["engine"] == "hooks" and fast.settings["engine"] == "blocks"
    cols = [fast.roles.index(r) for r in slow.roles]  # S2, END, *
    assert torch.allclose(fast.effects[..., cols], slow.effects, rtol=2e-4, atol=1e-4)  # float32 in both
    assert fast.F_clean == pytest.approx(slow.F_clean, abs=1e-5)


def test_hooked_bridge_fallback_gives_the_same_path_patching(tiny_model, pairs, monkeypatch):
    cases = [("logits", "qkv", None), ([(2, 1), (1, 3)], "qkv", None), ([(1, 0), (2, 2)], "q", "END")]
    fast = [pt.path_patching(tiny_model, pairs, *c, bootstrap=20) for c in cases]
    monkeypatch.setattr(type(tiny_model), "blocks", property(lambda self: None))
    for c, f in zip(cases, fast):
        s = pt.path_patching(tiny_model, pairs, *c, bootstrap=20)
        assert s.settings["engine"] == "hooks" and torch.equal(s.effects.isnan(), f.effects.isnan())
        assert torch.allclose(f.effects.nan_to_num(), s.effects.nan_to_num(), rtol=2e-4, atol=1e-4), c


# --- exact identities ------------------------------------------------------------------------------------
def test_path_to_logits_from_the_last_layer_is_noising_that_head(tiny_model, pairs, noise):
    # A last-layer head reaches the logits only directly (through the last MLP): both methods agree.
    path = pt.path_patching(tiny_model, pairs, "logits", bootstrap=50)
    last = tiny_model.n_layers - 1
    assert torch.allclose(path.effects[last], noise.effects[last, :, -1], atol=1e-5)
    assert not torch.isnan(path.effects).any() and path.receivers == "logits"


def test_last_layer_heads_away_from_end_do_nothing(denoise, noise):
    # Causal attention: a last-layer head's output at S2, IO, ... never reaches END's residual.
    away = [i for i, r in enumerate(denoise.roles) if r not in ("END", "*")]
    assert away and denoise.effects[-1, :, away].abs().max() < 1e-5 and noise.effects[-1, :, away].abs().max() < 1e-5


def test_denoising_is_noising_with_clean_and_corrupted_swapped(tiny_model, pairs, denoise):
    # The same forward passes: (p - k)/(c - k) with c, k swapped is noising's (c' - p)/(c' - k').
    swapped = dataclasses.replace(pairs, tokens=pairs.reference_tokens, reference_tokens=pairs.tokens)
    other = pt.activation_patching(tiny_model, swapped, "noise", bootstrap=200)
    assert torch.allclose(other.effects, denoise.effects, atol=1e-6)
    assert torch.allclose(other.lo, denoise.lo, atol=1e-5) and torch.allclose(other.hi, denoise.hi, atol=1e-5)


def test_receivers_in_the_last_layer_read_only_their_query_at_end(tiny_model, pairs):
    res = pt.path_patching(tiny_model, pairs, [(2, 1), (2, 3)], "qkv", bootstrap=50)
    assert torch.isnan(res.effects[2]).all() and not torch.isnan(res.effects[:2]).any()
    at_end = pt.path_patching(tiny_model, pairs, [(2, 1)], "q", receiver_role="END", bootstrap=50)
    everywhere = pt.path_patching(tiny_model, pairs, [(2, 1)], "q", bootstrap=50)
    assert torch.allclose(at_end.effects[:2], everywhere.effects[:2], atol=1e-5)
    assert at_end.receivers == "q of 2.1 at END" and at_end.frame()["effect"].isna().sum() == 4
    assert pt.path_patching(tiny_model, pairs, [(0, 1)], bootstrap=10).effects.isnan().all()  # no sender precedes


# --- intervals, records --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo():
    from circuit_core.models import load_model

    return load_model("demo", device="cpu")


def test_on_the_demo_intervals_hold_the_point_and_narrow_with_more_prompts(demo):
    # A trained model: F(clean) is far from F(corrupted), so the normalised effects are well defined.
    small = pt.activation_patching(demo, build_dataset("ioi", demo.tokenizer, n=32, seed=1, ref_per_group=0),
                                   "noise", bootstrap=300)
    assert small.F_clean > small.F_corrupted + 5
    assert small.F_intervals["clean"][0] < small.F_clean < small.F_intervals["clean"][1]
    inside = (small.lo <= small.effects + 1e-6) & (small.effects <= small.hi + 1e-6)
    assert inside.float().mean() > 0.95
    large = pt.activation_patching(demo, build_dataset("ioi", demo.tokenizer, n=128, seed=1, ref_per_group=0),
                                   "noise", bootstrap=300)
    assert (large.hi - large.lo).median() < 0.75 * (small.hi - small.lo).median()  # about 1/2 for 4× the prompts
    # The demo's duplicate-token head 0.0 matters most, at S2 (its model card): noising it there destroys
    # about half of the behaviour; the next heads matter at END.
    top = pt.start_from_patching(large, top_k=3)
    assert list(top.items())[0] == ((0, 0), "S2") and list(top.values())[1:] == ["END", "END"]
    assert large.lo[0, 0, large.roles.index("S2")] > 0.3
    frame = small.frame()
    assert len(frame) == 4 * 4 * len(small.roles) and set(frame.position) == set(small.roles)
    assert list(frame.columns) == ["layer", "head", "name", "position", "effect", "lo", "hi"]
    assert json.loads(json.dumps(small.to_dict()))["kind"] == "activation"


# --- errors, progress, cancellation --------------------------------------------------------------------
def test_errors(tiny_model, pairs):
    with pytest.raises(pt.PatchingError, match="twin"):
        pt.activation_patching(tiny_model, build_dataset("ioi", tiny_model.tokenizer, n=8, seed=3, ref_per_group=2))
    with pytest.raises(pt.PatchingError, match="equal their clean"):  # corrupted == clean: nothing to normalise by
        pt.activation_patching(tiny_model, dataclasses.replace(pairs, reference_tokens=pairs.tokens))
    # Twins differing only after END: F(clean) = F(corrupted) exactly (causal), a zero denominator
    pad = lambda t: torch.full((pairs.n, 1), t, dtype=pairs.tokens.dtype)
    after_end = dataclasses.replace(pairs, tokens=torch.cat([pairs.tokens, pad(5)], 1),
                                    reference_tokens=torch.cat([pairs.tokens, pad(6)], 1))
    for run in (pt.activation_patching, lambda m, d: pt.path_patching(m, d, "logits")):
        with pytest.raises(pt.PatchingError, match="F\\(clean\\) equals F\\(corrupted\\)"):
            run(tiny_model, after_end)
    with pytest.raises(pt.PatchingError, match="direction"):
        pt.activation_patching(tiny_model, pairs, "sideways")
    with pytest.raises(pt.PatchingError, match="unknown position"):
        pt.activation_patching(tiny_model, pairs, roles=["NOPE"])
    with pytest.raises(pt.PatchingError, match="not in this"):
        pt.path_patching(tiny_model, pairs, [(5, 0)])
    with pytest.raises(pt.PatchingError, match="receiver input"):
        pt.path_patching(tiny_model, pairs, [(2, 0)], "x")
    with pytest.raises(pt.PatchingError, match="receiver"):
        pt.parse_receivers("nine.nine")
    assert pt.parse_receivers(" logits ") == "logits" and pt.parse_receivers("2.1, 0.3") == [(2, 1), (0, 3)]


@pytest.mark.parametrize("hooked", [False, True])
def test_progress_and_cancellation(tiny_model, pairs, hooked, monkeypatch):
    if hooked:
        monkeypatch.setattr(type(tiny_model), "blocks", property(lambda self: None))
    calls = []
    pt.activation_patching(tiny_model, pairs, roles=["END"], batch_size=4 * 8, bootstrap=10,
                           progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 3 * 2 * 2) for i in range(1, 13)]  # 3 layers × (END, *) × 2 batches of 8 prompts
    calls.clear()
    pt.path_patching(tiny_model, pairs, [(2, 0)], progress=lambda d, t: calls.append((d, t)), bootstrap=10)
    assert calls[-1] == (2, 2)  # senders in layers 0 and 1, one batch each
    for run in (pt.activation_patching, lambda *a, **k: pt.path_patching(*a, receivers="logits", **k)):
        with pytest.raises(Cancelled):
            run(tiny_model, pairs, should_stop=lambda: True)
        stop_after = iter([False, False, True])
        with pytest.raises(Cancelled):
            run(tiny_model, pairs, should_stop=lambda: next(stop_after))


def test_start_from_patching_keeps_the_strongest_at_their_role(denoise):
    start = pt.start_from_patching(denoise, top_k=3)
    assert len(start) == 3
    single = denoise.effects[..., :-1]
    best = max(((float(single[l, h].max()), (l, h)) for l in range(3) for h in range(4)))[1]
    assert best in start and start[best] == denoise.roles[int(single[best].argmax())]
    assert "*" not in start.values()
    assert all(float(denoise.lo[h][denoise.roles.index(r)]) > 0.05
               for h, r in pt.start_from_patching(denoise, threshold=0.05).items())


# --- discover and the CLI ----------------------------------------------------------------------------------
def test_discovery_can_start_from_patching(demo):
    from circuit_core.ablation import Methodology
    from circuit_core.discover import discover
    from circuit_core.evaluate import build_evaluator

    meth = Methodology(n=40, seed=2, ref_per_group=0, ref_replicates=0)
    start = pt.start_from_patching(pt.activation_patching(demo, pt.paired_dataset(demo, meth), "noise",
                                                          bootstrap=50), top_k=3)
    ev = build_evaluator(demo, meth)
    d = discover(ev, 0.8, start=start)
    H, R = 16, len(ev.dataset.roles)
    assert d.steps[0]["n_heads"] == 3 and d.n_node_sets < 2 + H * (1 + R)  # under the full run's first step
    assert 0.8 <= d.F_circuit / d.F_model <= 1.2  # faithful, however it got there
    assert "started from 3 heads" in d.circuit.notes
    with pytest.raises(ValueError, match="start"):
        discover(ev, 0.8, start={(9, 9): "END"})


def exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's refusals (types and ranges), before any work
        return exc.code


def test_cli_patch_writes_a_record_and_refuses_to_overwrite(tiny_dir, tmp_path, capsys):
    out = tmp_path / "patch.json"
    args = ["patch", "--model", str(tiny_dir), "--n", "8", "--bootstrap", "20", "--out", str(out)]
    assert main(args) == 0
    record = json.loads(out.read_text())
    assert record["kind"] == "activation" and record["direction"] == "noise" and len(record["cells"]) == 3 * 4 * 6
    assert record["methodology"]["n"] == 8 and "Activation patching (noise)" in capsys.readouterr().out
    assert main(args) == 2 and "exists" in capsys.readouterr().err  # never replaced silently
    assert main(args + ["--overwrite", "--receivers", "2.1,2.3", "--receiver-input", "k",
                        "--receiver-position", "S2"]) == 0
    record = json.loads(out.read_text())
    assert record["kind"] == "path" and record["receivers"] == "k of 2.1, 2.3 at S2"


@pytest.mark.parametrize("extra,message", [
    (["--receivers", "9.9"], "receiver(s) 9.9 not in this 3×4 model"),
    (["--receivers", "nine"], "receivers"),
    (["--receiver-input", "q"], "add --receivers"),
    (["--receivers", "logits", "--receiver-position", "END"], "takes no"),
    (["--receivers", "2.1", "--direction", "denoise"], "always noises"),
    (["--receivers", "2.1", "--receiver-position", "NOPE"], "not a position of task ioi"),
    (["--n", "0"], "≥ 1"),
    (["--bootstrap", "-3"], "≥ 1"),
])
def test_cli_patch_refuses_bad_options_in_one_line(tiny_dir, tmp_path, capsys, extra, message):
    assert exit_code(["patch", "--model", str(tiny_dir), "--out", str(tmp_path / "p.json")] + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.json").exists()


def test_cli_discover_can_start_from_patching(tmp_path, capsys):
    out = tmp_path / "c.json"
    assert main(["discover", "--model", "demo", "--n", "24", "--ref-per-group", "0", "--start-from-patching", "3",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Starting from 3 heads of activation patching (noise) on the selection prompts" in printed
    assert "started from 3 heads" in json.loads(out.read_text())["notes"]
    assert exit_code(["discover", "--model", "demo", "--start-from-patching", "0",
                      "--out", str(tmp_path / "d.json")]) == 2
    assert "--start-from-patching: expected a whole number ≥ 1" in capsys.readouterr().err
