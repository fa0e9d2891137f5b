"""Trigger index, workflow graph and run statuses (pure), checked against brute force with hypothesis."""
from __future__ import annotations

from collections import deque

from hypothesis import given, settings, strategies as st

from angora_rq.core.graph import Graph
from angora_rq.core.model import JobDef, ScheduleDef
from angora_rq.core.runs import summarize
from angora_rq.core.topics import TriggerIndex, topic_matches

SEG = st.sampled_from(["a", "b", "c", "d"])
TOPIC = st.lists(SEG, min_size=1, max_size=4).map(".".join)
PATTERN = st.lists(st.sampled_from(["a", "b", "c", "*", "#"]), min_size=1, max_size=4).map(".".join)
TRIGGER = st.one_of(TOPIC, PATTERN)


def jobs_strategy() -> st.SearchStrategy[list[JobDef]]:
    job = st.tuples(st.lists(TRIGGER, min_size=1, max_size=3), st.lists(TOPIC, max_size=3), st.booleans())
    return st.lists(job, min_size=1, max_size=12).map(
        lambda specs: [JobDef(name=f"j{i}", triggers=tuple(t), command=("true",), messages=tuple(m),
                              parent_success=ps) for i, (t, m, ps) in enumerate(specs)])


@settings(max_examples=300, deadline=None)
@given(jobs=jobs_strategy(), topics=st.lists(TOPIC, min_size=1, max_size=6))
def test_lookup_equals_a_brute_force_scan(jobs: list[JobDef], topics: list[str]) -> None:
    index = TriggerIndex(jobs)
    for topic in topics + topics[::-1]:  # asked again: the remembered answer must be the same
        expected = [j.name for j in jobs if any(topic_matches(t, topic) for t in j.triggers)]
        assert [j.name for j in index.lookup(topic)] == expected


def test_lookups_kept_are_bounded() -> None:
    index = TriggerIndex([JobDef(name="j", triggers=("a.*",), command=("true",))], remember=3)
    for seg in "abcdefg":
        assert [j.name for j in index.lookup(f"a.{seg}")] == ["j"]
        assert len(index._found) <= 3
    assert index.lookup("b.a") == ()
    cold = TriggerIndex(index.jobs, remember=0)
    assert [j.name for j in cold.lookup("a.b")] == ["j"] and cold._found == {}


@settings(max_examples=200, deadline=None)
@given(jobs=jobs_strategy(), topic=TOPIC)
def test_plan_equals_a_plain_graph_search(jobs: list[JobDef], topic: str) -> None:
    def children(j: JobDef) -> set[str]:
        return {c.name for c in jobs for m in j.messages if any(topic_matches(t, m) for t in c.triggers)}

    by_name = {j.name: j for j in jobs}
    seen = {j.name for j in jobs if any(topic_matches(t, topic) for t in j.triggers)}
    todo = deque(seen)
    while todo:
        for c in children(by_name[todo.popleft()]):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    plan = Graph(jobs).plan(topic)
    assert set(plan.jobs) == seen and len(plan.jobs) == len(seen)
    for name in plan.jobs:  # parents inside the plan come earlier (BFS depth) or sit on a cycle
        assert set(plan.parents[name]) <= seen


def test_a_plan_costs_what_it_reaches_not_the_whole_graph() -> None:
    """The first message of a matcher plans its topic: with 100,000 definitions that built a dict of every job
    (~40 ms). Memory is the measure here (no clock): a 3-job plan among 20,000 jobs allocates a few KiB."""
    import tracemalloc

    jobs = [JobDef(name=f"f{i}", triggers=(f"filler.{i}",), command=("true",)) for i in range(20_000)]
    jobs += [JobDef(name="a", triggers=("x",), command=("true",), messages=("y",)),
             JobDef(name="b", triggers=("y",), command=("true",), messages=("z",)),
             JobDef(name="c", triggers=("z",), command=("true",))]
    graph = Graph(jobs)
    tracemalloc.start()
    try:
        plan = graph.plan("x")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert plan.jobs == ("a", "b", "c")
    assert peak < 64 * 1024, f"planning 3 jobs allocated {peak} bytes"


def test_patterns_edge_cases() -> None:
    idx = TriggerIndex([JobDef(name=n, triggers=(t,), command=("x",)) for n, t in
                        [("hash", "#"), ("a_hash", "a.#"), ("hash_b", "#.b"), ("star2", "*.*")]])
    assert [j.name for j in idx.lookup("a")] == ["hash", "a_hash"]
    assert [j.name for j in idx.lookup("a.b")] == ["hash", "a_hash", "hash_b", "star2"]
    assert [j.name for j in idx.lookup("x.y.b")] == ["hash", "hash_b"]


def test_graph_fan_out_join_cycle_and_warnings() -> None:
    jobs = [
        JobDef(name="s1", triggers=("go",), command=("x",), messages=("m2", "m3", "m4")),
        JobDef(name="s2", triggers=("m2",), command=("x",), messages=("m5",)),
        JobDef(name="s3", triggers=("m3",), command=("x",), messages=("m5",)),
        JobDef(name="s4", triggers=("m4",), command=("x",), messages=("m5", "nobody")),
        JobDef(name="s5", triggers=("m5",), command=("x",), parent_success=True, messages=("loop",)),
        JobDef(name="l1", triggers=("loop",), command=("x",), messages=("m5",)),
    ]
    g = Graph(jobs, [ScheduleDef(name="tick", message="unheard", every=60)])
    assert g.children("s1") == ("s2", "s3", "s4")
    assert set(g.parents("s5")) == {"s2", "s3", "s4", "l1"}
    plan = g.plan("go")
    assert plan.jobs[0] == "s1" and plan.depth["s5"] == 2 and plan.joins == ("s5",)
    assert set(g.downstream("s1")) == {"s2", "s3", "s4", "s5", "l1"}
    assert set(g.upstream("s2")) == {"s1"}
    text = [str(w) for w in g.warnings()]
    assert any("message 'nobody' has no job listening" in t for t in text)
    assert any("schedule 'tick'" in t and "'unheard'" in t for t in text)
    assert any("message cycle: s5 -> l1 -> s5" in t for t in text)
    assert not any("job 's1'" in t for t in text)  # an entry job (started from outside) is normal: no warning
    assert '"s1" -> "s2"' in g.to_dot() and "flowchart LR" in g.to_mermaid()


def test_run_summary_rules() -> None:
    plan = ["a", "b", "c"]
    parents = {"a": [], "b": ["a"], "c": ["b"]}
    running = summarize(plan, parents, {"a": "running"}, active=1)
    assert running.status == "running" and running.jobs["c"] == "pending"
    assert summarize(plan, parents, {"a": "queued"}, active=1).status == "queued"
    failed = summarize(plan, parents, {"a": "failed"}, active=0)
    assert failed.status == "failed" and failed.jobs["b"] == "upstream_failed" and failed.jobs["c"] == "upstream_failed"
    done = summarize(plan, parents, {"a": "succeeded", "b": "skipped", "c": "succeeded"}, active=0)
    assert done.status == "succeeded"
    partial = summarize(plan, parents, {"a": "succeeded"}, active=0)
    assert partial.status == "succeeded" and partial.jobs["b"] == "not_triggered"
    assert summarize(plan, parents, {"a": "running"}, active=1, canceled=True).status == "canceling"
    assert summarize(plan, parents, {"a": "succeeded"}, active=0, canceled=True).status == "canceled"
