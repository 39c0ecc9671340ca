// The `chimera serve` dashboard: reads the JSON API of the daemon that served it (docs/serve-api.md)
// and redraws every few seconds. Plain JavaScript, no build step, nothing loaded from elsewhere.
// Every value shown is put in as text (never as HTML).
"use strict";

const REFRESH_MS = 3000;
const NODE_W = 170;
const NODE_H = 36;
const GAP_X = 56;
const GAP_Y = 12;
const PAD = 8;

// `?token=T` on the page's address is sent as `Authorization: Bearer T` to the API.
const token = new URLSearchParams(location.search).get("token");
const headers = token ? { Authorization: "Bearer " + token } : {};

async function call(path, method = "GET") {
  const r = await fetch(path, { method, headers, cache: "no-store" });
  if (r.status === 401) {
    throw new Error("this daemon needs a token: open the dashboard as /?token=TOKEN");
  }
  const body = await r.json().catch(() => null);
  return { ok: r.ok, status: r.status, body };
}

// The body of a GET that must succeed.
async function get(path) {
  const r = await call(path);
  if (!r.ok) {
    throw new Error(`GET ${path}: ${(r.body && r.body.error) || r.status}`);
  }
  return r.body;
}

// The body of a GET that may not be there yet (a stack not compiled yet): null then.
async function maybe(path) {
  const r = await call(path);
  return r.ok ? r.body : null;
}

async function post(path) {
  const r = await call(path, "POST");
  if (!r.ok) {
    problem(`POST ${path}: ${(r.body && r.body.error) || r.status}`);
  }
  await refresh();
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  return fill(e, attrs, children);
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  return fill(e, attrs, children);
}

function fill(e, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k.startsWith("data-")) e.setAttribute(k, String(v));
    // Anything else that is `true` or `false` is a boolean attribute (`disabled`): there or not.
    else if (v !== false) e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function when(unix) {
  if (!unix) return "never";
  const d = new Date(unix * 1000);
  const ago = Math.max(0, Math.round(Date.now() / 1000 - unix));
  const rel = ago < 120 ? `${ago} s ago` : ago < 7200 ? `${Math.round(ago / 60)} min ago` : `${Math.round(ago / 3600)} h ago`;
  return `${d.toISOString().replace("T", " ").slice(0, 19)} UTC (${rel})`;
}

function heals(n) {
  return n === 1 ? "1 failed heal" : `${n} failed heals`;
}

function money(usd) {
  return usd === null || usd === undefined ? "unknown" : `$${usd.toFixed(2)}/month`;
}

function problem(text) {
  const p = document.getElementById("problem");
  p.textContent = text || "";
  p.hidden = !text;
}

