// Angora's page behaviours: API actions with CSRF, the job filter, live output tails, live pages (their
// [data-region] parts polled with ETags), relative times, keyboard shortcuts. No dependencies.
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
    document.addEventListener("angora:updated", apply);
    apply();
  }

  /** A status badge element. */
  function badge(status) {
    const span = document.createElement("span");
    span.className = `badge st-${status || "unknown"}`;
    span.textContent = (status || "unknown").replace(/_/g, " ");
    return span;
  }

  /** Keep a <pre data-live> in step with its execution while it runs; refresh the page's live parts when it ends. */
  function setupTail(pre) {
    if (!pre.dataset.running || pre.dataset.tailing) return;
    pre.dataset.tailing = "yes";
    const statusHolder = document.querySelector("[data-live-status]");
    const tick = async () => {
      if (!pre.isConnected) return;  // a live update replaced it (a newer execution): its own poller took over
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
      if (LIVE.has(data.status)) { setTimeout(tick, POLL_MS); return; }
      pre.dataset.running = "";
      live.refresh();
    };
    pre.scrollTop = pre.scrollHeight;
    setTimeout(tick, POLL_MS);
  }

  // -- live pages: the page's [data-region] parts, fetched again and swapped when they change ------------------

  const FAST_MS = 2000, SLOW_MS = 6000, RETRY_MS = 10000;
  const MOVING = ".badge:is(.st-running, .st-queued, .st-held, .st-delayed, .st-canceling, .st-replaying)";

  /** Poll the page's own URL (ETag: unchanged pages cost a 304) and replace each region whose HTML changed. */
  const live = {
    on: false, timer: 0, etag: "", busy: false, again: false, button: null,
    start() {
      this.button = document.getElementById("live");
      if (!document.body.hasAttribute("data-live-page") || !this.button) return;
      this.button.hidden = false;
      this.button.addEventListener("click", () => this.toggle());
      document.addEventListener("visibilitychange", () => { if (!document.hidden && this.on) this.refresh(); });
      this.on = true;
      this.show("on");
      this.schedule();
    },
    toggle() {
      this.on = !this.on;
      this.show(this.on ? "on" : "paused");
      if (this.on) this.refresh(); else clearTimeout(this.timer);
    },
    schedule(ms) {
      clearTimeout(this.timer);
      if (!this.on) return;
      const moving = document.querySelector(`[data-region] :is(${MOVING}), [data-region]:is(${MOVING})`);
      this.timer = setTimeout(() => this.refresh(), ms || (moving ? FAST_MS : SLOW_MS));
    },
    async refresh() {
      if (this.busy) { this.again = true; return; }  // asked during a poll: poll again right after it
      if (!this.on) return;
      if (document.hidden) { this.schedule(SLOW_MS); return; }  // no polling from a tab nobody looks at
      this.busy = true;
      try {
        const headers = { "X-Angora-Live": "1", Accept: "text/html" };
        if (this.etag) headers["If-None-Match"] = this.etag;
        const resp = await fetch(window.location.href, { headers, credentials: "same-origin", cache: "no-store" });
        if (resp.redirected || resp.status === 401) { this.on = false; this.show("signed-out"); return; }
        if (resp.status === 200) {
          this.etag = resp.headers.get("ETag") || "";
          swapRegions(new DOMParser().parseFromString(await resp.text(), "text/html"));
        } else if (resp.status !== 304) { this.show("offline"); this.schedule(RETRY_MS); return; }
        this.show("on");
        this.schedule();
      } catch (e) {
        this.show("offline");
        this.schedule(RETRY_MS);
      } finally {
        this.busy = false;
        if (this.again) { this.again = false; this.schedule(50); }
      }
    },
    show(state) {
      const b = this.button;
      if (!b) return;
      const words = { on: "Live", paused: "Paused", offline: "Reconnecting\u2026", "signed-out": "Signed out" };
      b.dataset.state = state;
      b.setAttribute("aria-pressed", state === "paused" ? "false" : "true");
      b.querySelector(".live-text").textContent = words[state];
      const at = new Date().toLocaleTimeString();
      b.title = state === "on" ? `Live updates on (checked ${at}): click to pause`
        : state === "paused" ? "Live updates paused: click to resume" : `${words[state]} (${at})`;
    },
  };

  // Each region as the server last sent it: scripts change the live copies (relative times, output tails), so
  // compare with what the server said. A region with data-key changes only when its key does.
  const served = new Map();
  const signature = (region) => (region.dataset.key !== undefined ? `key ${region.dataset.key}` : region.innerHTML);

  function rememberRegions() {
    document.querySelectorAll("[data-region][id]").forEach((r) => served.set(r.id, signature(r)));
  }

  /** Replace each [data-region] (by id) that the server now sends differently; then wire what arrived. */
  function swapRegions(doc) {
    const changed = [];
    document.querySelectorAll("[data-region][id]").forEach((old) => {
      const fresh = doc.getElementById(old.id);
      if (!fresh || signature(fresh) === served.get(old.id)) return;
      served.set(old.id, signature(fresh));
      const keepFocus = old.contains(document.activeElement) ? focusPath(document.activeElement, old) : null;
      const node = document.importNode(fresh, true);
      old.replaceWith(node);
      if (keepFocus) restoreFocus(node, keepFocus);
      changed.push(node);
    });
    if (changed.length) {
      wire(document);
      document.dispatchEvent(new CustomEvent("angora:updated", { detail: { regions: changed } }));
    }
  }

  /** A way back to a focused element inside a region after it is replaced: its id, or its href/name. */
  function focusPath(el, region) {
    return { id: el.id, href: el.getAttribute("href"), name: el.getAttribute("name"), within: region.id };
  }

  function restoreFocus(region, path) {
    let el = path.id ? document.getElementById(path.id) : null;
    if (!el && path.href) el = region.querySelector(`[href="${CSS.escape(path.href)}"]`);
    if (!el && path.name) el = region.querySelector(`[name="${CSS.escape(path.name)}"]`);
    if (el) el.focus({ preventScroll: true });
  }

  // -- times: relative, with the absolute time on hover ---------------------------------------------------------

  /** Seconds as "3.2 ms", "120 ms", "1.25 s", "12.3 s", "4 m 05 s" or "2 h 03 m" (as the server's `duration`
   * filter: a trivial command takes a few milliseconds, which seconds to two decimals showed as "0.00 s"). */
  function duration(s) {
    if (s === null || s === undefined || Number.isNaN(s)) return "\u2013";
    if (s <= 0) return "0 s";
    if (s < 0.01) return `${(s * 1000).toFixed(1)} ms`;
    const ms = Math.round(s * 1000);
    if (ms < 1000) return `${ms} ms`;
    if (s < 10) return `${s.toFixed(2)} s`;
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} m ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} m`;
  }

  /** "12 s ago", "5 min ago", "in 3 h": how far a time is from now. */
  function relative(ms, now) {
    const diff = Math.round((ms - now) / 1000), s = Math.abs(diff);
    let text;
    if (s < 5) return "just now";
    if (s < 60) text = `${s} s`;
    else if (s < 3600) text = `${Math.floor(s / 60)} min`;
    else if (s < 86400 * 2) text = `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
    else text = `${Math.floor(s / 86400)} days`;
    return diff < 0 ? `${text} ago` : `in ${text}`;
  }

  /** Every <time datetime> as relative text; its title keeps the absolute time (UTC). */
  function relativeTimes(root) {
    const now = Date.now();
    (root || document).querySelectorAll("time[datetime]").forEach((t) => {
      const ms = Date.parse(t.getAttribute("datetime"));
      if (Number.isNaN(ms)) return;
      if (!t.dataset.absolute) t.dataset.absolute = t.textContent.trim();
      t.title = `${new Date(ms).toISOString().replace("T", " ").slice(0, 19)} UTC`;
      t.textContent = relative(ms, now);
    });
  }

  // -- keyboard ----------------------------------------------------------------------------------------------------

  const GO = { d: "/", r: "/runs", w: "/workflows", s: "/schedules", c: "/config", n: "/messages/new" };

  /** Shortcuts: g then d/r/w/s/c/n to go somewhere, / to search, j/k to move through a list, ? for help. */
  function setupKeys() {
    let pendingG = 0;
    document.addEventListener("keydown", (e) => {
      if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
      const t = e.target;
      if (t.closest("input, textarea, select, [contenteditable]")) {
        if (e.key === "Escape") t.blur();
        return;
      }
      if (pendingG && GO[e.key]) { e.preventDefault(); window.location.assign(GO[e.key]); return; }
      pendingG = 0;
      if (e.key === "g") { pendingG = setTimeout(() => { pendingG = 0; }, 1500); return; }
      if (e.key === "/") {
        const search = document.querySelector("main input[type=search], main input[list], main input:not([type=hidden])");
        if (search) { e.preventDefault(); search.focus(); }
      } else if (e.key === "j" || e.key === "k") {
        e.preventDefault();
        moveInList(e.key === "j" ? 1 : -1);
      } else if (e.key === "?") {
        const help = document.getElementById("keys-help");
        if (help && typeof help.showModal === "function") help.showModal();
      }
    });
    const help = document.getElementById("keys-help");
    if (help) help.addEventListener("click", (e) => { if (e.target.closest("[data-close]") || e.target === help) help.close(); });
  }

  /** Focus the first link of the next (or previous) visible row of the page's main table. */
  function moveInList(step) {
    const rows = [...document.querySelectorAll("main table.grid tbody tr")].filter((r) => !r.hidden && r.querySelector("a"));
    if (!rows.length) return;
    const at = rows.findIndex((r) => r.contains(document.activeElement));
    const next = rows[Math.max(0, Math.min(rows.length - 1, at < 0 ? 0 : at + step))];
    next.querySelector("a").focus();
    next.scrollIntoView({ block: "nearest" });
  }

  /** Behaviours of elements that may have just arrived (first load, or a live update). */
  function wire(root) {
    root.querySelectorAll("pre[data-live]").forEach(setupTail);
    relativeTimes(root);
  }

  window.Angora = { postJSON, badge, csrfToken, parseParams, relative, relativeTimes, duration, live };

  document.addEventListener("submit", onAction);
  document.addEventListener("DOMContentLoaded", () => {
    rememberRegions();
    document.querySelectorAll("input[data-filter]").forEach(setupFilter);
    wire(document);
    setInterval(() => relativeTimes(document), 15000);
    setupKeys();
    live.start();
  });
})();
