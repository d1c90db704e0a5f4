// mcp-broker dashboard: plain DOM and SVG, no library, nothing fetched from elsewhere.
"use strict";

const TOKEN = document.querySelector('meta[name="dashboard-token"]').content;
const ACTIONS = document.querySelector('meta[name="dashboard-actions"]').content === "on";
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2f6fdf", "#e07b00", "#1a9e5c", "#c23b8a", "#7a52cc", "#b5a000", "#0096a8", "#d14b3b"];
const MAX_ROWS = 500;
const state = { view: "sessions", sessions: [], stream: null, timer: null, selected: new Set() };

// ---- small helpers -------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children.flat()) node.append(child instanceof Node ? child : String(child));
  return node;
}

async function api(path) {
  const response = await fetch(path, { headers: { "X-Dashboard-Token": TOKEN } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function post(path, payload) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "X-Dashboard-Token": TOKEN, "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function toast(text, bad) {
  const node = document.getElementById("toast");
  node.textContent = text;
  node.className = bad ? "toast bad" : "toast";
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, 4000);
}

const pad = (n) => String(n).padStart(2, "0");
function clock(ts) {
  const d = new Date(ts * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}
function ago(ts, now) {
  const s = Math.max(0, (now || Date.now() / 1000) - ts);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}
const shortId = (id) => id.slice(0, 8);
const badge = (text, kind) => el("span", { class: `badge ${kind || text}` }, text);
const color = (i) => COLORS[i % COLORS.length];
const path = (versions) => versions.join(" → ");

function fill(tbody, rows, empty, columns) {
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: columns, class: "empty" }, empty))]));
}

// ---- views -------------------------------------------------------------------------------------

async function showSessions() {
  const { sessions, now } = await api("/api/sessions");
  state.sessions = sessions;
  const live = sessions.filter((s) => s.status === "active").length;
  document.getElementById("sessions-count").textContent = `${sessions.length} · ${live} active`;
  const rows = sessions.map((s) => el("tr", { "data-session": s.name },
    el("td", { class: "strong" }, s.name),
    el("td", {}, badge(s.status)),
    el("td", {}, s.host || "—"),
    el("td", { class: "mono" }, s.pid ?? "—"),
    el("td", {}, s.protocols.map((p) => el("span", { class: "chip" }, p.name, el("span", { class: "muted" }, ` ${p.versions}`)))),
    el("td", {}, s.features.map((f) => el("span", { class: "chip feature" }, f))),
    el("td", { class: s.queue_depth ? "num strong" : "num" }, s.queue_depth),
    el("td", { title: new Date(s.last_seen * 1000).toISOString() }, ago(s.last_seen, now)),
  ));
  fill(document.querySelector("#sessions-table tbody"), rows, "no sessions yet", 8);
}

function eventDetail(e) {
  const parts = [];
  if (e.adapter_path.length) parts.push(el("span", { class: "path" }, path(e.adapter_path)));
  if (e.reason) parts.push(el("span", { class: "reason" }, e.reason));
  return parts;
}

function trafficRow(e) {
  const version = e.delivered_version && e.delivered_version !== e.version ? `${e.version} → ${e.delivered_version}` : e.version;
  return el("tr", { class: `kind-${e.kind}`, "data-message": e.message_id, onclick: () => showStory(e.message_id) },
    el("td", { class: "mono" }, clock(e.at)),
    el("td", {}, badge(e.kind)),
    el("td", {}, e.protocol, el("span", { class: "muted" }, ` ${version}`)),
    el("td", {}, e.sender, " → ", e.recipient || el("em", {}, "broadcast")),
    el("td", { class: "num" }, e.attempt ?? ""),
    el("td", {}, eventDetail(e)),
    el("td", { class: "mono link" }, shortId(e.message_id)),
  );
}

async function fillFilters() {
  const [{ sessions }, { protocols }] = await Promise.all([api("/api/sessions"), api("/api/protocols")]);
  for (const [id, names] of [["filter-session", sessions.map((s) => s.name)], ["filter-protocol", protocols.map((p) => p.name)]]) {
    const select = document.getElementById(id);
    const keep = select.value;
    select.replaceChildren(el("option", { value: "" }, "all"), ...names.map((n) => el("option", { value: n }, n)));
    select.value = names.includes(keep) ? keep : "";
  }
}

