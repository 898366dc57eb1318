// The buyer's page. The buyer signs in with email and password: the session lives in an
// HttpOnly cookie (no script reads it) and writes carry the session's CSRF token, kept in memory
// only (never in storage). Every text from the API is set with textContent, never as markup, and
// the page's Content-Security-Policy allows scripts from this server only.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

// `meta` comes from GET /meta: the horizons (key, days, words) and the target-zone levels.
const state = { horizon: "1m", data: null, explain: {}, meta: null, user: null, csrf: null };

// Fetched once, when the page opens (it needs no key); a failed fetch is retried on the next load.
let metaRequest = null;
function loadMeta() {
  if (!metaRequest) {
    metaRequest = api("/meta").then((meta) => { state.meta = meta; return meta; });
    metaRequest.catch(() => { metaRequest = null; });
  }
  return metaRequest;
}

function horizonName(h) {
  const found = state.meta.horizons.find((x) => x.key === h);
  return found ? found.name : h;
}

function $(id) { return document.getElementById(id); }

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function fmt(x, digits = 2) {
  return x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(digits);
}

function pct(x, digits = 1) {
  return x === null || x === undefined ? "–" : `${(100 * x).toFixed(digits)}%`;
}

function signedPct(x) {
  if (x === null || x === undefined) return "–";
  const digits = Math.abs(x) < 1 ? 2 : 1;
  return `${x > 0 ? "+" : x < 0 ? "−" : ""}${Math.abs(x).toFixed(digits)}%`;
}

// The buyer's words: target zones and ranges (the platform's statements say "band").
function buyerWords(text) {
  return String(text || "").replace(/\bbands?\b/gi, (w) => (w.toLowerCase().endsWith("s") ? "ranges" : "range"));
}

class AuthError extends Error {}
class NotFound extends Error {}

async function api(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  const message = (body && body.message) || `${response.status} ${response.statusText}`;
  if (response.status === 401 || response.status === 403) throw new AuthError(message);
  if (response.status === 404) throw new NotFound(message);
  if (!response.ok) throw new Error(message);
  return body;
}

// Writes (the buyer's programme, his alerts, his account): a JSON body; the answer's JSON, or an
// Error carrying the API's message. Other page modules (static/*.js) use api() and apiSend().
async function apiSend(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let answer = null;
  try { answer = await response.json(); } catch (_) { answer = null; }
  const message = (answer && answer.message) || `${response.status} ${response.statusText}`;
  if (response.status === 401) throw new AuthError(message);
  if (!response.ok) { const e = new Error(message); e.status = response.status; e.body = answer; throw e; }
  return answer;
}

// The page's events for its other modules: "cbi:loaded" once the data is in (detail: state.data),
// "cbi:horizon" whenever the horizon shown changes (detail: the horizon key).
function announce(name, detail) { document.dispatchEvent(new CustomEvent(name, { detail })); }

async function optional(path) {
  try { return await api(path); } catch (e) { if (e instanceof AuthError) throw e; return { error: e.message }; }
}

function showSignIn(message) {
  state.user = null;
  state.csrf = null;
  state.data = null;
  state.explain = {};
  announce("cbi:user", null);
  delete document.body.dataset.ready;
  $("dashboard").hidden = true;
  $("account").hidden = true;
  $("signin-panel").hidden = false;
  $("signin-error").textContent = message || "";
  $("signin-email").focus();
}

function showAccount(session) {
  state.user = session.user;
  state.csrf = session.csrf_token;
  $("signed-in-as").textContent = `Signed in as ${session.user.name}`;
  $("signed-in-as").title = session.user.email;
  $("account").hidden = false;
  announce("cbi:user", session.user);  // the page's other cards (programme, mail) follow him
}

