"""The workflow graph's layout, read back from the SVG Chromium draws: boxes never overlap and, on a DAG, every
edge runs left to right between the boxes (never through one). Generated DAGs (hypothesis) and the example run.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_browser import BROWSER_MARKS, CHROMIUM, CHROMIUM_ARGS, CLI, Processes, answers, screenshot, wait_until

ROOT = Path(__file__).resolve().parents[2]
GRAPH_JS = ROOT / "angora_rq" / "web" / "static" / "graph.js"
SAMPLES = 24  # points read along each edge

pytestmark = BROWSER_MARKS

# Draw a graph with the page's own graph.js and read back every box and points along every edge.
GEOMETRY = """
([nodes, edges]) => {
  let svg = document.getElementById('t');
  if (svg) svg.remove();
  svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.id = 't';
  document.body.appendChild(svg);
  AngoraGraph.draw(svg, nodes.map((id) => ({id})), edges, {});
  return geometry(svg);
}
"""

READ = """() => {
window.geometry = (svg) => {
  const boxes = {};
  for (const g of svg.querySelectorAll('.node[data-job]')) {
    const m = g.transform.baseVal.consolidate().matrix, r = g.querySelector('rect');
    boxes[g.dataset.job] = [m.e, m.f, r.width.baseVal.value, r.height.baseVal.value];
  }
  const edges = [...svg.querySelectorAll('path.edge')].map((p) => {
    const n = p.getTotalLength(), pts = [];
    for (let i = 0; i <= %d; i += 1) { const q = p.getPointAtLength(n * i / %d); pts.push([q.x, q.y]); }
    return {from: p.dataset.from, to: p.dataset.to, back: p.classList.contains('back'), pts};
  });
  return {boxes, edges};
};
}
""" % (SAMPLES, SAMPLES)


def check_layout(geo: dict[str, Any], edges: list[tuple[str, str]]) -> None:
    """No two boxes overlap; every edge of the DAG leaves its source's right side, moves only rightwards,
    reaches its target's left side, and passes through no box."""
    boxes = geo["boxes"]
    names = sorted(boxes)
    for i, a in enumerate(names):
        ax, ay, aw, ah = boxes[a]
        for b in names[i + 1:]:
            bx, by, bw, bh = boxes[b]
            assert ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay, f"{a} overlaps {b}"
    drawn = {(e["from"], e["to"]) for e in geo["edges"]}
    assert drawn == {(a, b) for a, b in edges if a != b}
    for e in geo["edges"]:
        assert not e["back"], f"{e['from']} -> {e['to']} drawn as a back edge in a DAG"
        (sx, sy, sw, sh), (tx, ty, _, th) = boxes[e["from"]], boxes[e["to"]]
        pts = e["pts"]
        assert sx + sw <= tx, f"{e['from']} is not left of {e['to']}"
        assert abs(pts[0][0] - (sx + sw)) < 0.5 and sy <= pts[0][1] <= sy + sh, "edge does not leave the source"
        assert abs(pts[-1][0] - tx) < 0.5 and ty <= pts[-1][1] <= ty + th, "edge does not reach the target"
        xs = [p[0] for p in pts]
        assert all(b >= a - 0.01 for a, b in zip(xs, xs[1:])), f"{e['from']} -> {e['to']} goes backwards: {xs}"
        for name, (x, y, w, h) in boxes.items():
            inside = [p for p in pts[1:-1] if x + 1 < p[0] < x + w - 1 and y + 1 < p[1] < y + h - 1]
            assert not inside, f"{e['from']} -> {e['to']} runs through {name}"