// The resource graph: one column per dependency depth, edges from a dependency (left) to what
// depends on it (right); drifted, backing-off and parked resources are marked.
function drawGraph(graph) {
  if (!graph || graph.nodes.length === 0) {
    return el("p", { class: "muted" }, "no applied resources");
  }
  const columns = new Map();
  const nodes = [...graph.nodes].sort((a, b) => a.depth - b.depth || a.address.localeCompare(b.address));
  const at = new Map();
  for (const n of nodes) {
    const row = columns.get(n.depth) || 0;
    columns.set(n.depth, row + 1);
    at.set(n.address, { x: PAD + n.depth * (NODE_W + GAP_X), y: PAD + row * (NODE_H + GAP_Y) });
  }
  const depths = Math.max(...columns.keys()) + 1;
  const rows = Math.max(...columns.values());
  const width = 2 * PAD + depths * (NODE_W + GAP_X) - GAP_X;
  const height = 2 * PAD + rows * (NODE_H + GAP_Y) - GAP_Y;
  const edges = graph.edges
    .filter((e) => at.has(e.from) && at.has(e.to))
    .map((e) => {
      const a = at.get(e.to);
      const b = at.get(e.from);
      const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
      const mx = (x1 + x2) / 2;
      return svg("path", {
        class: "edge",
        "data-from": e.from,
        "data-to": e.to,
        d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`,
      });
    });
  const boxes = nodes.map((n) => {
    const p = at.get(n.address);
    const note = n.status === "ok" ? `${n.kind} · ${n.provider}` : n.drift ? `${n.status}: ${n.drift}` : n.status;
    return svg(
      "g",
      {
        class: `node status-${n.status}`,
        "data-address": n.address,
        "data-status": n.status,
        "data-kind": n.kind,
        transform: `translate(${p.x} ${p.y})`,
      },
      svg("title", {}, `${n.address} (${n.kind}, ${n.provider}): ${n.status}${n.drift ? ", " + n.drift : ""}`),
      svg("rect", { width: NODE_W, height: NODE_H, rx: 5 }),
      svg("text", { class: "address", x: 8, y: 15 }, n.address),
      svg("text", { class: "note", x: 8, y: 29 }, note),
    );
  });
  return svg(
    "svg",
    { class: "graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `resource graph of ${graph.stack}` },
    edges,
    boxes,
  );
}

function section(title, cls, items, empty) {
  return el(
    "div",
    { class: `part ${cls}` },
    el("h3", {}, title),
    items.length ? el("ul", { class: cls }, items) : el("p", { class: "muted" }, empty),
  );
}

function drawStack(view, generations, graph) {
  const name = view.stack || view.path;
  const base = "api/stacks/" + encodeURIComponent(name);
  const drift = view.drift.map(([address, change]) =>
    el("li", { class: "drift-item", "data-address": address }, el("code", {}, address), ` ${change}`),
  );
  const dead = view.dead_letters.map((d) =>
    el(
      "li",
      { class: "dead-letter", "data-address": d.address },
      el("code", {}, d.address),
      ` parked after ${heals(d.failures)}, ${when(d.since)}: ${d.last_error} `,
      el(
        "button",
        { type: "button", class: "release", onclick: () => post(`${base}/dead-letters/${encodeURIComponent(d.address)}/release`) },
        "Release",
      ),
    ),
  );
  const backoffs = view.backoffs.map((b) =>
    el(
      "li",
      { class: "backoff", "data-address": b.address },
      el("code", {}, b.address),
      ` ${heals(b.failures)}, next try in ${b.retry_in_seconds.toFixed(1)} s: ${b.last_error}`,
    ),
  );
  const events = view.events.map((e) =>
    el(
      "li",
      { class: `event kind-${e.kind}`, "data-kind": e.kind, "data-address": e.address },
      el("span", { class: "when" }, when(e.at)),
      el("span", { class: "kind" }, e.kind),
      e.address ? el("code", {}, e.address) : null,
      el("span", { class: "detail" }, e.detail),
    ),
  );
  const gens = (generations ? generations.generations : []).map((g) =>
    el(
      "li",
      { class: `generation status-${g.status}`, "data-serial": g.serial, "data-status": g.status },
      el("span", { class: "serial" }, `#${g.serial}`),
      el("span", { class: "when" }, g.time),
      el("span", { class: "actor" }, g.actor),
      el("span", { class: "kind" }, g.status),
      el("span", { class: "detail" }, g.message || "(no message)"),
    ),
  );
  const facts = [
    ["Last reconcile", `${when(view.last_reconcile)}: ${view.outcome}`],
    ["Last success", when(view.last_success)],
    ["Monthly cost", money(view.monthly_cost)],
    ["Generation", view.generation ?? "none"],
    ["Replica", view.replica || "none yet"],
    ["Path", view.path],
  ];
  if (view.commit) facts.push(["Commit", view.commit]);
  return el(
    "section",
    { class: `stack outcome-${view.outcome}`, "data-stack": name, "data-outcome": view.outcome, "data-paused": view.paused },
    el(
      "div",
      { class: "title" },
      el("h2", { class: "name" }, name),
      el("span", { class: "badge mode" }, `mode ${view.mode}`),
      el("span", { class: `badge outcome` }, view.outcome),
      view.paused ? el("span", { class: "badge paused" }, view.paused_all ? "paused (all)" : "paused") : null,
      el(
        "button",
        {
          type: "button",
          class: "pause-toggle",
          disabled: view.paused_all && view.paused,
          onclick: () => post(`${base}/${view.paused ? "resume" : "pause"}`),
        },
        view.paused ? "Resume" : "Pause",
      ),
    ),
    el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    view.errors.length ? el("ul", { class: "errors" }, view.errors.map((e) => el("li", {}, e))) : null,
    el(
      "div",
      { class: "columns top" },
      el("div", { class: "part graph-box" }, el("h3", {}, "Resources"), drawGraph(graph)),
      el(
        "div",
        {},
        section("Drift", "drift", drift, "no drift at the last reconcile"),
        view.proposed.length ? el("p", {}, `Proposed to the agents: ${view.proposed.join(", ")}`) : null,
        view.held.length ? el("p", {}, `Held back: ${view.held.join(", ")}`) : null,
        section("Dead letters", "dead-letters", dead, "none parked"),
        backoffs.length ? section("Backing off", "backoffs", backoffs, "") : null,
      ),
    ),
    el(
      "div",
      { class: "columns" },
      el("div", { class: "part" }, el("h3", {}, "Events"), events.length ? el("ol", { class: "events" }, events) : el("p", { class: "muted" }, "nothing yet")),
      el("div", { class: "part" }, el("h3", {}, "Generations"), gens.length ? el("ol", { class: "generations" }, gens) : el("p", { class: "muted" }, "none")),
    ),
  );
}

async function loadStack(s) {
  const base = "api/stacks/" + encodeURIComponent(s.stack || s.path);
  const [view, generations, graph] = await Promise.all([
    get(base),
    maybe(base + "/generations?limit=20"),
    maybe(base + "/graph"),
  ]);
  return { view, section: drawStack(view, generations, graph) };
}

async function refresh() {
  try {
    const stacks = await get("api/stacks");
    const loaded = await Promise.all(stacks.map(loadStack));
    const main = document.getElementById("stacks");
    main.replaceChildren(...loaded.map((l) => l.section));
    if (loaded.length === 0) main.append(el("p", { class: "muted" }, "no stack has been reconciled yet"));
    const all = document.getElementById("pause-all");
    const pausedAll = loaded.length > 0 && loaded[0].view.paused_all;
    all.hidden = loaded.length === 0;
    all.textContent = pausedAll ? "Resume all" : "Pause all";
    all.onclick = () => post(pausedAll ? "api/resume" : "api/pause");
    document.getElementById("refreshed").textContent = `updated ${new Date().toLocaleTimeString()}`;
    problem(null);
  } catch (e) {
    problem(e.message);
  }
}

async function loop() {
  await refresh();
  setTimeout(loop, REFRESH_MS);
}

loop();
