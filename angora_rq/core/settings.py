"""Runtime settings read from the environment (ANGORA_*, plus Heroku's REDIS_URL and PORT)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from angora_rq.core.errors import AngoraError


def default_data_dir() -> Path:
    """Where the embedded Redis keeps its data and socket: $XDG_DATA_HOME/angora or ~/.local/share/angora."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "angora"


def parse_seconds(text: str | int | float) -> float:
    """Parse `30`, `30s`, `5m`, `2h`, `1d` into seconds; raise ValueError when malformed or negative."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = text.strip().lower()
        units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
        mult = 1.0
        for suffix in ("ms", "s", "m", "h", "d"):
            if s.endswith(suffix):
                s, mult = s[: -len(suffix)].strip(), units[suffix]
                break
        try:
            value = float(s) * mult
        except ValueError:
            raise ValueError(f"not a duration: {text!r} (use seconds, or 30s, 5m, 2h, 1d)") from None
    if value != value or value < 0 or value == float("inf"):
        raise ValueError(f"not a duration: {text!r} (must be a finite, non-negative number)")
    return value


# redis.conf's units: 1k = 1000 bytes, 1kb = 1024 (and so on); kib, mib, gib are 1024's too.
BYTE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "kib": 1024, "m": 1000**2, "mb": 1024**2, "mib": 1024**2,
              "g": 1000**3, "gb": 1024**3, "gib": 1024**3}


def parse_bytes(text: str | int) -> int:
    """Parse a size as redis.conf writes it (`1000000`, `512mb`, `1gb`, `2g`) into bytes; ValueError if malformed."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().lower()
        number = s.rstrip("abgikm")
        unit = s[len(number):]
        if unit not in BYTE_UNITS:
            raise ValueError(f"not a size: {text!r} (use bytes, or 512mb, 1gb, 256mib)")
        try:
            value = float(number.strip()) * BYTE_UNITS[unit]
        except ValueError:
            raise ValueError(f"not a size: {text!r} (use bytes, or 512mb, 1gb, 256mib)") from None
    if value != value or value < 0 or value == float("inf"):
        raise ValueError(f"not a size: {text!r} (must be a finite, non-negative number)")
    return int(value)
RQ_DASHBOARD_MODES = ("readonly", "full", "off")


def _names(text: str | None) -> tuple[str, ...] | None:
    """A comma-separated list (ANGORA_ALLOWED_HOSTS), lower-cased; None when unset or empty."""
    names = tuple(n.strip().lower() for n in (text or "").split(",") if n.strip())
    return names or None