// Who is signed in (GET /session): the session, or null when not signed in.
async function whoAmI() {
  const response = await fetch("/session", { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) return null;
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  return response.json();
}

async function loadHealth() {
  const chip = $("freshness");
  try {
    const response = await fetch("/health", { cache: "no-store" });
    const h = await response.json();
    chip.className = `chip ${h.status}`;
    chip.dataset.status = h.status;
    chip.title = h.message;
    if (h.status === "ok") chip.textContent = `Data through ${h.data_last_date} · up to date`;
    else if (h.status === "stale") chip.textContent = `Data through ${h.data_last_date} · stale`;
    else chip.textContent = "No forecasts yet";
  } catch (e) {
    chip.className = "chip stale";
    chip.textContent = "Data: server unreachable";
  }
}

async function load() {
  try {
    const session = state.user ? null : await whoAmI();
    if (!state.user && !session) { showSignIn(""); return; }
    if (session) showAccount(session);
  } catch (e) {
    showSignIn(`The server cannot be reached: ${e.message}`);
    return;
  }
  try {
    const [, predictions, regime, history, performance, recommendation, backtest] = await Promise.all([
      loadMeta(), api("/predictions"), optional("/regime/current"), optional("/history?limit=260"),
      optional("/monitoring/performance"), optional("/recommendation"), optional("/backtest"),
    ]);
    state.data = { predictions, regime, history, performance, recommendation, backtest };
  } catch (e) {
    if (e instanceof AuthError) { showSignIn(e.message); return; }
    $("signin-panel").hidden = true;
    $("dashboard").hidden = false;
    $("statement").textContent = e.message;
    return;
  }
  const available = state.data.predictions.forecasts.map((f) => f.horizon);
  if (!available.includes(state.horizon)) state.horizon = available[0];
  $("signin-panel").hidden = true;
  $("dashboard").hidden = false;
  renderStatic();
  announce("cbi:loaded", state.data);
  await renderHorizon();
  document.body.dataset.ready = "true";
}

function forecastFor(h) {
  return state.data.predictions.forecasts.find((f) => f.horizon === h);
}

function renderStatic() {
  const { predictions, regime, recommendation, backtest } = state.data;
  // Horizon buttons.
  const nav = $("horizons");
  nav.replaceChildren();
  for (const { key: h, name } of state.meta.horizons) {
    if (!forecastFor(h)) continue;
    const b = el("button", { type: "button", "data-horizon": h, "aria-pressed": String(h === state.horizon) }, h);
    b.title = name;
    b.addEventListener("click", () => { state.horizon = h; renderHorizon(); });
    nav.append(b);
  }
  // Regime chip.
  const chip = $("regime-chip");
  if (regime && !regime.error) {
    chip.textContent = `Regime: ${regime.regime || "unknown"}`;
    chip.className = `chip regime-${regime.regime || "unknown"}`;
    chip.dataset.regime = regime.regime || "";
    chip.title = regime.text;
  } else {
    chip.textContent = "Regime: not published";
  }
  $("as-of").textContent = `Forecasts as of ${predictions.as_of}`;
  // Recommendation.
  const action = $("rec-action");
  action.replaceChildren();
  if (recommendation && !recommendation.error) {
    const word = el("span", { class: recommendation.action === "buy" ? "buy" : "wait" }, recommendation.action.toUpperCase());
    action.append(word);
    if (recommendation.buy_lb) action.append(` ${Math.round(recommendation.buy_lb).toLocaleString("en-US")} lb`);
    if (recommendation.price) action.append(` at ${fmt(recommendation.price)} c/lb`);
    $("rec-text").textContent = recommendation.text || recommendation.reason || "";
  } else {
    action.textContent = "No recommendation yet";
    $("rec-text").textContent = (recommendation && recommendation.error) || "";
  }
  const record = backtest && !backtest.error ? backtest.recommended : null;
  $("rec-record").textContent = record ? recordWords(record) : "";
}

function recordWords(r) {
  const mean = r.mean_savings_cents;
  const verb = mean >= 0 ? `saved ${fmt(mean, 3)} c/lb` : `cost ${fmt(-mean, 3)} c/lb more`;
  return (
    `Backtested record of the ${r.policy} policy over ${r.n_windows} buying windows: it ${verb} ` +
    `per window on average than buying evenly (${Math.round(100 * (r.confidence || 0.9))}% interval ` +
    `of the saving ${fmt(r.ci_low_cents, 2)} to ${fmt(r.ci_high_cents, 2)} c/lb) and was cheaper ` +
    `than even buying in ${pct(r.share_better, 0)} of windows.`
  );
}

async function renderHorizon() {
  const h = state.horizon;
  for (const b of $("horizons").querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.horizon === h));
  const f = forecastFor(h);
  renderChart(f);
  renderStatement(f);
  renderAccuracy(h);
  announce("cbi:horizon", h);
  if (!state.explain[h]) {
    try { state.explain[h] = await api(`/explain/${h}`); } catch (e) { state.explain[h] = { error: e.message }; }
  }
  if (state.horizon === h) renderDrivers(state.explain[h]);
}

