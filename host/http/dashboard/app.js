// The jobhost dashboard: one page, routed by the URL's fragment, reading the host's JSON API. Live figures are
// polled every 2 seconds (one small request per page; no connection held open against [http] max_connections).
// Every value from the API is put into the page as text, never as markup.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "jobhost.token";
const main = document.getElementById("main");
const notice = document.getElementById("notice");
const live = document.getElementById("live");
const history = []; // overview samples: {t, jps, failed}
let timer = null;
let generation = 0; // bumps on every navigation, so that a late answer for an old page is dropped

// ---- helpers ----

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function show(message, kind) {
  notice.textContent = message;
  notice.className = "notice" + (kind === "info" ? " info" : "");
  notice.hidden = false;
  if (kind === "info") setTimeout(() => { if (notice.textContent === message) notice.hidden = true; }, 4000);
}

function hideNotice() { notice.hidden = true; }

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    live.classList.add("stale");
    throw new ApiError(0, "the host does not answer (" + e.message + ")");
  }
  live.classList.remove("stale");
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!res.ok) {
    const why = data && data.error ? data.error : res.status + " " + res.statusText;
    if (res.status === 401) {
      show("The host refused the request (401): " + why + ". Set the token with the Token button.");
      askToken();
    }
    throw new ApiError(res.status, why);
  }
  return data;
}

// Runs a mutation and reports its result; returns the answer or null.
async function act(what, method, path, body) {
  try {
    const r = await api(method, path, body);
    show(what + ": done", "info");
    return r;
  } catch (e) {
    if (e.status !== 401) show(what + " failed: " + e.message);
    return null;
  }
}

function fmtMs(v) {
  if (v === undefined || v === null) return "–";
  if (v >= 60000) return (v / 60000).toFixed(1) + " min";
  if (v >= 1000) return (v / 1000).toFixed(2) + " s";
  return Math.round(v * 10) / 10 + " ms";
}

function fmtTime(iso) { return !iso || iso === "-" ? "–" : iso.replace("T", " ").replace("Z", " UTC"); }

function badge(text) { return el("span", { class: "badge " + text }, text); }

function card(label, value, cls) {
  return el("div", { class: "card" }, el("div", { class: "label" }, label),
            el("div", { class: "value " + (cls || "") }, value));
}

function table(headers, rows, caption) {
  return el("div", { class: "table-wrap" },
    el("table", {},
      caption ? el("caption", { class: "muted" }, caption) : null,
      el("thead", {}, el("tr", {}, headers.map(h => el("th", { scope: "col", class: h.num ? "num" : null },
                                                      h.label || h)))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: headers.length, class: "muted" },
                                                            "Nothing here.")))));
}

