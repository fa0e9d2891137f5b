"""A loaded configuration with its trigger index, graph and cached run plans (pure)."""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from angora_rq.core.events import is_event, listeners
from angora_rq.core.model import Config, JobDef
from angora_rq.core.topics import TriggerIndex

PLAN_CACHE = 1024


@dataclass
class Snapshot:
    """What the matcher and the web app hold of one definitions version."""

    config: Config
    index: TriggerIndex = field(init=False)
    _graph: Any = field(init=False, default=None)
    _plans: "OrderedDict[str, tuple[dict, str]]" = field(init=False, default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.index = TriggerIndex(self.config.jobs)

    @property
    def version(self) -> str:
        """The definitions' content version."""
        return self.config.version

    @property
    def graph(self) -> Any:
        """The workflow graph (built on first use)."""
        if self._graph is None:
            from angora_rq.core.graph import Graph

            self._graph = Graph(self.config.jobs, self.config.schedules)
        return self._graph

    def lookup(self, topic: str) -> tuple[JobDef, ...]:
        """Jobs a topic triggers (an event's: those whose triggers name events, core/events.py)."""
        jobs = self.index.lookup(topic)
        return listeners(jobs, topic) if jobs and is_event(topic) else jobs

    def plan(self, topic: str) -> dict:
        """The run plan of a root message as JSON-ready data, cached per topic (bounded)."""
        return self._plan_entry(topic)[0]

    def plan_json(self, topic: str) -> str:
        """plan(topic) as JSON text (recorded with every root message of that topic), cached with it."""
        return self._plan_entry(topic)[1]

    def _plan_entry(self, topic: str) -> tuple[dict, str]:
        cached = self._plans.get(topic)
        if cached is not None:
            self._plans.move_to_end(topic)
            return cached
        plan = self.graph.plan(topic).to_json()
        entry = self._plans[topic] = (plan, json.dumps(plan))
        if len(self._plans) > PLAN_CACHE:
            self._plans.popitem(last=False)
        return entry

    def join_parents(self, job: str, plan_jobs: list[str] | None) -> list[str]:
        """Parents a parent_success join waits for: those in the run's plan, else every parent."""
        parents = list(self.graph.parents(job))
        if plan_jobs and job in plan_jobs:
            inside = set(plan_jobs)
            return [p for p in parents if p in inside]
        return parents
