"""What the web role keeps in Redis for its security: the sessions' signing key, open sessions, failed logins."""
from __future__ import annotations

import hmac
import secrets
from typing import Any, Optional

from angora_rq.core.keys import Keys
from angora_rq.store.connection import Redis
from angora_rq.store.link import borrowed


def web_secret(r: Redis, keys: Keys) -> bytes:
    """The sessions' signing key: 32 random bytes made by the first web process to ask, then shared by all."""
    with r.pipeline() as p:  # one round trip: the first writer wins, everyone reads its key
        p.set(keys.web_secret(), secrets.token_hex(32), nx=True)
        p.get(keys.web_secret())
        _, value = p.execute()
    return bytes.fromhex(value.decode())


def open_session(r: Redis, keys: Keys, session_id: str, fingerprint: str, seconds: float,
                 pipeline: Optional[Any] = None) -> None:
    """Record a logged-in session (what `fingerprint` names: the credentials it was opened with)."""
    conn = pipeline if pipeline is not None else r
    conn.set(keys.web_session(session_id), fingerprint, ex=max(1, int(seconds)))


def session_is_open(r: Redis, keys: Keys, session_id: str, fingerprint: str) -> bool:
    """Whether the session is still open, for the credentials in force now (not logged out, not expired)."""
    value = r.get(keys.web_session(session_id))
    return value is not None and hmac.compare_digest(value, fingerprint.encode())


def close_session(r: Redis, keys: Keys, session_id: str, pipeline: Optional[Any] = None) -> None:
    """End a session server-side: its cookie opens nothing any more."""
    conn = pipeline if pipeline is not None else r
    conn.delete(keys.web_session(session_id))


def login_wait(r: Redis, keys: Keys, client: str, limit: int) -> int:
    """Seconds `client` must wait before its credentials are checked again (0: now), after `limit` failures."""
    key = keys.login_failures(client)
    with borrowed(r) as link:  # one GET on a held connection (no pool checkout): every authenticated request pays it
        count = link.call("GET", key)
        if count is None or int(count) < limit:
            return 0
        return max(1, int(link.call("TTL", key)))


def login_failed(r: Redis, keys: Keys, client: str, window: float) -> int:
    """Count a failed login of `client` in its window (which starts at its first failure); the count so far."""
    key = keys.login_failures(client)
    with r.pipeline() as p:  # SET NX starts the window with its expiry; INCR keeps it (one round trip)
        p.set(key, 0, ex=max(1, int(window)), nx=True)
        p.incr(key)
        _, count = p.execute()
    return int(count)


def login_succeeded(r: Redis, keys: Keys, client: str) -> None:
    """Forget the client's failures."""
    r.delete(keys.login_failures(client))