function chart(title, samples, key, cls) {
  const w = 600, h = 140, pad = 24;
  const box = svg("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": title });
  const values = samples.map(s => s[key]);
  const max = Math.max(1, ...values);
  box.append(svg("line", { class: "axis", x1: pad, y1: h - pad, x2: w, y2: h - pad }));
  const label = svg("text", { x: 2, y: 12 });
  label.textContent = max.toFixed(max < 10 ? 1 : 0);
  box.append(label);
  if (samples.length > 1) {
    const t0 = samples[0].t, t1 = samples[samples.length - 1].t;
    const pts = samples.map(s => {
      const x = pad + (w - pad) * ((s.t - t0) / Math.max(1, t1 - t0));
      const y = (h - pad) - (h - pad - 16) * (s[key] / max);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    box.append(svg("polyline", { class: "line " + (cls || ""), points: pts.join(" ") }));
  }
  const now = values.length ? values[values.length - 1] : 0;
  return el("div", { class: "card chart" }, el("div", { class: "label" }, title + " (last 5 minutes)"),
            el("div", { class: "value" }, now.toFixed(now < 10 ? 1 : 0)), box);
}

// ---- pages ----

async function overview(gen) {
  const s = await api("GET", "/api/v1/status");
  if (gen !== generation) return;
  let failed = 0, succeeded = 0, dead = 0;
  for (const t of s.types) {
    failed += t.counts.failed; succeeded += t.counts.succeeded; dead += t.queue.dead;
  }
  const now = Date.now();
  const prev = history.length ? history[history.length - 1] : null;
  const failures = prev ? Math.max(0, (failed - prev.failedTotal) / ((now - prev.t) / 1000)) : 0;
  history.push({ t: now, jps: s.jobs_per_second, failures, failedTotal: failed });
  while (history.length && history[0].t < now - 300000) history.shift();
  const alerts = s.alerts.map(a => el("tr", {}, el("td", {}, badge(a.severity)), el("td", {}, a.rule),
                                       el("td", { class: "wrap" }, a.message), el("td", {}, fmtTime(a.since))));
  main.replaceChildren(
    el("h1", {}, "Overview"),
    el("div", { class: "cards" },
      card("Health", s.health, s.health),
      card("Workers busy", s.workers_busy + " / " + s.workers),
      card("Jobs per second", s.jobs_per_second.toFixed(1)),
      card("Succeeded", succeeded, "succeeded"),
      card("Failed attempts", failed, failed ? "failed" : ""),
      card("Dead letters", dead, dead ? "dead" : ""),
      card("Uptime", fmtMs(s.uptime_seconds * 1000))),
    el("div", { class: "charts" },
      chart("Jobs finished per second", history, "jps"),
      chart("Failed attempts per second", history, "failures", "bad")),
    el("h2", {}, "Alerts"),
    table(["Severity", "Rule", "Message", "Since"], alerts));
}

function typeRow(t) {
  const s = t.settings || {};
  const name = t.type;
  const toggle = el("button", {
    type: "button", onclick: async () => {
      if (await act((s.enabled ? "Disable " : "Enable ") + name, "POST",
                    "/api/v1/types/" + encodeURIComponent(name) + (s.enabled ? "/disable" : "/enable"))) refresh();
    }
  }, s.enabled ? "Disable" : "Enable");
  const run = el("button", {
    type: "button", disabled: !t.usable || !s.enabled, onclick: async () => {
      const r = await act("Run " + name, "POST", "/api/v1/types/" + encodeURIComponent(name) + "/run");
      if (r) show("Queued job " + r.id + " of " + name, "info");
    }
  }, "Run now");
  return el("tr", {},
    el("td", {}, el("a", { href: "#/types/" + encodeURIComponent(name) }, name)),
    el("td", {}, t.usable ? (s.enabled ? "enabled" : "disabled") : badge("unusable")),
    el("td", {}, s.cron || s.interval || "–"),
    el("td", {}, s.priority || "–"),
    el("td", { class: "num" }, s.concurrency === 0 ? "∞" : s.concurrency),
    el("td", { class: "num" }, t.queue.ready + t.queue.scheduled),
    el("td", { class: "num" }, t.queue.running),
    el("td", { class: "num" }, t.counts.succeeded),
    el("td", { class: "num" }, t.counts.failed),
    el("td", { class: "num" }, t.queue.dead),
    el("td", { class: "num" }, fmtMs(t.wait.p50_ms) + " / " + fmtMs(t.wait.p95_ms) + " / " + fmtMs(t.wait.p99_ms)),
    el("td", { class: "num" }, fmtMs(t.run.p50_ms) + " / " + fmtMs(t.run.p95_ms) + " / " + fmtMs(t.run.p99_ms)),
    el("td", {}, fmtTime(t.last_run)),
    el("td", { class: "wrap" }, t.last_error || t.error || ""),
    el("td", {}, toggle, " ", run));
}

async function types(gen) {
  const list = await api("GET", "/api/v1/types");
  if (gen !== generation) return;
  main.replaceChildren(el("h1", {}, "Job types"),
    table(["Type", "State", "Schedule", "Priority", { label: "Concurrency", num: true }, { label: "Queued", num: true },
           { label: "Running", num: true }, { label: "Succeeded", num: true }, { label: "Failed", num: true },
           { label: "Dead", num: true }, { label: "Wait p50/p95/p99", num: true },
           { label: "Run p50/p95/p99", num: true }, "Last run", "Last error", "Actions"],
          list.map(typeRow)));
}

async function oneType(gen, name) {
  const t = await api("GET", "/api/v1/types/" + encodeURIComponent(name));
  if (gen !== generation) return;
  const from = t.provenance || {};
  const rows = Object.entries(t.settings || {}).map(([k, v]) =>
    el("tr", {}, el("td", {}, k), el("td", { class: "wrap" }, String(v)), el("td", {}, from[k] || "plugin default")));
  main.replaceChildren(el("h1", {}, "Job type ", el("code", {}, t.type)),
    el("dl", { class: "kv" }, el("dt", {}, "Plugin file"), el("dd", {}, t.file),
       el("dt", {}, "Loaded"), el("dd", {}, fmtTime(t.loaded_at) + " (version " + t.generation + ")"),
       el("dt", {}, "Usable"), el("dd", {}, t.usable ? "yes" : "no: " + t.error)),
    el("h2", {}, "Settings and where each came from"),
    table(["Setting", "Value", "From"], rows),
    el("p", {}, el("a", { href: "#/jobs?type=" + encodeURIComponent(t.type) }, "Jobs of this type")));
}

function params() {
  const q = location.hash.split("?")[1] || "";
  return new URLSearchParams(q);
}

function jobRow(j, actions) {
  const last = j.errors.length ? j.errors[j.errors.length - 1].error : "";
  return el("tr", {},
    el("td", { class: "num" }, el("a", { href: "#/jobs/" + j.id }, j.id)),
    el("td", {}, j.type), el("td", {}, badge(j.state)), el("td", {}, j.priority),
    el("td", { class: "num" }, j.attempt + " / " + j.max_attempts),
    el("td", {}, fmtTime(j.created_at)), el("td", {}, fmtTime(j.finished_at)),
    el("td", { class: "wrap" }, j.dead_reason ? j.dead_reason + ": " + last : last),
    actions ? el("td", {}, actions(j)) : null);
}

async function typeOptions(selected) {
  const list = await api("GET", "/api/v1/types");
  return [el("option", { value: "" }, "all types"),
          ...list.map(t => el("option", { value: t.type, selected: t.type === selected }, t.type))];
}

async function jobs(gen) {
  const p = params();
  const q = new URLSearchParams({ limit: "50" });
  for (const k of ["type", "state", "before"]) if (p.get(k)) q.set(k, p.get(k));
  const [list, options] = await Promise.all([api("GET", "/api/v1/jobs?" + q), typeOptions(p.get("type"))]);
  if (gen !== generation) return;
  const typeSel = el("select", { id: "filter-type" }, options);
  const stateSel = el("select", { id: "filter-state" },
    ["", "scheduled", "ready", "reserved", "running", "done", "dead"].map(s =>
      el("option", { value: s, selected: s === (p.get("state") || "") }, s || "all states")));
  const go = (extra) => {
    const n = new URLSearchParams();
    if (typeSel.value) n.set("type", typeSel.value);
    if (stateSel.value) n.set("state", stateSel.value);
    for (const [k, v] of Object.entries(extra || {})) n.set(k, v);
    location.hash = "#/jobs" + (n.toString() ? "?" + n : "");
  };
  typeSel.addEventListener("change", () => go());
  stateSel.addEventListener("change", () => go());
  const older = el("button", { type: "button", disabled: list.length < 50,
                               onclick: () => go({ before: list[list.length - 1].id }) }, "Older");
  const newest = el("button", { type: "button", disabled: !p.get("before"), onclick: () => go() }, "Newest");
  main.replaceChildren(el("h1", {}, "Jobs"),
    el("div", { class: "filters" }, el("label", { for: "filter-type" }, "Type", typeSel),
       el("label", { for: "filter-state" }, "State", stateSel)),
    table([{ label: "Id", num: true }, "Type", "State", "Priority", { label: "Attempt", num: true }, "Created",
           "Finished", "Last error"], list.map(j => jobRow(j))),
    el("div", { class: "pager" }, newest, older,
       el("span", { class: "muted" }, "Newest first, 50 a page" + (p.get("before") ? ", below id " + p.get("before") : ""))));
}

async function oneJob(gen, id) {
  const [j, events] = await Promise.all([api("GET", "/api/v1/jobs/" + id),
                                          api("GET", "/api/v1/events?job=" + id + "&limit=200")]);
  if (gen !== generation) return;
  const kv = [["Type", j.type], ["State", badge(j.state)], ["Priority", j.priority],
              ["Attempt", j.attempt + " of " + j.max_attempts], ["Created", fmtTime(j.created_at)],
              ["Run at", fmtTime(j.run_at)], ["Started", fmtTime(j.started_at)], ["Finished", fmtTime(j.finished_at)]];
  if (j.unique_key) kv.push(["Unique key", j.unique_key]);
  if (j.dead_reason) kv.push(["Dead because", j.dead_reason]);
  if (j.lease_owner) kv.push(["Held by", j.lease_owner]);
  const parts = [el("h1", {}, "Job " + j.id),
    el("dl", { class: "kv" }, kv.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]))];
  if (j.progress) {
    const bar = el("span", {});
    bar.style.width = Math.max(0, Math.min(100, j.progress.percent)) + "%";
    parts.push(el("h2", {}, "Progress"),
      el("div", { class: "progress", role: "progressbar", "aria-valuenow": j.progress.percent, "aria-valuemin": 0,
                  "aria-valuemax": 100 }, bar),
      el("p", {}, j.progress.percent + "% " + (j.progress.message || "") + " (" + fmtTime(j.progress.at) + ")"));
  }
  if (j.result) {
    parts.push(el("h2", {}, "Result"), el("p", {}, j.result.message || "(no message)"));
    if (j.result.output !== undefined && j.result.output !== null)
      parts.push(el("pre", {}, JSON.stringify(j.result.output, null, 2)));
    if (j.result.truncated) parts.push(el("p", { class: "muted" }, j.result.truncated));
  }
  parts.push(el("h2", {}, "Payload"), el("pre", {}, JSON.stringify(j.payload, null, 2)));
  parts.push(el("h2", {}, "Attempts that failed"),
    table([{ label: "Attempt", num: true }, "At", "Error"],
          j.errors.map(e => el("tr", {}, el("td", { class: "num" }, e.attempt), el("td", {}, fmtTime(e.at)),
                                el("td", { class: "wrap" }, e.error)))));
  parts.push(el("h2", {}, "Events"), eventTable(events, "This host keeps its latest events only."));
  if (j.state === "dead") {
    parts.push(el("p", {}, el("button", { type: "button", class: "primary", onclick: async () => {
      if (await act("Retry job " + j.id, "POST", "/api/v1/dlq/" + j.id + "/retry")) refresh();
    } }, "Retry this job")));
  }
  main.replaceChildren(...parts);
}

