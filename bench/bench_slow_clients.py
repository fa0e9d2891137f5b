"""Slow clients against the Procfile's web line, on loopback: can they starve everybody else?

`--slow` connections (500 by default) are held open for `--seconds`: half send `POST /login` with
`Content-Length: 1000` and then one body byte every 5 s, half are idle keep-alives (one `GET /healthz`, then
nothing). A connection the server closes is opened again at once, so the count stays up. Meanwhile `--fast`
other clients time `GET /healthz` and `POST /send`, each request on a fresh connection, a few per second each;
the same is measured first with no slow clients. Prints a Markdown table, writes JSON with `--json`.

    python3 bench/bench_slow_clients.py                       # 500 slow connections, 30 s (about 50 s in all)
    python3 bench/bench_slow_clients.py --slow 50 --seconds 10
    python3 bench/bench_slow_clients.py --command "granian ... angora_rq.web:create_app"   # another server line
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

from angora_bench import _port_open, angora_env, web_server, write_config
from harness import Procs, fresh_db, machine, percentile, start_redis, tree_rss_mib, wait_until

from angora_rq.processes.redis_server import free_port

HOST = "127.0.0.1"
BYTE_EVERY = 5.0
SLOW_BODY = (b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
             b"Content-Length: 1000\r\n\r\n")
IDLE_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class SlowClients:
    """`n` connections held open from an event loop in a thread: slow bodies and idle keep-alives."""

    def __init__(self, port: int, n: int) -> None:
        self.port = port
        self.n = n
        self.open = 0
        self.opened = 0
        self.closed_by_server = 0
        self.failed = 0
        self.stopping = False
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(BYTE_EVERY * 3)

    async def _main(self) -> None:
        await asyncio.gather(*(self._one(i % 2 == 0) for i in range(self.n)))

    async def _one(self, slow_body: bool) -> None:
        while not self.stopping:
            try:
                reader, writer = await asyncio.open_connection(HOST, self.port)
            except OSError:
                self.failed += 1
                await asyncio.sleep(0.5)
                continue
            self.open += 1
            self.opened += 1
            try:
                await (self._trickle(reader, writer) if slow_body else self._idle(reader, writer))
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                self.open -= 1
                writer.close()
            if not self.stopping:
                self.closed_by_server += 1

    async def _trickle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SLOW_BODY)
        for _ in range(1000):
            if self.stopping or reader.at_eof():
                return
            writer.write(b"x")
            await writer.drain()
            await _sleep_unless_closed(reader, BYTE_EVERY)

    async def _idle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(IDLE_REQUEST)
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        while not self.stopping and not reader.at_eof():
            await _sleep_unless_closed(reader, 1.0)


async def _sleep_unless_closed(reader: asyncio.StreamReader, seconds: float) -> None:
    """Wait `seconds`, or less when the server sends something (an answer, or the end of the connection)."""
    try:
        await asyncio.wait_for(reader.read(65536), seconds)
    except asyncio.TimeoutError:
        pass


def timed_requests(port: int, seconds: float, clients: int, rate: float = 10.0) -> dict[str, Any]:
    """`clients` threads alternate GET /healthz and POST /send, each on a new connection, `rate` per second each."""
    times: dict[str, list[float]] = {"healthz": [], "send": []}
    errors: dict[str, int] = {"healthz": 0, "send": 0}
    kinds: dict[str, int] = {}
    stop = time.perf_counter() + seconds

    def client() -> None:
        i = 0
        while time.perf_counter() < stop:
            name = "healthz" if i % 2 == 0 else "send"
            i += 1
            t0 = time.perf_counter()
            status = _request(port, name)
            if status in (200, 202):
                times[name].append((time.perf_counter() - t0) * 1000)
            else:
                errors[name] += 1
                kinds[f"{name}: {status}"] = kinds.get(f"{name}: {status}", 0) + 1
            time.sleep(max(0.0, 1 / rate - (time.perf_counter() - t0)))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out: dict[str, Any] = {"errors": kinds}
    for name, values in times.items():
        out[name] = {"answered": len(values), "errors": errors[name],
                     "p50_ms": percentile(values, 50) if values else None,
                     "p99_ms": percentile(values, 99) if values else None,
                     "max_ms": max(values) if values else None}
    return out


def _request(port: int, name: str) -> Any:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        if name == "healthz":
            conn.request("GET", "/healthz")
        else:
            conn.request("POST", "/send", b"msg=bench.true", {"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError as e:
        return type(e).__name__
    finally:
        conn.close()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Start Redis and the web line; time the fast clients alone, then beside the slow ones."""
    work = Path(tempfile.mkdtemp(prefix="angora-slow-"))
    server = start_redis(work / "redis", appendonly=False)
    try:
        url = fresh_db(server, 1)
        env = angora_env(url, write_config(work / "config"), work / "data")
        port = free_port()
        argv = shlex.split(args.command.replace("$PORT", str(port))) if args.command else web_server(port)
        with Procs(work / "logs", env) as procs:
            web = procs.start("web", argv)
            wait_until(lambda: _port_open(port) and _request(port, "healthz") == 200, 60, 0.05,
                       "the web server to answer", procs)
            alone = timed_requests(port, min(10.0, args.seconds), args.fast)
            rss_alone = tree_rss_mib(web.pid)
            slow = SlowClients(port, args.slow)
            slow.start()
            wait_until(lambda: slow.opened >= args.slow, 60, 0.05, "the slow connections to open")
            time.sleep(1.0)
            held = slow.open
            loaded = timed_requests(port, args.seconds, args.fast)
            held = min(held, slow.open)
            rss = tree_rss_mib(web.pid)
            slow.stop()
            procs.check()
        return {"slow_connections": args.slow, "held_open_at_least": held, "reopened": slow.closed_by_server,
                "connect_failures": slow.failed, "server_rss_mib": rss, "server_rss_mib_alone": rss_alone,
                "seconds": args.seconds,
                "fast_clients": args.fast,
                "alone": alone, "with_slow_clients": loaded, "server": " ".join(argv[1:]), "machine": machine()}
    finally:
        server.stop()


