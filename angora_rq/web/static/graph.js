// Workflow graphs as SVG: a small layered (left-to-right) layout, zoom and pan, live run statuses.
// No dependencies. Pages embed their data in <script type="application/json" id="graph-data">.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const NODE_W = 156, NODE_H = 26, GAP_X = 54, GAP_Y = 10, PAD = 20, MAX_LABEL = 20;
  const POLL_MS = 1000, MIN_SCALE = 0.05, MAX_SCALE = 4, READABLE = 0.6, FIT_MAX = 1.25, MIN_HEIGHT = 220;
  const GLYPH = {
    succeeded: "\u2713", skipped: "\u21b7", failed: "\u2717", killed: "\u2717", upstream_failed: "\u2298",
    running: "\u25b6", queued: "\u2026", held: "\u2016", delayed: "\u231b", replaying: "\u21bb",
    pending: "\u25cb", not_triggered: "\u2013", canceled: "\u2298", awaiting_approval: "\u270b", rejected: "\u2717",
  };

  // -- layout (pure) -------------------------------------------------------------------------------------

  /** Neighbour lists of a graph: {preds, succs} as Map id -> array of ids. */
  function adjacency(ids, edges) {
    const preds = new Map(ids.map((id) => [id, []]));
    const succs = new Map(ids.map((id) => [id, []]));
    const seen = new Set();
    for (const [a, b] of edges) {
      const key = JSON.stringify([a, b]);
      if (a === b || !preds.has(a) || !preds.has(b) || seen.has(key)) continue;  // one link per pair of jobs
      seen.add(key);
      succs.get(a).push(b);
      preds.get(b).push(a);
    }
    return { preds, succs };
  }

  /** Layer of each node: the given depths when complete, else the longest path from a source (cycles cut). */
  function assignLayers(ids, adj, depth) {
    const layer = new Map();
    if (depth && ids.length && ids.every((id) => Number.isInteger(depth[id]))) {
      ids.forEach((id) => layer.set(id, depth[id]));
      return layer;
    }
    const indeg = new Map(ids.map((id) => [id, adj.preds.get(id).length]));
    const done = new Set();
    const queue = ids.filter((id) => indeg.get(id) === 0);
    while (done.size < ids.length) {
      if (!queue.length) {  // a cycle: start from its node with the fewest unmet parents
        let best = null;
        for (const id of ids) if (!done.has(id) && (best === null || indeg.get(id) < indeg.get(best))) best = id;
        queue.push(best);
      }
      const n = queue.shift();
      if (done.has(n)) continue;
      done.add(n);
      const l = layer.get(n) || 0;
      layer.set(n, l);
      for (const s of adj.succs.get(n)) {
        if (done.has(s)) continue;
        layer.set(s, Math.max(layer.get(s) || 0, l + 1));
        indeg.set(s, indeg.get(s) - 1);
        if (indeg.get(s) === 0) queue.push(s);
      }
    }
    return layer;
  }

  /** Order nodes inside each layer by the mean position of their neighbours (a few sweeps each way). */
  function orderLayers(ids, adj, layer) {
    const count = Math.max(0, ...ids.map((id) => layer.get(id))) + 1;
    const rows = Array.from({ length: count }, () => []);
    ids.forEach((id) => rows[layer.get(id)].push(id));
    const index = new Map();
    const reindex = () => rows.forEach((row) => row.forEach((id, i) => index.set(id, i)));
    reindex();
    const sweep = (range, neighbours) => {
      for (const i of range) {
        const key = new Map(rows[i].map((id) => {
          const ns = neighbours.get(id);
          return [id, ns.length ? ns.reduce((s, n) => s + index.get(n), 0) / ns.length : index.get(id)];
        }));
        rows[i].sort((a, b) => key.get(a) - key.get(b));
        rows[i].forEach((id, k) => index.set(id, k));
      }
    };
    const down = [...Array(count).keys()].slice(1);
    const up = [...Array(count).keys()].reverse().slice(1);
    for (let pass = 0; pass < 4; pass += 1) { sweep(down, adj.preds); sweep(up, adj.succs); }
    return rows;
  }

  /** Coordinates: each node as close as it can be to its parents' mean height, layers centred on them. */
  function place(rows, adj) {
    const pos = new Map();
    const step = NODE_H + GAP_Y;
    rows.forEach((row, li) => {
      const want = row.map((id, k) => {
        const ps = adj.preds.get(id).filter((p) => pos.has(p));
        return ps.length ? ps.reduce((s, p) => s + pos.get(p).y, 0) / ps.length : k * step;
      });
      const ys = [];
      want.forEach((w, k) => ys.push(k ? Math.max(w, ys[k - 1] + step) : w));
      const shift = want.reduce((s, w) => s + w, 0) / (want.length || 1) - ys.reduce((s, y) => s + y, 0) / (ys.length || 1);
      row.forEach((id, k) => pos.set(id, { x: li * (NODE_W + GAP_X), y: ys[k] + Math.min(shift, 0) }));
    });
    const top = Math.min(0, ...[...pos.values()].map((p) => p.y));
    pos.forEach((p) => { p.y -= top; });
    const width = rows.length * (NODE_W + GAP_X) - GAP_X;
    const height = Math.max(NODE_H, ...[...pos.values()].map((p) => p.y + NODE_H));
    return { pos, width, height };
  }

  /** Full layout of nodes [{id}] and edges [[from, to]], optional depth {id: layer}. */
  function layout(nodes, edges, depth) {
    const ids = nodes.map((n) => n.id);
    const adj = adjacency(ids, edges);
    const rows = orderLayers(ids, adj, assignLayers(ids, adj, depth));
    return { adj, ...place(rows, adj) };
  }

  // -- drawing -------------------------------------------------------------------------------------------

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function shorten(text) {
    return text.length > MAX_LABEL ? `${text.slice(0, MAX_LABEL - 1)}\u2026` : text;
  }

  function edgePath(a, b) {
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
    if (x2 > x1) {
      const dx = Math.max(16, (x2 - x1) / 2);
      return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
    }
    const dip = Math.max(y1, y2) + NODE_H * 1.5;  // a back edge (cycle): loop below
    return `M${x1},${y1} C${x1 + 60},${dip} ${x2 - 60},${dip} ${x2},${y2}`;
  }

  /** Draw the graph into the SVG; returns {nodes: Map id -> <g>, layout}. */
  function draw(svg, nodes, edges, depth, options) {
    svg.querySelectorAll("g.viewport, defs").forEach((g) => g.remove());
    const lay = layout(nodes, edges, depth);
    const defs = el("defs", {}, svg);
    const marker = el("marker", { id: "arrow", viewBox: "0 0 8 8", refX: "8", refY: "4", markerWidth: "7",
      markerHeight: "7", orient: "auto-start-reverse" }, defs);
    el("path", { d: "M0,0 L8,4 L0,8 z", class: "arrowhead" }, marker);
    const root = el("g", { class: "viewport" }, svg);
    const edgeLayer = el("g", { class: "edges" }, root);
    const links = new Map();  // one path per pair of jobs and kind, naming every topic that links them
    for (const [a, b, label, kind] of edges) {
      if (!lay.pos.has(a) || !lay.pos.has(b) || a === b) continue;
      const failure = kind === "failure";
      const key = JSON.stringify([a, b, failure]);
      if (!links.has(key)) links.set(key, { a, b, failure, labels: [] });
      if (label) links.get(key).labels.push(label);
    }
    for (const { a, b, failure, labels } of links.values()) {
      const path = el("path", { d: edgePath(lay.pos.get(a), lay.pos.get(b)), class: failure ? "edge failure" : "edge",
        "marker-end": "url(#arrow)", "data-from": a, "data-to": b }, edgeLayer);
      const what = failure ? " on failure" : "";
      el("title", {}, path).textContent = `${a} \u2192 ${b}${what}${labels.length ? ` (${labels.join(", ")})` : ""}`;
    }
    const nodeLayer = el("g", { class: "nodes" }, root);
    const out = new Map();
    for (const n of nodes) {
      const p = lay.pos.get(n.id);
      const href = options.href ? options.href(n) : null;
      const g = el(href ? "a" : "g", { class: `node kind-${n.kind || "job"}${n.gate ? " gate" : ""}`,
        transform: `translate(${p.x},${p.y})`, "data-job": n.id }, nodeLayer);
      if (href) g.setAttribute("href", href);
      else { g.setAttribute("tabindex", "0"); g.setAttribute("role", "button"); }
      el("rect", { width: NODE_W, height: NODE_H, rx: "5" }, g);
      el("text", { x: "8", y: String(NODE_H / 2 + 4), class: "label" }, g).textContent = shorten(n.label || n.id);
      el("text", { x: String(NODE_W - 8), y: String(NODE_H / 2 + 4), class: "glyph", "text-anchor": "end" }, g);
      const gate = n.gate ? " (approval gate)" : "";
      el("title", {}, g).textContent = n.title ? `${n.label || n.id}${gate}: ${n.title}` : `${n.label || n.id}${gate}`;
      out.set(n.id, g);
    }
    return { nodes: out, layout: lay };
  }

  /** Colour a node by status and point it at its execution. */
  function setStatus(g, name, status, execution) {
    g.setAttribute("class", g.getAttribute("class").replace(/\s*st-\S+/g, "") + ` st-${status}`);
    g.dataset.status = status;
    g.querySelector("text.glyph").textContent = GLYPH[status] || "";
    const gate = g.classList.contains("gate") ? " (approval gate)" : "";
    g.querySelector("title").textContent = `${name}${gate}: ${status.replace(/_/g, " ")}`;
    if (g.tagName === "a") g.setAttribute("href", execution ? `/executions/${execution}` : `/jobs/${encodeURIComponent(name)}`);
    g.setAttribute("aria-label", `${name}: ${status.replace(/_/g, " ")}`);
  }

  // -- zoom and pan ----------------------------------------------------------------------------------------

  /** Wheel zoom around the cursor, drag to pan, +/-/Fit buttons; the view is the SVG viewBox. */
  function viewer(svg, toolbar) {
    const view = { x: 0, y: 0, scale: 1, width: 0, height: 0 };
    const apply = () => {
      const w = svg.clientWidth || 800, h = svg.clientHeight || 400;
      svg.setAttribute("viewBox", `${view.x} ${view.y} ${w / view.scale} ${h / view.scale}`);
    };
    const zoomAt = (factor, px, py) => {
      const s = Math.min(MAX_SCALE, Math.max(MIN_SCALE, view.scale * factor));
      view.x += px / view.scale - px / s;
      view.y += py / view.scale - py / s;
      view.scale = s;
      apply();
    };
    const fit = (force) => {
      const w = svg.clientWidth || 800, h = svg.clientHeight || 400;
      const s = Math.min(w / (view.width + 2 * PAD), h / (view.height + 2 * PAD), FIT_MAX);
      view.scale = force || s >= READABLE ? s : 1;  // big graphs open readable at the top left; Fit shows all
      view.x = -PAD; view.y = -PAD;
      if (view.scale === s) { view.x = -(w / s - view.width) / 2; view.y = -(h / s - view.height) / 2; }
      apply();
    };
    svg.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = svg.getBoundingClientRect();
      zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    let drag = null, moved = false;
    svg.addEventListener("pointerdown", (e) => { if (e.button === 0) { drag = { x: e.clientX, y: e.clientY }; moved = false; } });
    window.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (!moved && Math.hypot(dx, dy) < 4) return;
      moved = true;
      svg.classList.add("dragging");
      view.x -= dx / view.scale; view.y -= dy / view.scale;
      drag = { x: e.clientX, y: e.clientY };
      apply();
    });
    window.addEventListener("pointerup", () => { drag = null; svg.classList.remove("dragging"); });
    svg.addEventListener("click", (e) => { if (moved) { e.preventDefault(); e.stopPropagation(); moved = false; } }, true);
    if (toolbar) {
      toolbar.addEventListener("click", (e) => {
        const which = e.target.closest("[data-zoom]");
        if (!which) return;
        const cx = (svg.clientWidth || 800) / 2, cy = (svg.clientHeight || 400) / 2;
        if (which.dataset.zoom === "in") zoomAt(1.25, cx, cy);
        else if (which.dataset.zoom === "out") zoomAt(0.8, cx, cy);
        else fit(true);
      });
    }
    window.addEventListener("resize", apply);
    return {
      /** Show a freshly drawn graph of this size. */
      reset(width, height) {
        view.width = width; view.height = height;
        const tall = Math.max(MIN_HEIGHT, height + 2 * PAD + 40);
        svg.style.height = `${Math.round(Math.min(window.innerHeight * 0.62, tall))}px`;  // small graphs, small box
        fit(false);
      },
    };
  }

  // -- run page: live statuses -------------------------------------------------------------------------------

  /** Nodes and edges of a run: its plan, plus jobs that ran outside it. */
  function runGraph(run) {
    const plan = run.plan || {};
    const ids = [...(plan.jobs || [])];
    for (const name of Object.keys(run.jobs || {})) if (!ids.includes(name)) ids.push(name);
    const edges = [];
    for (const child of ids) for (const p of (plan.parents || {})[child] || []) if (ids.includes(p)) edges.push([p, child]);
    for (const child of ids) {
      for (const p of (plan.failure_parents || {})[child] || []) if (ids.includes(p)) edges.push([p, child, "", "failure"]);
    }
    const gates = new Set(plan.gates || []);
    return { nodes: ids.map((id) => ({ id, kind: "job", gate: gates.has(id) })), edges, depth: plan.depth };
  }

  /** Nothing of the run is in flight any more (runs.summarize: active <= 0). */
  function runFinished(run) {
    return run.active <= 0 && !["queued", "running", "canceling"].includes(run.status);
  }

  function fmtTime(ts) {
    return ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) : "\u2013";
  }

  function fmtDuration(s) {
    if (s === null || s === undefined) return "\u2013";
    if (s < 10) return `${s.toFixed(2)} s`;
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} m ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} m`;
  }

  function link(href, text, code) {
    const a = document.createElement("a");
    a.href = href;
    if (code) { const c = document.createElement("code"); c.textContent = text; a.appendChild(c); } else a.textContent = text;
    return a;
  }

  /** Approve and Reject buttons for an execution awaiting approval (forms angora.js posts). */
  function decideForms(execution) {
    return [["approve", "Approve", "primary", ""], ["reject", "Reject", "danger", "Reject this execution? Its run fails."]]
      .map(([verb, label, cls, confirm]) => {
        const form = document.createElement("form");
        form.className = "action";
        form.dataset.post = `/api/v1/executions/${encodeURIComponent(execution)}/${verb}`;
        form.dataset.then = "reload";
        if (confirm) form.dataset.confirm = confirm;
        const button = document.createElement("button");
        button.type = "submit"; button.className = cls; button.textContent = label;
        const out = document.createElement("output");
        out.className = "result"; out.setAttribute("aria-live", "polite");
        form.append(button, out);
        return form;
      });
  }

  /** Bring the jobs table in step with the run (adding rows for jobs that appeared). */
  function updateJobsTable(table, run, names) {
    const body = table.tBodies[0];
    for (const name of names) {
      let row = body.querySelector(`tr[data-job="${CSS.escape(name)}"]`);
      if (!row) {
        row = body.insertRow();
        row.dataset.job = name;
        const th = document.createElement("th");
        th.scope = "row";
        th.appendChild(link(`/jobs/${encodeURIComponent(name)}`, name));
        row.appendChild(th);
        ["status", "exec", "num attempts", "decide"].forEach((cls) => { row.insertCell().className = cls; });
      }
      const j = run.jobs[name] || { status: "pending", execution: null, executions: 0 };
      row.querySelector(".status").replaceChildren(window.Angora.badge(j.status));
      row.querySelector(".exec").replaceChildren(j.execution ? link(`/executions/${j.execution}`, j.execution.slice(0, 12), true) : "");
      row.querySelector(".attempts").textContent = String(j.executions || 0);
      const decide = row.querySelector(".decide");
      const key = j.status === "awaiting_approval" && j.execution ? j.execution : "";
      if (decide && decide.dataset.key !== key) {  // rebuilt only when it changes: a click in progress survives
        decide.dataset.key = key;
        decide.replaceChildren(...(key ? decideForms(key) : []));
      }
    }
  }

  /** Rebuild the executions table from the API's list. */
  function updateExecutions(table, executions) {
    if (!table || !executions) return;
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const e of executions) {
      const row = body.insertRow();
      row.insertCell().appendChild(link(`/executions/${e.id}`, e.id.slice(0, 12), true));
      row.insertCell().appendChild(link(`/jobs/${encodeURIComponent(e.job)}`, e.job));
      row.insertCell().appendChild(window.Angora.badge(e.status));
      const cells = [String(e.attempt), fmtTime(e.started || e.created), fmtDuration(e.duration),
        e.exit_code === null || e.exit_code === undefined ? "" : String(e.exit_code)];
      cells.forEach((text, i) => { const c = row.insertCell(); c.textContent = text; if (i !== 1) c.className = "num"; });
    }
  }

  function setupRun(svg, viewerApi, initial) {
    const table = document.getElementById("run-jobs");
    const execTable = document.getElementById("run-executions");
    let shape = "", drawn = null;
    const render = (run) => {
      const g = runGraph(run);
      const key = JSON.stringify([g.nodes.map((n) => n.id), g.edges]);
      if (key !== shape) {
        shape = key;
        drawn = draw(svg, g.nodes, g.edges, g.depth, { href: (n) => `/jobs/${encodeURIComponent(n.id)}` });
        viewerApi.reset(drawn.layout.width, drawn.layout.height);
        document.getElementById("graph-empty").hidden = g.nodes.length > 0;
      }
      for (const [name, node] of drawn.nodes) {
        const j = run.jobs[name] || { status: "pending" };
        setStatus(node, name, j.status, j.execution);
      }
      document.getElementById("run-status").replaceChildren(window.Angora.badge(run.status));
      document.getElementById("run-actions").hidden = runFinished(run) || run.canceled;
      svg.dataset.runStatus = run.status;
      svg.dataset.finished = runFinished(run) ? "yes" : "";
      if (table) updateJobsTable(table, run, g.nodes.map((n) => n.id));
      updateExecutions(execTable, run.executions);
    };
    render(initial);
    const poll = async () => {
      try {
        const resp = await fetch(table.dataset.poll, { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (resp.ok) {
          const run = await resp.json();
          render(run);
          if (runFinished(run)) return;
        }
      } catch (e) { /* the server restarted or the network blinked: try again */ }
      setTimeout(poll, POLL_MS);
    };
    if (!runFinished(initial)) setTimeout(poll, POLL_MS);
  }

  // -- workflows page: whole graph, click to highlight --------------------------------------------------------

  /** Accept the few shapes a graph export may take: nodes as names or objects, edges as pairs or objects. */
  function normalizeGraph(g) {
    const nodes = (g.nodes || []).map((n) => (typeof n === "string" ? { id: n, kind: "job" }
      : { id: n.id ?? n.name, label: n.label ?? n.name ?? n.id, kind: n.kind ?? n.type ?? "job",
        title: n.description || "", gate: Boolean(n.approval) }));
    const edges = (g.edges || []).map((e) => (Array.isArray(e) ? [e[0], e[1], e[2], e[3]]
      : [e.source ?? e.from ?? e.parent, e.target ?? e.to ?? e.child, e.topic ?? e.message ?? e.label, e.kind]));
    return { nodes, edges };
  }

  function reach(start, neighbours) {
    const seen = new Set();
    const stack = [start];
    while (stack.length) {
      for (const n of neighbours.get(stack.pop()) || []) if (!seen.has(n)) { seen.add(n); stack.push(n); }
    }
    seen.delete(start);
    return seen;
  }

  function setupWorkflows(svg, viewerApi, data) {
    const g = normalizeGraph(data.graph || {});
    const drawn = draw(svg, g.nodes, g.edges, null, {});
    viewerApi.reset(drawn.layout.width, drawn.layout.height);
    const panel = document.getElementById("graph-selection");
    const highlight = (keep, classes) => {
      svg.classList.toggle("focused", keep !== null);
      for (const [id, node] of drawn.nodes) {
        node.classList.remove("hl-self", "hl-up", "hl-down", "hl-mark");
        if (classes.has(id)) node.classList.add(classes.get(id));
      }
      svg.querySelectorAll("path.edge").forEach((p) => {
        p.classList.toggle("hl", keep !== null && keep.has(p.dataset.from) && keep.has(p.dataset.to));
      });
    };
    const select = (id) => {
      const up = reach(id, drawn.layout.adj.preds), down = reach(id, drawn.layout.adj.succs);
      const classes = new Map([...up].map((n) => [n, "hl-up"]).concat([...down].map((n) => [n, "hl-down"])));
      classes.set(id, "hl-self");
      highlight(new Set(classes.keys()), classes);
      panel.replaceChildren(`${id}: ${up.size} upstream, ${down.size} downstream. `,
        link(`/jobs/${encodeURIComponent(id)}`, "Open the job page"), " \u00b7 ");
      const clear = document.createElement("button");
      clear.type = "button"; clear.className = "link"; clear.textContent = "Clear";
      clear.addEventListener("click", () => { highlight(null, new Map()); panel.replaceChildren(); });
      panel.appendChild(clear);
    };
    for (const [id, node] of drawn.nodes) {
      node.addEventListener("click", () => select(id));
      node.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(id); } });
    }
    const marked = new Set(data.marked || []);
    if (data.focus && drawn.nodes.has(data.focus) && !marked.size) select(data.focus);
    else if (marked.size) highlight(marked, new Map([...marked].map((n) => [n, n === data.focus ? "hl-self" : "hl-mark"])));
  }

  // -- start -----------------------------------------------------------------------------------------------------

  function start() {
    const svg = document.getElementById("graph");
    const holder = document.getElementById("graph-data");
    if (!svg || !holder) return;
    const data = JSON.parse(holder.textContent);
    const api = viewer(svg, document.querySelector(".graph-tools"));
    if (data.run_id !== undefined) setupRun(svg, api, data);
    else setupWorkflows(svg, api, data);
  }

  window.AngoraGraph = { layout, normalizeGraph, runGraph };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
