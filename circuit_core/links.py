"""A circuit as a short URL-safe string, so a page's address can carry the circuit being edited.

Format: "c1." + base64url(zlib(JSON payload)), no padding. The payload is an object
{"v": 1, "circuit": {...}}; a shared link can add fields (model, methodology) beside "circuit"
without breaking older strings. Decoding treats the string as untrusted: every failure is a
CircuitError with a plain message, and sizes are bounded before and after decompression.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import zlib

from .circuit import Circuit, CircuitError

PREFIX = "c1."
VERSION = 1
MAX_ENCODED = 8_000  # characters: well inside what browsers and proxies accept in an address
MAX_JSON = 64_000  # bytes after decompression: a circuit of every head of a large model fits
_URLSAFE = re.compile(r"[A-Za-z0-9_-]*")


def encode_payload(payload: dict) -> str:
    """A JSON object as a compact URL-safe string; CircuitError when it would be too long."""
    raw = json.dumps({"v": VERSION, **payload}, sort_keys=True, separators=(",", ":")).encode()
    if len(raw) > MAX_JSON:
        raise CircuitError("This circuit is too large to keep in the page's address; save it instead.")
    text = PREFIX + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")
    if len(text) > MAX_ENCODED:
        raise CircuitError("This circuit is too large to keep in the page's address; save it instead.")
    return text


def decode_payload(text: str) -> dict:
    """The object `encode_payload` wrote; CircuitError for anything else."""
    if not isinstance(text, str) or not text.startswith(PREFIX):
        raise CircuitError("The address does not hold a circuit from this dashboard.")
    body = text[len(PREFIX):]
    if len(text) > MAX_ENCODED:
        raise CircuitError("The circuit in the address is longer than any this dashboard writes.")
    if not _URLSAFE.fullmatch(body):
        raise CircuitError("The circuit in the address has characters it should not; was it cut or altered?")
    try:
        packed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        inflate = zlib.decompressobj()
        raw = inflate.decompress(packed, MAX_JSON)
        if inflate.unconsumed_tail:  # a small string that inflates to a huge one
            raise CircuitError("The circuit in the address is larger than any this dashboard writes.")
        if not inflate.eof:
            raise CircuitError("The circuit in the address is incomplete; was it cut short?")
        payload = json.loads(raw.decode("utf-8"))
    except (binascii.Error, zlib.error, UnicodeDecodeError, ValueError) as e:
        if isinstance(e, CircuitError):
            raise
        raise CircuitError("The circuit in the address is damaged and cannot be read.") from None
    if not isinstance(payload, dict) or payload.get("v") != VERSION:
        raise CircuitError("The address holds a circuit in a format this dashboard does not know.")
    return payload


def encode_circuit(c: Circuit) -> str:
    return encode_payload({"circuit": c.to_dict()})


def decode_circuit(text: str) -> Circuit:
    """The circuit in `text`, checked like a circuit file; CircuitError when it is not one."""
    payload = decode_payload(text)
    if "circuit" not in payload:
        raise CircuitError("The address holds no circuit.")
    try:
        return Circuit.from_dict(payload["circuit"])
    except CircuitError as e:
        raise CircuitError(f"The circuit in the address is not valid: {e}") from None
    except (TypeError, AttributeError, KeyError, ValueError):  # shapes from_dict does not expect
        raise CircuitError("The circuit in the address is not valid.") from None