def _count(env: Mapping[str, str], name: str) -> int:
    value = int(env.get(name) or 0)
    if value < 0:
        raise ValueError(f"{name} must be 0 or more")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know about its environment; build with Settings.from_env()."""

    redis_url: str | None = None
    config_path: Path = Path("config")
    prefix: str = "angora"
    data_dir: Path = field(default_factory=default_data_dir)
    port: int = 5000
    bind: str | None = None
    auth_token: str | None = None
    auth_user: str | None = None
    auth_password: str | None = None
    backlog: int = 20_000  # the work budget: accepted work not finished (core/pressure.py)
    max_memory: int = 0  # the Redis memory budget in bytes; 0 = from Redis' maxmemory or its host's memory
    retention: float = 7 * 86400.0
    history: int = 1000
    max_runs: int = 0  # runs kept at most (0: no count limit; retention and the storage budget decide)
    default_timeout: float = 3600.0
    kill_grace: float = 5.0
    replay_max_delay: float = 300.0
    worker_concurrency: int = 8
    worker_ttl: float = 5.0  # a worker whose heartbeat is older than this is lost: its executions are replayed
    claim_idle: float = 5.0
    idempotency_ttl: float = 86400.0
    metrics_token: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    redis_tls_verify: str | None = None
    redis_tls_ca: str | None = None
    durability: str = "primary"
    host: str | None = None  # this host's name as executions record it (ANGORA_HOST; default: the hostname)
    durability_timeout: float = 1.0
    auth_off: bool = False  # ANGORA_AUTH=off: serve without credentials even off loopback (warned at every start)
    secret_key: str | None = None
    allowed_hosts: tuple[str, ...] | None = None  # None: loopback names when bound to loopback, else any
    proxy_hops: int = 0
    cookie_secure: bool = False
    rq_dashboard: str = "readonly"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read ANGORA_* (and REDIS_URL, PORT) from `env` (default os.environ)."""
        env = os.environ if env is None else env
        s = cls()
        try:
            settings = replace(
                s,
                redis_url=env.get("REDIS_URL") or env.get("ANGORA_REDIS_URL") or None,
                config_path=Path(env.get("ANGORA_CONFIG", str(s.config_path))),
                prefix=env.get("ANGORA_PREFIX", s.prefix),
                data_dir=Path(env["ANGORA_DATA_DIR"]) if env.get("ANGORA_DATA_DIR") else s.data_dir,
                port=int(env.get("PORT") or env.get("ANGORA_PORT") or s.port),
                bind=env.get("ANGORA_BIND") or None,
                auth_token=env.get("ANGORA_AUTH_TOKEN") or None,
                auth_user=env.get("ANGORA_AUTH_USER") or None,
                auth_password=env.get("ANGORA_AUTH_PASSWORD") or None,
                backlog=int(env.get("ANGORA_BACKLOG", s.backlog)),
                max_memory=parse_bytes(env.get("ANGORA_MAX_MEMORY") or s.max_memory),
                retention=parse_seconds(env.get("ANGORA_RETENTION", s.retention)),
                history=int(env.get("ANGORA_HISTORY", s.history)),
                max_runs=int(env.get("ANGORA_MAX_RUNS", s.max_runs)),
                default_timeout=parse_seconds(env.get("ANGORA_DEFAULT_TIMEOUT", s.default_timeout)),
                kill_grace=parse_seconds(env.get("ANGORA_KILL_GRACE", s.kill_grace)),
                replay_max_delay=parse_seconds(env.get("ANGORA_REPLAY_MAX_DELAY", s.replay_max_delay)),
                worker_concurrency=int(env.get("ANGORA_WORKER_CONCURRENCY", s.worker_concurrency)),
                worker_ttl=parse_seconds(env.get("ANGORA_WORKER_TTL", s.worker_ttl)),
                claim_idle=parse_seconds(env.get("ANGORA_CLAIM_IDLE", s.claim_idle)),
                idempotency_ttl=parse_seconds(env.get("ANGORA_IDEMPOTENCY_TTL", s.idempotency_ttl)),
                metrics_token=env.get("ANGORA_METRICS_TOKEN") or None,
                log_level=env.get("ANGORA_LOG_LEVEL", s.log_level).upper(),
                log_format=one_of("ANGORA_LOG_FORMAT", env.get("ANGORA_LOG_FORMAT"), LOG_FORMATS) or s.log_format,
                redis_tls_verify=one_of("ANGORA_REDIS_TLS_VERIFY", env.get("ANGORA_REDIS_TLS_VERIFY"), TLS_VERIFY),
                redis_tls_ca=env.get("ANGORA_REDIS_TLS_CA") or None,
                durability=one_of("ANGORA_DURABILITY", env.get("ANGORA_DURABILITY"), DURABILITY) or s.durability,
                host=env.get("ANGORA_HOST") or None,
                durability_timeout=parse_seconds(env.get("ANGORA_DURABILITY_TIMEOUT", s.durability_timeout)),
                auth_off=one_of("ANGORA_AUTH", env.get("ANGORA_AUTH"), ("on", "off")) == "off",
                secret_key=env.get("ANGORA_SECRET_KEY") or None,
                allowed_hosts=_names(env.get("ANGORA_ALLOWED_HOSTS")),
                proxy_hops=_count(env, "ANGORA_PROXY_HOPS"),
                cookie_secure=env.get("ANGORA_COOKIE_SECURE", "") == "1",
                rq_dashboard=one_of("ANGORA_RQ_DASHBOARD", env.get("ANGORA_RQ_DASHBOARD"), RQ_DASHBOARD_MODES)
                or s.rq_dashboard,
            )
            if settings.redis_url and urlsplit(settings.redis_url).scheme == SENTINEL_SCHEME:
                parse_sentinel_url(settings.redis_url)
        except ValueError as e:
            raise AngoraError(f"bad setting in the environment: {e}") from e
        if settings.redis_url and urlsplit(settings.redis_url).scheme not in REDIS_SCHEMES:
            scheme = settings.redis_url.split(":", 1)[0]
            raise AngoraError(f"bad setting in the environment: REDIS_URL must start with redis://, rediss:// (TLS), "
                              f"unix:// or redis+sentinel://; it starts with {scheme + ':'!r}")
        return settings

    def __post_init__(self) -> None:
        if self.idempotency_ttl < 1:
            raise AngoraError("bad setting in the environment: ANGORA_IDEMPOTENCY_TTL must be 1s or more")

    @property
    def heartbeat_every(self) -> float:
        """How often a worker renews its heartbeat: a fifth of its TTL, so a beat may be late by most of the TTL
        (a Redis or network stall of 2 s with the default 5 s) before the worker is taken for lost."""
        return self.worker_ttl / 5

    @property
    def replicated(self) -> bool:
        """True when a write counts as done only once a replica has it (ANGORA_DURABILITY=replicated)."""
        return self.durability == "replicated"

    @property
    def auth_enabled(self) -> bool:
        """True when the web app must require credentials."""
        return bool(self.auth_token or (self.auth_user and self.auth_password))

    @property
    def embedded_socket(self) -> Path:
        """Unix socket of the embedded Redis that `angora up` starts when REDIS_URL is unset."""
        return self.data_dir / "redis.sock"

    @property
    def effective_redis_url(self) -> str:
        """REDIS_URL (with the TLS settings in its query, which redis-py reads), else the embedded server's socket."""
        if not self.redis_url:
            return f"unix://{self.embedded_socket}"
        return with_tls_options(self.redis_url, self.redis_tls_verify, self.redis_tls_ca)


