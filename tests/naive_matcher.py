"""The naive matcher, a control for the crash tests: it dispatches, then acknowledges in a separate step, without
checking that the entry is still its own, so a matcher killed between the two (or a stalled one whose entries
were claimed) dispatches twice.

Importable (`NaiveMatcher`), and runnable as a matcher process: `python tests/naive_matcher.py`, configured by
the same environment as `angora matcher` (REDIS_URL, ANGORA_PREFIX, ANGORA_CONFIG).
"""
from __future__ import annotations

import signal
import sys
from typing import Any

from angora_rq.core.keys import MATCHER_GROUP, Keys
from angora_rq.core.schema import Run
from angora_rq.core.settings import Settings
from angora_rq.processes.matcher import Matcher
from angora_rq.store.state import State


class NaiveMatcher(Matcher):
    """A Matcher whose `process` creates each entry's executions, then acknowledges the batch afterwards."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = State(self.keys, self.settings)

    def process(self, entries: list[tuple[str, dict]], now: float) -> int:
        """Dispatch each entry in its own transaction, then XACK the batch: no guard, no atomicity."""
        snap = self.snapshot()
        batch = self.plan_batch(entries, snap)
        created = 0
        for entry, msg in batch.entries:
            with self.r.pipeline() as pipe:
                for d in batch.dispatches:
                    if d.entry == entry:
                        self.state.create(pipe, d.job, d.msg, now, config_version=snap.version)
                        created += 1
                pipe.hincrby(self.keys.run(msg.run_id), Run.active, -1)
                pipe.execute()
        self.r.xack(self.keys.stream(), MATCHER_GROUP, *[e for e, _ in batch.entries])
        return created


def main() -> None:
    """Run a NaiveMatcher until SIGTERM or SIGINT, as `angora matcher` runs the real one."""
    from angora_rq.definitions.source import ConfigSource
    from angora_rq.store.connection import connect

    settings = Settings.from_env()
    source = ConfigSource(settings.config_path, freeze=True)
    m = NaiveMatcher(connect(settings), Keys(settings.prefix), settings, source.current)
    signal.signal(signal.SIGTERM, m.stop)
    signal.signal(signal.SIGINT, m.stop)
    print(f"naive matcher {m.name}: {len(source.current().config.jobs)} jobs", file=sys.stderr, flush=True)
    m.run()


if __name__ == "__main__":
    main()