function renderStatement(f) {
  $("statement").textContent = buyerWords(f.statement);  // provisional etc.: insight.js's notices
  const table = $("zones-table");
  table.replaceChildren();
  const head = el("tr");
  const levels = state.meta.zone_levels;
  for (const t of ["Horizon", "Target date", ...levels.map((z) => z.toUpperCase())]) {
    head.append(el("th", t === "Target date" ? { class: "col-date" } : {}, t));
  }
  table.append(head);
  for (const g of state.data.predictions.forecasts) {
    const row = el("tr", { "data-horizon": g.horizon });
    if (g.horizon === f.horizon) row.className = "selected";
    row.append(el("td", {}, g.horizon), el("td", { class: "col-date" }, g.target_date));
    for (const z of levels) row.append(el("td", {}, fmt(g.target_zones[z])));
    table.append(row);
  }
}

function renderDrivers(explain) {
  const list = $("drivers");
  list.replaceChildren();
  const summary = $("drivers-summary");
  if (!explain || explain.error) { summary.textContent = (explain && explain.error) || ""; return; }
  summary.textContent = explain.summary;
  summary.className = explain.served_is_random_walk ? "caption notice" : "caption";
  summary.dataset.randomWalk = String(explain.served_is_random_walk);
  const top = explain.drivers.slice(0, 4);
  const largest = Math.max(...top.map((d) => Math.abs(d.contribution_pct || 0)), 1e-9);
  for (const d of top) {
    const item = el("li", { class: "driver", "data-feature": d.feature });
    const headLine = el("div", { class: "driver-head" });
    const words = el("span", { class: "words" }, d.description.replace(/\s*\(not used:[^)]*\)\s*$/, ""));
    if (!d.used) words.append(el("span", { class: "tag" }, "model not used"));
    const amount = el("span", { class: `pct ${d.direction}` }, signedPct(d.contribution_pct));
    amount.dataset.value = String(d.contribution_pct);
    headLine.append(words, amount);
    const bar = el("div", { class: "bar" });
    const fill = el("span", { class: d.direction });
    fill.style.width = `${(50 * Math.abs(d.contribution_pct || 0)) / largest}%`;
    bar.append(fill);
    item.append(headLine, bar);
    list.append(item);
  }
}