def table(res: dict[str, Any]) -> str:
    """The figures as Markdown."""
    lines = [f"{res['slow_connections']} slow connections (at least {res['held_open_at_least']} held open at once, "
             f"{res['reopened']} reopened after the server closed them), {res['seconds']:g} s, "
             f"{res['fast_clients']} other clients; the server's processes: {res['server_rss_mib']:.0f} MiB RSS "
             f"({res['server_rss_mib_alone']:.0f} without the slow clients)", "",
             "| other clients' requests | answered | errors | p50 ms | p99 ms | max ms |",
             "|---|---:|---:|---:|---:|---:|"]
    for phase in ("alone", "with_slow_clients"):
        for name in ("healthz", "send"):
            m = res[phase][name]
            label = f"{'GET /healthz' if name == 'healthz' else 'POST /send'}, {phase.replace('_', ' ')}"
            lines.append(f"| {label} | {m['answered']} | {m['errors']} | {_f(m['p50_ms'])} | {_f(m['p99_ms'])} "
                         f"| {_f(m['max_ms'])} |")
    return "\n".join(lines)


def _f(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slow", type=int, default=500, help="slow connections held open (at most 2,000)")
    p.add_argument("--seconds", type=float, default=30.0, help="how long they are held (at most 300)")
    p.add_argument("--fast", type=int, default=4, help="other clients timing their requests")
    p.add_argument("--command", default="", help="the server's command line instead of the Procfile's ($PORT)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    args.slow = max(1, min(args.slow, 2000))
    args.seconds = max(1.0, min(args.seconds, 300.0))
    res = measure(args)
    print(table(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