@st.composite
def dags(draw: Any) -> tuple[list[str], list[tuple[str, str]]]:
    """A DAG: nodes in a hidden topological order (shuffled), edges only from earlier to later nodes."""
    n = draw(st.integers(min_value=1, max_value=14))
    names = [f"j{i}" for i in range(n)]
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=3 * n)) if pairs else []
    shuffled = draw(st.permutations(names))
    return shuffled, [(names[a], names[b]) for a, b in chosen]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the module (Playwright's sync API allows one at a time)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def new_page(browser: Any) -> Any:
    """A page that collects its JavaScript errors on page.errors."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.set_default_timeout(15_000)
    return page


@pytest.fixture(scope="module")
def graph_page(chromium: Any) -> Iterator[Any]:
    """A blank page with graph.js loaded."""
    page = new_page(chromium)
    page.set_content("<!doctype html><body></body>")
    page.add_script_tag(path=str(GRAPH_JS))
    page.evaluate(READ)
    yield page
    page.close()


def draw_and_read(page: Any, nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, Any]:
    geo = page.evaluate(GEOMETRY, [nodes, [list(e) for e in edges]])
    assert not page.errors, page.errors
    return geo


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dags())
def test_generated_dags_are_laid_out_left_to_right(graph_page: Any, dag: tuple[list[str], list[tuple[str, str]]]
                                                   ) -> None:
    nodes, edges = dag
    check_layout(draw_and_read(graph_page, nodes, edges), edges)


def test_a_diamond_with_a_skip_edge(graph_page: Any) -> None:
    """The example workflow's shape: step_4 has parents in two columns; it sits right of all of them."""
    edges = [("step_1", "step_2"), ("step_1", "step_3"), ("step_1", "step_4"), ("step_2", "step_4"),
             ("step_3", "step_4"), ("step_4", "step_5")]
    geo = draw_and_read(graph_page, ["step_1", "step_2", "step_3", "step_4", "step_5"], edges)
    check_layout(geo, edges)
    x = {name: box[0] for name, box in geo["boxes"].items()}
    assert x["step_1"] < x["step_2"] == x["step_3"] < x["step_4"] < x["step_5"]


def test_a_cycle_is_drawn_with_one_back_edge_and_no_overlap(graph_page: Any) -> None:
    edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
    geo = draw_and_read(graph_page, ["a", "b", "c", "d"], edges)
    assert sum(e["back"] for e in geo["edges"]) == 1
    check_layout({"boxes": geo["boxes"], "edges": [e for e in geo["edges"] if not e["back"]]},
                 [e for e in edges if e != ("c", "a")])


@pytest.fixture
def example_system(angora_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Processes]]:
    """`angora web`, a matcher and a worker on the repository's config/example.yml."""
    from angora_rq.processes.redis_server import free_port

    config = tmp_path / "config"
    config.mkdir()
    shutil.copy(ROOT / "config" / "example.yml", config / "example.yml")
    env = dict(angora_env, ANGORA_CONFIG=str(config), HOME=str(tmp_path))
    procs = Processes(env, tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        procs.start("web", "web", "--port", str(port))
        procs.start("matcher", "matcher")
        procs.start("worker", "worker")

        def web_up() -> bool:
            procs.check_alive()
            return answers(f"{base}/healthz")
        wait_until(web_up, 30, f"angora web on {base}")
        yield base, procs
    finally:
        procs.stop()


def test_the_example_run_and_workflows_pages(example_system: tuple[str, Processes], chromium: Any) -> None:
    base, procs = example_system
    env = procs.env
    out = subprocess.run([*CLI, "send", "example.step.1", "--wait", "--timeout", "60"], env=env,
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr + procs.logs()
    run_id = out.stdout.split()[0]
    page = new_page(chromium)
    page.goto(f"{base}/runs/{run_id}")
    page.wait_for_selector("#graph[data-finished='yes']")
    page.evaluate(READ)
    geo = page.evaluate("geometry(document.getElementById('graph'))")
    screenshot(page, "graph-example-run.png")
    plan = [("step_1", "step_2"), ("step_1", "step_3"), ("step_1", "step_4"), ("step_2", "step_4"),
            ("step_3", "step_4"), ("step_4", "step_5")]
    check_layout(geo, plan)
    page.goto(f"{base}/workflows")
    page.evaluate(READ)
    geo = page.evaluate("geometry(document.getElementById('graph'))")
    screenshot(page, "graph-example-workflows.png")
    check_layout(geo, plan)
    assert not page.errors, page.errors
