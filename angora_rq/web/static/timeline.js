// The run page's timeline (a Gantt chart): one row per execution, queued -> started -> ended, as SVG.
// graph.js calls AngoraTimeline.render(element, run) with each fresh copy of the run (its executions included).
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const LABEL_W = 190, ROW_H = 22, BAR_H = 14, AXIS_H = 24, PAD = 8, MIN_W = 520, NICE = [1, 2, 2.5, 5];
  const WAITING = new Set(["held", "queued", "delayed"]);

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  /** A tick step of 1, 2, 2.5 or 5 times a power of ten that gives about `count` ticks over `span` seconds. */
  function tickStep(span, count) {
    const raw = Math.max(span, 1e-3) / count;
    const power = 10 ** Math.floor(Math.log10(raw));
    return power * (NICE.find((n) => n * power >= raw) || 10);
  }

  /** The axis label of `t` seconds from the run's start, ticks `step` apart: precise enough that no two ticks read
   * the same ("+5 ms", "+10 ms", "+15 ms", where seconds to two decimals gave "+0.01 s" three times). */
  function tickLabel(t, step) {
    if (step >= 0.1) return `+${window.Angora.duration(t).replace(/\.00 s$/, " s")}`;
    const stepMs = step * 1000;
    let digits = 0;
    while (digits < 3 && Math.abs(Math.round(stepMs * 10 ** digits) - stepMs * 10 ** digits) > 1e-6) digits += 1;
    return `+${(t * 1000).toFixed(digits)} ms`;
  }

  /** What one execution's row shows: when it waited, when it ran, and how it ended. */
  function spans(e, now) {
    const start = e.started || null;
    const end = e.ended || (start && !WAITING.has(e.status) ? now : null);
    return { queued: e.created, start, end: end || (start ? now : null), waitEnd: start || (WAITING.has(e.status) ? now : e.ended) };
  }

  function describe(e, s) {
    const d = window.Angora.duration;
    const waited = s.waitEnd && e.created ? d(s.waitEnd - e.created) : "\u2013";
    const ran = s.start && s.end ? d(s.end - s.start) : "not started";
    return `${e.job}, attempt ${e.attempt}: ${e.status.replace(/_/g, " ")}; waited ${waited}, ran ${ran}`;
  }

  /** Draw the run's executions into `holder` (replacing what was there). */
  function render(holder, run) {
    const executions = [...(run.executions || [])].filter((e) => e.created).sort((a, b) => a.created - b.created);
    holder.replaceChildren();
    if (!executions.length) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "No execution yet.";
      holder.appendChild(p);
      return;
    }
    const now = Date.now() / 1000;
    const rows = executions.map((e) => ({ e, s: spans(e, now) }));
    const t0 = Math.min(run.created || Infinity, ...rows.map((r) => r.s.queued));
    const t1 = Math.max(...rows.map((r) => Math.max(r.s.end || 0, r.s.waitEnd || 0, r.s.queued)), t0 + 1e-3);
    const width = Math.max(MIN_W, holder.clientWidth || 800);
    const plotW = width - LABEL_W - 2 * PAD;
    const x = (t) => LABEL_W + PAD + ((t - t0) / (t1 - t0)) * plotW;
    const height = AXIS_H + rows.length * ROW_H + PAD;
    const done = executions.filter((e) => !WAITING.has(e.status) && e.status !== "running").length;
    const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", class: "timeline-svg",
      "aria-label": `${executions.length} executions over ${window.Angora.duration(t1 - t0)}, ${done} finished` });
    // time axis: seconds from the start of the run
    const step = tickStep(t1 - t0, Math.max(2, Math.floor(plotW / 90)));
    const axis = el("g", { class: "axis" }, svg);
    for (let t = 0; t0 + t <= t1 + step * 1e-6; t += step) {
      el("line", { x1: x(t0 + t), x2: x(t0 + t), y1: AXIS_H - 4, y2: height - PAD, class: "grid-line" }, axis);
      el("text", { x: x(t0 + t), y: AXIS_H - 8, "text-anchor": "middle" }, axis).textContent = tickLabel(t, step);
    }
    rows.forEach(({ e, s }, i) => {
      const y = AXIS_H + i * ROW_H;
      const g = el("g", { class: `row st-${e.status}`, "data-execution": e.id }, svg);
      el("title", {}, g).textContent = describe(e, s);
      const label = el("text", { x: PAD, y: y + ROW_H / 2 + 4, class: "label" }, g);
      label.textContent = `${e.job.length > 22 ? `${e.job.slice(0, 21)}\u2026` : e.job}` + (e.attempt > 1 ? ` #${e.attempt}` : "");
      if (s.waitEnd && s.waitEnd > s.queued) {
        el("rect", { x: x(s.queued), y: y + (ROW_H - BAR_H) / 2, width: Math.max(1, x(s.waitEnd) - x(s.queued)),
          height: BAR_H, class: "wait" }, g);
      }
      if (s.start) {
        el("rect", { x: x(s.start), y: y + (ROW_H - BAR_H) / 2, width: Math.max(2, x(s.end) - x(s.start)),
          height: BAR_H, rx: 2, class: "run" }, g);
      }
    });
    holder.appendChild(svg);
  }

  window.AngoraTimeline = { render, tickStep, tickLabel };
})();
