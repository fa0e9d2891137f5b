"""The workflow graph (pure): parents and children from messages -> triggers, run plans, warnings, exports."""
from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Optional

from angora_rq.core.events import listeners
from angora_rq.core.model import JobDef, Problem, ScheduleDef
from angora_rq.core.topics import TriggerIndex


@dataclass(frozen=True)
class Plan:
    """Every job a message can reach, in BFS order, with each job's parents inside the plan and its depth.

    `failure_parents` names, for a job reached through a failure branch, the planned jobs whose `on_failure`
    triggers it; they are kept apart from `parents` (what a join waits for, what fails a job upstream). `gates`
    are the approval gates among the jobs.
    """

    jobs: tuple[str, ...]
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    depth: dict[str, int] = field(default_factory=dict)
    joins: tuple[str, ...] = ()
    failure_parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    gates: tuple[str, ...] = ()  # jobs with `approval: true`: each execution waits for a person

    __hash__ = None  # type: ignore[assignment]

    def to_json(self) -> dict:
        """JSON-ready: {jobs, parents, depth, joins}, plus failure_parents and gates when the plan has some."""
        out = {
            "jobs": list(self.jobs),
            "parents": {k: list(v) for k, v in self.parents.items()},
            "depth": dict(self.depth),
            "joins": list(self.joins),
        }
        if self.failure_parents:
            out["failure_parents"] = {k: list(v) for k, v in self.failure_parents.items()}
        if self.gates:
            out["gates"] = list(self.gates)
        return out


