// The job page's history chart, plain SVG: one bar per execution (height = duration, colour = outcome, oldest
// left) and the success rate over the last ten finished ones as a line. Data: <script type="application/json">
// named by the container's data-chart; drawn again after each live update of the page.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const H = 150, AXIS_W = 58, RATE_W = 44, PAD = 10, GAP = 2, WINDOW = 10, MAX_SLOT = 28;
  const GOOD = new Set(["succeeded", "skipped"]), BAD = new Set(["failed", "killed", "upstream_failed"]);

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  /** Success rate (0..1) over the last WINDOW finished executions at each point, or null before any finished. */
  function rollingRate(items) {
    const seen = [];
    return items.map((e) => {
      if (GOOD.has(e.status) || BAD.has(e.status)) seen.push(GOOD.has(e.status) ? 1 : 0);
      const last = seen.slice(-WINDOW);
      return last.length ? last.reduce((a, b) => a + b, 0) / last.length : null;
    });
  }

  function draw(holder) {
    const data = document.getElementById(holder.dataset.chart);
    if (!data) return;
    const items = JSON.parse(data.textContent);
    const d = window.Angora.duration;
    const width = Math.max(360, holder.clientWidth || 700);
    const plotW = width - AXIS_W - RATE_W - 2 * PAD, plotH = H - 2 * PAD;
    const longest = Math.max(1e-3, ...items.map((e) => e.duration || 0));
    const slot = Math.min(MAX_SLOT, plotW / Math.max(items.length, 1));  // a few executions: narrow bars
    const rate = rollingRate(items);
    const good = items.filter((e) => GOOD.has(e.status)).length, bad = items.filter((e) => BAD.has(e.status)).length;
    const svg = el("svg", { width, height: H, viewBox: `0 0 ${width} ${H}`, role: "img", class: "chart-svg",
      "aria-label": `${items.length} executions: ${good} succeeded, ${bad} failed; longest ${d(longest)}` +
        (rate[rate.length - 1] === null ? "" : `; success rate of the last ${WINDOW}: ` +
          `${Math.round(rate[rate.length - 1] * 100)} %`) });
    const y = (s) => PAD + plotH - (s / longest) * plotH;
    const axis = el("g", { class: "axis" }, svg);
    for (const f of [0, 0.5, 1]) {
      el("line", { x1: AXIS_W, x2: width - RATE_W, y1: y(longest * f), y2: y(longest * f), class: "grid-line" }, axis);
      el("text", { x: AXIS_W - 6, y: y(longest * f) + 4, "text-anchor": "end" }, axis).textContent = d(longest * f);
      el("text", { x: width - RATE_W + 6, y: PAD + plotH - f * plotH + 4 }, axis).textContent = `${f * 100} %`;
    }
    items.forEach((e, i) => {
      const h = e.duration ? Math.max(1, (e.duration / longest) * plotH) : 3;
      const bar = el("rect", { x: AXIS_W + PAD + i * slot, y: PAD + plotH - h, width: Math.max(1, slot - GAP), height: h,
        class: `bar st-${e.status}`, "data-execution": e.id }, svg);
      el("title", {}, bar).textContent = `attempt ${e.attempt}: ${e.status.replace(/_/g, " ")}, ${d(e.duration)}` +
        (e.created ? `, ${new Date(e.created * 1000).toISOString().replace("T", " ").slice(0, 19)} UTC` : "");
    });
    const points = rate.map((r, i) => (r === null ? null : [AXIS_W + PAD + (i + 0.5) * slot, PAD + plotH - r * plotH]))
      .filter(Boolean);
    if (points.length) el("polyline", { points: points.map((p) => p.join(",")).join(" "), class: "rate" }, svg);
    holder.replaceChildren(svg);
  }

  function drawAll() {
    document.querySelectorAll("[data-chart]").forEach(draw);
  }

  window.AngoraChart = { draw, rollingRate };
  document.addEventListener("angora:updated", drawAll);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", drawAll);
  else drawAll();
})();