function renderAccuracy(h) {
  const perf = state.data.performance;
  const table = $("accuracy-table");
  table.replaceChildren();
  if (!perf || perf.error) { $("accuracy-verdict").textContent = (perf && perf.error) || ""; return; }
  const mine = perf.horizons.find((r) => r.horizon === h);
  $("accuracy-verdict").textContent = mine && mine.n
    ? `${h}: MAPE ${fmt(mine.mape, 2)}% against the random walk's ${fmt(mine.rw_mape, 2)}%; ${mine.verdict}.`
    : `${h}: ${mine ? mine.verdict : "no accuracy yet"}.`;
  const head = el("tr");
  for (const t of ["Horizon", "n", "MAPE", "Random walk", "Rel. error", "MASE", "In P10–P90"]) {
    head.append(el("th", t === "MASE" ? { class: "col-mase" } : {}, t));
  }
  table.append(head);
  for (const r of perf.horizons) {
    const row = el("tr", { "data-horizon": r.horizon });
    if (r.horizon === h) row.className = "selected";
    row.append(
      el("td", {}, r.horizon), el("td", {}, r.n),
      el("td", {}, r.n ? `${fmt(r.mape, 2)}%` : "–"), el("td", {}, r.n ? `${fmt(r.rw_mape, 2)}%` : "–"),
      el("td", {}, fmt(r.rel_mae, 3)), el("td", { class: "col-mase" }, fmt(r.mase, 2)), el("td", {}, pct(r.coverage80, 0)),
    );
    table.append(row);
  }
}

