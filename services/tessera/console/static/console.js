// Tessera console page: keeps the frame the server streams (a full frame, then
// deltas) and redraws the map and tables from it. No build step, no libraries.
"use strict";

const SECTIONS = ["meta", "zones", "borders", "density", "events", "relays", "matches"];
const COLORS = {
  active: "#3fa7ff", starting: "#5fd3c6", draining: "#ffb347", standby: "#8c8c8c", instance: "#c77dff",
};
let frame = Object.fromEntries(SECTIONS.map((s) => [s, {}]));
let token = sessionStorage.getItem("tessera-console-token") || "";
const $ = (id) => document.getElementById(id);

function apply(change) {
  for (const [name, part] of Object.entries(change)) {
    const section = { ...(frame[name] || {}), ...(part.set || {}) };
    for (const key of part.del || []) delete section[key];
    frame[name] = section;
  }
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function drawMap() {
  const canvas = $("map");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const meta = frame.meta;
  const b = meta.bounds;
  if (!b) {
    canvas.dataset.rects = "0";
    return;
  }
  const scale = Math.min(canvas.width / (b[2] - b[0]), canvas.height / (b[3] - b[1]));
  const X = (x) => (x - b[0]) * scale;
  const Z = (z) => (z - b[1]) * scale;
  ctx.strokeStyle = "#2a313a";
  ctx.strokeRect(X(b[0]), Z(b[1]), (b[2] - b[0]) * scale, (b[3] - b[1]) * scale);

  const [cols, , size] = meta.grid;
  const peak = Math.max(1, ...Object.values(frame.density));
  for (const [index, count] of Object.entries(frame.density)) {
    const i = Number(index);
    const cx = i % cols, cz = Math.floor(i / cols);
    ctx.fillStyle = `rgba(255, 224, 102, ${0.15 + 0.85 * (count / peak)})`;
    ctx.fillRect(X(b[0] + cx * size), Z(b[1] + cz * size), size * scale, size * scale);
  }

  const aura = meta.aura_m || 0;
  ctx.fillStyle = "rgba(255, 92, 92, 0.18)";
  for (const [x1, z1, x2, z2] of Object.values(frame.borders)) {
    if (x1 === x2) ctx.fillRect(X(x1 - aura), Z(z1), 2 * aura * scale, (z2 - z1) * scale);
    else ctx.fillRect(X(x1), Z(z1 - aura), (x2 - x1) * scale, 2 * aura * scale);
  }

  let rects = 0;
  ctx.font = "12px system-ui, sans-serif";
  for (const [name, z] of Object.entries(frame.zones)) {
    if (!z.bounds || z.phase === "instance") continue;
    const [x1, z1, x2, z2] = z.bounds;
    ctx.strokeStyle = COLORS[z.phase] || "#fff";
    ctx.lineWidth = 2;
    ctx.strokeRect(X(x1) + 2, Z(z1) + 2, (x2 - x1) * scale - 4, (z2 - z1) * scale - 4);
    ctx.fillStyle = COLORS[z.phase] || "#fff";
    ctx.fillText(`${name} · ${z.players}`, X(x1) + 6, Z(z1) + 16);
    rects += 1;
  }
  ctx.strokeStyle = "#ff5c5c";
  ctx.lineWidth = 1;
  for (const [x1, z1, x2, z2] of Object.values(frame.borders)) {
    ctx.beginPath();
    ctx.moveTo(X(x1), Z(z1));
    ctx.lineTo(X(x2), Z(z2));
    ctx.stroke();
  }
  canvas.dataset.rects = String(rects);
}

function drawZones() {
  const names = Object.keys(frame.zones).sort();
  fill($("zones").tBodies[0], names.map((name) => {
    const z = frame.zones[name];
    const tr = document.createElement("tr");
    tr.dataset.zone = name;
    for (const v of [name, z.phase + (z.stale ? " (stale)" : ""), z.players, z.p50_ms, z.p99_ms,
      z.overload, z.handoffs_s]) cell(tr, String(v));
    const td = cell(tr, "");
    if (z.phase === "active") {
      const button = document.createElement("button");
      button.textContent = "Drain";
      button.className = "drain";
      button.onclick = () => act(`/api/zones/${encodeURIComponent(name)}/drain`, {});
      td.appendChild(button);
    }
    return tr;
  }));
}

function drawTimeline() {
  const ids = Object.keys(frame.events).sort().reverse();
  fill($("timeline"), ids.map((id) => {
    const e = frame.events[id];
    const li = document.createElement("li");
    const when = new Date(Number(id.split("-")[0])).toLocaleTimeString();
    li.textContent = `${when}  ${e.decision || "?"}  ${e.zone || ""}  ${e.reason || ""}`;
    return li;
  }));
}

function drawSides() {
  fill($("matches").tBodies[0], Object.entries(frame.matches).map(([match, m]) => {
    const tr = document.createElement("tr");
    for (const v of [match, m.zone, m.kind, m.players === null ? "-" : m.players]) cell(tr, String(v));
    return tr;
  }));
  fill($("relays").tBodies[0], Object.entries(frame.relays).map(([address, r]) => {
    const tr = document.createElement("tr");
    for (const v of [r.id || "?", address, r.sessions, r.up ? "yes" : "no"]) cell(tr, String(v));
    return tr;
  }));
}

function draw() {
  const meta = frame.meta;
  $("world").textContent = meta.world || "?";
  $("zone-count").textContent = String(meta.zones ?? 0);
  $("player-count").textContent = String(meta.players ?? 0);
  $("map-version").textContent = String(meta.map_version ?? 0);
  drawMap();
  drawZones();
  drawTimeline();
  drawSides();
}

function notice(text, ok) {
  const p = $("notice");
  p.textContent = text;
  p.className = ok ? "ok" : "refused";
}

async function act(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  const answer = await response.json().catch(() => ({}));
  if (response.ok) notice(`done: ${JSON.stringify(answer)}`, true);
  else notice(`refused (${response.status}): ${answer.error || response.statusText}`, false);
}

$("login").onsubmit = async (ev) => {
  ev.preventDefault();
  const response = await fetch("/api/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: $("username").value, password: $("password").value }),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    notice(`login refused (${response.status}): ${answer.error || response.statusText}`, false);
    return;
  }
  token = answer.access_token;
  sessionStorage.setItem("tessera-console-token", token);
  $("who").textContent = `admin ${answer.username}`;
  notice("logged in", true);
};

$("kick").onsubmit = (ev) => {
  ev.preventDefault();
  const player = $("kick-player").value.trim();
  if (!player) notice("enter a player id", false);
  else act(`/api/players/${encodeURIComponent(player)}/kick`, {});
};

$("ban").onsubmit = (ev) => {
  ev.preventDefault();
  const account = $("ban-account").value.trim();
  const reason = $("ban-reason").value.trim();
  const hours = Number($("ban-hours").value || "0");
  if (!account || !reason) notice("enter an account id and a reason", false);
  else if (!Number.isInteger(hours) || hours < 0) notice("hours must be a whole number, 0 = permanent", false);
  else act(`/api/accounts/${encodeURIComponent(account)}/ban`, { reason, duration_s: hours * 3600 });
};

let lastUpdate = Date.now();
setInterval(() => {
  const silent = (Date.now() - lastUpdate) / 1000;
  if (silent > 5) $("live").textContent = `no update for ${Math.round(silent)} s`;
}, 1000);

const source = new EventSource("/api/stream");
source.addEventListener("full", (ev) => {
  frame = Object.fromEntries(SECTIONS.map((s) => [s, {}]));
  apply(Object.fromEntries(Object.entries(JSON.parse(ev.data)).map(([k, v]) => [k, { set: v }])));
  draw();
  lastUpdate = Date.now();
  $("live").textContent = "live";
});
source.addEventListener("delta", (ev) => {
  apply(JSON.parse(ev.data));
  draw();
  lastUpdate = Date.now();
  $("live").textContent = `live · ${new Date().toLocaleTimeString()}`;
});
source.onerror = () => { $("live").textContent = "reconnecting…"; };
