"""Messages: validation, run ids, and their encoding as Redis stream fields (pure: no I/O)."""
from __future__ import annotations

import hashlib
import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from angora_rq.core.codec import to_str_dict
from angora_rq.core.errors import InvalidInput
from angora_rq.core.schema import Entry

MAX_TOPIC = 256
MAX_PARAMS = 64
MAX_PARAM_VALUE = 4096
MAX_PARAMS_TOTAL = 16384
TOPIC_RE = re.compile(r"^[A-Za-z0-9_\-.:/@+=]+$")
PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
MAX_KEY = 200
KEY_RE = re.compile(r"[\x20-\x7e]+")  # printable ASCII: a header and a JSON field then spell a key the same way


def new_run_id() -> str:
    """A fresh run id: time-ordered prefix (sorts by start) plus randomness."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:12]


def new_execution_id() -> str:
    """A fresh execution id; also the RQ job id, so only [A-Za-z0-9_-]."""
    return uuid.uuid4().hex


def check_topic(topic: Any) -> str:
    """Return `topic` if it is a valid message topic (no wildcards), else raise InvalidInput."""
    if not isinstance(topic, str) or not topic:
        raise InvalidInput("message topic is missing or empty")
    if len(topic) > MAX_TOPIC:
        raise InvalidInput(f"message topic is longer than {MAX_TOPIC} characters")
    if not TOPIC_RE.match(topic):
        raise InvalidInput(
            f"message topic {topic[:80]!r} has characters that are not allowed "
            "(use letters, digits and _ - . : / @ + =; no spaces or wildcards)"
        )
    if any(seg == "" for seg in topic.split(".")):
        raise InvalidInput(f"message topic {topic[:80]!r} has an empty segment (two dots in a row, or a dot at an end)")
    return topic


def check_params(params: Any) -> dict[str, str]:
    """Return `params` as a str->str dict if valid (names like env vars, bounded sizes), else raise."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise InvalidInput("params must be an object of name -> string value")
    if len(params) > MAX_PARAMS:
        raise InvalidInput(f"too many params ({len(params)}; at most {MAX_PARAMS})")
    out: dict[str, str] = {}
    folded: dict[str, str] = {}  # ANGORA_PARAM_<NAME> is upper-cased: `abc` and `ABC` would be one variable
    total = 0
    for k, v in params.items():
        if not isinstance(k, str) or not PARAM_NAME_RE.match(k):
            raise InvalidInput(f"param name {str(k)[:80]!r} is not valid "
                               "(letters, digits, _; not starting with a digit)")
        other = folded.setdefault(k.upper(), k)
        if other != k:
            raise InvalidInput(f"param names {other!r} and {k!r} differ only in case; give one of them")
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise InvalidInput(f"param {k!r} must be a string")
        if isinstance(v, float) and not math.isfinite(v):
            raise InvalidInput(f"param {k!r} is not a finite number")
        v = str(v)
        if "\x00" in v:
            raise InvalidInput(f"param {k!r} contains a NUL character")
        if len(v) > MAX_PARAM_VALUE:
            raise InvalidInput(f"param {k!r} is longer than {MAX_PARAM_VALUE} characters")
        total += len(k) + len(v)
        out[k] = v
    if total > MAX_PARAMS_TOTAL:
        raise InvalidInput(f"params are larger than {MAX_PARAMS_TOTAL} characters in all")
    return out


def check_run_id(run_id: Any) -> str:
    """Return `run_id` if valid ([A-Za-z0-9_-], 1-64 chars), else raise InvalidInput."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise InvalidInput("run_id must be 1-64 characters of letters, digits, _ and -")
    return run_id


def check_idempotency_key(key: Any) -> str:
    """Return an Idempotency-Key if valid: 1-200 printable ASCII characters (no control characters)."""
    if not isinstance(key, str) or not key:
        raise InvalidInput("the idempotency key is empty; send 1-200 printable ASCII characters, or no key")
    if len(key) > MAX_KEY:
        raise InvalidInput(f"the idempotency key is longer than {MAX_KEY} characters", detail={"length": len(key)})
    if not KEY_RE.fullmatch(key):
        raise InvalidInput("the idempotency key has control or non-ASCII characters; use printable ASCII only")
    return key


def fingerprint(msg: "Message") -> str:
    """What a repeat of an idempotent send must match: the topic and params (a new run id is generated anyway)."""
    text = json.dumps([msg.topic, msg.params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def parse_param_args(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Turn CLI `KEY=VALUE` strings into a params dict (validated)."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise InvalidInput(f"param {pair!r} is not KEY=VALUE")
        k, v = pair.split("=", 1)
        out[k] = v
    return check_params(out)


@dataclass(frozen=True)
class Message:
    """A message: a topic with params, inside a run, from an origin."""

    topic: str
    params: dict[str, str] = field(default_factory=dict)
    run_id: str = ""
    origin: str = "api"  # "http", "cli", "schedule:<name>", "job:<name>:<execution id>", "manual"
    sent_at: float = 0.0
    config_version: str = ""
    new_run: bool = field(default=False, compare=False)  # its run id was generated for it: no such run exists yet

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def create(
        cls,
        topic: Any,
        params: Any = None,
        run_id: Any = None,
        origin: str = "api",
        now: Optional[float] = None,
    ) -> "Message":
        """Validate input and build a message, generating a run id when none is given."""
        return cls(
            topic=check_topic(topic),
            params=check_params(params),
            run_id=check_run_id(run_id) if run_id not in (None, "") else new_run_id(),
            origin=origin,
            sent_at=time.time() if now is None else now,
            new_run=run_id in (None, ""),
        )

    def to_fields(self) -> dict[str, str]:
        """Encode as stream entry fields."""
        f = {Entry.topic: self.topic, Entry.run: self.run_id, Entry.origin: self.origin, Entry.sent: repr(self.sent_at)}
        if self.params:
            f[Entry.params] = json.dumps(self.params, separators=(",", ":"))
        return f

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> "Message":
        """Decode stream entry fields (bytes or str keys/values)."""
        d = to_str_dict(fields)
        return cls(
            topic=d.get(Entry.topic, ""),
            params=json.loads(d[Entry.params]) if d.get(Entry.params) else {},
            run_id=d.get(Entry.run, ""),
            origin=d.get(Entry.origin, ""),
            sent_at=float(d.get(Entry.sent) or 0.0),
        )

    @property
    def is_root(self) -> bool:
        """True when the message starts or joins a run from outside (not sent by a job)."""
        return not self.origin.startswith("job:")
