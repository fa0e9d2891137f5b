"""Where a process gets its definitions: the files, held as an immutable Snapshot that reload() swaps whole."""
from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path
from typing import Optional

from angora_rq.core.errors import DefinitionError
from angora_rq.core.model import Problem
from angora_rq.core.snapshot import Snapshot

log = logging.getLogger(__name__)


class ConfigSource:
    """The current definitions of this process; a broken reload keeps the previous ones in force."""

    def __init__(self, path: Path | str, freeze: bool = False) -> None:
        from angora_rq.definitions.load import load_config

        self.path = Path(path)
        self.freeze = freeze
        self._snap = _ready(Snapshot(load_config(self.path)), freeze)
        self._lock = threading.Lock()
        self.last_errors: list[Problem] = []

    def current(self) -> Snapshot:
        """The snapshot in force (swapped atomically by reload)."""
        return self._snap

    def reload(self) -> tuple[bool, list[Problem]]:
        """Load the files again; switch only if they are valid. Returns (switched, errors)."""
        from angora_rq.definitions.load import load_config

        with self._lock:
            try:
                config = load_config(self.path)
            except DefinitionError as e:
                self.last_errors = list(e.problems)
                # str(e): the count, then each problem on its own line
                log.error("reload refused, keeping version %s: %s", self._snap.version, e)
                return False, self.last_errors
            self.last_errors = []
            if config.version == self._snap.version:
                return False, []
            self._snap = _ready(Snapshot(config), self.freeze)
            log.info("definitions reloaded: version %s (%d jobs)", config.version, len(config.jobs))
            return True, []


def optional_source(path: Optional[Path | str]) -> Optional[ConfigSource]:
    """A ConfigSource, or None when the folder does not exist (commands that can work without definitions)."""
    if path is None or not Path(path).exists():
        return None
    return ConfigSource(path)


def _ready(snap: Snapshot, freeze: bool) -> Snapshot:
    """Build the graph now, before the snapshot is in force: with 100,000 jobs it takes about a second, which
    the first message after a (re)load would otherwise wait for.

    freeze (long-running roles only, it is process-wide): what was just built lives as long as the snapshot, so
    keep the cyclic GC from walking it on every full collection (100,000 definitions are millions of objects:
    dispatch ran ~20% slower than with 10 without it); refcounting still frees it after a reload.
    """
    snap.graph  # noqa: B018  (a cached property: building it is the point)
    if freeze:
        gc.collect()
        gc.freeze()
    return snap
