"""Activation and path patching: the blocks' fast path against hooked bridge passes and plain Hugging
Face hooks, exact identities between the two methods, intervals, errors, and the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from circuit_core import patching as pt
from circuit_core.evaluate import Cancelled
from circuit_core.tasks import build_dataset

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pairs(tiny_model):
    return build_dataset("ioi", tiny_model.tokenizer, n=16, seed=3, ref_per_group=0)


@pytest.fixture(scope="module")
def denoise(tiny_model, pairs):
    return pt.activation_patching(tiny_model, pairs, "denoise", bootstrap=200)


def hf_metric(hf, tokens, end, answers, patch=None):
    """Logit difference at END from a plain HF forward; patch = (layer, head, mask [N, S], z [N, S, d_head])
    puts z into that head's slice of the input of attn.c_proj where mask holds."""
    handle = None
    if patch is not None:
        layer, head, mask, z = patch
        d = hf.config.n_embd // hf.config.n_head

        def pre(module, args):
            x = args[0].clone()
            cur = x[..., head * d:(head + 1) * d]
            x[..., head * d:(head + 1) * d] = torch.where(mask[..., None], z, cur)
            return (x,)

        handle = hf.transformer.h[layer].attn.c_proj.register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            logits = hf(tokens).logits
    finally:
        if handle:
            handle.remove()
    at = logits[torch.arange(len(tokens)), end].double()
    return at.gather(1, answers[:, :1])[:, 0] - at.gather(1, answers[:, 1:])[:, 0]


def hf_z(hf, tokens, layer, head):
    d = hf.config.n_embd // hf.config.n_head
    got = {}
    h = hf.transformer.h[layer].attn.c_proj.register_forward_pre_hook(lambda m, a: got.__setitem__("z", a[0].clone()))
    with torch.no_grad():
        hf(tokens)
    h.remove()
    return got["z"][..., head * d:(head + 1) * d]


def test_cells_match_plain_hugging_face_hooks(tiny_hf, pairs, denoise):
    end, ans = pairs.positions["END"], pairs.answer_tokens
    clean = hf_metric(tiny_hf, pairs.tokens, end, ans)
    corr = hf_metric(tiny_hf, pairs.reference_tokens, end, ans)
    assert denoise.F_clean == pytest.approx(clean.mean().item(), abs=1e-4)
    assert denoise.F_corrupted == pytest.approx(corr.mean().item(), abs=1e-4)
    S = pairs.tokens.shape[1]
    for layer, head, role in [(0, 1, "S2"), (1, 3, "END"), (2, 0, "*"), (1, 0, "IO")]:
        i = denoise.roles.index(role)
        mask = (torch.ones(pairs.n, S, dtype=torch.bool) if role == "*" else
                torch.arange(S)[None] == pairs.positions[role][:, None])
        z = hf_z(tiny_hf, pairs.tokens, layer, head)
        patched = hf_metric(tiny_hf, pairs.reference_tokens, end, ans, (layer, head, mask, z))
        want = (patched.mean() - corr.mean()) / (clean.mean() - corr.mean())
        assert float(denoise.effects[layer, head, i]) == pytest.approx(want.item(), rel=2e-4, abs=1e-4)  # float32


@pytest.mark.parametrize("direction", pt.DIRECTIONS)
def test_blocks_and_hooked_bridge_agree(tiny_model, pairs, direction, monkeypatch):
    fast = pt.activation_patching(tiny_model, pairs, direction, bootstrap=50)
    monkeypatch.setattr(type(tiny_model), "blocks", property(lambda self: None))
    slow = pt.activation_patching(tiny_model, pairs, direction, bootstrap=50)
    assert torch.allclose(fast.effects, slow.effects, rtol=2e-4, atol=1e-4)  # float32 in both
    assert fast.F_clean == pytest.approx(slow.F_clean, abs=1e-4)


def test_path_to_logits_from_the_last_layer_is_noising_that_head(tiny_model, pairs):
    # A last-layer head reaches the logits only directly (through the last MLP): both methods agree.
    noise = pt.activation_patching(tiny_model, pairs, "noise", bootstrap=50)
    path = pt.path_patching(tiny_model, pairs, "logits", bootstrap=50)
    last = tiny_model.n_layers - 1
    assert torch.allclose(path.effects[last], noise.effects[last, :, -1], atol=1e-5)
    assert not torch.isnan(path.effects).any()


def test_path_to_receivers_has_no_path_from_their_layer_on(tiny_model, pairs):
    res = pt.path_patching(tiny_model, pairs, [(2, 1), (2, 3)], "qkv", bootstrap=50)
    assert torch.isnan(res.effects[2]).all() and not torch.isnan(res.effects[:2]).any()
    # Receivers' queries only at END: a part of the all-positions effect, computed the same way
    at_end = pt.path_patching(tiny_model, pairs, [(2, 1)], "q", receiver_role="END", bootstrap=50)
    everywhere = pt.path_patching(tiny_model, pairs, [(2, 1)], "q", bootstrap=50)
    # Queries are read where they are: the last layer's metric only sees END's query, so the two agree
    assert torch.allclose(at_end.effects[:2], everywhere.effects[:2], atol=1e-5)
    assert "q of 2.1 at END" == at_end.receivers


