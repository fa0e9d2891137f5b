// Angora's page behaviours: API actions with CSRF, the job filter, live output tails. No dependencies.
"use strict";

(function () {
  const LIVE = new Set(["held", "queued", "delayed", "running", "awaiting_approval"]);
  const POLL_MS = 1000;

  /** The session's CSRF token from the layout's <meta>. */
  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  /** POST JSON (or nothing) to the API with the CSRF header; resolve to {ok, status, body}. */
  async function postJSON(url, body) {
    const headers = { "X-CSRF-Token": csrfToken(), Accept: "application/json" };
    const init = { method: "POST", headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(url, init);
    let data = {};
    try { data = await resp.json(); } catch (e) { data = {}; }
    return { ok: resp.ok, status: resp.status, body: data };
  }

  /** KEY=VALUE lines as an object; throws on a line without '='. */
  function parseParams(text) {
    const params = {};
    text.split(/\r?\n/).forEach((raw, i) => {
      const line = raw.trim();
      if (!line || line.startsWith("#")) return;
      const eq = line.indexOf("=");
      if (eq < 1) throw new Error(`line ${i + 1}: expected KEY=VALUE, got "${line}"`);
      params[line.slice(0, eq).trim()] = line.slice(eq + 1);
    });
    return params;
  }

  /** The JSON body of an action form: named fields (params parsed), or undefined when it has none. */
  function formBody(form) {
    let body;
    for (const el of form.elements) {
      if (!el.name || el.type === "submit" || el.type === "button") continue;
      body = body || {};
      if (el.dataset.kind === "params") {
        const params = parseParams(el.value);
        if (Object.keys(params).length) body.params = params;
      } else if (el.value.trim()) {
        body[el.name] = el.value.trim();
      }
    }
    return body;
  }

  /** Where to go after a successful action: "reload", or a path with {field} taken from the reply. */
  function follow(then, reply) {
    if (!then) return;
    if (then === "reload") { window.location.reload(); return; }
    const path = then.replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent(reply[k] || ""));
    window.location.assign(path);
  }

  /** Text of an API error reply ({error, detail}). */
  function errorText(res) {
    const b = res.body || {};
    let text = b.error || `request failed (HTTP ${res.status})`;
    if (b.detail && typeof b.detail === "string") text += `: ${b.detail}`;
    return text;
  }

  /** Submit handler of every form.action[data-post]. */
  async function onAction(event) {
    const form = event.target.closest("form[data-post]");
    if (!form) return;
    event.preventDefault();
    const out = form.querySelector("output.result");
    const say = (text, cls) => { if (out) { out.textContent = text; out.className = `result ${cls}`; } };
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    let body;
    try { body = formBody(form); } catch (e) { say(e.message, "bad"); return; }
    const button = form.querySelector('[type="submit"]');
    if (button) button.disabled = true;
    say("Working…", "");
    try {
      const res = await postJSON(form.dataset.post, body);
      if (!res.ok) { say(errorText(res), "bad"); return; }
      say("Done.", "good");
      follow(form.dataset.then, res.body);
    } catch (e) {
      say(`The server did not answer: ${e.message}`, "bad");
    } finally {
      if (button) button.disabled = false;
    }
  }

  /** The dashboard's filter: hide rows whose text does not contain every word typed. */
  function setupFilter(input) {
    const rows = () => document.querySelectorAll(input.dataset.filter);
    const count = document.querySelector(input.dataset.count);
    const apply = () => {
      const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      let shown = 0;
      rows().forEach((row) => {
        const hay = `${row.textContent} ${row.dataset.status || ""}`.toLowerCase();
        const match = words.every((w) => hay.includes(w));
        row.hidden = !match;
        if (match) shown += 1;
      });
      if (count) count.textContent = `${shown} job${shown === 1 ? "" : "s"}`;
    };
    input.addEventListener("input", apply);
    apply();
  }

  /** A status badge element. */
  function badge(status) {
    const span = document.createElement("span");
    span.className = `badge st-${status || "unknown"}`;
    span.textContent = (status || "unknown").replace(/_/g, " ");
    return span;
  }

  /** Keep a <pre data-live> in step with its execution while it runs; reload the page when it ends. */
  function setupTail(pre) {
    if (!pre.dataset.running) return;
    const statusHolder = document.querySelector("[data-live-status]");
    const tick = async () => {
      let data;
      try {
        const resp = await fetch(pre.dataset.live, { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (!resp.ok) { setTimeout(tick, POLL_MS * 3); return; }
        data = await resp.json();
      } catch (e) { setTimeout(tick, POLL_MS * 3); return; }
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      if (pre.textContent !== data.tail) pre.textContent = data.tail || "";  // textContent: output is never HTML
      if (atBottom) pre.scrollTop = pre.scrollHeight;
      if (statusHolder) statusHolder.replaceChildren(badge(data.status));
      // Its end, or a decision on its approval (taken here or elsewhere), changes the page: load it again.
      const decided = pre.dataset.status === "awaiting_approval" && data.status !== "awaiting_approval";
      if (LIVE.has(data.status) && !decided) setTimeout(tick, POLL_MS);
      else setTimeout(() => window.location.reload(), 300);
    };
    pre.scrollTop = pre.scrollHeight;
    setTimeout(tick, POLL_MS);
  }

  window.Angora = { postJSON, badge, csrfToken, parseParams };

  document.addEventListener("submit", onAction);
  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("input[data-filter]").forEach(setupFilter);
    document.querySelectorAll("pre[data-live]").forEach(setupTail);
  });
})();
