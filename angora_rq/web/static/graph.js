// Workflow graphs as SVG: a small layered (left-to-right) layout, zoom and pan, live run statuses.
// No dependencies. Pages embed their data in <script type="application/json" id="graph-data">.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const NODE_W = 156, NODE_H = 26, WAYPOINT_H = 4, GAP_X = 54, GAP_Y = 10, PAD = 20, MAX_LABEL = 20;
  const POLL_MS = 1000, MIN_SCALE = 0.05, MAX_SCALE = 4, READABLE = 0.6, FIT_MAX = 1.25, MIN_HEIGHT = 220;
  const GLYPH = {
    succeeded: "\u2713", skipped: "\u21b7", failed: "\u2717", killed: "\u2717", upstream_failed: "\u2298",
    running: "\u25b6", queued: "\u2026", held: "\u2016", delayed: "\u231b", replaying: "\u21bb",
    pending: "\u25cb", not_triggered: "\u2013", canceled: "\u2298", awaiting_approval: "\u270b", rejected: "\u2717",
  };

  // -- layout (pure) -------------------------------------------------------------------------------------
  // A layered (Sugiyama-style) layout: break cycles, put each node one layer right of its furthest parent, give
  // every edge longer than one layer a chain of invisible waypoints so it runs between the boxes, order each layer
  // to cut crossings, then stack each layer without overlaps. On a DAG every edge goes left to right.

  /** Neighbour lists of a graph: {preds, succs} as Map id -> array of ids (one link per pair, no self-loops). */
  function adjacency(ids, edges) {
    const preds = new Map(ids.map((id) => [id, []]));
    const succs = new Map(ids.map((id) => [id, []]));
    const seen = new Set();
    for (const [a, b] of edges) {
      const key = JSON.stringify([a, b]);
      if (a === b || !preds.has(a) || !preds.has(b) || seen.has(key)) continue;
      seen.add(key);
      succs.get(a).push(b);
      preds.get(b).push(a);
    }
    return { preds, succs };
  }

  /** Edges that close a cycle (found by an iterative depth-first search), as a Set of JSON [from, to]. */
  function backEdges(ids, adj) {
    const state = new Map();  // undefined: unseen, 1: on the current path, 2: done
    const back = new Set();
    const roots = ids.filter((id) => !adj.preds.get(id).length).concat(ids);
    for (const root of roots) {
      if (state.has(root)) continue;
      state.set(root, 1);
      const stack = [[root, 0]];
      while (stack.length) {
        const top = stack[stack.length - 1];
        const next = adj.succs.get(top[0])[top[1]];
        top[1] += 1;
        if (next === undefined) { state.set(top[0], 2); stack.pop(); continue; }
        if (state.get(next) === 1) back.add(JSON.stringify([top[0], next]));
        else if (!state.has(next)) { state.set(next, 1); stack.push([next, 0]); }
      }
    }
    return back;
  }

  /** The acyclic links: every edge, back edges turned around. */
  function acyclic(ids, adj, back) {
    const links = new Map();  // a two-job cycle turned around would repeat its other edge: keep one
    for (const a of ids) {
      for (const b of adj.succs.get(a)) {
        const link = back.has(JSON.stringify([a, b])) ? [b, a] : [a, b];
        links.set(JSON.stringify(link), link);
      }
    }
    return [...links.values()];
  }

  /** Layer of each node: 0 for sources, else one more than its furthest parent (longest path, Kahn's order). */
  function assignLayers(ids, links) {
    const preds = new Map(ids.map((id) => [id, []]));
    const succs = new Map(ids.map((id) => [id, []]));
    for (const [a, b] of links) { succs.get(a).push(b); preds.get(b).push(a); }
    const indeg = new Map(ids.map((id) => [id, preds.get(id).length]));
    const layer = new Map();
    const queue = ids.filter((id) => indeg.get(id) === 0);
    for (let i = 0; i < queue.length; i += 1) {
      const n = queue[i];
      if (!layer.has(n)) layer.set(n, 0);
      for (const s of succs.get(n)) {
        layer.set(s, Math.max(layer.get(s) || 0, layer.get(n) + 1));
        indeg.set(s, indeg.get(s) - 1);
        if (indeg.get(s) === 0) queue.push(s);
      }
    }
    return layer;
  }

  /** Split links longer than one layer with waypoints; returns the layered graph (real nodes and waypoints). */
  function withWaypoints(ids, links, layer) {
    const preds = new Map(ids.map((id) => [id, []]));
    const succs = new Map(ids.map((id) => [id, []]));
    const chains = new Map();  // JSON [from, to] of an acyclic link -> its waypoint ids, in order
    let n = 0;
    for (const [a, b] of links) {
      const chain = [];
      let prev = a;
      for (let l = layer.get(a) + 1; l < layer.get(b); l += 1) {
        const w = `\u0000w${n}`;
        n += 1;
        layer.set(w, l);
        preds.set(w, [prev]);
        succs.set(w, []);
        succs.get(prev).push(w);
        chain.push(w);
        prev = w;
      }
      succs.get(prev).push(b);
      preds.get(b).push(prev);
      chains.set(JSON.stringify([a, b]), chain);
    }
    return { preds, succs, chains, all: [...preds.keys()] };
  }

  /** Order nodes inside each layer by the mean position of their neighbours (sweeps down and up). */
  function orderLayers(all, layered, layer) {
    const count = all.length ? Math.max(...all.map((id) => layer.get(id))) + 1 : 0;
    const rows = Array.from({ length: count }, () => []);
    all.forEach((id) => rows[layer.get(id)].push(id));
    const index = new Map();
    rows.forEach((row) => row.forEach((id, i) => index.set(id, i)));
    const sweep = (range, neighbours) => {
      for (const i of range) {
        const key = new Map(rows[i].map((id) => {
          const ns = neighbours.get(id);
          return [id, ns.length ? ns.reduce((s, x) => s + index.get(x), 0) / ns.length : index.get(id)];
        }));
        rows[i].sort((a, b) => key.get(a) - key.get(b) || index.get(a) - index.get(b));
        rows[i].forEach((id, k) => index.set(id, k));
      }
    };
    const down = [...Array(count).keys()].slice(1);
    const up = [...Array(count).keys()].reverse().slice(1);
    for (let pass = 0; pass < 4; pass += 1) { sweep(down, layered.preds); sweep(up, layered.succs); }
    return rows;
  }

  /** Coordinates: each box as near as it can be to its parents' mean height, never overlapping in its layer. */
  function place(rows, layered, isWaypoint) {
    const pos = new Map();
    const height = (id) => (isWaypoint(id) ? WAYPOINT_H : NODE_H);
    const centre = (id) => pos.get(id).y + height(id) / 2;
    rows.forEach((row, li) => {
      const want = row.map((id) => {
        const ps = layered.preds.get(id).filter((p) => pos.has(p));
        return ps.length ? ps.reduce((s, p) => s + centre(p), 0) / ps.length - height(id) / 2 : null;
      });
      const ys = [];
      row.forEach((id, k) => {
        const floor = k ? ys[k - 1] + height(row[k - 1]) + GAP_Y : 0;
        ys.push(want[k] === null ? floor : k ? Math.max(want[k], floor) : want[k]);
      });
      // Stacking pushed some boxes down: move the whole layer up by their mean displacement (order is kept).
      const pushed = row.map((id, k) => (want[k] === null ? null : ys[k] - want[k])).filter((d) => d !== null);
      const shift = pushed.length ? -pushed.reduce((s, d) => s + d, 0) / pushed.length : 0;
      row.forEach((id, k) => pos.set(id, { x: li * (NODE_W + GAP_X), y: ys[k] + shift, w: NODE_W, h: height(id) }));
    });
    const top = Math.min(0, ...[...pos.values()].map((p) => p.y));
    pos.forEach((p) => { p.y -= top; });
    const width = Math.max(0, rows.length * (NODE_W + GAP_X) - GAP_X);
    const bottom = Math.max(NODE_H, ...[...pos.values()].map((p) => p.y + p.h));
    return { pos, width, height: bottom };
  }

  /** Full layout of nodes [{id}] and edges [[from, to]]: {adj, pos, routes, width, height}. */
  function layout(nodes, edges) {
    const ids = nodes.map((n) => n.id);
    const adj = adjacency(ids, edges);
    const back = backEdges(ids, adj);
    const links = acyclic(ids, adj, back);
    const layer = assignLayers(ids, links);
    const layered = withWaypoints(ids, links, layer);
    const real = new Set(ids);
    const rows = orderLayers(layered.all, layered, layer);
    const placed = place(rows, layered, (id) => !real.has(id));
    // Each edge's route: the boxes it passes, from its source to its target (back edges run right to left).
    const routes = new Map();
    for (const a of ids) {
      for (const b of adj.succs.get(a)) {
        const key = JSON.stringify([a, b]);
        const reversed = back.has(key);
        const chain = layered.chains.get(reversed ? JSON.stringify([b, a]) : key);
        const via = (reversed ? [...chain].reverse() : chain).map((w) => placed.pos.get(w));
        routes.set(key, { via, back: reversed });
      }
    }
    for (const id of layered.all) if (!real.has(id)) placed.pos.delete(id);
    return { adj, routes, ...placed };
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

  /** A curve from (x1, y1) to (x2, y2) that leaves and arrives horizontally (x moves one way only). */
  function curve(x1, y1, x2, y2) {
    const dx = (x2 - x1) / 2;
    return `C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
  }

  /** An edge's path: from the source's side, along its waypoints (straight through their columns), to the target. */
  function edgePath(a, b, route) {
    const back = route && route.back;
    const mid = (p) => p.y + p.h / 2;
    let x = back ? a.x : a.x + NODE_W, y = mid(a);
    const parts = [`M${x},${y}`];
    for (const w of (route ? route.via : [])) {
      const [enter, leave] = back ? [w.x + NODE_W, w.x] : [w.x, w.x + NODE_W];
      parts.push(curve(x, y, enter, mid(w)), `L${leave},${mid(w)}`);
      x = leave; y = mid(w);
    }
    parts.push(curve(x, y, back ? b.x + NODE_W : b.x, mid(b)));
    return parts.join(" ");
  }

  /** Draw the graph into the SVG; returns {nodes: Map id -> <g>, layout}. */
  function draw(svg, nodes, edges, options) {
    svg.querySelectorAll("g.viewport, defs").forEach((g) => g.remove());
    const lay = layout(nodes, edges);
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
      const route = lay.routes.get(JSON.stringify([a, b]));
      const cls = `edge${route.back ? " back" : ""}${failure ? " failure" : ""}`;
      const path = el("path", { d: edgePath(lay.pos.get(a), lay.pos.get(b), route), class: cls,
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
    return { nodes: ids.map((id) => ({ id, kind: "job", gate: gates.has(id) })), edges };
  }

  /** Nothing of the run is in flight any more (runs.summarize: active <= 0). */
  function runFinished(run) {
    return run.active <= 0 && !["queued", "running", "canceling"].includes(run.status);
  }

  function fmtTime(ts) {
    return ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) : "\u2013";
  }

  const fmtDuration = (s) => window.Angora.duration(s);

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
      const cells = [String(e.attempt), timeEl(e.started || e.created), fmtDuration(e.duration),
        e.exit_code === null || e.exit_code === undefined ? "" : String(e.exit_code)];
      cells.forEach((v, i) => { const c = row.insertCell(); c.append(v); if (i !== 1) c.className = "num"; });
    }
    window.Angora.relativeTimes(table);
  }

  /** A <time> as the server's `time` macro writes it (angora.js shows it relative). */
  function timeEl(ts) {
    if (!ts) return "\u2013";
    const t = document.createElement("time");
    t.setAttribute("datetime", new Date(ts * 1000).toISOString());
    t.textContent = fmtTime(ts);
    return t;
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
        drawn = draw(svg, g.nodes, g.edges, { href: (n) => `/jobs/${encodeURIComponent(n.id)}` });
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
      const timeline = document.getElementById("timeline");
      if (timeline && window.AngoraTimeline) window.AngoraTimeline.render(timeline, run);
    };
    render(initial);
    // Every second while the run is in flight; every few seconds once it has ended (a retry may reopen it).
    let etag = "", last = initial;
    const poll = async () => {
      const live = window.Angora.live;
      if (live.on && !document.hidden) {
        try {
          const headers = { Accept: "application/json" };
          if (etag) headers["If-None-Match"] = etag;
          const resp = await fetch(table.dataset.poll, { headers, credentials: "same-origin", cache: "no-store" });
          if (resp.status === 200) {
            etag = resp.headers.get("ETag") || "";
            last = await resp.json();
            render(last);
          } else if (resp.status === 304 && !runFinished(last)) {
            render(last);  // running bars of the timeline grow with the clock
          }
        } catch (e) { /* the server restarted or the network blinked: try again */ }
      }
      setTimeout(poll, runFinished(last) ? POLL_MS * 5 : POLL_MS);
    };
    setTimeout(poll, POLL_MS);
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
    const drawn = draw(svg, g.nodes, g.edges, {});
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

  window.AngoraGraph = { layout, draw, normalizeGraph, runGraph };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