function openStream() {
  if (state.stream) state.stream.close();
  const tbody = document.querySelector("#traffic-table tbody");
  tbody.replaceChildren();
  const query = new URLSearchParams();
  const session = document.getElementById("filter-session").value;
  const protocol = document.getElementById("filter-protocol").value;
  if (session) query.set("session", session);
  if (protocol) query.set("protocol", protocol);
  const stream = new EventSource(`/api/events?${query}`);
  const live = document.getElementById("live");
  stream.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  stream.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
  stream.addEventListener("traffic", (message) => {
    tbody.prepend(trafficRow(JSON.parse(message.data)));
    while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
    document.getElementById("traffic-count").textContent = `${tbody.rows.length} events shown`;
    if (state.view === "sessions") scheduleSessions();
  });
  state.stream = stream;
}

function scheduleSessions() {
  clearTimeout(scheduleSessions.timer);
  scheduleSessions.timer = setTimeout(() => showSessions().catch(() => {}), 200);
}

async function showStory(id) {
  const aside = document.getElementById("story");
  const story = await api(`/api/messages/${encodeURIComponent(id)}`);
  aside.hidden = false;
  if (story.error) { aside.replaceChildren(el("p", {}, story.error)); return; }
  aside.replaceChildren(
    el("button", { type: "button", class: "close", onclick: () => { aside.hidden = true; } }, "×"),
    el("h3", {}, `${story.protocol} ${story.version}`, el("span", { class: "muted" }, ` from ${story.sender}`)),
    el("p", { class: "mono small" }, story.message_id),
    el("p", { class: "small" }, `sent ${new Date(story.created_at * 1000).toLocaleString()}`, story.broadcast ? " · broadcast" : "",
      story.correlation_id ? ` · correlation ${story.correlation_id}` : ""),
    el("h4", {}, "Deliveries"),
    el("table", { class: "compact" },
      el("thead", {}, el("tr", {}, ["recipient", "state", "attempts", "delivered as"].map((h) => el("th", {}, h)))),
      el("tbody", {}, story.deliveries.map((d) => el("tr", {},
        el("td", {}, d.recipient),
        el("td", {}, badge(d.state), d.reason ? el("div", { class: "reason" }, d.reason) : null),
        el("td", { class: "num" }, d.attempts),
        el("td", {}, d.delivered_version, d.adapter_path.length ? el("div", { class: "path" }, `via ${path(d.adapter_path)}`) : null)))),
    ),
    el("h4", {}, "Story"),
    el("ol", { class: "timeline" }, story.events.map((e) => el("li", {},
      el("span", { class: "mono small" }, clock(e.at)), " ", badge(e.kind), " ",
      e.recipient ? `→ ${e.recipient}` : "", e.attempt ? ` (attempt ${e.attempt})` : "", " ", eventDetail(e)))),
    el("h4", {}, "Payload"),
    el("pre", {}, JSON.stringify(story.payload, null, 2)),
  );
}

async function showDeadLetters() {
  const { dead_letters: letters } = await api("/api/dead-letters");
  document.getElementById("dead-count").textContent = `${letters.length}`;
  state.selected = new Set([...state.selected].filter((id) => letters.some((d) => d.message_id === id)));
  const rows = letters.map((d) => el("tr", { "data-message": d.message_id },
    el("td", {}, el("input", { type: "checkbox", checked: state.selected.has(d.message_id), "aria-label": "select",
      onchange: (ev) => { ev.target.checked ? state.selected.add(d.message_id) : state.selected.delete(d.message_id); } })),
    el("td", { title: new Date(d.dead_lettered_at * 1000).toISOString() }, ago(d.dead_lettered_at)),
    el("td", {}, d.protocol, el("span", { class: "muted" }, ` ${d.version}`)),
    el("td", {}, `${d.sender} → ${d.recipient}`),
    el("td", { class: "num" }, d.attempts),
    el("td", { class: "reason" }, d.reason || ""),
    el("td", { class: "mono" }, shortId(d.message_id)),
    el("td", {}, el("button", { type: "button", class: "small replay", disabled: !ACTIONS, onclick: () => act("replay", [d.message_id]) }, "Replay")),
  ));
  fill(document.querySelector("#dead-table tbody"), rows, "no dead letters", 8);
}

async function act(name, ids) {
  if (!ids.length) { toast("select some dead letters first", true); return; }
  if (name === "purge" && !confirm(`Purge ${ids.length} dead letter(s) for good?`)) return;
  try {
    const { results } = await post(`/api/dead-letters/${name}`, { message_ids: ids });
    const done = results.filter((r) => r.status === (name === "replay" ? "requeued" : "purged")).length;
    toast(`${name}: ${done} of ${results.length} done`);
    ids.forEach((id) => state.selected.delete(id));
  } catch (error) {
    toast(error.message, true);
  }
  await showDeadLetters();
}

