/* Fleet page: sort, filter, and keep the server-rendered table current from /api/fleet. */
"use strict";

(function () {
  var mf = window.mailfleet;
  var body = document.body;
  var api = body.getAttribute("data-api");
  var refresh = Number(body.getAttribute("data-refresh")) || 15;
  var hostUrl = body.getAttribute("data-host-url");
  var table = document.getElementById("fleet");
  var tbody = table.tBodies[0];
  var RANK = { critical: 3, warning: 2, unknown: 1, ok: 0 };
  var columns = [];  // cell keys in column order, from the header
  var numeric = {};
  var rows = new Map();  // host name -> <tr>
  var sortKey = "status", sortDir = -1;
  var filterName = document.getElementById("filter-name");
  var filterGroup = document.getElementById("filter-group");
  var filterStatus = document.getElementById("filter-status");

  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    var key = th.getAttribute("data-sort");
    if (key !== "status" && key !== "name" && key !== "last_probe_at") {
      columns.push(key);
      numeric[key] = th.classList.contains("num");
    }
    th.querySelector("button").addEventListener("click", function () { sortBy(key); });
  });
  Array.prototype.forEach.call(tbody.rows, function (tr) { rows.set(tr.getAttribute("data-host"), tr); });

  /* -- sorting -------------------------------------------------------------------- */
  function sortValue(tr, key) {
    if (key === "status") return RANK[tr.getAttribute("data-status")];
    if (key === "name") return tr.getAttribute("data-host");
    if (key === "last_probe_at") {
      var last = tr.getAttribute("data-last");
      return last === "" ? null : Number(last);
    }
    var td = tr.querySelector('td[data-key="' + key + '"]');
    var v = td ? td.getAttribute("data-sort") : "";
    if (v === "" || v === null) return null;
    return isNaN(Number(v)) ? v : Number(v);
  }

  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  function byName(a, b) { return collator.compare(a, b); }  /* mx2 before mx10 */

  function compare(a, b) {
    var va = sortValue(a, sortKey), vb = sortValue(b, sortKey);
    if (va === null && vb !== null) return 1;   // no data sorts last either way
    if (vb === null && va !== null) return -1;
    if (sortKey === "name") return byName(va, vb) * sortDir;
    if (va !== vb && va !== null) return (va < vb ? -1 : 1) * sortDir;
    return byName(a.getAttribute("data-host"), b.getAttribute("data-host"));
  }

  function applySort() {
    var current = Array.prototype.slice.call(tbody.rows);
    var sorted = current.slice().sort(compare);
    var same = sorted.every(function (tr, i) { return tr === current[i]; });
    if (same) return;
    var frag = document.createDocumentFragment();
    sorted.forEach(function (tr) { frag.appendChild(tr); });
    tbody.appendChild(frag);
  }

  function sortBy(key) {
    if (sortKey === key) sortDir = -sortDir;
    else { sortKey = key; sortDir = key === "status" ? -1 : 1; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      if (th.getAttribute("data-sort") === sortKey) {
        th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
      } else {
        th.removeAttribute("aria-sort");
      }
    });
    applySort();
  }

  /* -- filtering ------------------------------------------------------------------ */
  function applyFilter() {
    var name = filterName.value.trim().toLowerCase();
    var group = filterGroup.value;
    var status = filterStatus.value;
    var shown = 0;
    rows.forEach(function (tr, host) {
      var s = tr.getAttribute("data-status");
      var ok = (!name || host.toLowerCase().indexOf(name) >= 0) &&
        (!group || (" " + tr.getAttribute("data-groups") + " ").indexOf(" " + group + " ") >= 0) &&
        (!status || (status === "problem" ? s !== "ok" : s === status));
      tr.hidden = !ok;
      if (ok) shown++;
    });
    document.getElementById("shown").textContent = "showing " + shown + " of " + rows.size;
    document.querySelectorAll(".count").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-status") === status));
    });
  }
  [filterName, filterGroup, filterStatus].forEach(function (el) {
    el.addEventListener("input", applyFilter);
    el.addEventListener("change", applyFilter);
  });
  document.getElementById("filters").addEventListener("submit", function (e) { e.preventDefault(); });
  document.querySelectorAll(".count").forEach(function (b) {
    b.addEventListener("click", function () {
      var s = b.getAttribute("data-status");
      filterStatus.value = filterStatus.value === s ? "" : s;
      applyFilter();
    });
  });

  /* -- live update from /api/fleet ------------------------------------------------ */
  function setCell(td, key, cell) {
    var cls = "c s-" + cell.status + (numeric[key] ? " num" : "");
    if (td.className !== cls) td.className = cls;
    if (td.textContent !== cell.text) td.textContent = cell.text;
    var sort = cell.sort === null || cell.sort === undefined ? "" : String(cell.sort);
    if (td.getAttribute("data-sort") !== sort) td.setAttribute("data-sort", sort);
    var title = cell.status + (cell.detail ? ": " + cell.detail : "");
    if (td.title !== title) td.title = title;
  }

  function newRow(row) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-host", row.name);
    var st = document.createElement("td");
    st.className = "status-cell";
    var badge = document.createElement("span");
    var reason = document.createElement("span");
    reason.className = "reason";
    st.appendChild(badge);
    st.appendChild(reason);
    tr.appendChild(st);
    var th = document.createElement("th");
    th.scope = "row";
    th.className = "host";
    var a = document.createElement("a");
    a.href = hostUrl.replace("__HOST__", encodeURIComponent(row.name));
    a.textContent = row.name;
    th.appendChild(a);
    tr.appendChild(th);
    columns.forEach(function (key) {
      var td = document.createElement("td");
      td.setAttribute("data-key", key);
      tr.appendChild(td);
    });
    var last = document.createElement("td");
    last.className = "last";
    tr.appendChild(last);
    tbody.appendChild(tr);
    rows.set(row.name, tr);
    return tr;
  }

  function updateRow(tr, row) {
    var changed = tr.getAttribute("data-status") !== row.status;
    tr.setAttribute("data-status", row.status);
    tr.setAttribute("data-groups", row.groups.join(" "));
    var badge = tr.cells[0].firstElementChild;
    if (badge.textContent !== row.status) {
      badge.className = "badge s-" + row.status;
      badge.textContent = row.status;
    }
    var reason = tr.cells[0].lastElementChild;
    if (reason.textContent !== row.reason) { reason.textContent = row.reason; reason.title = row.reason; }
    columns.forEach(function (key, i) { setCell(tr.cells[2 + i], key, row.cells[key]); });
    var lastTs = row.last_probe_at === null ? "" : String(row.last_probe_at);
    if (tr.getAttribute("data-last") !== lastTs) {
      tr.setAttribute("data-last", lastTs);
      var last = tr.cells[tr.cells.length - 1];
      last.textContent = "";
      last.appendChild(mf.timeEl(row.last_probe_at));
    }
    if (changed) {
      tr.classList.remove("changed");
      void tr.offsetWidth;  // restart the highlight animation
      tr.classList.add("changed");
    }
  }

  function update(data) {
    var seen = new Set();
    data.hosts.forEach(function (row) {
      seen.add(row.name);
      updateRow(rows.get(row.name) || newRow(row), row);
    });
    rows.forEach(function (tr, name) {
      if (!seen.has(name)) { tr.remove(); rows.delete(name); }
    });
    Object.keys(data.counts).forEach(function (s) {
      var el = document.getElementById("count-" + s);
      if (el && el.textContent !== String(data.counts[s])) el.textContent = String(data.counts[s]);
    });
    document.getElementById("host-total").textContent = data.hosts.length + " hosts";
    var sw = data.last_sweep, sweep = document.getElementById("sweep");
    if (sw) {
      sweep.textContent = "Last sweep ";
      sweep.appendChild(mf.timeEl(sw.started_at));
      sweep.appendChild(document.createTextNode(
        ": " + sw.probes + " probes, " + sw.failures + " failed, took " + mf.seconds(sw.duration) +
        (sw.overrun ? " — overran its interval" : "") + ". Probing every " +
        Math.round(data.interval) + " s."));
    }
    applySort();
    applyFilter();
    body.setAttribute("data-updated", String(data.generated_at));
  }

  var stale = document.getElementById("stale");
  var tick = mf.poll(function () {
    return mf.fetchJSON(api).then(function (data) { stale.hidden = true; update(data); },
      function (e) {
        stale.hidden = false;
        stale.textContent = "Cannot reach the dashboard (" + e.message +
          "): the table shows the last data received.";
        throw e;
      });
  }, refresh);
  applySort();
  applyFilter();
  mf.refreshTimes();
  tick();
})();
