/* Host page: charts over the retained history (uPlot), refreshed from /api/hosts/<name>. */
"use strict";

(function () {
  var mf = window.mailfleet;
  var body = document.body;
  var api = body.getAttribute("data-api");
  var refresh = Number(body.getAttribute("data-refresh")) || 15;
  var PALETTE = ["#0b57b8", "#d9480f", "#2b8a3e", "#ae3ec9", "#c92a2a", "#1098ad", "#5c940d",
                 "#495057"];
  var charts = {};  // name -> {plot, names}
  window.mailfleetCharts = charts;

  function width(el) { return Math.max(280, el.clientWidth || 480); }

  function noData(el, text) {
    el.textContent = "";
    var p = document.createElement("p");
    p.className = "no-data";
    p.textContent = text || "no data yet";
    el.appendChild(p);
  }

  function hasPoints(data) {
    for (var s = 1; s < data.length; s++) {
      for (var i = 0; i < data[s].length; i++) if (data[s][i] !== null) return true;
    }
    return false;
  }

  /* Draw (or redraw) chart `name` in `el`: t is seconds, series is [[label, values], ...]. */
  function draw(name, el, t, series, unit) {
    var data = [t].concat(series.map(function (s) { return s[1]; }));
    var labels = series.map(function (s) { return s[0]; }).join("|");
    var existing = charts[name];
    if (!hasPoints(data)) {
      if (existing) { existing.plot.destroy(); delete charts[name]; }
      noData(el);
      return;
    }
    if (existing && existing.labels === labels) {
      existing.plot.setData(data);
      return;
    }
    if (existing) existing.plot.destroy();
    el.textContent = "";
    var opts = {
      width: width(el),
      height: 220,
      scales: { x: { time: true } },
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
      series: [{}].concat(series.map(function (s, i) {
        return {
          label: s[0],
          stroke: PALETTE[i % PALETTE.length],
          width: 1.5,
          points: { size: 4 },
          value: function (u, v) { return v === null ? "–" : unit === "s" ? mf.seconds(v) : v.toFixed(1) + " d"; },
        };
      })),
      axes: [{}, {
        size: 60,
        values: function (u, vals) {
          return vals.map(function (v) { return unit === "s" ? mf.seconds(v) : v + " d"; });
        },
      }],
    };
    charts[name] = { plot: new uPlot(opts, data, el), labels: labels };
  }

  function phaseBox(check) {
    var id = "chart-phases-" + check;
    var el = document.getElementById(id);
    if (el) return el;
    var fig = document.createElement("figure");
    fig.className = "chart-box";
    var cap = document.createElement("figcaption");
    cap.textContent = check;
    el = document.createElement("div");
    el.className = "chart";
    el.id = id;
    fig.appendChild(cap);
    fig.appendChild(el);
    document.getElementById("phase-charts").appendChild(fig);
    return el;
  }

  /* The checks table: status, the probe's words, timings, as the scheduler records them. */
  function renderChecks(checks) {
    checks.forEach(function (r) {
      var tr = document.querySelector('tr[data-check="' + r.check + '"]');
      if (!tr) return;
      var badge = tr.querySelector(".check-status .badge");
      if (badge.textContent !== r.status) {
        badge.className = "badge s-" + r.status;
        badge.textContent = r.status;
      }
      var text = r.error || (r.status === "ok" ? "ok" : "");
      var err = tr.querySelector(".error-text");
      if (err.textContent !== text) err.textContent = text;
      var why = tr.querySelector(".check-reason");
      if (why.textContent !== (r.reason || "")) why.textContent = r.reason || "";
      tr.querySelector(".check-took").textContent = mf.seconds(r.duration);
      var phases = tr.querySelector(".phases");
      phases.textContent = "";
      Object.keys(r.phases || {}).forEach(function (k) {
        var span = document.createElement("span");
        span.textContent = k + " " + mf.seconds(r.phases[k]);
        phases.appendChild(span);
      });
      [[".check-when", r.started_at], [".check-success", r.last_success_at]].forEach(function (c) {
        var td = tr.querySelector(c[0]);
        td.textContent = "";
        td.appendChild(mf.timeEl(c[1]));
      });
    });
  }

  function renderCells(cells) {
    Object.keys(cells).forEach(function (key) {
      var li = document.querySelector('.cells li[data-key="' + key + '"]');
      if (!li) return;
      var cell = cells[key];
      li.className = "c s-" + cell.status;
      li.title = cell.detail;
      li.querySelector(".cell-text").textContent = cell.text;
    });
  }

  function render(data) {
    var h = data.history;
    renderChecks(data.checks);
    renderCells(data.cells);
    var status = document.getElementById("host-status");
    status.textContent = "";
    var badge = document.createElement("span");
    badge.className = "badge s-" + data.status;
    badge.textContent = data.status;
    status.appendChild(badge);
    var reason = document.getElementById("host-reason");
    reason.hidden = !data.reason;
    reason.className = "reason-big s-text-" + data.status;
    if (data.reason && reason.firstChild && reason.firstChild.nodeType === 3) {
      reason.firstChild.textContent = data.reason + " ";
    } else if (data.reason && !reason.firstChild) {
      reason.textContent = data.reason;
    }
    document.getElementById("history-range").textContent =
      "since " + mf.utc(h.since) + (h.bucket_seconds > 1 ? " (one point per " +
      Math.round(h.bucket_seconds) + " s)" : "");
    var sync = h.sync;
    draw("sync", document.getElementById("chart-sync"), sync.t,
         [["delivery", sync.delivery], ["push", sync.push], ["client", sync.client]], "s");
    draw("cert", document.getElementById("chart-cert"), h.cert_days.t,
         [["days left", h.cert_days.days]], "d");
    Object.keys(h.phases).forEach(function (check) {
      var p = h.phases[check];
      draw("phases-" + check, phaseBox(check), p.t, p.series, "s");
    });
    body.setAttribute("data-updated", String(data.generated_at));
  }

  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (name) {
      var c = charts[name];
      c.plot.setSize({ width: width(c.plot.root.parentNode), height: 220 });
    });
  });

  var tick = mf.poll(function () { return mf.fetchJSON(api).then(render); }, refresh);
  mf.refreshTimes();
  tick();
})();
