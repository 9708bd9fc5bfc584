// A customer's tracking page: this stop's window, a live ETA countdown, the van while this stop
// is among its next few, the proof of delivery once done. The link itself is the credential.
"use strict";
const token = location.pathname.split("/")[2];
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
let eta = null;

function nothing() { document.body.innerHTML = "<p>This link is not valid.</p>"; }

function fmt(iso) { return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }); }

function tick() {
  if (!eta) { $("countdown").textContent = "-"; return; }
  const s = Math.max(0, Math.round((Date.parse(eta) - Date.now()) / 1000));
  $("countdown").textContent = `${Math.floor(s / 60)} min ${s % 60} s`;
}

function drawWhere(st) {
  const svg = $("where");
  if (!st.van || !st.place) { svg.hidden = true; svg.innerHTML = ""; return; }
  const pts = [st.van, st.place], lat0 = (st.van.lat + st.place.lat) / 2, k = Math.cos(lat0 * Math.PI / 180);
  const span = Math.max(Math.abs(st.van.lon - st.place.lon) * k, Math.abs(st.van.lat - st.place.lat) * 1.5, 1e-4);
  const cx = (st.van.lon + st.place.lon) / 2 * k, cy = lat0, s = 240 / span;
  const xy = (p) => [150 + (p.lon * k - cx) * s, 100 - (p.lat - cy) * s];
  const [vx, vy] = xy(pts[0]), [px, py] = xy(pts[1]);
  svg.innerHTML = `<rect class="stop" x="${px - 6}" y="${py - 6}" width="12" height="12"/>` +
    `<circle class="van" id="van" data-lat="${st.van.lat}" data-lon="${st.van.lon}" cx="${vx}" cy="${vy}" r="7"/>`;
  svg.hidden = false;
}

async function load() {
  const r = await fetch(`/t/${token}/state`, { cache: "no-store" });
  if (!r.ok) { nothing(); return false; }
  const st = await r.json();
  $("window").textContent = st.window ? `${fmt(st.window[0])} - ${fmt(st.window[1])}` : "";
  $("status").textContent = st.status || "planned";
  eta = st.status === "completed" ? null : st.eta;
  $("eta").textContent = eta ? `(${fmt(eta)})` : "";
  tick(); drawWhere(st);
  if (st.delivered) {
    $("proof").hidden = false;
    $("proofs").innerHTML = st.delivered.map((d) => `<li>${esc(fmt(d.time))}: parcel ${esc(d.parcel)}` +
      d.photos.map((b) => `<img class="photo" alt="proof of delivery" src="/t/${token}/photos/${encodeURIComponent(b)}">`).join("") + "</li>").join("");
  }
  return true;
}

let timer = null;
load().then((ok) => {
  if (!ok) return;
  setInterval(tick, 1000);
  const es = new EventSource(`/t/${token}/events`);
  es.addEventListener("changed", () => {
    if (!timer) timer = setTimeout(() => { timer = null; load().then((still) => { if (!still) es.close(); }); }, 500);
  });
});
