// The status page's refresh: every few seconds, fetch /-/status.json and put its texts
// into the page (textContent only: nothing from the server is parsed as HTML).
"use strict";
(function () {
  const EVERY = 3000;
  const main = document.getElementById("routes");
  const notice = document.getElementById("notice");
  const offline = document.getElementById("offline");
  const updated = document.getElementById("updated");

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  }

  function fill(card, route) {
    const text = route.text;
    card.querySelectorAll("[data-f]").forEach(function (el) {
      const name = el.dataset.f;
      if (name === "attempts") {
        el.replaceChildren();
        text.attempts.forEach(function (attempt) {
          const row = document.createElement("tr");
          attempt.forEach(function (value) { cell(row, value); });
          el.appendChild(row);
        });
      } else if (name in text) {
        el.textContent = text[name];
      }
    });
    const state = card.querySelector(".state");
    state.className = "state s-" + route.state;
    const button = card.querySelector("button[data-clear]");
    if (button) {
      button.hidden = !route.clearable;
      button.disabled = false;
    }
  }

  async function refresh() {
    let data;
    try {
      const answer = await fetch("/-/status.json", { cache: "no-store" });
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      data = await answer.json();
    } catch (err) {
      offline.hidden = false;
      return;
    }
    offline.hidden = true;
    const cards = main.querySelectorAll("section[data-route]");
    const names = Array.from(cards, function (c) { return c.dataset.route; });
    const now = data.routes.map(function (r) { return r.name; });
    if (names.join("\n") !== now.join("\n")) {
      window.location.reload(); // a config reload added or removed routes
      return;
    }
    data.routes.forEach(function (route, i) { fill(cards[i], route); });
    updated.textContent = "updated " + data.updated;
  }

  async function clear(button) {
    const route = button.dataset.clear;
    button.disabled = true;
    try {
      const answer = await fetch("/-/sessions/" + encodeURIComponent(route) + "/clear", {
        method: "POST",
        headers: { "X-Auth-Proxy": "1" },
        cache: "no-store",
      });
      const body = await answer.json();
      notice.textContent = answer.ok
        ? route + ": " + (body.lockout ? "lockout cleared; the next request logs in" : "no lockout to clear")
        : route + ": " + body.error.message;
    } catch (err) {
      notice.textContent = route + ": the proxy did not answer";
    }
    await refresh();
  }

  main.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-clear]");
    if (button) clear(button);
  });
  setInterval(function () { if (!document.hidden) refresh(); }, EVERY);
  refresh();
})();
