"""How definitions link jobs beyond messages: failure branches, approval gates, events and webhooks (pure checks)."""
from __future__ import annotations

import difflib
from functools import partial
from typing import Any, Callable, Iterable, Optional
from urllib.parse import urlsplit

from angora_rq.core.events import TOPICS, is_event, matching_events
from yaml.nodes import Node, ScalarNode

from angora_rq.core.graph import Graph
from angora_rq.core.model import JobDef, Location, Problem
from angora_rq.core.topics import pattern_error
from angora_rq.definitions import nodes as yamlnodes
from angora_rq.definitions.nodes import INVALID, Reporter


def event_problem(pattern: str) -> Optional[str]:
    """Why a webhook's `events` item names no event (a whole sentence), or None."""
    problem = pattern_error(pattern)
    if problem:
        return problem
    if not is_event(pattern):
        return (f"event {pattern!r} is not an event: events are topics under 'angora.' "
                "(angora.run.failed, angora.execution.*, angora.#)")
    return None if matching_events(pattern) else f"event {pattern!r} matches no event{_hint(pattern)}"


def url_problem(url: str) -> Optional[str]:
    """Why `url` cannot receive webhooks (completing "'url' ..."), or None."""
    try:
        parts = urlsplit(url)
    except ValueError as err:
        return f"is not a URL: {err}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http:// or https:// URL with a host, not {yamlnodes.short(url)!r}"
    return None


def trigger_warnings(jobs: Iterable[JobDef]) -> list[Problem]:
    """A warning at each job whose trigger is in the event space but matches no event (a typo, most likely)."""
    return [Problem(job.location, f"trigger {t!r} matches no event{_hint(t)}", job=job.name, severity="warning")
            for job in jobs for t in job.triggers if is_event(t) and not matching_events(t)]


def _hint(pattern: str) -> str:
    close = difflib.get_close_matches(pattern, TOPICS, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (events: {', '.join(TOPICS)})"


def webhook_fields(name: Callable[..., Any]) -> dict[str, Callable[..., Any]]:
    """A webhook entry's keys and their validators (`name` validates the entry's name)."""
    return {
        "webhook": name,
        "url": partial(yamlnodes.checked, check=url_problem),
        "events": partial(yamlnodes.string_list, check=event_problem, required=True),
        "secret": yamlnodes.text,
        "retries": partial(yamlnodes.integer, minimum=0, what="a whole number >= 0"),
        "timeout": partial(yamlnodes.duration, positive=True),
        "description": yamlnodes.text,
    }



def check_gate(e: Reporter, by_key: dict[str, tuple[ScalarNode, Node]], values: dict[str, Any]) -> None:
    """approval_timeout and on_approval_timeout belong to an approval gate."""
    if values.get("approval") is True:
        return
    for key in ("approval_timeout", "on_approval_timeout"):
        if key in by_key and values.get(key) not in (None, INVALID):
            e.fail(by_key[key][0], f"{key!r} needs 'approval: true' (it says what happens to an execution "
                                   "nobody approved in time)")


def unheard_failures(graph: Graph, topics: list[tuple[str, str, Location]]) -> list[Problem]:
    """An error at each `on_failure` topic no job listens to: a failure branch that goes nowhere would drop the
    failure unnoticed (a dead `messages` topic is only a warning)."""
    return [Problem(where, f"on_failure topic '{topic}' has no job listening to it (add a job with it in its "
                           "triggers, or remove it)", job=job)
            for job, topic, where in topics if not graph.index.lookup(topic)]