function eventTable(events, caption) {
  return table([{ label: "Seq", num: true }, "At", "Kind", "Type", { label: "Job", num: true },
                { label: "Attempt", num: true }, { label: "Took (ms)", num: true }, "Error"],
    events.map(e => el("tr", {}, el("td", { class: "num" }, e.seq), el("td", {}, fmtTime(e.at)),
      el("td", {}, badge(e.kind)), el("td", {}, e.type),
      el("td", { class: "num" }, e.job ? el("a", { href: "#/jobs/" + e.job }, e.job) : ""),
      el("td", { class: "num" }, e.attempt || ""), el("td", { class: "num" }, e.duration_ms !== undefined ? e.duration_ms
                                   : e.wait_ms !== undefined ? "waited " + e.wait_ms : ""),
      el("td", { class: "wrap" }, e.error || ""))), caption);
}

async function dlq(gen) {
  const p = params();
  const type = p.get("type") || "";
  const [list, options] = await Promise.all([
    api("GET", "/api/v1/dlq?limit=200" + (type ? "&type=" + encodeURIComponent(type) : "")), typeOptions(type)]);
  if (gen !== generation) return;
  const typeSel = el("select", { id: "dlq-type" }, options);
  typeSel.addEventListener("change", () => {
    location.hash = "#/dlq" + (typeSel.value ? "?type=" + encodeURIComponent(typeSel.value) : "");
  });
  const scope = type ? "every dead letter of " + type : "every dead letter";
  const bulk = (verb) => el("button", { type: "button", class: verb === "purge" ? "danger" : null,
    disabled: list.length === 0, onclick: async () => {
      if (!confirm((verb === "retry" ? "Retry " : "Delete ") + scope + " (" + list.length + " shown)?")) return;
      const body = type ? { all: true, type } : { all: true };
      if (await act((verb === "retry" ? "Retry " : "Purge ") + scope, "POST", "/api/v1/dlq/" + verb, body)) refresh();
    } }, (verb === "retry" ? "Retry all" : "Purge all") + (type ? " of " + type : ""));
  const actions = (j) => [
    el("button", { type: "button", "aria-label": "Retry job " + j.id, onclick: async () => {
      if (await act("Retry job " + j.id, "POST", "/api/v1/dlq/" + j.id + "/retry")) refresh();
    } }, "Retry"), " ",
    el("button", { type: "button", class: "danger", "aria-label": "Purge job " + j.id, onclick: async () => {
      if (!confirm("Delete dead letter " + j.id + " for good?")) return;
      if (await act("Purge job " + j.id, "DELETE", "/api/v1/dlq/" + j.id)) refresh();
    } }, "Purge")];
  main.replaceChildren(el("h1", {}, "Dead letters"),
    el("div", { class: "filters" }, el("label", { for: "dlq-type" }, "Type", typeSel), bulk("retry"), bulk("purge")),
    table([{ label: "Id", num: true }, "Type", "State", "Priority", { label: "Attempt", num: true }, "Created",
           "Finished", "Why", "Actions"], list.map(j => jobRow(j, actions))));
}

