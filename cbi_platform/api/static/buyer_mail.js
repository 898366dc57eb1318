// "Your mail": the buyer's digest cadence and his price alerts (GET/PUT /me/digest,
// GET/POST/DELETE /me/alerts), through app.js's api() and apiSend(). Every text from the API is
// set with textContent. On sign-out ("cbi:user" with null) the card hides and forgets his digest
// and alerts; an answer that arrives after a sign-out (or another sign-in) is dropped.
"use strict";

(function () {
  const byId = (id) => document.getElementById(id);
  let generation = 0;  // one per signed-in person: answers of an earlier one are dropped

  function showError(e) {
    byId("mail-error").textContent = e ? e.message || String(e) : "";
  }

  function status(text) { byId("mail-status").textContent = text; }

  function renderAlerts(body) {
    const list = byId("alert-list");
    list.replaceChildren();
    if (!body.alerts.length) {
      const empty = document.createElement("li");
      empty.className = "empty";
      empty.textContent = "No price alert yet.";
      list.append(empty);
    }
    for (const a of body.alerts) {
      const item = document.createElement("li");
      item.dataset.alertId = String(a.id);
      const words = document.createElement("span");
      words.textContent = a.note ? `${a.description} — ${a.note}` : a.description;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "link";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove alert: ${a.description}`);
      remove.addEventListener("click", async () => {
        try { await apiSend("DELETE", `/me/alerts/${a.id}`); showError(null); await refresh(); }
        catch (e) { showError(e); }
      });
      item.append(words, " ", remove);
      list.append(item);
    }
    byId("alert-form").querySelector("button").disabled = body.alerts.length >= body.max_alerts;
  }

  async function refresh() {
    const ticket = generation;
    const [sub, alerts] = await Promise.all([api("/me/digest"), api("/me/alerts")]);
    if (ticket !== generation) return false;
    byId("digest-cadence").value = sub.cadence;
    status(
      sub.cadence === "off"
        ? "No digest by mail."
        : `Digest: ${sub.cadence}` + (sub.last_sent_as_of ? `, last sent for ${sub.last_sent_as_of}.` : ".")
    );
    renderAlerts(alerts);
    return true;
  }

  function syncLevel() {
    const level = byId("alert-level");
    const fixed = byId("alert-target").value === "level";
    level.disabled = !fixed;
    level.required = fixed;
  }

  // Only a person signed in has a digest and alerts (app.js's state.user, set at sign-in); a
  // page opened with an API key alone makes no /me request.
  function signedIn() { return typeof state !== "undefined" && Boolean(state.user); }

  async function start() {
    const card = byId("mail-card");
    if (!signedIn()) { card.hidden = true; return; }
    try { if (await refresh()) card.hidden = false; }
    catch (e) { card.hidden = true; return; } // not signed in as a person: the card stays hidden
  }

  // Signed out (or another person signed in): nothing of his mail left on the page.
  function forget() {
    generation += 1;
    byId("mail-card").hidden = true;
    byId("alert-list").replaceChildren();
    byId("digest-cadence").value = "off";
    status("");
    showError(null);
  }

  document.addEventListener("DOMContentLoaded", () => {
    syncLevel();
    byId("alert-target").addEventListener("change", syncLevel);
    byId("digest-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await apiSend("PUT", "/me/digest", { cadence: byId("digest-cadence").value });
        showError(null);
        await refresh();
      } catch (e) { showError(e); }
    });
    byId("alert-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const target = byId("alert-target").value;
      const body = { side: byId("alert-side").value, note: byId("alert-note").value || null };
      if (target === "level") body.level = Number(byId("alert-level").value);
      else [body.horizon, body.zone] = target.split(":");
      try {
        await apiSend("POST", "/me/alerts", body);
        byId("alert-level").value = "";
        byId("alert-note").value = "";
        showError(null);
        await refresh();
      } catch (e) { showError(e); }
    });
  });
  let user = null;
  document.addEventListener("cbi:user", (event) => {
    const before = user;
    user = event.detail;
    if (!user || (before && before.id !== user.id)) forget();
  });
  document.addEventListener("cbi:loaded", start);
})();