class Graph:
    """Jobs linked by the topics they send and listen to (patterns included)."""

    def __init__(self, jobs: Iterable[JobDef], schedules: Iterable[ScheduleDef] = ()) -> None:
        self.jobs: dict[str, JobDef] = {j.name: j for j in jobs}
        # Definition order ranks a plan's jobs of equal depth. Built here, with the graph: built lazily, it cost the
        # first plan (the first message of the matcher) ~40 ms with 100,000 definitions.
        self._order = {name: i for i, name in enumerate(self.jobs)}
        self.schedules = tuple(schedules)
        self.index = TriggerIndex(self.jobs.values())
        self._children: dict[str, list[str]] = {n: [] for n in self.jobs}
        self._parents: dict[str, list[str]] = {n: [] for n in self.jobs}
        self._fail_children: dict[str, list[str]] = {n: [] for n in self.jobs}  # through `on_failure` topics
        self._fail_parents: dict[str, list[str]] = {n: [] for n in self.jobs}
        self._edges: list[tuple[str, str, str]] = []
        self._fail_edges: list[tuple[str, str, str]] = []
        for job in self.jobs.values():
            self._link(job, job.messages, self._edges, self._children, self._parents)
            self._link(job, job.on_failure, self._fail_edges, self._fail_children, self._fail_parents)
        # Both kinds of links: what a plan reaches and what can loop.
        self._links = {n: self._children[n] + [c for c in self._fail_children[n] if c not in self._children[n]]
                       for n in self.jobs}

    def _link(self, job: JobDef, topics: Iterable[str], edges: list[tuple[str, str, str]],
              children: dict[str, list[str]], parents: dict[str, list[str]]) -> None:
        for topic in dict.fromkeys(topics):
            for child in self.index.lookup(topic):
                edges.append((job.name, child.name, topic))
                if child.name not in children[job.name]:
                    children[job.name].append(child.name)
                    parents[child.name].append(job.name)

    def parents(self, name: str) -> tuple[str, ...]:
        """Jobs whose messages can trigger `name`."""
        return tuple(self._parents.get(name, ()))

    def children(self, name: str) -> tuple[str, ...]:
        """Jobs that `name`'s messages can trigger."""
        return tuple(self._children.get(name, ()))

    def failure_children(self, name: str) -> tuple[str, ...]:
        """Jobs that `name`'s `on_failure` topics can trigger."""
        return tuple(self._fail_children.get(name, ()))

    def edges(self) -> list[tuple[str, str, str]]:
        """(parent, child, topic) for every link by a job's messages."""
        return list(self._edges)

    def failure_edges(self) -> list[tuple[str, str, str]]:
        """(parent, child, topic) for every link by a job's `on_failure` topics."""
        return list(self._fail_edges)

    def plan(self, topic: str) -> Plan:
        """The run plan of a message: the jobs it triggers and everything downstream, failure branches included
        (cycles terminate)."""
        return self.plan_from([j.name for j in listeners(self.index.lookup(topic), topic)])

    def plan_from(self, roots: list[str]) -> Plan:
        """The plan of a run that starts with jobs `roots` (in this order)."""
        depth = self._bfs(roots, self._links)
        jobs = tuple(sorted(depth, key=lambda n: (depth[n], self._order[n])))
        inside = set(jobs)
        parents = {n: tuple(p for p in self._parents[n] if p in inside) for n in jobs}
        failing = {n: tuple(p for p in self._fail_parents[n] if p in inside) for n in jobs}
        joins = tuple(n for n in jobs if self.jobs[n].parent_success)
        gates = tuple(n for n in jobs if self.jobs[n].approval)
        return Plan(jobs, parents, depth, joins, {n: ps for n, ps in failing.items() if ps}, gates)

    def upstream(self, name: str) -> tuple[str, ...]:
        """Every job that can lead to `name` (transitively), excluding itself unless on a cycle."""
        return self._reach(name, self._parents)

    def downstream(self, name: str) -> tuple[str, ...]:
        """Every job `name` can lead to (transitively, failure branches included), excluding itself unless on a
        cycle."""
        return self._reach(name, self._links)

    @staticmethod
    def _bfs(roots: list[str], links: dict[str, list[str]]) -> dict[str, int]:
        depth: dict[str, int] = {}
        queue: deque[str] = deque()
        for r in roots:
            if r not in depth:
                depth[r] = 0
                queue.append(r)
        while queue:
            n = queue.popleft()
            for c in links.get(n, ()):
                if c not in depth:
                    depth[c] = depth[n] + 1
                    queue.append(c)
        return depth

    def _reach(self, name: str, links: dict[str, list[str]]) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        queue = deque(links.get(name, ()))
        while queue:
            n = queue.popleft()
            if n not in seen:
                seen[n] = None
                queue.extend(links.get(n, ()))
        return tuple(seen)

    # -- warnings ---------------------------------------------------------------------------------
    def warnings(self) -> list[Problem]:
        """Messages nobody listens to, message cycles (allowed, but shown)."""
        out: list[Problem] = []
        for job in self.jobs.values():
            for topic in dict.fromkeys(job.messages):
                if not self.index.lookup(topic):
                    out.append(_warn(job, f"message '{topic}' has no job listening to it"))
        # A job that only messages from outside start is how a workflow begins: no warning for it.
        for s in self.schedules:
            if not self.index.lookup(s.message):
                out.append(Problem(s.location, f"message '{s.message}' has no job listening to it",
                                   job=s.name, severity="warning", kind="schedule"))
        for cycle in self.cycles():
            first = self.jobs[cycle[0]]
            loop = " -> ".join([*cycle, cycle[0]])
            out.append(_warn(first, f"message cycle: {loop} (allowed; make sure it ends)"))
        return out

    def cycles(self) -> list[list[str]]:
        """Strongly connected groups of jobs that can trigger each other, failure branches included (Tarjan)."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        on_stack: set[str] = set()
        stack: list[str] = []
        out: list[list[str]] = []
        counter = 0
        for start in self.jobs:
            if start in index:
                continue
            work = [(start, iter(self._links[start]))]
            index[start] = low[start] = counter
            counter += 1
            stack.append(start)
            on_stack.add(start)
            while work:
                node, it = work[-1]
                nxt = next(it, None)
                if nxt is None:
                    work.pop()
                    if work:
                        low[work[-1][0]] = min(low[work[-1][0]], low[node])
                    if low[node] == index[node]:
                        comp = []
                        while True:
                            w = stack.pop()
                            on_stack.discard(w)
                            comp.append(w)
                            if w == node:
                                break
                        if len(comp) > 1 or node in self._links[node]:
                            out.append(sorted(comp, key=self._order.__getitem__))
                elif nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(self._links[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
        return out

    # -- exports ----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        """Nodes and edges for the UI and `angora graph --format json` (an edge's kind: message or failure)."""
        nodes = [{"name": j.name, "triggers": list(j.triggers), "messages": list(j.messages),
                  "on_failure": list(j.on_failure), "queue": j.queue, "parent_success": j.parent_success,
                  "approval": j.approval, "description": j.description} for j in self.jobs.values()]
        edges = [{"from": a, "to": b, "topic": t, "kind": kind} for kind, a, b, t in self._all_edges()]
        return {"nodes": nodes, "edges": edges}

    def _all_edges(self) -> list[tuple[str, str, str, str]]:
        """(kind, parent, child, topic): the message links, then the failure links."""
        return [("message", *e) for e in self._edges] + [("failure", *e) for e in self._fail_edges]

    def to_dot(self) -> str:
        """Graphviz dot, left to right; failure branches dashed and red."""
        lines = ["digraph angora {", "  rankdir=LR;", "  node [shape=box];"]
        for j in self.jobs.values():
            shape = (", style=bold" if j.parent_success else "") + (", shape=octagon" if j.approval else "")
            lines.append(f"  {_q(j.name)} [label={_q(j.name)}{shape}];")
        for kind, a, b, t in self._all_edges():
            style = ", style=dashed, color=red" if kind == "failure" else ""
            lines.append(f"  {_q(a)} -> {_q(b)} [label={_q(t)}{style}];")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_mermaid(self) -> str:
        """Mermaid flowchart, left to right (node ids are positions; labels are escaped names); failure branches
        dotted, approval gates hexagons."""
        ids = {n: f"j{i}" for i, n in enumerate(self.jobs)}
        lines = ["flowchart LR"]
        for n, i in ids.items():
            lines.append(f'  {i}{{{{"{_mermaid(n)}"}}}}' if self.jobs[n].approval else f'  {i}["{_mermaid(n)}"]')
        for kind, a, b, t in self._all_edges():
            arrow = "-.->" if kind == "failure" else "-->"
            lines.append(f'  {ids[a]} {arrow}|"{_mermaid(t)}"| {ids[b]}')
        return "\n".join(lines) + "\n"


def _warn(job: JobDef, message: str) -> Problem:
    return Problem(job.location, message, job=job.name, severity="warning")


def _q(text: str) -> str:
    return json.dumps(text)


def _mermaid(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def plan_of(graph: Optional[Graph], topic: str) -> dict:
    """A plan as JSON, or an empty plan when there is no graph."""
    return graph.plan(topic).to_json() if graph is not None else {"jobs": [], "parents": {}, "depth": {}, "joins": []}
