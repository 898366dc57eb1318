// The buyer's insight (issue 22 §3, §4, §7): what past forecasts said and what happened, the
// market-intelligence card and the notices a buyer must never misread. Builds on app.js (api(),
// the "cbi:loaded" and "cbi:horizon" events). Every text from the API is set with textContent.
"use strict";

(() => {
  const NS = "http://www.w3.org/2000/svg";
  const ICONS = { stale: "◔", provisional: "⚠", random_walk: "=" };
  const insight = { notices: null, calibration: {}, horizon: null };

  function byId(id) { return document.getElementById(id); }

  function node(tag, attrs, text) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }

  function shape(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }

  // ---- notices (§7): one sentence each, from the API, styled per kind with an icon and label.

  function renderNotices() {
    const box = byId("notices");
    box.replaceChildren();
    const data = insight.notices;
    const mine = data && !data.error ? data.horizons.find((x) => x.horizon === insight.horizon) : null;
    const list = mine ? mine.notices : [];
    for (const n of list) {
      const item = node("p", { class: `notice-item notice-${n.kind}`, "data-kind": n.kind });
      item.append(
        node("span", { class: "notice-icon", "aria-hidden": "true" }, ICONS[n.kind] || "!"),
        node("strong", { class: "notice-label" }, n.label),
        node("span", { class: "notice-text" }, n.sentence),
      );
      box.append(item);
    }
    box.hidden = list.length === 0;
    box.dataset.horizon = insight.horizon || "";
    box.dataset.ready = String(insight.notices !== null);  // true once the API has answered
  }

  // ---- past zones against what happened (§3)

  function dateValue(text) { return Date.parse(`${text}T00:00:00Z`); }

  function areaPath(rows, x, y, lo, hi) {
    const top = rows.map((r, i) => `${i ? "L" : "M"}${x(r).toFixed(1)},${y(r[hi]).toFixed(1)}`);
    const bottom = rows.slice().reverse().map((r) => `L${x(r).toFixed(1)},${y(r[lo]).toFixed(1)}`);
    return `${top.join(" ")} ${bottom.join(" ")} Z`;
  }

  function linePath(rows, x, y, key) {
    return rows.map((r, i) => `${i ? "L" : "M"}${x(r).toFixed(1)},${y(r[key]).toFixed(1)}`).join(" ");
  }

  function drawPastZones(data) {
    const chart = byId("past-zones-chart");
    const width = Math.max(300, Math.round(chart.parentElement.clientWidth || 800));
    const height = width < 520 ? 240 : 300;
    chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
    chart.setAttribute("width", width);
    chart.setAttribute("height", height);
    chart.replaceChildren(shape("title", {}, data.summary));
    chart.setAttribute("aria-label", data.summary);
    chart.dataset.source = data.source;
    chart.dataset.points = String(data.zones.length);
    const rows = data.zones.filter((r) => r.p10 !== null && r.p90 !== null && r.actual !== null);
    if (rows.length === 0) {
      chart.append(shape("text", { class: "past-empty", x: width / 2, y: height / 2, "text-anchor": "middle" },
        "No past zones to draw yet"));
      return;
    }
    const values = rows.flatMap((r) => [r.p10, r.p90, r.actual]);
    let lo = Math.min(...values), hi = Math.max(...values);
    const pad = (hi - lo) * 0.08 || 1;
    lo -= pad; hi += pad;
    const left = 44, right = 12, top = 12, bottom = 26;
    const t0 = dateValue(rows[0].target_date), t1 = dateValue(rows[rows.length - 1].target_date);
    const x = (r) => (t1 === t0 ? (left + width - right) / 2 : left + ((dateValue(r.target_date) - t0) / (t1 - t0)) * (width - right - left));
    const y = (v) => top + ((hi - v) / (hi - lo)) * (height - top - bottom);
    const step = niceStep((hi - lo) / 4);
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
      chart.append(shape("line", { class: "grid-line", x1: left, x2: width - right, y1: y(v), y2: y(v) }));
      chart.append(shape("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, v.toFixed(step < 1 ? 1 : 0)));
    }
    chart.append(shape("path", { class: "past-band-outer", d: areaPath(rows, x, y, "p10", "p90") }));
    if (rows.every((r) => r.p30 !== null && r.p70 !== null)) {
      chart.append(shape("path", { class: "past-band-inner", d: areaPath(rows, x, y, "p30", "p70") }));
    }
    if (rows.every((r) => r.p50 !== null)) chart.append(shape("path", { class: "past-p50", d: linePath(rows, x, y, "p50") }));
    chart.append(shape("path", { class: "past-realised", d: linePath(rows, x, y, "actual"), "data-points": rows.length }));
    for (const r of rows) {
      if (r.actual < r.p10 || r.actual > r.p90) {
        chart.append(shape("circle", { class: "past-miss", cx: x(r), cy: y(r.actual), r: 3, "data-target": r.target_date }));
      }
    }
    chart.append(shape("text", { x: left, y: height - 6 }, rows[0].target_date));
    chart.append(shape("text", { x: width - right, y: height - 6, "text-anchor": "end" }, rows[rows.length - 1].target_date));
  }

  function niceStep(raw) {
    const power = 10 ** Math.floor(Math.log10(raw));
    const unit = raw / power;
    return (unit < 1.5 ? 1 : unit < 3.5 ? 2 : unit < 7.5 ? 5 : 10) * power;
  }

  function renderPastZones() {
    const card = byId("past-zones-card");
    const h = insight.horizon;
    const data = insight.calibration[h];
    if (!data) return;
    card.dataset.horizon = h;
    const label = byId("past-zones-label");
    const rates = byId("past-zones-rates");
    rates.replaceChildren();
    if (data.error) {
      label.textContent = data.error;
      label.className = "caption";
      byId("past-zones-chart").replaceChildren();
      card.dataset.ready = "true";
      return;
    }
    label.textContent = data.label;
    label.className = `caption past-source past-source-${data.source}`;
    label.dataset.source = data.source;
    drawPastZones(data);
    for (const rate of data.hit_rates) rates.append(node("li", { "data-band": rate.band }, rate.sentence));
    byId("past-zones-method").textContent = data.method;
    card.dataset.ready = "true";
  }

  async function showHorizon(h) {
    insight.horizon = h;
    renderNotices();
    const card = byId("past-zones-card");
    card.dataset.ready = "false";
    if (!insight.calibration[h]) {
      try { insight.calibration[h] = await api(`/calibration/${h}`); } catch (e) { insight.calibration[h] = { error: e.message }; }
    }
    if (insight.horizon === h) renderPastZones();
  }

  // ---- market intelligence (§4)

  function renderIntelligence(data) {
    const list = byId("intel-list");
    list.replaceChildren();
    const card = byId("intel-card");
    if (!data || data.error) {
      list.append(node("p", { class: "caption" }, (data && data.error) || "Not available."));
      card.dataset.ready = "true";
      return;
    }
    for (const item of data.items) {
      const wrap = node("div", { class: `intel-item intel-${item.status}`, "data-key": item.key, "data-status": item.status, "data-stale": String(item.stale) });
      const head = node("dt", { class: "intel-head" });
      const fresh = item.status !== "ok" ? "absent" : item.stale ? "stale" : "fresh";
      head.append(
        node("span", { class: "intel-title" }, item.title),
        node("span", { class: `intel-fresh ${fresh}` }, (item.stale ? "◔ " : "") + item.freshness),
      );
      wrap.append(head, node("dd", { class: "intel-text" }, item.text));
      list.append(wrap);
    }
    card.dataset.ready = "true";
  }

  async function loadAll() {
    const [notices, intelligence] = await Promise.all([
      api("/notices").catch((e) => ({ error: e.message })),
      api("/intelligence").catch((e) => ({ error: e.message })),
    ]);
    insight.notices = notices;
    if (insight.horizon) renderNotices();
    renderIntelligence(intelligence);
  }

  document.addEventListener("cbi:loaded", () => { insight.calibration = {}; loadAll(); });
  document.addEventListener("cbi:horizon", (event) => { showHorizon(event.detail); });
  let timer = null;
  window.addEventListener("resize", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const data = insight.calibration[insight.horizon];
      if (data && !data.error) drawPastZones(data);
    }, 150);
  });
})();