function renderChart(f) {
  const chart = $("chart");
  const width = Math.max(320, Math.round(chart.parentElement.clientWidth || 800));
  const height = width < 520 ? 280 : 360;
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  chart.setAttribute("width", width);
  chart.setAttribute("height", height);
  chart.replaceChildren();
  const closes = (state.data.history && state.data.history.closes) || [];
  const zones = state.meta.zone_levels.map((z) => ({ level: z, value: f.target_zones[z] })).filter((z) => z.value !== null);
  const values = closes.map((c) => c.price).concat(zones.map((z) => z.value), [f.price]);
  let lo = Math.min(...values), hi = Math.max(...values);
  const pad = (hi - lo) * 0.08 || 1;
  lo -= pad; hi += pad;
  const left = 44, right = width < 520 ? 78 : 96, top = 14, bottom = 28;
  const plotRight = width - right;
  const split = left + (plotRight - left) * (width < 520 ? 0.55 : 0.68);
  const zoneLeft = split + 10;
  const y = (v) => top + ((hi - v) / (hi - lo)) * (height - top - bottom);
  // Grid and y labels.
  const step = niceStep((hi - lo) / 5);
  for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
    chart.append(svg("line", { class: "grid-line", x1: left, x2: plotRight, y1: y(v), y2: y(v) }));
    chart.append(svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, v.toFixed(step < 1 ? 1 : 0)));
  }
  // History of closes.
  const n = closes.length;
  const x = (i) => (n <= 1 ? split : left + (i / (n - 1)) * (split - left));
  if (n > 1) {
    const d = closes.map((c, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(c.price).toFixed(1)}`).join(" ");
    chart.append(svg("path", { class: "price-line", d }));
    if (split - left > 150) chart.append(svg("text", { x: left, y: height - 8 }, closes[0].date));
  } else {
    chart.append(svg("text", { class: "history-note", x: (left + split) / 2, y: top + 16, "text-anchor": "middle" },
      "One close so far: the history grows with each daily refresh"));
  }
  const lastY = y(f.price);
  chart.append(svg("circle", { class: "price-dot", cx: split, cy: lastY, r: 4, "data-price": f.price }));
  chart.append(svg("text", { x: split - 4, y: height - 8, "text-anchor": "end" }, f.as_of));
  chart.append(svg("line", { class: "divider", x1: split, x2: split, y1: top, y2: height - bottom }));
  // Target zones: filled between P10-P90 and P30-P70, lines at each level.
  const z = f.target_zones;
  if (z.p10 !== null && z.p90 !== null) {
    chart.append(svg("rect", { class: "zone-fill-outer", x: zoneLeft, width: plotRight - zoneLeft, y: y(z.p90), height: y(z.p10) - y(z.p90) }));
  }
  if (z.p30 !== null && z.p70 !== null) {
    chart.append(svg("rect", { class: "zone-fill-inner", x: zoneLeft, width: plotRight - zoneLeft, y: y(z.p70), height: y(z.p30) - y(z.p70) }));
  }
  if (z.p50 !== null) chart.append(svg("line", { class: "connector", x1: split, y1: lastY, x2: zoneLeft, y2: y(z.p50) }));
  const labels = [];
  for (const zone of zones) {
    chart.append(svg("line", {
      class: `zone zone-${zone.level}`, "data-level": zone.level, "data-value": zone.value.toFixed(2),
      x1: zoneLeft, x2: plotRight, y1: y(zone.value), y2: y(zone.value),
    }));
    labels.push({ level: zone.level, value: zone.value, y: y(zone.value) + 4 });
  }
  spread(labels, 13, top + 8, height - bottom);
  for (const l of labels) {
    chart.append(svg("text", { class: `zone-label ${l.level}`, x: plotRight + 6, y: l.y, "data-level": l.level }, `${l.level.toUpperCase()} ${l.value.toFixed(2)}`));
  }
  chart.append(svg("text", { x: zoneLeft, y: height - 8 }, f.target_date));
  $("chart-title").textContent = `ZL price and target zones for ${horizonName(f.horizon)} ahead`;
  $("zone-caption").textContent =
    `Last close ${fmt(f.price)} c/lb on ${f.as_of}. Target zones for ${f.target_date}: ` +
    `P50 ${fmt(z.p50)} (as likely above as below), P30–P70 ${fmt(z.p30)}–${fmt(z.p70)} (40% of outcomes), ` +
    `P10–P90 ${fmt(z.p10)}–${fmt(z.p90)} (80%).` +
    (f.served_is_random_walk ? " The served forecast is the random walk (no change from the last close)." : "");
}

function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = raw / power;
  return (unit < 1.5 ? 1 : unit < 3.5 ? 2 : unit < 7.5 ? 5 : 10) * power;
}

// Move labels apart so that close zone levels stay readable.
function spread(labels, gap, minY, maxY) {
  labels.sort((a, b) => a.y - b.y);
  for (let i = 1; i < labels.length; i++) labels[i].y = Math.max(labels[i].y, labels[i - 1].y + gap);
  const overflow = labels.length ? labels[labels.length - 1].y - maxY : 0;
  if (overflow > 0) for (const l of labels) l.y -= overflow;
  for (let i = labels.length - 2; i >= 0; i--) labels[i].y = Math.min(labels[i].y, labels[i + 1].y - gap);
  if (labels.length && labels[0].y < minY) { const shift = minY - labels[0].y; for (const l of labels) l.y += shift; }
}

async function signIn(event) {
  event.preventDefault();
  const email = $("signin-email").value.trim();
  const password = $("signin-password").value;
  if (!email || !password) { $("signin-error").textContent = "Enter your email and password."; return; }
  const button = $("signin-form").querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const session = await apiSend("POST", "/session", { email, password });
    $("signin-password").value = "";
    $("signin-error").textContent = "";
    showAccount(session);
    await load();
  } catch (e) {
    $("signin-error").textContent = e.message;
    $("signin-password").value = "";
    $("signin-password").focus();
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  try { await apiSend("DELETE", "/session"); } catch (_) { /* the session is gone either way */ }
  showSignIn("You are signed out.");
}

async function changePassword(event) {
  event.preventDefault();
  const message = $("password-message");
  message.className = "error";
  try {
    const session = await apiSend("POST", "/me/password", {
      current_password: $("password-current").value, new_password: $("password-new").value,
    });
    showAccount(session);
    $("password-form").reset();
    message.className = "ok-message";
    message.textContent = "Password changed. Your other sessions are signed out.";
  } catch (e) {
    if (e instanceof AuthError) { showSignIn(e.message); return; }
    message.textContent = e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  try { localStorage.removeItem("cbi_api_key"); } catch (_) { /* a key kept by an older page */ }
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("password-form").addEventListener("submit", changePassword);
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (state.data) renderChart(forecastFor(state.horizon)); }, 150);
  });
  loadHealth();
  loadMeta().catch(() => {});  // load() reports a failure, with the other requests
  load();
});
