"""The mean tables' one pass over the references (ablation._weighted_means) against a plain loop, on
hand-made z: prompts of mixed lengths within and across groups, padding that must not count, several
draws, and batches cut by length."""
from types import SimpleNamespace

import pytest
import torch

from circuit_core import ablation


@pytest.mark.parametrize("batch_tokens", [1, 7, 10_000])
def test_weighted_means_match_a_plain_loop(monkeypatch, batch_tokens):
    g = torch.Generator().manual_seed(0)
    R, seq = 23, 6
    lengths = torch.randint(2, seq + 1, (R,), generator=g)
    group = torch.randint(0, 3, (R,), generator=g)
    tokens = torch.randint(0, 50, (R, seq), generator=g)
    for r in range(R):
        tokens[r, lengths[r]:] = 999  # padding: never part of a mean
    weights = torch.stack([torch.ones(R), torch.randint(0, 3, (R,), generator=g).float()])
    model = SimpleNamespace(n_layers=1, n_heads=2, d_head=1, device="cpu")
    # z of a prompt at position p: (token, 2·token) for its two heads; it must depend on the tokens only
    monkeypatch.setattr(ablation, "head_z", lambda m, t: torch.stack([t, 2 * t], -1).float()[:, :, None, :, None])
    monkeypatch.setattr(ablation, "MEANS_BATCH_TOKENS", batch_tokens)

    sums, counts = ablation._weighted_means(model, tokens, lengths, group, 3, weights)
    for d in range(2):
        for k in range(3):
            for p in range(seq):
                members = [r for r in range(R) if group[r] == k and lengths[r] > p]
                w = weights[d, members]
                assert counts[d, k, p] == pytest.approx(float(w.sum()))
                expected = float((w * tokens[members, p].float()).sum())
                assert sums[d, k, p].tolist() == pytest.approx([expected, 2 * expected])


def test_building_an_evaluator_reports_the_means_progress(tiny_model, monkeypatch):
    """The dashboard shows a bar while the means are computed (no progress argument reaches them: the
    evaluator builds its tables): every reference prompt counted once, the last report complete."""
    from circuit_core.ablation import Methodology, TableCache
    from circuit_core.evaluate import build_evaluator
    from circuit_core.progress import reporting

    monkeypatch.setenv("CIRCUIT_CACHE_DIR", "off")  # computed, not read back
    seen = []
    old, ablation.TABLES = ablation.TABLES, TableCache()
    try:
        with reporting(lambda done, total: seen.append((done, total))):
            ev = build_evaluator(tiny_model, Methodology(n=12, ref_per_group=3, seed=41))
    finally:
        ablation.TABLES = old
    refs = len(ev.dataset.reference_tokens)
    assert seen and seen[-1] == (refs, refs)
    assert [d for d, _ in seen] == sorted({d for d, _ in seen})  # strictly increasing
