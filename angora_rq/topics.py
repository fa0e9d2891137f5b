"""Topics and trigger patterns (pure): `*` matches exactly one dot-separated segment, `#` zero or more."""
from __future__ import annotations

import re
from typing import Optional

SEGMENT_RE = re.compile(r"^[A-Za-z0-9_\-:/@+=]+$")


def is_pattern(trigger: str) -> bool:
    """True when a trigger uses a wildcard segment."""
    return any(seg in ("*", "#") for seg in trigger.split("."))


def pattern_error(trigger: str) -> Optional[str]:
    """Why `trigger` is not a valid exact topic or pattern, or None when it is valid."""
    if not isinstance(trigger, str) or not trigger:
        return "a trigger must be a non-empty string"
    if len(trigger) > 256:
        return "a trigger is longer than 256 characters"
    for seg in trigger.split("."):
        if seg == "":
            return f"trigger {trigger!r} has an empty segment (two dots in a row, or a dot at an end)"
        if seg in ("*", "#"):
            continue
        if "*" in seg or "#" in seg:
            return (
                f"trigger {trigger!r}: wildcards must be whole segments "
                f"('*' = one segment, '#' = zero or more), not part of {seg!r}"
            )
        if not SEGMENT_RE.match(seg):
            return f"trigger {trigger!r} has characters that are not allowed in segment {seg!r}"
    return None


def topic_matches(pattern: str, topic: str) -> bool:
    """Reference matcher: does `topic` match `pattern` (exact, or with `*`/`#` segments)?"""
    return _match(pattern.split("."), 0, topic.split("."), 0)


def _match(p: list[str], i: int, t: list[str], j: int) -> bool:
    while i < len(p):
        seg = p[i]
        if seg == "#":
            # '#' absorbs zero or more segments: try every split point.
            return any(_match(p, i + 1, t, k) for k in range(j, len(t) + 1))
        if j >= len(t) or (seg != "*" and seg != t[j]):
            return False
        i, j = i + 1, j + 1
    return j == len(t)
