// The dispatcher's page: fleet map (SVG, lon/lat projection, no tile server: fences, stops, the
// selected van's track, the vans), vans table, exceptions, a van's day with its stops' progress,
// KPIs; kept live by the API's Server-Sent Events.
"use strict";
const state = {
  token: null, vans: new Map(), selected: null, track: [], day: null,
  plan: { stops: [], fences: { features: [] } }, // the manifests' stops and fences (/api/v1/plan)
  progress: new Map(), // "manifest/stop" -> status, of the selected van's stops
};
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const q = (path) => `${path}${path.includes("?") ? "&" : "?"}access_token=${encodeURIComponent(state.token)}`;

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` } });
  if (r.status === 401) { localStorage.removeItem("dropline-token"); showLogin(); throw new Error("401"); }
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

function showLogin() { $("login").hidden = false; $("main").hidden = true; }

function project(points) {
  // Equirectangular around the middle latitude, fitted to the points with a margin.
  const lats = points.map((p) => p.lat), lons = points.map((p) => p.lon);
  const lat0 = (Math.min(...lats) + Math.max(...lats)) / 2, k = Math.cos(lat0 * Math.PI / 180);
  const x0 = Math.min(...lons) * k, x1 = Math.max(...lons) * k, y0 = Math.min(...lats), y1 = Math.max(...lats);
  const span = Math.max(x1 - x0, (y1 - y0) * 1.6, 1e-4), s = 720 / span;
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const xy = (p) => [400 + (p.lon * k - cx) * s, 250 - (p.lat - cy) * s];
  xy.pxPerMetre = s / 111320; // a degree of latitude is about 111.32 km
  return xy;
}

// GeoJSON positions are [lon, lat]; the projection takes {lat, lon}.
const pos = (c) => ({ lon: c[0], lat: c[1] });

function fencePoints(f) {
  const g = f.geometry;
  if (g.type === "Point") return [pos(g.coordinates)];
  const polygons = g.type === "Polygon" ? [g.coordinates] : g.coordinates;
  return polygons.flat(1).flat(1).map(pos);
}

function drawFence(f, xy) {
  const g = f.geometry, p = f.properties;
  const attrs = `class="fence kind-${esc(p.kind)}" data-fence="${esc(p.id)}"`;
  const title = `<title>${esc(p.kind)} ${esc(p.id)}</title>`;
  if (g.type === "Point") {
    const [x, y] = xy(pos(g.coordinates));
    return `<circle ${attrs} cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="${Math.max(2, p.radius_m * xy.pxPerMetre).toFixed(1)}">${title}</circle>`;
  }
  const polygons = g.type === "Polygon" ? [g.coordinates] : g.coordinates;
  const d = polygons.map((rings) => rings.map((ring) => "M" + ring.map((c) => xy(pos(c)).map((n) => n.toFixed(1)).join(",")).join("L") + "Z").join("")).join("");
  return `<path ${attrs} fill-rule="evenodd" d="${d}">${title}</path>`;
}

function drawStop(s, xy) {
  // Stops of the selected van show their progress; other vans' stops are drawn as planned.
  const status = s.vehicle === state.selected ? (state.progress.get(`${s.manifest}/${s.stop}`) || "planned") : "planned";
  const [x, y] = xy(s);
  const area = s.radius_m ? `<circle class="stop-area" cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="${(s.radius_m * xy.pxPerMetre).toFixed(1)}"/>` : "";
  return area + `<circle class="stop ${esc(status)}" id="stop-${esc(s.vehicle)}-${esc(s.stop)}" data-stop="${esc(s.stop)}" data-vehicle="${esc(s.vehicle)}" data-status="${esc(status)}"` +
    ` cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="5"><title>${esc(s.stop)} (${esc(s.vehicle)}) ${esc(status)}, window ${esc(s.window[0])} - ${esc(s.window[1])}</title></circle>`;
}

function drawMap() {
  const vans = [...state.vans.values()].filter((v) => v.lat !== null);
  const fences = state.plan.fences.features;
  const pts = [...vans, ...state.track, ...state.plan.stops, ...fences.flatMap(fencePoints)];
  const svg = $("map");
  if (!pts.length) { svg.innerHTML = ""; return; }
  const xy = project(pts);
  let html = fences.map((f) => drawFence(f, xy)).join("");
  if (state.track.length) html += `<polyline class="track" points="${state.track.map((p) => xy(p).join(",")).join(" ")}"/>`;
  html += state.plan.stops.map((s) => drawStop(s, xy)).join("");
  for (const v of vans) {
    const [x, y] = xy(v);
    html += `<g><circle class="van" id="van-${esc(v.vehicle)}" data-lat="${v.lat}" data-lon="${v.lon}" cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="7"><title>${esc(v.vehicle)}</title></circle>` +
      `<text x="${(x + 9).toFixed(1)}" y="${(y - 9).toFixed(1)}">${esc(v.vehicle)}</text></g>`;
  }
  svg.innerHTML = html;
}

function drawVans() {
  const rows = [...state.vans.values()].map((v) => `<tr data-vehicle="${esc(v.vehicle)}" class="${v.vehicle === state.selected ? "selected" : ""}">` +
    `<td>${esc(v.vehicle)}</td><td class="time">${esc(v.time)}</td><td>${v.soc ?? ""}</td>` +
    `<td>${v.speed === undefined ? "" : (v.speed * 3.6).toFixed(0)}</td><td>${esc(v.next_stop)}</td><td>${esc(v.eta)}</td>` +
    `<td class="exc">${(v.open_exceptions || []).map((e) => esc(e.code)).join(", ")}</td></tr>`);
  $("vans").tBodies[0].innerHTML = rows.join("");
}

async function loadVans() {
  for (const v of await api("/api/v1/vehicles")) state.vans.set(v.vehicle, v);
  drawVans(); drawMap();
}

async function loadPlan() {
  state.plan = await api("/api/v1/plan");
  drawMap();
}

async function loadExceptions() {
  const list = await api("/api/v1/exceptions");
  $("exceptions").innerHTML = list.slice(-50).reverse().map((e) =>
    `<li class="${e.open ? "exc" : "cleared"}" data-code="${esc(e.code)}">${esc(e.time)} ${esc(e.vehicle)} <b>${esc(e.code)}</b> ${esc(e.message)}</li>`).join("");
}

async function loadDay() {
  const v = state.selected;
  if (!v) return;
  $("day").hidden = false; $("day-van").textContent = v;
  const latest = state.vans.get(v);
  const from = latest && latest.time ? latest.time.slice(0, 10) + "T00:00:00Z" : "";
  const [track, stops, proofs] = await Promise.all([
    api(`/api/v1/vehicles/${encodeURIComponent(v)}/track${from ? "?from=" + from : ""}`),
    api(`/api/v1/vehicles/${encodeURIComponent(v)}/stops`),
    api(`/api/v1/vehicles/${encodeURIComponent(v)}/deliveries`),
  ]);
  state.track = track;
  // The day's stops: the van's manifests' stops in plan order, then any it reported on besides.
  const reported = new Map(stops.map((s) => [`${s.manifest}/${s.stop}`, s]));
  const planned = state.plan.stops.filter((p) => p.vehicle === v).map((p) => ({ ...reported.get(`${p.manifest}/${p.stop}`), ...p }));
  const day = [...planned, ...stops.filter((s) => !planned.some((p) => p.manifest === s.manifest && p.stop === s.stop))];
  // A stop is done once completed (it may have departed since) or skipped.
  const progress = (s) => (s.times && s.times.completed ? "completed" : s.status || "planned");
  state.progress = new Map(day.map((s) => [`${s.manifest}/${s.stop}`, progress(s)]));
  const done = day.filter((s) => ["completed", "skipped"].includes(progress(s))).length;
  $("day-progress").textContent = `${done} of ${day.length} stops done`;
  $("stops").tBodies[0].innerHTML = day.map((s) => `<tr data-stop="${esc(s.stop)}" class="status-${esc(progress(s))}"><td>${esc(s.stop)}</td><td>${esc(s.status || "planned")}</td>` +
    `<td>${s.window ? esc(s.window[0].slice(11, 16)) + "-" + esc(s.window[1].slice(11, 16)) : ""}</td><td>${esc(s.eta)}</td>` +
    `<td>${esc(s.times && s.times.arrived)}</td><td>${esc(s.times && s.times.departed)}</td></tr>`).join("");
  $("proofs").innerHTML = proofs.map((d) => `<li>${esc(d.time)} stop ${esc(d.stop)} parcel ${esc(d.parcel)}` +
    d.photos.map((p) => `<img class="photo" alt="proof" src="${q(`/api/v1/vehicles/${encodeURIComponent(v)}/blobs/${encodeURIComponent(p.blob)}`)}">`).join("") + "</li>").join("");
  drawMap();
}

async function loadKpis() {
  const times = [...state.vans.values()].map((v) => v.time).filter(Boolean).sort();
  const day = times.length ? times[times.length - 1].slice(0, 10) : new Date().toISOString().slice(0, 10);
  const k = await api(`/api/v1/kpis?day=${day}`);
  $("kpi-day").textContent = k.day;
  const pct = (x) => (x === null ? "" : (x * 100).toFixed(0) + " %");
  const row = (name, f) => `<tr><td>${esc(name)}</td><td>${pct(f.on_time_rate)}</td><td>${pct(f.first_attempt_rate)}</td>` +
    `<td>${f.mean_dwell_s ?? ""}</td><td>${f.stops_per_hour ?? ""}</td><td>${f.km}</td><td>${f.kwh ?? ""}</td></tr>`;
  $("kpis").tBodies[0].innerHTML = Object.entries(k.vans).map(([n, f]) => row(n, f)).join("") +
    Object.entries(k.depots).map(([n, f]) => row("depot " + n, f)).join("");
}

const pending = new Set();
let timer = null;
function refresh(what) {
  // Coalesce bursts of events into one reload of each view at most every 300 ms.
  pending.add(what);
  if (timer) return;
  timer = setTimeout(async () => {
    const todo = [...pending]; pending.clear(); timer = null;
    const jobs = { vans: loadVans, exceptions: loadExceptions, day: loadDay, kpis: loadKpis, plan: loadPlan };
    for (const w of todo) { try { await jobs[w](); } catch (e) { console.warn(e); } }
    $("live").dataset.synced = String(Date.now()); // the views match the store as of this moment
  }, 300);
}

function onRecord(r) {
  const v = state.vans.get(r.vehicle);
  if (r.kind === "fix") {
    if (v && (!v.time || r.time >= v.time)) { v.time = r.time; v.lat = r.lat; v.lon = r.lon; if (r.speed !== undefined) v.speed = r.speed; }
    if (!v) refresh("vans");
    if (r.vehicle === state.selected) state.track.push({ time: r.time, lat: r.lat, lon: r.lon });
    drawVans(); drawMap();
    return;
  }
  if (r.kind === "alert") { refresh("exceptions"); refresh("vans"); }
  if (["eta", "stop_update", "delivery", "blob_chunk", "signal"].includes(r.kind)) refresh("vans");
  if (r.vehicle === state.selected && ["eta", "stop_update", "delivery", "blob_chunk"].includes(r.kind)) refresh("day");
  if (["stop_update", "delivery"].includes(r.kind)) refresh("kpis");
  if (r.kind === "eta" && !state.plan.stops.some((s) => s.vehicle === r.vehicle)) refresh("plan"); // a manifest added since
}

function connect() {
  const es = new EventSource(q("/api/v1/events"));
  es.onopen = () => { $("live").textContent = "live"; $("live").className = "on"; refresh("vans"); refresh("exceptions"); };
  es.onerror = () => { $("live").textContent = "reconnecting"; $("live").className = "off"; };
  es.addEventListener("record", (ev) => onRecord(JSON.parse(ev.data)));
  es.addEventListener("lagged", () => { refresh("vans"); refresh("exceptions"); refresh("day"); refresh("plan"); });
}

async function start() {
  $("login").hidden = true; $("main").hidden = false;
  $("vans").tBodies[0].addEventListener("click", (ev) => {
    const tr = ev.target.closest("tr");
    if (!tr) return;
    state.selected = tr.dataset.vehicle; state.track = []; drawVans(); refresh("day");
  });
  await loadPlan(); await loadVans(); await loadExceptions(); await loadKpis();
  connect();
}

const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) { localStorage.setItem("dropline-token", fromHash); history.replaceState(null, "", location.pathname); }
state.token = localStorage.getItem("dropline-token");
$("login").addEventListener("submit", (ev) => {
  ev.preventDefault(); state.token = $("token-input").value.trim(); localStorage.setItem("dropline-token", state.token); start();
});
if (state.token) start(); else showLogin();
