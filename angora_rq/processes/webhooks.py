"""The webhook deliverer: a thread of the scheduler that POSTs events to the definitions' webhooks while its
scheduler leads (so one process delivers), with an HMAC-SHA256 signature, retries with backoff and a log.

Never in a worker's or a matcher's loop: a slow receiver only slows this thread.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import urllib.error
import urllib.request
from typing import Callable, Mapping, Optional, Sequence

from angora_rq import __version__
from angora_rq.core.command import expand_path
from angora_rq.core.keys import Keys
from angora_rq.core.model import WebhookDef
from angora_rq.core.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, Attempt, Delivery, sign
from angora_rq.store import webhooks as store
from angora_rq.store.connection import Redis, RedisError

log = logging.getLogger(__name__)
IDLE_WAIT = 0.5
MAX_ANSWER = 64 * 1024  # of a receiver's answer read (and dropped)


class WebhookSender:
    """`step(now)` turns new events into deliveries and makes the due ones; `run()` loops while told to."""

    def __init__(self, r: Redis, keys: Keys, hooks: Callable[[], Sequence[WebhookDef]],
                 env: Optional[Mapping[str, str]] = None) -> None:
        self.r = r
        self.keys = keys
        self.hooks = hooks
        self.env = dict(os.environ if env is None else env)  # $VARS of secrets expand from it
        self._stop = threading.Event()

    def step(self, now: Optional[float] = None) -> int:
        """One pass; returns the attempts made."""
        now = time.time() if now is None else now
        hooks = {h.name: h for h in self.hooks()}
        store.expand(self.r, self.keys, hooks.values(), now)
        made = 0
        for stored, d in store.due(self.r, self.keys, now):
            hook = hooks.get(d.hook)
            attempt = self.post(hook, d) if hook is not None else Attempt(None, "webhook no longer defined", 0.0)
            outcome = store.record(self.r, self.keys, stored, d, hook, attempt, time.time())
            if outcome != "delivered":
                log.warning("webhook %s: %s %s attempt %d: %s", d.hook, d.event.get("event"), outcome, d.attempt,
                            attempt.error or attempt.status)
            made += 1
        return made

    def post(self, hook: WebhookDef, d: Delivery) -> Attempt:
        """POST one delivery; the answer's status, or why there was none."""
        body = d.body()
        headers = {"Content-Type": "application/json", "User-Agent": f"Angora-Webhook/{__version__}",
                   EVENT_HEADER: str(d.event.get("event", "")), DELIVERY_HEADER: d.id}
        if hook.secret:
            headers[SIGNATURE_HEADER] = sign(expand_path(hook.secret, self.env), body)
        started = time.monotonic()
        request = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=hook.timeout) as answer:
                answer.read(MAX_ANSWER)
                return Attempt(answer.status, "", time.monotonic() - started)
        except urllib.error.HTTPError as e:
            return Attempt(e.code, f"HTTP {e.code}", time.monotonic() - started)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            return Attempt(None, str(reason)[:200], time.monotonic() - started)

    def run(self, leading: Callable[[], bool]) -> None:
        """Deliver while `leading()` (this scheduler leads) until stop(); errors are logged, never raised."""
        while not self._stop.is_set():
            made = 0
            try:
                if leading():
                    made = self.step()
            except RedisError as e:
                log.warning("webhooks: Redis unavailable (%s); trying again", e)
            except Exception:
                log.exception("webhooks: step failed; trying again")
            if not made:
                self._stop.wait(IDLE_WAIT)

    def start(self, leading: Callable[[], bool]) -> threading.Thread:
        """run() in a daemon thread."""
        thread = threading.Thread(target=self.run, args=(leading,), name="angora-webhooks", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Ask run() to return."""
        self._stop.set()
