"""One bounded, least-recently-used map for every in-memory cache of the engine: the evaluator's
residuals and memoised results (evaluate.py), the ablation tables kept past their evaluators
(ablation.TableCache) and a model's evaluators (evaluate.EvaluatorCache).

Bounded in entries and/or bytes; the least recently used (read or written) go first. Bytes are
counted one of two ways:
- `size(value)` per entry, summed as entries come and go (plus `overhead` per entry: a key can
  outweigh a small value); an entry over `max_bytes` on its own is not kept at all;
- `measure(values)` of the whole cache, measured afresh, for values that share storage (tables
  and evaluators that hold the same tensors count them once).
Thread-safe: every method takes the cache's own lock.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable, Iterable


def nbytes(value) -> int:
    """Bytes of a tensor or array (anything else: 0)."""
    if hasattr(value, "element_size"):  # torch
        return value.numel() * value.element_size()
    return int(getattr(value, "nbytes", 0))


class BoundedCache:
    """An LRU map: get / put / pop / `in` / len; see the module doc for the bounds.

    keep_newest: the most recent entry stays even when it alone is over the bounds (a cache of
    evaluators keeps the one in use)."""

    def __init__(self, max_entries: int | None = None, max_bytes: int | None = None, *,
                 size: Callable[[object], int] | None = None, overhead: int = 0,
                 measure: Callable[[Iterable], int] | None = None, keep_newest: bool = False):
        if size is not None and measure is not None:
            raise ValueError("count bytes per entry (size) or for the whole cache (measure), not both")
        self.max_entries, self.max_bytes, self.overhead = max_entries, max_bytes, overhead
        self._size = size or (nbytes if measure is None else None)
        self._measure, self.keep_newest = measure, keep_newest
        self._d: OrderedDict = OrderedDict()
        self._total = 0  # summed sizes (per-entry counting)
        self._lock = threading.RLock()

    # --- reading ---
    def get(self, key: Hashable, default=None):
        """The value (now the most recently used), or `default`."""
        with self._lock:
            if key not in self._d:
                return default
            self._d.move_to_end(key)
            return self._d[key]

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._d

    def __len__(self) -> int:
        return len(self._d)

    def keys(self) -> list:
        with self._lock:
            return list(self._d)

    def values(self) -> list:
        with self._lock:
            return list(self._d.values())

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes()

    # --- writing ---
    def put(self, key: Hashable, value) -> None:
        """Keep `value` under `key` as the most recently used, then drop the oldest while over."""
        self.put_many({key: value})

    def put_many(self, items: dict) -> None:
        """Put every item (in order), then drop the oldest while over the bounds."""
        with self._lock:
            for key, value in items.items():
                if self._size is not None:
                    size = self._entry_size(value)
                    if self.max_bytes is not None and size > self.max_bytes:
                        continue  # could never be kept: leave what is there
                    if key in self._d:
                        self._total -= self._entry_size(self._d[key])
                    self._total += size
                self._d[key] = value
                self._d.move_to_end(key)
            self._trim()

    def pop(self, key: Hashable, default=None):
        with self._lock:
            if key not in self._d:
                return default
            value = self._d.pop(key)
            if self._size is not None:
                self._total -= self._entry_size(value)
            return value

    def trim(self) -> None:
        """Drop the oldest while over the bounds (for values that grow in place, measured now)."""
        with self._lock:
            self._trim()

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self._total = 0

    # --- internals (lock held) ---
    def _entry_size(self, value) -> int:
        return self._size(value) + self.overhead

    def _bytes(self) -> int:
        return self._total if self._measure is None else self._measure(self._d.values())

    def _over(self) -> bool:
        if self.max_entries is not None and len(self._d) > self.max_entries:
            return True
        return self.max_bytes is not None and self._bytes() > self.max_bytes

    def _trim(self) -> None:
        while len(self._d) > (1 if self.keep_newest else 0) and self._over():
            _, old = self._d.popitem(last=False)
            if self._size is not None:
                self._total -= self._entry_size(old)


__all__ = ["BoundedCache", "nbytes"]
