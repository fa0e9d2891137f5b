"""The web role's server: granian's WSGI interface, sized so that slow or idle clients cannot starve the others.

granian hands a request to one of its blocking threads as soon as its headers are in; the app's read of the body
then holds that thread until the body has arrived (granian has no body timeout), without the GIL. With 4 threads,
four clients sending `Content-Length: 1000` and 6 bytes froze `angora web`. So:
- HTTP/1 only: one request in flight per connection (HTTP/2 would allow 200 per connection);
- a worker accepts at most CONNECTIONS connections and may run as many threads: a request never waits for a
  thread, whatever the others hold; threads are made on demand and end after 30 s idle;
- headers must arrive within HEADER_SECONDS, and the same timeout closes an idle keep-alive connection.
Past CONNECTIONS per worker, new connections wait in the kernel's backlog: per-address limits belong to the proxy
or firewall in front (docs/security.md). bench/bench_slow_clients.py measures it: 500 slow connections.
"""
from __future__ import annotations

import logging
from typing import Any

CONNECTIONS = 1000
HEADER_SECONDS = 10
BACKLOG = 2048
# A granian worker SIGTERMed while it starts never stops, and without this its server waits for it for ever.
KILL_AFTER = 5
# granian warns at every start that this many threads "seems quite high" for the cores; the sizing is deliberate
# (above), so a first start should not greet its user with advice to undo it.
THREADS_WARNING = "Configuration allows spawning up to"


class _DeliberateSizing(logging.Filter):
    """Drops granian's warning about the thread count this module chose on purpose; passes everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(THREADS_WARNING)


DELIBERATE_SIZING = _DeliberateSizing()  # one instance: Logger.addFilter adds it once however often it is called


def granian_server(target: str, host: str, port: int, workers: int = 1) -> Any:
    """A granian server for the WSGI app factory `target` ("module:function"), ready to `.serve()`."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    http1 = HTTP1Settings(header_read_timeout=HEADER_SECONDS * 1000)
    server = Granian(target, address=host, port=port, interface=Interfaces.WSGI, factory=True, workers=workers,
                     http=HTTPModes.http1, http1_settings=http1, backlog=BACKLOG, backpressure=CONNECTIONS,
                     blocking_threads=CONNECTIONS, log_level=LogLevels.warning, respawn_failed_workers=True,
                     workers_kill_timeout=KILL_AFTER)
    logging.getLogger("_granian").addFilter(DELIBERATE_SIZING)  # granian.log's logger (named like its Rust module's)
    return server