@pytest.fixture(scope="module")
def demo():
    from circuit_core.models import load_model

    return load_model("demo", device="cpu")


def test_on_the_demo_intervals_hold_the_point_and_narrow_with_more_prompts(demo):
    # A trained model: F(clean) is far from F(corrupted), so the normalised effects are well defined.
    small = pt.activation_patching(demo, build_dataset("ioi", demo.tokenizer, n=32, seed=1, ref_per_group=0),
                                   "noise", bootstrap=300)
    assert small.F_clean > small.F_corrupted + 5
    inside = (small.lo <= small.effects + 1e-6) & (small.effects <= small.hi + 1e-6)
    assert inside.float().mean() > 0.95
    large = pt.activation_patching(demo, build_dataset("ioi", demo.tokenizer, n=128, seed=1, ref_per_group=0),
                                   "noise", bootstrap=300)
    assert (large.hi - large.lo).median() < 0.75 * (small.hi - small.lo).median()  # about 1/2 for 4× the prompts
    # The demo's circuit is two last-layer heads at END: noising them there matters most.
    top = pt.start_from_patching(large, top_k=2)
    assert all(r == "END" for r in top.values())
    frame = small.frame()
    assert len(frame) == 4 * 4 * len(small.roles) and set(frame.position) == set(small.roles)
    assert json.loads(json.dumps(small.to_dict()))["kind"] == "activation"


def test_errors_and_cancellation(tiny_model, pairs):
    with pytest.raises(pt.PatchingError, match="twin"):
        pt.activation_patching(tiny_model, build_dataset("ioi", tiny_model.tokenizer, n=8, seed=3, ref_per_group=2))
    with pytest.raises(pt.PatchingError, match="direction"):
        pt.activation_patching(tiny_model, pairs, "sideways")
    with pytest.raises(pt.PatchingError, match="not in this"):
        pt.path_patching(tiny_model, pairs, [(5, 0)])
    with pytest.raises(pt.PatchingError, match="receiver"):
        pt.parse_receivers("nine.nine")
    with pytest.raises(Cancelled):
        pt.activation_patching(tiny_model, pairs, should_stop=lambda: True)
    assert pt.parse_receivers(" logits ") == "logits" and pt.parse_receivers("2.1, 0.3") == [(2, 1), (0, 3)]


def test_start_from_patching_keeps_the_strongest_at_their_role(denoise):
    start = pt.start_from_patching(denoise, top_k=3)
    assert len(start) == 3
    single = denoise.effects[..., :-1]
    best = max(((float(single[l, h].max()), (l, h)) for l in range(3) for h in range(4)))[1]
    assert best in start and start[best] == denoise.roles[int(single[best].argmax())]
    assert all(float(denoise.lo[h][denoise.roles.index(r)]) > 0.05
               for h, r in pt.start_from_patching(denoise, threshold=0.05).items())


def test_cli_patch_writes_a_record_and_refuses_to_overwrite(tiny_dir, tmp_path):
    out = tmp_path / "patch.json"
    cmd = [sys.executable, "-m", "circuit_core", "patch", "--model", str(tiny_dir), "--n", "8", "--out", str(out)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    record = json.loads(out.read_text())
    assert record["kind"] == "activation" and len(record["cells"]) == 3 * 4 * 6
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr
    bad = subprocess.run(cmd[:-2] + ["--receivers", "9.9", "--out", str(tmp_path / "p2.json")], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "9.9" in bad.stderr and "Traceback" not in bad.stderr


def test_discovery_can_start_from_patching(demo):
    from circuit_core.ablation import Methodology
    from circuit_core.discover import discover
    from circuit_core.evaluate import build_evaluator

    meth = Methodology(n=40, seed=2, ref_per_group=0, ref_replicates=0)
    start = pt.start_from_patching(pt.activation_patching(demo, pt.paired_dataset(demo, meth), "noise",
                                                          bootstrap=50), top_k=3)
    ev = build_evaluator(demo, meth)
    d = discover(ev, 0.8, start=start)
    full = discover(ev, 0.8)
    assert d.steps[0]["n_heads"] == 3 and d.n_node_sets < full.n_node_sets
    assert 0.8 <= d.F_circuit / d.F_model <= 1.2  # faithful, however it got there
    assert set(d.circuit.heads) <= {(l, h) for l in range(4) for h in range(4)}
    assert "started from 3 heads" in d.circuit.notes
    with pytest.raises(ValueError, match="start"):
        discover(ev, 0.8, start={(9, 9): "END"})