async function events(gen) {
  const p = params();
  const q = new URLSearchParams({ limit: "200" });
  if (p.get("type")) q.set("type", p.get("type"));
  if (p.get("kind")) q.set("kind", p.get("kind"));
  const list = await api("GET", "/api/v1/events?" + q);
  if (gen !== generation) return;
  list.reverse();
  main.replaceChildren(el("h1", {}, "Events"),
    el("p", { class: "muted" }, "The newest first, refreshed every 2 seconds."
       + (p.get("type") ? " Type " + p.get("type") + "." : "")),
    eventTable(list));
}

// ---- routing ----

const routes = [
  [/^#?\/?$/, "overview", overview],
  [/^#\/types$/, "types", types],
  [/^#\/types\/(.+)$/, "types", (g, m) => oneType(g, decodeURIComponent(m[1]))],
  [/^#\/jobs$/, "jobs", jobs],
  [/^#\/jobs\/(\d+)$/, "jobs", (g, m) => oneJob(g, m[1])],
  [/^#\/dlq$/, "dlq", dlq],
  [/^#\/events$/, "events", events],
];
const livePages = new Set(["overview", "types", "events"]);

function current() {
  const path = location.hash.split("?")[0];
  for (const [re, page, fn] of routes) {
    const m = path.match(re);
    if (m) return { page, run: (g) => fn(g, m) };
  }
  return { page: "", run: async () => main.replaceChildren(el("h1", {}, "Not found"),
                                                           el("p", {}, "No page " + location.hash)) };
}

async function refresh() {
  const gen = generation;
  const r = current();
  try {
    await r.run(gen);
  } catch (e) {
    if (gen !== generation) return;
    if (e.status === 401) return;
    main.replaceChildren(el("h1", {}, "Cannot load this page"), el("p", { class: "wrap" }, e.message));
  }
}

function navigate() {
  generation++;
  hideNotice();
  const r = current();
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === r.page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  clearInterval(timer);
  if (livePages.has(r.page)) timer = setInterval(refresh, POLL_MS);
  live.hidden = !livePages.has(r.page);
  refresh().then(() => main.focus({ preventScroll: true }));
}

// ---- token ----

const dialog = document.getElementById("token-dialog");
const input = document.getElementById("token-input");

function askToken() {
  if (dialog.open) return;
  input.value = token();
  dialog.showModal();
  input.focus();
}

document.getElementById("token-button").addEventListener("click", askToken);
document.getElementById("token-cancel").addEventListener("click", () => dialog.close());
document.getElementById("token-clear").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  dialog.close();
  show("The token is forgotten.", "info");
});
document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  dialog.close();
  hideNotice();
  refresh();
});

window.addEventListener("hashchange", navigate);
navigate();
