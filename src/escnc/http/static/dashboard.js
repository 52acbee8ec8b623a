// escnc dashboard: live escEvents over Server-Sent Events; the state part of the page
// is re-read (server-rendered, escaped HTML) after events. No inline handlers (CSP).
"use strict";
(function () {
  const body = document.body;
  const tenant = body.dataset.tenant || "";
  const query = tenant ? "tenant=" + encodeURIComponent(tenant) : "";
  const state = document.getElementById("state");
  const list = document.getElementById("events");
  const live = document.getElementById("live");
  const select = document.getElementById("tenant");
  const MAX_EVENTS = 200;

  select.addEventListener("change", function () {
    const url = new URL(window.location.href);
    if (select.value) { url.searchParams.set("tenant", select.value); }
    else { url.searchParams.delete("tenant"); }
    window.location.assign(url.toString());
  });

  // at most one state request at a time; events meanwhile ask for one more
  let timer = null, busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const r = await fetch("/dashboard/state" + (query ? "?" + query : ""),
                            {credentials: "same-origin", cache: "no-store"});
      if (r.ok) { state.innerHTML = await r.text(); }
    } catch (e) {
      // the next event or reconnect asks again
    } finally {
      busy = false;
      if (again) { again = false; schedule(); }
    }
  }
  // a burst of events costs one state request (each is a NETCONF get on the server)
  function schedule() {
    if (timer === null) {
      timer = window.setTimeout(function () { timer = null; refresh(); }, 300);
    }
  }

  function cell(row, text, cls) {
    const td = document.createElement("span");
    td.textContent = text;
    if (cls) { td.className = cls; }
    row.appendChild(td);
  }
  function show(ev) {
    const li = document.createElement("li");
    li.className = "event " + (ev.status === "SUCCESS" ? "ok" : "bad");
    li.dataset.type = ev.type;
    li.dataset.deployment = ev.tenant + "/" + ev.deployment;
    cell(li, (ev.time || "").replace("T", " ").slice(0, 19), "ev-time");
    cell(li, ev.type, "ev-type");
    const what = ev.deployment ? ev.tenant + "/" + ev.deployment : (ev.tenant || "");
    cell(li, what + (ev.vm ? " " + ev.vm : ""), "ev-what");
    cell(li, ev.status_code + " " + ev.message, "ev-message");
    list.insertBefore(li, list.firstChild);
    while (list.children.length > MAX_EVENTS) { list.removeChild(list.lastChild); }
  }

  const source = new EventSource("/dashboard/events?after=" +
                                 encodeURIComponent(body.dataset.after || "0") +
                                 (query ? "&" + query : ""));
  source.addEventListener("open", function () {
    live.textContent = "live";
    live.className = "live-on";
    schedule();  // anything missed while (re)connecting
  });
  source.addEventListener("error", function () {
    live.textContent = "reconnecting";
    live.className = "live-off";
  });
  source.addEventListener("escEvent", function (msg) {
    try { show(JSON.parse(msg.data)); } catch (e) { return; }
    schedule();
  });
})();
