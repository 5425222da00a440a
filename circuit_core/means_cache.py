"""Ablation values kept on disk, so the reference set's forward pass is paid once per machine.

With the default methodology the means come from 1,500 reference prompts (50 per group) and 8
bootstrap replicates: a GPT-2 small forward pass over all of them takes about 20 s on a 2-core
CPU. A restarted dashboard, another session or a CLI run with the same model, prompts and
methodology reads them back instead. Files are safetensors (no pickle). The key hashes everything
the values depend on: a fingerprint of the model's weights (not its name), the reference tokens,
groups and lengths, the clean prompts' groups, the ablation kind, the seed and the draws. A file
that cannot be read is ignored and rewritten. The folder is bounded in bytes (least recently used go).

Folder: $CIRCUIT_CACHE_DIR, else ~/.cache/circuit-validation/means; CIRCUIT_CACHE_DIR=off disables it.
"""
from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path

import torch

MAX_ENTRY_BYTES = 512 << 20  # larger tables (resample ablation at large N) are not worth the disk
MAX_TOTAL_BYTES = 4 << 30
FORMAT = "2"  # bump when the tables' layout or computation changes: old files are then never read

_fingerprints: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def cache_dir() -> Path | None:
    where = os.environ.get("CIRCUIT_CACHE_DIR", "").strip()
    if where.lower() in ("off", "0", "none", "false"):
        return None
    return Path(where) if where else Path.home() / ".cache" / "circuit-validation" / "means"


def model_fingerprint(model) -> str:
    """A hash of every parameter's name, shape and a strided sample of its values (all of a small
    one), so two folders with the same name but other weights never share a file. Computed once
    per loaded model: the weights are not expected to change under a loaded model."""
    bridge = model.bridge
    if bridge in _fingerprints:
        return _fingerprints[bridge]
    h = hashlib.sha256()
    source = getattr(bridge, "original_model", None) or bridge
    for name, p in source.named_parameters():
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // 65536)  # any retraining moves the sample
        h.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
        h.update(flat[::step].to(torch.float32).cpu().numpy().tobytes())
    _fingerprints[bridge] = fp = h.hexdigest()
    return fp


def key(model, dataset, kind: str, seed: int, draws: list[int]) -> str:
    h = hashlib.sha256(f"{FORMAT}|{model_fingerprint(model)}|{kind}|{seed}|{draws}|{tuple(dataset.tokens.shape)}".encode())
    for t in (dataset.reference_tokens, dataset.ref_groups, dataset.ref_lengths, dataset.groups):
        h.update(t.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:40]


def load(path: Path) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """[(values, index)] from a cache file, or None when absent or unreadable."""
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        d = load_file(str(path))
        out = []
        for i in range(sum(1 for k in d if k.startswith("index."))):
            # a draw that shares another's table stores only which one ("same.i": that draw's number)
            values = out[int(d[f"same.{i}"])][0] if f"same.{i}" in d else d[f"values.{i}"]
            out.append((values, d[f"index.{i}"]))
        os.utime(path)  # recently used: evicted last
        return out or None
    except Exception:  # a partial or foreign file: recompute (and overwrite it)
        return None


def save(path: Path, tables) -> None:
    """Write tables as one file, atomically; a full disk or a read-only folder only costs the cache."""
    from safetensors.torch import save_file

    tensors, first = {}, {}
    for i, (values, index) in enumerate(tables):
        j = first.setdefault(values.untyped_storage().data_ptr(), i)
        if j == i:  # clone: a broadcast or a view would be refused or stored whole
            tensors[f"values.{i}"] = values.detach().cpu().contiguous().clone()
        else:  # resample draws share one table: store it once
            tensors[f"same.{i}"] = torch.tensor(j)
        tensors[f"index.{i}"] = index.detach().cpu().contiguous().clone()
    if sum(t.numel() * t.element_size() for t in tensors.values()) > MAX_ENTRY_BYTES:
        return
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp))
        os.replace(tmp, path)  # readers see the old file or the whole new one
    except (OSError, RuntimeError, ValueError):
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # the folder itself is the problem
            pass
        return
    evict(path.parent)


def evict(folder: Path, max_bytes: int = MAX_TOTAL_BYTES) -> None:
    """Remove the least recently used files beyond `max_bytes`."""
    try:
        files = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for f in files:
            total += f.stat().st_size
            if total > max_bytes:
                f.unlink(missing_ok=True)
    except OSError:
        pass


def cached(model, dataset, kind: str, seed: int, draws: list[int], compute) -> list:
    """The tables of `draws`, one per draw, from the folder where it has them; the rest from
    compute(missing draws) (a list of tables or (values, index) pairs), stored as they come.
    Mean draws are stored one file each (draw 0 of mean ablation does not depend on the seed);
    resample draws share one table, so they are one file together."""
    folder = cache_dir()
    if folder is None or kind == "zero":  # zero ablation costs nothing to rebuild
        return compute(draws)
    units = [list(draws)] if kind == "resample" else [[b] for b in draws]
    paths = {tuple(u): folder / f"{key(model, dataset, kind, seed if (kind == 'resample' or u[0]) else 0, u)}.safetensors"
             for u in units}
    device = getattr(model, "device", "cpu")
    found: dict = {}
    for u, path in paths.items():
        got = load(path)
        if got is not None and len(got) == len(u):
            moved: dict = {}  # tables shared before the move stay shared
            for b, (v, i) in zip(u, got):
                found[b] = (moved.setdefault(id(v), v.to(device)), i.to(device))
    missing = [b for b in draws if b not in found]
    if missing:
        for b, t in zip(missing, compute(missing)):
            found[b] = t
        for u, path in paths.items():
            if any(b in missing for b in u):
                save(path, [tuple(found[b]) for b in u])
    return [found[b] for b in draws]
