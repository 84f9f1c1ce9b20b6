"""How messages become bytes on the bus: an explicit codec, JSON by default.

The bus crosses trust boundaries (other processes, other machines, whoever can reach the
broker), so nothing that runs code on decoding -- pickle -- is ever a default.  A codec is any
object with ``encode(obj) -> bytes`` and ``decode(data) -> obj``; ``decode`` raises
``ValueError`` on bytes it cannot read (the bus counts and drops such a message).
"""

from __future__ import annotations

import json
from typing import Any, Protocol


class Codec(Protocol):
    def encode(self, obj: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class JsonCodec:
    """JSON (UTF-8, compact).  Tuples arrive as lists, as JSON has only arrays."""

    def encode(self, obj: Any) -> bytes:
        try:
            return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the JSON codec cannot encode {type(obj).__name__}: {exc}") from None

    def decode(self, data: bytes) -> Any:
        return json.loads(data)  # json.JSONDecodeError (and UnicodeDecodeError) are ValueErrors


class BytesCodec:
    """Messages are bytes, sent as they are."""

    def encode(self, obj: Any) -> bytes:
        if not isinstance(obj, bytes | bytearray | memoryview):
            raise TypeError(f"the bytes codec sends bytes, not {type(obj).__name__}")
        return bytes(obj)

    def decode(self, data: bytes) -> Any:
        return data


JSON = JsonCodec()
