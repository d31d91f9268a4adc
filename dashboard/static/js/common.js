/* mailfleet: helpers shared by the pages (no framework, no inline script: see the CSP). */
"use strict";

window.mailfleet = (function () {
  function ago(ts) {
    if (ts === null || ts === undefined || ts === "") return "never";
    var s = Math.max(0, Date.now() / 1000 - Number(ts));
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }

  function utc(ts) {
    return new Date(Number(ts) * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function seconds(v) {
    if (v === null || v === undefined) return "";
    if (v >= 1) return v.toFixed(2) + " s";
    var ms = v * 1000;  // under 10 ms one decimal, so an axis of 0.4 ms steps is not "0, 0, 1"
    return (ms > 0 && ms < 10 ? ms.toFixed(1) : String(Math.round(ms))) + " ms";
  }

  /* <time data-ts> elements show "12 s ago"; keep them current. */
  function refreshTimes(root) {
    var els = (root || document).querySelectorAll("time[data-ts]");
    for (var i = 0; i < els.length; i++) {
      var t = ago(els[i].getAttribute("data-ts"));
      if (els[i].textContent !== t) els[i].textContent = t;
    }
  }

  function timeEl(ts) {
    if (ts === null || ts === undefined) {
      var never = document.createElement("span");
      never.className = "muted";
      never.textContent = "never";
      return never;
    }
    var el = document.createElement("time");
    el.setAttribute("data-ts", String(ts));
    el.setAttribute("datetime", utc(ts));
    el.title = utc(ts);
    el.textContent = ago(ts);
    return el;
  }

  function fetchJSON(url, timeoutMs) {
    var ctl = new AbortController();
    var timer = setTimeout(function () { ctl.abort(); }, timeoutMs || 10000);
    return fetch(url, { signal: ctl.signal, credentials: "same-origin",
                        headers: { "Accept": "application/json" } })
      .then(function (r) {
        clearTimeout(timer);
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      }, function (e) { clearTimeout(timer); throw e; });
  }

  /* The "updated 3 s ago" indicator; says loudly when the data went stale. */
  var live = { at: null, error: null, refresh: 15 };
  function showLive() {
    var el = document.getElementById("live");
    if (!el) return;
    var stale = live.at !== null && Date.now() / 1000 - live.at > 3 * live.refresh;
    if (live.error && (stale || live.at === null)) {
      el.textContent = "not updating: " + live.error + (live.at ? " (data from " + ago(live.at) + ")" : "");
      el.className = "live stale";
    } else if (live.at !== null) {
      el.textContent = "live · updated " + ago(live.at);
      el.className = "live";
    }
  }
  function markUpdated(ok, error) {
    if (ok) { live.at = Date.now() / 1000; live.error = null; } else { live.error = error; }
    showLive();
  }

  /* Call fn now-ish and every `refresh` seconds, never two at once. */
  function poll(fn, refresh) {
    live.refresh = refresh;
    var busy = false;
    function tick() {
      if (busy) return;
      busy = true;
      Promise.resolve().then(fn).then(function () { markUpdated(true); },
        function (e) { markUpdated(false, e && e.message ? e.message : String(e)); })
        .then(function () { busy = false; });
    }
    setInterval(tick, refresh * 1000);
    setInterval(function () { refreshTimes(); showLive(); }, 5000);
    return tick;
  }

  return { ago: ago, utc: utc, seconds: seconds, refreshTimes: refreshTimes, timeEl: timeEl,
           fetchJSON: fetchJSON, poll: poll, markUpdated: markUpdated };
})();
