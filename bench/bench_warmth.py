"""How much a process pays for waking up: CPU per operation back to back and after idle gaps.

    python bench/bench_warmth.py                  # 300 operations per gap (about 1 minute)
    python bench/bench_warmth.py --ops 100 --json out.json

The latency section of run.py sends one message every ~10-20 ms: every process on the path (web, Redis, worker,
the command) has slept in between. This measures what that costs here, per gap (0, 2 and 20 ms of sleep before
each operation), as the median thread CPU and wall time of:

- `python`: a fixed piece of pure Python (40 json.dumps of a growing dict): no I/O, so what changes is the
  machine's state after a sleep (caches, frequency, the hypervisor), not Angora;
- `send_direct`: one POST /send through the web's fast lane in this process (web/intake.py, a WSGI call without
  an HTTP server), dispatched at once (SEND_DISPATCH; the burst switch held off), a matcher and two workers
  running beside it as in run.py;
- `send_stream`: the same with the burst switch on (SEND: the message goes on the stream for the matcher).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import angora_bench as A  # noqa: E402
from harness import fresh_db, machine, start_redis  # noqa: E402

GAPS = (0.0, 0.002, 0.02)
BODY = b"msg=bench.true"


def pure_python() -> None:
    d: dict[str, Any] = {"msg": "bench.true", "run": uuid.uuid4().hex}
    for i in range(40):
        json.dumps(d)
        d[str(i)] = i


def per_gap(op: Callable[[], None], ops: int) -> dict[str, dict[str, float]]:
    """Median thread CPU and wall (us) of `op` after each gap of sleep."""
    out = {}
    for gap in GAPS:
        cpu, wall = [], []
        for _ in range(ops):
            if gap:
                time.sleep(gap)
            c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
            op()
            cpu.append((time.thread_time_ns() - c0) / 1000)
            wall.append((time.perf_counter_ns() - w0) / 1000)
        out[f"gap_{gap * 1000:g}ms"] = {"cpu_us": statistics.median(cpu), "wall_us": statistics.median(wall)}
    return out


def sender(wsgi: Any) -> Callable[[], None]:
    """One POST /send of BODY through `wsgi` (the app's fast lane); raises unless it answered 202."""
    def send() -> None:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/send", "CONTENT_TYPE": "application/x-www-form-urlencoded",
                   "CONTENT_LENGTH": str(len(BODY)), "HTTP_HOST": "127.0.0.1", "wsgi.input": io.BytesIO(BODY),
                   "REMOTE_ADDR": "127.0.0.1", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
                   "wsgi.url_scheme": "http"}
        status: list[str] = []
        b"".join(wsgi(environ, lambda st, headers: status.append(st)))
        if not status or not status[0].startswith("202"):
            raise RuntimeError(f"/send answered {status}")
    return send


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=300, help="operations per gap")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="angora-warmth-"))
    server = start_redis(work / "redis")
    url = fresh_db(server, 1)
    res: dict[str, Any] = {"machine": machine(), "ops": args.ops, "python": per_gap(pure_python, args.ops)}
    try:
        with A.system(url, work):
            os.environ.update(A.angora_env(url, A.write_config(work / "config"), work / "data"))
            from angora_rq.web import create_app, send as web_send

            send = sender(create_app().wsgi_app)
            for _ in range(50):  # warm up: definitions, scripts, connections
                send()
            burst = web_send.BURST.note
            try:
                web_send.BURST.note = lambda now: False  # type: ignore[method-assign]
                res["send_direct"] = per_gap(send, args.ops)
                web_send.BURST.note = lambda now: True  # type: ignore[method-assign]
                res["send_stream"] = per_gap(send, args.ops)
            finally:
                web_send.BURST.note = burst  # type: ignore[method-assign]
    finally:
        server.stop()
    print("| operation | " + " | ".join(f"gap {g * 1000:g} ms: CPU / wall (us)" for g in GAPS) + " |")
    print("|---|" + "---:|" * len(GAPS))
    for name in ("python", "send_direct", "send_stream"):
        cells = [f"{v['cpu_us']:.0f} / {v['wall_us']:.0f}" for v in res[name].values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
