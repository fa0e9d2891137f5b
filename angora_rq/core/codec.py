"""Bytes from Redis to text: the one place that decides how a reply value becomes a str (pure)."""
from __future__ import annotations

from typing import Any, Mapping


def to_str(value: Any) -> str:
    """A reply value as text: bytes and bytearray are UTF-8, None (a missing field or key) is "", else str()."""
    if isinstance(value, (bytes, bytearray)):
        return value.decode()
    return "" if value is None else str(value)


def to_str_dict(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A Redis hash (or stream entry fields) as str -> str, by `to_str`."""
    try:  # the usual case, bytes both sides, without a call per field (a run's hash has hundreds of them)
        return {k.decode(): v.decode() for k, v in raw.items()}
    except AttributeError:
        return {to_str(k): to_str(v) for k, v in raw.items()}
