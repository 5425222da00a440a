"""Writing files so that a crash, a full disk or an interrupt never leaves half a file behind.

A run record or a circuit is written to a temporary file beside its destination, flushed to disk,
then renamed over it in one step: readers see the old file or the new one, never a mix.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically; on any failure the old file is left as it was and the
    temporary file is removed. Returns the path."""
    path = Path(path)
    # Same directory, so os.replace is a rename within one file system (atomic), not a copy. Mode
    # 0o666 lets the umask decide, so the file gets the permissions a plain write would give it.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding=encoding) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: no stray temporary file either way
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


__all__ = ["atomic_write_text"]