function versionGraph(family) {
  const versions = family.versions.map((v) => v.version);
  const width = Math.max(320, versions.length * 130 + 40);
  const height = 120;
  const x = (v) => 60 + versions.indexOf(v) * 130;
  const y = 70;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "graph", role: "img" });
  root.append(svg("defs", {}, svg("marker", { id: `arrow-${family.name}`, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#556" }))));
  for (const edge of family.adapters) {
    if (!versions.includes(edge.from_version) || !versions.includes(edge.to_version)) continue;
    const x1 = x(edge.from_version), x2 = x(edge.to_version);
    const forward = x2 > x1;
    const lift = 22 + Math.abs(x2 - x1) / 9;
    const cy = forward ? y - 18 - lift : y + 18 + lift;
    const startY = forward ? y - 18 : y + 18;
    const line = svg("path", { d: `M${x1},${startY} Q${(x1 + x2) / 2},${cy} ${x2},${startY}`, fill: "none", stroke: "#556", "stroke-width": 1.5, "marker-end": `url(#arrow-${family.name})` });
    line.append(svg("title", {}, `adapter ${edge.from_version} → ${edge.to_version}: ${edge.steps.map((s) => s.op).join(", ") || "no steps"}`));
    root.append(line);
  }
  for (const v of versions) {
    root.append(svg("g", { class: "node" },
      svg("rect", { x: x(v) - 45, y: y - 16, width: 90, height: 32, rx: 8 }),
      svg("text", { x: x(v), y: y + 5, "text-anchor": "middle" }, v)));
  }
  return root;
}

async function showProtocols() {
  const { protocols } = await api("/api/protocols");
  const list = document.getElementById("protocols-list");
  list.replaceChildren(...protocols.map((family) => {
    const schema = el("pre", { class: "schema", hidden: true });
    return el("article", { class: "card", "data-protocol": family.name },
      el("h3", {}, family.name, el("span", { class: "muted" }, ` ${family.versions.length} version(s), ${family.adapters.length} adapter(s)`)),
      versionGraph(family),
      el("table", { class: "compact" },
        el("thead", {}, el("tr", {}, el("th", {}, "version"), el("th", {}, "capabilities"), el("th", {}, "description"), el("th", {}))),
        el("tbody", {}, family.versions.map((v) => el("tr", {},
          el("td", { class: "strong" }, v.version),
          el("td", {}, v.capabilities.map((c) => el("span", { class: "chip" }, c))),
          el("td", {}, v.description || ""),
          el("td", {}, el("button", { type: "button", class: "small", onclick: () => {
            const text = JSON.stringify(v.schema, null, 2);
            schema.hidden = !schema.hidden && schema.dataset.version === v.version;
            schema.dataset.version = v.version;
            schema.textContent = `${family.name} ${v.version}\n${text}`;
          } }, "schema")))))),
      schema);
  }));
  if (!protocols.length) list.replaceChildren(el("p", { class: "empty" }, "no protocols registered"));
}

async function showCompatibility() {
  const { protocols } = await api("/api/compatibility");
  const list = document.getElementById("compat-list");
  list.replaceChildren(...protocols.map((p) => {
    const cell = (from, to) => {
      if (from === to) return el("td", { class: "self" }, "");
      const pair = p.pairs.find((q) => q.sender === from && q.recipient === to);
      const mode = pair ? pair.mode : "none";
      return el("td", { class: `mode ${mode}`, title: `${from} → ${to}: ${mode}` },
        el("div", { class: "mode-name" }, mode === "adapted" ? "adapted" : mode),
        pair && pair.path.length ? el("div", { class: "path" }, path(pair.path)) : null);
    };
    return el("article", { class: "card", "data-protocol": p.protocol },
      el("h3", {}, p.protocol),
      el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, el("th", { class: "corner" }, "from ↓ to →"), p.sessions.map((s) => el("th", {}, s)))),
        el("tbody", {}, p.sessions.map((from) => el("tr", {}, el("th", {}, from), p.sessions.map((to) => cell(from, to)))))));
  }));
  if (!protocols.length) list.replaceChildren(el("p", { class: "empty" }, "no live sessions share a protocol"));
}

// The smallest of 1, 2, 4, 8 times a power of ten above the value, so the four ticks read well.
function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 4, 8, 10].map((m) => m * power).find((v) => v >= value * 1.02) || 10 * power;
}

