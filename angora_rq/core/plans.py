"""A run's plan and its joins (pure): what a root message plans, merged into what its run already planned, and
which parents a parent_success job still waits for."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from angora_rq.core.runs import PLAN_JSON
from angora_rq.core.schema import SUCCEEDED, Run
from angora_rq.core.snapshot import Snapshot




def plan_ref(plan_json: str) -> str:
    """The short name a run records its plan by (the JSON is stored once per definitions version)."""
    return hashlib.sha1(plan_json.encode()).hexdigest()[:12]


def merge_plans(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The plan of a run another root message joins: its jobs first, then the new ones; its parents and depths win."""
    jobs = old["jobs"] + [j for j in new["jobs"] if j not in old["jobs"]]
    merged = {"jobs": jobs, "parents": {**new["parents"], **old["parents"]},
              "depth": {**new.get("depth", {}), **old.get("depth", {})}}
    failing = {**new.get("failure_parents", {}), **old.get("failure_parents", {})}
    if failing:
        merged["failure_parents"] = failing
    gates = list(dict.fromkeys([*old.get("gates", []), *new.get("gates", [])]))
    if gates:
        merged["gates"] = gates
    return merged


def run_plan_json(snap: Snapshot, topic: str, recorded: str = "") -> str:
    """The plan (JSON) to record for a root message of `topic` in a run whose plan is `recorded` ("" for none)."""
    if not recorded:
        return snap.plan_json(topic)
    return json.dumps(merge_plans(json.loads(recorded), snap.plan(topic)))


def missing_parents(snap: Snapshot, job: str, run: Mapping[str, str]) -> list[str]:
    """Parents a parent_success job still waits for in a run (its hash): those in the run's plan, else every one."""
    plan_jobs = json.loads(run[PLAN_JSON])["jobs"] if run.get(PLAN_JSON) else None
    return [p for p in snap.join_parents(job, plan_jobs) if run.get(Run.job_status + p) not in SUCCEEDED]


def manual_plan(snap: Snapshot, name: str) -> dict[str, Any]:
    """The plan of a job run by hand: the job and everything downstream of it."""
    graph = snap.graph
    jobs = [name] + [j for j in graph.downstream(name) if j != name]
    inside = set(jobs)
    parents = {j: [p for p in graph.parents(j) if p in inside] for j in jobs}
    plan: dict[str, Any] = {"jobs": jobs, "parents": parents, "depth": {}}
    failing = {j: ps for j in jobs if (ps := [p for p in jobs if j in graph.failure_children(p)])}
    if failing:
        plan["failure_parents"] = failing
    gates = [j for j in jobs if graph.jobs[j].approval]
    if gates:
        plan["gates"] = gates
    return plan
