// "Your programme": the signed-in buyer's programme (GET/PUT /me/programme), its backtest
// (POST /me/programme/backtest, then GET polled until ready) and the cost table; today's
// recommendation in his volume on the recommendation card. Uses app.js's api() and apiSend();
// every text from the API is set with textContent.
// It asks /me/... only for a signed-in person: when the page's data carries the user
// ("cbi:loaded" detail.user) or the sign-in announces him ("cbi:user", detail: the user);
// otherwise the card says to sign in (and the page makes no request that must fail). On
// sign-out ("cbi:user" with null) it stops polling and forgets his programme; an answer that
// arrives after a sign-out (or another sign-in) is dropped. A 401 while polling means the
// session ended elsewhere (signed out, a password change in another browser, expiry): the page
// shows its sign-in, unless this browser holds a new session (its own password change).
"use strict";

(() => {
  const FIELDS = [
    ["railcars_per_window", "pg-railcars"],
    ["railcar_lb", "pg-railcar-lb"],
    ["window_days", "pg-window"],
    ["carry_cents_per_lb_month", "pg-carry"],
    ["max_worst_shortfall_cents", "pg-tolerance"],
  ];
  const STATUS_WORDS = {
    none: "No backtest yet.",
    queued: "Backtest queued…",
    running: "Backtest running…",
    ready: "Backtest ready.",
    failed: "Backtest failed.",
  };
  let pollTimer = null;
  let platformRecommendation = null;
  let loaded = false;
  let user = null;
  let generation = 0;  // one per signed-in person: answers of an earlier one are dropped

  function byId(id) { return document.getElementById(id); }
  function node(tag, text, cls) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }
  function lb(x) { return `${Math.round(x).toLocaleString("en-US")} lb`; }
  function cents(x) { return x === null || x === undefined ? "–" : Number(x).toFixed(2); }
  function dollars(x) { return x === null || x === undefined ? "–" : `$${Math.round(x).toLocaleString("en-US")}`; }
  function cars(x) { return Number(x).toLocaleString("en-US", { maximumFractionDigits: 2 }); }

  function signIn(message) {
    byId("programme-form").hidden = true;
    const note = byId("programme-signin");
    note.hidden = false;
    note.textContent = message || "Sign in to set your own programme.";
  }

  function fill(body) {
    const p = body.programme;
    byId("programme-signin").hidden = true;
    byId("programme-form").hidden = false;
    for (const [name, id] of FIELDS) {
      const input = byId(id);
      input.value = String(p[name]);
      input.removeAttribute("aria-invalid");
      const bounds = body.bounds[name];
      if (bounds) {
        input.min = String(bounds.min);
        input.max = String(bounds.max);
        byId(`${id}-hint`).textContent = `${Number(bounds.min).toLocaleString("en-US")} to ${Number(bounds.max).toLocaleString("en-US")} ${bounds.unit}`;
      }
    }
    byId("programme-origin").textContent = body.default
      ? `You have not set a programme: these are the platform's defaults (${p.railcars_per_window} railcars × ${lb(p.railcar_lb)} per ${p.window_days}-trading-day window).`
      : `Your programme: ${p.railcars_per_window} railcars × ${lb(p.railcar_lb)} = ${lb(p.total_lb)} per ${p.window_days}-trading-day window.`;
    showRecommendation(body);
  }

  // The recommendation card, in his volume once he has set a programme.
  function showRecommendation(body) {
    const line = byId("rec-programme");
    const rec = body.recommendation;
    if (!rec) { line.hidden = true; return; }
    const p = body.programme;
    line.hidden = false;
    line.textContent =
      `For ${body.default ? "the default" : "your"} programme (${p.railcars_per_window} railcars × ${lb(p.railcar_lb)} = ` +
      `${lb(p.total_lb)} per window): today ${String(rec.action || "").toUpperCase()} ${lb(rec.buy_lb)} ` +
      `(${cars(rec.buy_railcars)} railcars), ${(100 * rec.share).toFixed(1)}% of the window, as the platform's advice for its own programme.` +
      (rec.same_policy ? "" : ` Today's advice comes from the ${rec.policy} policy; for your tolerance the backtest shows ${rec.shown_policy}.`);
    if (body.default) return;
    const action = byId("rec-action");
    const word = action.querySelector("span");
    if (!word || !platformRecommendation) return;
    action.replaceChildren(word, ` ${lb(rec.buy_lb)}`);
    if (platformRecommendation.price) action.append(` at ${cents(platformRecommendation.price)} c/lb`);
    action.append(node("span", "your programme", "tag"));
  }

  function stopPolling() {
    clearTimeout(pollTimer);
    pollTimer = null;
  }

  // Signed out: no poll, and nothing of his programme left in the card.
  function forget() {
    generation += 1;
    stopPolling();
    for (const [, id] of FIELDS) { byId(id).value = ""; byId(id).removeAttribute("aria-invalid"); }
    byId("programme-origin").textContent = "";
    byId("programme-error").textContent = "";
    const status = byId("programme-status");
    status.textContent = "";
    delete status.dataset.status;
    byId("programme-table").replaceChildren();
    byId("programme-table").hidden = true;
    byId("programme-caption").textContent = "";
    byId("rec-programme").hidden = true;
    byId("rec-programme").textContent = "";
    signIn();
  }

  // A 401 where he was signed in: the page's sign-in (app.js), unless GET /session finds the
  // new session of this browser (a password change here crossed the request).
  async function sessionEnded(e) {
    const ticket = generation;
    let session = null;
    try { session = await whoAmI(); } catch (_) { session = null; }
    if (ticket !== generation) return;  // signed out (or in again) meanwhile
    if (session && user && session.user.id === user.id) {
      if (!pollTimer) pollTimer = setTimeout(poll, 1000 * POLL_SECONDS);
      return;
    }
    if (typeof showSignIn === "function") showSignIn(e.message); else signIn(e.message);
  }

  function showStatus(body) {
    stopPolling();
    const el = byId("programme-status");
    el.dataset.status = body.status;
    let words = STATUS_WORDS[body.status] || body.status;
    if (body.status === "ready" && body.outdated) words = `Backtest from older data (${body.as_of}); ask again for today's.`;
    else if (body.status === "ready") words = `Backtest ready (data as of ${body.as_of}).`;
    else if (body.status === "failed") words = `Backtest failed: ${body.error || "no message"}`;
    el.textContent = words;
    if (body.status === "ready" && body.result) renderResult(body.result);
    else if (body.status !== "ready") { byId("programme-table").hidden = true; byId("programme-caption").textContent = ""; }
    if (body.poll_seconds) pollTimer = setTimeout(poll, 1000 * body.poll_seconds);
  }

  // One row: what is bought, then P10, P50, P90, each in c/lb with the window's dollars below.
  function row(table, label, stats, cls) {
    const tr = node("tr", null, cls);
    tr.append(node("td", label, "part"));
    for (const level of ["p10", "p50", "p90"]) {
      const td = node("td");
      td.dataset.level = level;
      td.append(node("span", `${cents(stats[`${level}_cents`])} c/lb`, "cents"), node("span", dollars(stats[`${level}_dollars`]), "dollars"));
      tr.append(td);
    }
    table.append(tr);
  }

  function renderResult(r) {
    const table = byId("programme-table");
    table.replaceChildren();
    table.append(node("caption", `Average cost per window: c/lb, and dollars for ${lb(r.total_lb)}`, "caption"));
    const head = node("tr");
    for (const h of ["Buying", "P10", "P50", "P90"]) {
      const th = node("th", h);
      th.scope = "col";
      head.append(th);
    }
    const thead = node("thead");
    thead.append(head);
    table.append(thead);
    const tbody = node("tbody");
    const policy = r.recommended_policy;
    row(tbody, `Following the recommendation (${policy}), past ${r.windows} windows`, r.record.recommended, "recommended");
    row(tbody, `Even buying, past ${r.windows} windows`, r.record.even, "even");
    if (r.coming_window) {
      row(tbody, `Even buying, the coming ${r.coming_window.days} trading days (from today's zones)`, r.coming_window.even, "coming");
    }
    table.append(tbody);
    table.hidden = false;
    const worst = r.worst_shortfall_cents;
    const words = [
      `Backtest windows from ${r.first_window} to ${r.last_window_end}, one every ${r.window_step} trading days; the policy and its parameters are frozen from the development period, your programme sets the quantities, the window and the carry.`,
      policy === "even"
        ? "The recommendation is even buying: no forecast-driven policy saved money on average over the development period within your tolerance."
        : `Its worst past window cost ${cents(worst)} c/lb more than even buying (you accept ${cents(r.choice.tolerance_cents)}): ${r.within_tolerance ? "within" : "beyond"} your tolerance.`,
    ];
    if (r.coming_window) words.push(`Coming window: ${r.coming_window.method}`);
    else words.push("Coming window: no served zones to price it from.");
    byId("programme-caption").textContent = words.join(" ");
  }

  async function poll() {
    pollTimer = null;
    if (!user) return;
    const ticket = generation;
    try {
      const body = await api("/me/programme/backtest");
      if (ticket === generation) showStatus(body);
    } catch (e) {
      if (ticket !== generation) return;
      if (e instanceof AuthError) await sessionEnded(e);
      else byId("programme-status").textContent = e.message;
    }
  }

  async function requestBacktest(ticket) {
    const body = await apiSend("POST", "/me/programme/backtest");
    if (ticket === generation) showStatus(body);
  }

  async function start() {
    const ticket = generation;
    try {
      const body = await api("/me/programme");
      if (ticket !== generation) return;
      fill(body);
      await requestBacktest(ticket);
    } catch (e) {
      if (ticket !== generation) return;
      if (e instanceof AuthError) signIn(e.message);
      else byId("programme-status").textContent = e.message;
    }
  }

  async function save(event) {
    event.preventDefault();
    const error = byId("programme-error");
    error.textContent = "";
    const body = {};
    for (const [name, id] of FIELDS) {
      byId(id).removeAttribute("aria-invalid");
      body[name] = byId(id).value.trim();
    }
    const ticket = generation;
    try {
      const answer = await apiSend("PUT", "/me/programme", body);
      if (ticket !== generation) return;
      fill(answer);
      await requestBacktest(ticket);
    } catch (e) {
      if (ticket !== generation) return;
      if (e instanceof AuthError) { signIn(e.message); return; }
      error.textContent = e.message;
      const bad = e.body && FIELDS.find(([name]) => name === e.body.field);
      if (bad) { byId(bad[1]).setAttribute("aria-invalid", "true"); byId(bad[1]).focus(); }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    byId("programme-form").addEventListener("submit", save);
  });
  document.addEventListener("cbi:loaded", (event) => {
    const data = event.detail || {};
    loaded = true;
    platformRecommendation = data.recommendation && !data.recommendation.error ? data.recommendation : null;
    if (data.user) user = data.user;
    if (user) start(); else signIn();
  });
  document.addEventListener("cbi:user", (event) => {
    const before = user;
    user = event.detail;
    if (!user) { loaded = false; forget(); return; }  // signed out: the next "cbi:loaded" starts
    if (before && before.id !== user.id) forget();  // another person: nothing of the first
    if (loaded) start();  // e.g. a new session after his password change
  });
})();