// One chart: stacked bars or lines over time, axes and a legend, in plain SVG.
function chart(container, { series, since, now, bars }) {
  const W = 560, H = 220, L = 48, R = 12, T = 12, B = 28;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img" });
  const px = (t) => L + ((t - since) / (now - since)) * (W - L - R);
  let top = 0;
  if (bars) {
    const totals = {};
    for (const s of series) for (const [t, v] of s.points) totals[t] = (totals[t] || 0) + v;
    top = Math.max(0, ...Object.values(totals));
  } else {
    for (const s of series) for (const [, v] of s.points) top = Math.max(top, v);
  }
  top = niceCeiling(top);
  const py = (v) => H - B - (v / top) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = (top / 4) * i;
    root.append(svg("line", { x1: L, x2: W - R, y1: py(v), y2: py(v), class: "gridline" }));
    root.append(svg("text", { x: L - 6, y: py(v) + 4, "text-anchor": "end", class: "tick" }, Number.isInteger(v) ? v : +v.toFixed(3)));
  }
  for (let m = 0; m <= 60; m += 15) {
    const t = now - (60 - m) * 60;
    root.append(svg("text", { x: px(t), y: H - 8, "text-anchor": "middle", class: "tick" }, m === 60 ? "now" : `-${60 - m} min`));
  }
  if (bars) {
    const base = {};
    const width = Math.max(2, ((W - L - R) / 60) * 0.8);
    series.forEach((s, i) => {
      for (const [t, v] of s.points) {
        const y0 = base[t] || 0;
        root.append(svg("rect", { x: px(t), y: py(y0 + v), width, height: py(y0) - py(y0 + v), fill: color(i) },
          svg("title", {}, `${s.name}: ${v} at ${clock(t)}`)));
        base[t] = y0 + v;
      }
    });
  } else {
    series.forEach((s, i) => {
      if (!s.points.length) return;
      const d = s.points.map(([t, v], j) => `${j ? "L" : "M"}${px(t).toFixed(1)},${py(v).toFixed(1)}`).join(" ");
      root.append(svg("path", { d, fill: "none", stroke: s.color || color(i), "stroke-width": 2 }));
    });
  }
  const legend = el("div", { class: "legend" }, series.map((s, i) => el("span", {}, el("i", { class: `swatch c${i % COLORS.length}` }), s.name)));
  container.replaceChildren(series.length ? root : el("p", { class: "empty" }, "nothing in the last hour"), legend);
}

async function showCharts() {
  const stats = await api("/api/stats?minutes=60");
  const { since, now } = stats;
  const protocols = [...new Set(stats.per_minute.flatMap((m) => Object.keys(m.sent_by_protocol)))].sort();
  chart(document.getElementById("chart-rate"), { since, now, bars: true,
    series: protocols.map((name) => ({ name, points: stats.per_minute.map((m) => [m.minute, m.sent_by_protocol[name] || 0]) })) });
  const sessions = [...new Set(stats.queue_depth.flatMap((d) => Object.keys(d.by_session)))].sort();
  chart(document.getElementById("chart-depth"), { since, now,
    series: sessions.map((name) => ({ name, points: stats.queue_depth.map((d) => [d.at, d.by_session[name] || 0]) })) });
  chart(document.getElementById("chart-latency"), { since, now,
    series: ["p50", "p90", "p99"].map((q) => ({ name: q, points: stats.latency.map((p) => [p.minute, p[q] * 1000]) })) });
}

// ---- navigation --------------------------------------------------------------------------------

const VIEWS = {
  sessions: { show: showSessions, every: 2000 },
  traffic: { show: async () => { await fillFilters(); if (!state.stream) openStream(); } },
  "dead-letters": { show: showDeadLetters, every: 5000 },
  protocols: { show: showProtocols },
  compatibility: { show: showCompatibility, every: 5000 },
  charts: { show: showCharts, every: 15000 },
};

async function navigate() {
  const name = location.hash.slice(1) in VIEWS ? location.hash.slice(1) : "sessions";
  state.view = name;
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${name}`;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === name);
  clearInterval(state.timer);
  const view = VIEWS[name];
  const run = () => view.show().then(() => document.body.setAttribute("data-ready", name)).catch((e) => toast(e.message, true));
  await run();
  if (view.every) state.timer = setInterval(run, view.every);
}

document.getElementById("filter-session").addEventListener("change", openStream);
document.getElementById("filter-protocol").addEventListener("change", openStream);
document.getElementById("replay-selected").addEventListener("click", () => act("replay", [...state.selected]));
document.getElementById("purge-selected").addEventListener("click", () => act("purge", [...state.selected]));
document.getElementById("dead-all").addEventListener("change", (ev) => {
  for (const box of document.querySelectorAll("#dead-table tbody input[type=checkbox]")) {
    box.checked = ev.target.checked;
    const id = box.closest("tr").dataset.message;
    ev.target.checked ? state.selected.add(id) : state.selected.delete(id);
  }
});
if (!ACTIONS) {
  for (const id of ["replay-selected", "purge-selected"]) document.getElementById(id).disabled = true;
  document.getElementById("actions-note").textContent = "read-only: start the dashboard with --allow-actions to replay or purge";
}
window.addEventListener("hashchange", navigate);
openStream();
navigate();
