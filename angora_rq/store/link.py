"""A dedicated Redis connection for the hot paths (sending, dispatching, claiming, finishing).

redis-py 8 spends ~100 us of client CPU on every command it runs through `Redis.execute_command` or
`Pipeline.execute` (pool checkout, retry wrapper, metrics hooks, reply callbacks), against ~30 us to pack the same
command with hiredis, write it and read the raw reply on a connection kept for the purpose. At a few commands per
job that difference was a large share of a job's cost. A Link uses only redis-py's connection-level API
(`send_packed_command`, `read_response`), so errors, reconnection, the health check of a connection left idle
(`health_check_interval`: a PING first, retried on a fresh connection) and the reply parser are still redis-py's.

Replies are raw (bytes, lists, ints: no per-command decoding). A Link belongs to one thread; `link_for()` keeps one
per thread and connection pool for callers that share a client across threads (the web app). The store's steps
take it with `borrowed()`, which gives it back after the step unless the thread held it already: a thread must
never hold a Link while it waits for another connection of a bounded pool (the web's).
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Protocol, Sequence

import hiredis
import redis
from redis.client import Pipeline


# A connection that raised one of these is closed, or out of step with its replies.
LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class LuaScript(Protocol):
    """What a Link needs of a script (scripts.Script has it)."""

    @property
    def sha(self) -> str: ...
    @property
    def text(self) -> str: ...


class Link:
    """One connection of a client's pool, held for a hot loop; commands go out packed, replies come back raw."""

    def __init__(self, r: redis.Redis) -> None:
        self._pool = r.connection_pool
        self._conn: Any = None
        self._pid = os.getpid()

    def call(self, *args: Any) -> Any:
        """Run one command (str, bytes or int arguments) and return its raw reply; error replies raise."""
        conn = self._connection()
        try:
            conn.send_packed_command([hiredis.pack_command(args)])
            return conn.read_response()
        except LOST:
            self._drop()
            raise

    def calls(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Several commands in one round trip; each reply raw, an error reply returned (not raised) in its place."""
        conn = self._connection()
        replies: list[Any] = []
        try:
            conn.send_packed_command([b"".join(hiredis.pack_command(tuple(c)) for c in commands)])
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.exceptions.ResponseError as e:
                    replies.append(e)
        except LOST:
            self._drop()
            raise
        return replies

    def script(self, script: LuaScript, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """EVALSHA a script, loading it once if the server does not know it (e.g. after a restart)."""
        try:
            return self.call(*evalsha(script, keys, args))
        except redis.exceptions.NoScriptError:
            self.call("SCRIPT", "LOAD", script.text)
            return self.call(*evalsha(script, keys, args))

    def execute(self, pipe: Pipeline) -> list[Any]:
        """Run what a redis-py pipeline has queued (inside MULTI/EXEC if it is transactional) in one round trip.

        The pipeline only records (`pipe.hset(...)` etc.); its own execute() would add ~10 us per command. Every
        reply is read before the first error is raised, so the connection stays in step.
        """
        replies = self.execute_then(pipe, None)[0]
        return [] if replies is None else replies

    def execute_then(self, pipe: Pipeline, then: Optional[Sequence[Any]],
                     before: Sequence[Sequence[Any]] = ()) -> tuple[Optional[list[Any]], Any]:
        """execute(pipe), plus one more command in the same round trip, after the transaction.

        Returns the pipeline's replies and that command's reply, or the error it got (returned, not raised: the
        pipeline's writes are done either way and the caller decides). `before`: commands sent ahead of the
        transaction (a WATCH and its check); the replies are None when they aborted it (nothing was written).
        """
        commands = [args for args, _ in pipe.command_stack]
        pipe.reset()
        if pipe.transaction and commands:
            commands = [("MULTI",), *commands, ("EXEC",)]
        n = len(commands)
        commands = [*before, *commands] if n else commands
        if then is not None:
            commands.append(then)
        if not commands:
            return [], None
        replies = self.calls(commands)
        last = replies.pop() if then is not None else None
        error = next((x for x in replies if isinstance(x, Exception)), None)
        if n and before:
            replies = replies[len(before):]
        if pipe.transaction and n and isinstance(replies[-1], list):
            replies = replies[-1]
            error = error or next((x for x in replies if isinstance(x, Exception)), None)
        if error is not None:
            raise error
        if pipe.transaction and n and replies[-1] is None:
            return None, last  # EXEC answered nil: a WATCH of `before` aborted the transaction
        return replies, last

    def close(self) -> None:
        """Give the connection back to its pool."""
        if self._conn is not None and self._pid == os.getpid():
            self._pool.release(self._conn)
        self._conn = None

    def _drop(self) -> None:
        """Forget a connection that failed: the next command takes one from the pool, which connects it afresh.

        A connection that reconnects by itself goes back to the address it had; one the pool connects asks the
        sentinels first (redis+sentinel://), so after a failover the Link reaches the new primary.
        """
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            conn.disconnect()
            self._pool.release(conn)

    def _connection(self) -> Any:
        if self._conn is None or self._pid != os.getpid():
            # After a fork the parent's socket is not ours to use: take a fresh connection.
            self._pid = os.getpid()
            self._conn = self._pool.get_connection()
        return self._conn


def evalsha(script: LuaScript, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> tuple[Any, ...]:
    """The EVALSHA command that runs `script` (for Link.call, or as execute_then's command)."""
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


_local = threading.local()
MAX_LINKS = 8  # per thread: a process talks to one or two Redis servers; tests make many short-lived clients


# Links given back by threads (release_link), per connection pool, each still holding its connection.
_parked: dict[int, list[Link]] = {}
_parking = threading.Lock()
PARKED = 8


def release_link(r: redis.Redis) -> None:
    """Give this thread's Link on `r` back (the web role, at the end of each request): the next thread to need one
    takes it up, connection and all (a checkout from redis-py 8's pool costs more: /send 4,000-5,000 requests/s
    without parking against 5,400-6,100 with it, alternating). A server's threads are many and come and go; a Link
    kept by each would hold a connection each, and one whose thread ended would never give it back. Past PARKED,
    or when the pool has no connection free, the connection goes back to the client's pool: a thread may be
    waiting for one there, and it would wait until the pool's timeout, then answer 503 "No connection available"
    (seen through /send at 64 clients on the web's pool of 16), while the parked one sat idle."""
    links = _thread_links()
    link = links.pop(id(r.connection_pool), None)
    if link is None:
        return
    key = id(r.connection_pool)
    parked = _parked.get(key)
    if parked is None:
        with _parking:
            if key not in _parked and len(_parked) >= MAX_LINKS:  # tests make many short-lived clients
                for old in _parked.pop(next(iter(_parked))):
                    old.close()
            parked = _parked.setdefault(key, [])
    if len(parked) < PARKED and link._pool is r.connection_pool and link._pid == os.getpid() and \
            not _exhausted(r.connection_pool):
        parked.append(link)
    else:
        link.close()


def _exhausted(pool: Any) -> bool:
    """True when a thread may be waiting for a connection of `pool`: a blocking pool (redis-py's
    BlockingConnectionPool keeps its free connections in a queue, `pool.pool`) with none free. (A thread that starts
    waiting just after a Link was parked gets the connection of the next release, which finds the pool empty.)"""
    free = getattr(pool, "pool", None)
    return free is not None and hasattr(free, "qsize") and free.qsize() == 0


@contextmanager
def borrowed(r: redis.Redis) -> Iterator[Link]:
    """This thread's Link on `r`'s pool for the commands of a `with` block, given back after it (parked, see
    release_link) unless the thread held one before (a process's loop, or /send's fast lane, which gives its own
    back when the request ends). A web request thread must not hold one while it waits for a connection of the same
    pool on redis-py's path (the pages' and the API's reads): 64 authenticated API clients on two web processes
    (each checks its client's login failures on a Link first) left every connection of a process's pool of 16
    held by a thread waiting for another, and 1,527 of 2,560 requests answered 503 after the pool's 10 s timeout."""
    links = _thread_links()
    held = id(r.connection_pool) in links
    link = link_for(r)
    try:
        yield link
    finally:
        if not held:
            release_link(r)


def _thread_links() -> dict[int, Link]:
    """This thread's Links, by connection pool."""
    links: Optional[dict[int, Link]] = getattr(_local, "links", None)
    if links is None:
        links = _local.links = {}
    return links


def link_for(r: redis.Redis) -> Link:
    """This thread's Link on `r`'s connection pool (one per thread and pool, made on first use)."""
    links = _thread_links()
    link = links.get(id(r.connection_pool))
    if link is None or link._pool is not r.connection_pool:
        if len(links) >= MAX_LINKS:
            links.pop(next(iter(links))).close()
        link = links[id(r.connection_pool)] = _unparked(r) or Link(r)
    return link


def _unparked(r: redis.Redis) -> Optional[Link]:
    """A Link another thread gave back on `r`'s pool, if any."""
    parked = _parked.get(id(r.connection_pool))
    while parked:
        try:
            link = parked.pop()  # atomic: no lock needed
        except IndexError:
            return None
        if link._pool is r.connection_pool:
            return link
    return None
