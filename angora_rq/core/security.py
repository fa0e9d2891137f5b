"""Security rules of the web role that need no I/O: exposure, Host names, redirect targets, JSON limits (pure).

docs/security.md explains the threat model these rules serve and every setting they read.
"""
from __future__ import annotations

import ipaddress
import json
import math
import re
from typing import Any, Optional
from urllib.parse import unquote

from angora_rq.core.errors import InvalidInput
from angora_rq.core.settings import Settings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
MAX_JSON_DEPTH = 32
MAX_JSON_INT = 2 ** 63 - 1
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What a local redirect may hold: printable ASCII, no backslash (browsers read it as a slash).
LOCAL_PATH = re.compile(r"^/[\x21-\x5b\x5d-\x7e]*$")


def is_loopback(host: str) -> bool:
    """Whether a bind address or host name is this machine only (127.0.0.0/8, ::1, localhost)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure(settings: Settings, host: str) -> tuple[Optional[str], Optional[str]]:
    """(error, warning) for serving the web role on `host`: an error stops it, a warning is logged at each start.

    Off loopback, the web role controls commands that run on your hosts: without credentials it refuses to start,
    unless ANGORA_AUTH=off says that is meant.
    """
    if settings.auth_off and settings.auth_enabled:
        return ("ANGORA_AUTH=off, yet credentials are set (ANGORA_AUTH_TOKEN or ANGORA_AUTH_USER/PASSWORD): "
                "unset one or the other", None)
    if settings.auth_enabled or is_loopback(host):
        return None, None
    if settings.auth_off:
        return None, (f"ANGORA_AUTH=off: serving on {host} WITHOUT AUTHENTICATION; anyone who can reach this port "
                      "can run jobs (set ANGORA_AUTH_TOKEN)")
    return (f"refusing to serve on {host} without authentication: set ANGORA_AUTH_TOKEN (or ANGORA_AUTH_USER and "
            "ANGORA_AUTH_PASSWORD), bind to 127.0.0.1, or set ANGORA_AUTH=off to serve unauthenticated anyway",
            None)


def allowed_hosts(settings: Settings) -> tuple[str, ...]:
    """ANGORA_ALLOWED_HOSTS, else the loopback names when bound to loopback (or to nothing known), else any ("*")."""
    if settings.allowed_hosts:
        return settings.allowed_hosts
    if settings.bind is None or is_loopback(settings.bind):
        return LOOPBACK_NAMES
    return ("*",)


def host_allowed(host_header: str, allowed: tuple[str, ...]) -> bool:
    """Whether a Host header names this site: an exact name, `.example.com` for it and its subdomains, or `*`."""
    if "*" in allowed:
        return True
    name = _host_name(host_header)
    if not name:
        return False
    for entry in allowed:
        entry = entry.strip("[]")
        if name == entry or (entry.startswith(".") and (name.endswith(entry) or name == entry[1:])):
            return True
    return False


def _host_name(host_header: str) -> str:
    """The name of a Host header without its port, lower-cased ("" when malformed)."""
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:5000
        name, closed, port = host[1:].partition("]")
        if not closed or (port and not (port.startswith(":") and port[1:].isdigit())):
            return ""
        return name
    name, _, port = host.partition(":")
    return name if not port or port.isdigit() else ""


def local_redirect(target: Optional[str]) -> str:
    """`target` if it is a path on this site, else "/"; InvalidInput when it holds a control character.

    Browsers forgive a lot: they drop tabs and newlines, read `\\` as `/`, and take `//host` (also written `/\\`,
    or `/%09/host` once decoded) as another site. Only printable-ASCII paths whose decoded form cannot start
    another authority are kept.
    """
    if not target:
        return "/"
    if CONTROL.search(target) or CONTROL.search(unquote(target)):
        raise InvalidInput("the redirect target has a control character")
    decoded = unquote(target)
    for text in (target, decoded):
        if not LOCAL_PATH.match(text) or text.startswith("//") or "\\" in text:
            return "/"
    return target.rstrip("?") or "/"


# -- JSON ------------------------------------------------------------------------------------------------

def _no_constant(name: str) -> Any:
    raise InvalidInput(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidInput(f"the number {text[:40]} is out of range")
    return value


def _bounded(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_JSON_INT:
        raise InvalidInput(f"the number {text[:40]} is out of range")
    return value


def parse_json(text: str | bytes) -> Any:
    """Parse a request's JSON: NaN, Infinity and numbers out of a double's range, and nesting deeper than
    MAX_JSON_DEPTH, are InvalidInput (400) instead of values no command can use or a RecursionError."""
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite, parse_int=_bounded)
    except RecursionError:
        raise InvalidInput(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as e:  # UnicodeDecodeError included
        raise InvalidInput("the request body is not valid JSON", detail=str(e)[:200]) from e
    if _depth(value) > MAX_JSON_DEPTH:
        raise InvalidInput(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in `value` (0 for a scalar); iterative, so any depth is safe."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((c, level + 1) for c in children if isinstance(c, (dict, list)))
    return deepest