LOG_FORMATS = ("text", "json", "logfmt")
# redis-py's names for ssl.CERT_NONE / CERT_OPTIONAL / CERT_REQUIRED.
TLS_VERIFY = ("none", "optional", "required")
SENTINEL_SCHEME = "redis+sentinel"
REDIS_SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME)
# primary: a write is done when the primary has it; replicated: when a replica has it too (WAIT 1).
DURABILITY = ("primary", "replicated")
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelUrl:
    """What a redis+sentinel:// URL names: the sentinels to ask, the service (primary) they watch, and the db."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None  # of the data nodes
    sentinel_password: str | None = None  # of the sentinels (query `sentinel_password`), when they ask for one


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?sentinel_password=...]`
    (the form rq-dashboard reads too); ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL: {redacted(url)}")
    auth, _, hosts = parts.netloc.rpartition("@")
    username, _, password = auth.partition(":") if auth else ("", "", "")
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        if not host or (port and not port.isdigit()):
            raise ValueError(f"REDIS_URL: {item!r} is not a sentinel host[:port]")
        sentinels.append((host, int(port) if port else SENTINEL_PORT))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("REDIS_URL: a sentinel URL ends with /SERVICE or /SERVICE/DB (e.g. /mymaster/0)")
    query = dict(parse_qsl(parts.query))
    return SentinelUrl(tuple(sentinels), path[0], int(path[1]) if len(path) == 2 else 0, username or None,
                       unquote(password) if password else None, query.get("sentinel_password") or None)


def one_of(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    """`value` lower-cased when it is one of `allowed` (None stays None); ValueError naming the setting otherwise."""
    if value is None or value == "":
        return None
    if value.lower() not in allowed:
        raise ValueError(f"{name}={value!r}: use one of {', '.join(allowed)}")
    return value.lower()


def redacted(url: str) -> str:
    """The URL without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def with_tls_options(url: str, verify: str | None, ca_file: str | None) -> str:
    """A rediss:// URL with `ssl_cert_reqs` / `ssl_ca_certs` added to its query (values the URL already has win);
    other URLs unchanged: TLS settings mean nothing without TLS."""
    parts = urlsplit(url)
    if parts.scheme != "rediss" or (verify is None and ca_file is None):
        return url
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if verify is not None:
        query.setdefault("ssl_cert_reqs", verify)
    if ca_file is not None:
        query.setdefault("ssl_ca_certs", ca_file)
    return parts._replace(query=urlencode(query)).geturl()
