/* The index of report.html: summary, sorting, filtering and paging over ARPO.rows.
   Rows come from report_rows.js (one ARPO.rows.push per finished image; a later line for an
   image replaces its earlier one, as in results.jsonl). Data is only ever put into the page
   as text (textContent) or as URL attributes built from relative, URL-quoted paths. */
(function () {
  "use strict";
  var A = window.ARPO;
  var t0 = performance.now();
  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) { for (var k in attrs) { if (attrs[k] !== null && attrs[k] !== undefined) e.setAttribute(k, attrs[k]); } }
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function isNum(x) { return typeof x === "number" && isFinite(x); }
  function fmt(x, d) { return isNum(x) ? x.toFixed(d === undefined ? 4 : d) : "–"; }
  function relUrl(p) {  /* paths are quoted by the writer; refuse anything that is not a relative path */
    return (typeof p === "string" && p && !/^[a-z][a-z0-9+.-]*:/i.test(p) && p.charAt(0) !== "/") ? p : null;
  }

  if (!A.summary) {
    showError("report_summary.js did not load: rerun the batch job, or `python -m agents.report OUT`, to rebuild it.");
  }
  if (A.loadErrors.length) {
    showError(A.loadErrors.join("; ") + ": a data file is damaged; rerun the batch job, or `python -m agents.report OUT`, to rebuild it from results.jsonl.");
  }
  function showError(text) { var b = $("load-error"); b.textContent = text; b.hidden = false; }

  /* latest row per image id, in the order ids first appeared */
  var byId = new Map();
  (A.rows || []).forEach(function (r) { if (r && typeof r.id === "string") byId.set(r.id, r); });
  var rows = Array.from(byId.values());
  rows.forEach(function (r, i) { r._i = i; r._lname = String(r.name || "").toLowerCase(); });

  /* ---------------------------------------------------------------- summary */
  function median(xs) {
    if (!xs.length) return null;
    var s = xs.slice().sort(function (a, b) { return a - b; });
    var m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  }
  function mean(xs) { if (!xs.length) return null; var t = 0; for (var i = 0; i < xs.length; i++) t += xs[i]; return t / xs.length; }
  function values(list, key) { var out = []; list.forEach(function (r) { if (isNum(r[key])) out.push(r[key]); }); return out; }

  function renderSummary() {
    var S = A.summary || {};
    var done = rows.filter(function (r) { return r.st === "done"; });
    var failed = rows.length - done.length;
    var counts = $("counts");
    counts.textContent = "";
    function count(label, n, id) { var s = el("span", {id: id}); s.appendChild(document.createTextNode(label + ": ")); s.appendChild(el("strong", null, n)); counts.appendChild(s); }
    count("done", done.length, "n-done");
    count("failed", failed, "n-failed");
    count("running", isNum(S.running) ? S.running : 0, "n-running");
    if (isNum(S.total)) {
      count("not yet finished", Math.max(S.total - done.length - failed, 0), "n-left");
      count("total", S.total, "n-total");
    }
    if (S.interrupted) counts.appendChild(el("span", {id: "interrupted"}, "run interrupted: rerun to resume"));
    $("generated").textContent = S.generated ? "updated " + S.generated : "–";

    var stats = $("stats");
    [["CLIP-I, first iteration", values(done, "c0"), 4], ["CLIP-I, best iteration", values(done, "cb"), 4],
     ["gain (best − first)", values(done, "g"), 4], ["time per image, s", values(rows, "t"), 1],
     ["iterations", values(done, "n"), 1]].forEach(function (row) {
      var tr = el("tr");
      tr.appendChild(el("th", null, row[0]));
      tr.appendChild(el("td", {"class": "num"}, fmt(mean(row[1]), row[2])));
      tr.appendChild(el("td", {"class": "num"}, fmt(median(row[1]), row[2])));
      tr.appendChild(el("td", {"class": "num"}, row[1].length));
      stats.appendChild(tr);
    });
    var times = values(rows, "t");
    if (times.length) {
      var tr = el("tr"); tr.appendChild(el("th", null, "total time, s"));
      tr.appendChild(el("td", {"class": "num", colspan: "3"}, fmt(times.reduce(function (a, b) { return a + b; }, 0), 1)));
      stats.appendChild(tr);
    }
    histogram(values(done, "g"));
    var reasons = new Map();
    rows.forEach(function (r) { var k = r.st === "done" ? (r.stop || "(none)") : "failed"; reasons.set(k, (reasons.get(k) || 0) + 1); });
    var stops = $("stops");
    Array.from(reasons.entries()).sort(function (a, b) { return b[1] - a[1]; }).forEach(function (kv) {
      var tr = el("tr", {title: (A.stopReasons && A.stopReasons[kv[0]]) || ""});
      tr.appendChild(el("td", null, kv[0])); tr.appendChild(el("td", {"class": "num"}, kv[1]));
      stops.appendChild(tr);
    });
  }

  function histogram(gains) {
    var fig = $("gain-histogram");
    if (!gains.length) { fig.appendChild(el("p", null, "no finished image yet")); return; }
    var lo = Math.min.apply(null, gains), hi = Math.max.apply(null, gains);
    var bins = lo === hi ? 1 : Math.min(24, Math.max(4, Math.ceil(Math.sqrt(gains.length))));
    var width = (hi - lo) / bins || 1, counts = new Array(bins).fill(0);
    gains.forEach(function (g) { counts[Math.min(bins - 1, Math.floor((g - lo) / width))]++; });
    var top = Math.max.apply(null, counts), W = 360, H = 110, pad = 16, bw = W / bins;
    var NS = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(NS, "svg");
    svg.setAttribute("width", W); svg.setAttribute("height", H + 2 * pad); svg.setAttribute("role", "img");
    counts.forEach(function (c, i) {
      var h = top ? Math.round(H * c / top) : 0;
      var r = document.createElementNS(NS, "rect");
      r.setAttribute("x", i * bw + 1); r.setAttribute("width", Math.max(bw - 2, 1));
      r.setAttribute("y", pad + H - h); r.setAttribute("height", h);
      var t = document.createElementNS(NS, "title");
      t.textContent = fmt(lo + i * width) + " … " + fmt(lo + (i + 1) * width) + ": " + c + " image(s)";
      r.appendChild(t); svg.appendChild(r);
    });
    function label(x, y, text, anchor) {
      var t = document.createElementNS(NS, "text");
      t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("text-anchor", anchor); t.textContent = text; svg.appendChild(t);
    }
    label(0, H + 2 * pad - 2, fmt(lo), "start");
    label(W, H + 2 * pad - 2, fmt(hi), "end");
    label(W / 2, 10, "max " + top + " per bin", "middle");
    fig.appendChild(svg);
  }

  /* ---------------------------------------------------------------- sort, filter, page */
  var KEYS = {name: "_lname", status: "st", first: "c0", best: "cb", gain: "g", iterations: "n", time: "t"};
  var state = {sort: null, dir: "asc", status: "", q: "", gmin: "", gmax: "", imin: "", imax: "", page: 1, size: 100};
  var view = rows;

  function readHash() {
    var p = new URLSearchParams(location.hash.replace(/^#/, ""));
    Object.keys(state).forEach(function (k) { if (p.has(k)) state[k] = p.get(k); });
    if (!KEYS[state.sort]) state.sort = null;
    state.dir = state.dir === "desc" ? "desc" : "asc";
    state.page = Math.max(1, parseInt(state.page, 10) || 1);
    state.size = [50, 100, 250, 1000].indexOf(parseInt(state.size, 10)) >= 0 ? parseInt(state.size, 10) : 100;
  }
  function writeHash() {
    var p = new URLSearchParams();
    Object.keys(state).forEach(function (k) { var v = state[k]; if (v !== "" && v !== null && !(k === "page" && v === 1) && !(k === "size" && v === 100) && !(k === "dir" && v === "asc")) p.set(k, v); });
    try { history.replaceState(null, "", "#" + p.toString()); } catch (e) { /* some file:// setups refuse */ }
  }
  function num(s) { return s === "" || s === null || isNaN(Number(s)) ? null : Number(s); }

  function compute() {
    var q = String(state.q || "").toLowerCase(), gmin = num(state.gmin), gmax = num(state.gmax),
        imin = num(state.imin), imax = num(state.imax), st = state.status;
    var out = rows.filter(function (r) {
      if (st && r.st !== st) return false;
      if (q && r._lname.indexOf(q) < 0) return false;
      if ((gmin !== null || gmax !== null) && !isNum(r.g)) return false;
      if (gmin !== null && r.g < gmin) return false;
      if (gmax !== null && r.g > gmax) return false;
      if (imin !== null && r.n < imin) return false;
      if (imax !== null && r.n > imax) return false;
      return true;
    });
    if (state.sort) {
      var key = KEYS[state.sort], sign = state.dir === "desc" ? -1 : 1;
      out.sort(function (a, b) {
        var x = a[key], y = b[key], xn = x === null || x === undefined, yn = y === null || y === undefined;
        if (xn || yn) return xn === yn ? a._i - b._i : (xn ? 1 : -1);  /* missing values last, either way */
        if (x < y) return -sign;
        if (x > y) return sign;
        return a._i - b._i;
      });
    }
    view = out;
  }

  function cell(tr, text, cls) { var td = el("td", cls ? {"class": cls} : null, text); tr.appendChild(td); return td; }
  function thumb(td, src, alt) {
    var u = relUrl(src);
    if (u) td.appendChild(el("img", {src: u, alt: alt, loading: "lazy", width: "48", height: "48"}));
  }

  function renderTable() {
    var pages = Math.max(1, Math.ceil(view.length / state.size));
    if (state.page > pages) state.page = pages;
    var start = (state.page - 1) * state.size, end = Math.min(view.length, start + state.size);
    var body = document.createDocumentFragment();
    for (var i = start; i < end; i++) {
      var r = view[i];
      var tr = el("tr", {"class": r.st === "done" ? "done" : "error", "data-id": r.id});
      var td = cell(tr, null, "thumbs");
      thumb(td, r.ref, "reference"); thumb(td, r.thumb, "best iteration");
      td = cell(tr, null, "name");
      var page = relUrl(r.page);
      td.appendChild(page ? el("a", {href: page}, r.name) : el("span", null, r.name));
      cell(tr, r.st === "done" ? "done" : "failed", "status");
      cell(tr, fmt(r.c0), "num"); cell(tr, fmt(r.cb), "num");
      cell(tr, isNum(r.g) ? (r.g > 0 ? "+" : "") + fmt(r.g) : "–", "num gain");
      cell(tr, r.n, "num iterations"); cell(tr, fmt(r.t, 1), "num");
      cell(tr, r.st === "done" ? (r.stop || "") : (r.err || "error"), "why");
      body.appendChild(tr);
    }
    var tbody = $("rows");
    tbody.textContent = "";
    tbody.appendChild(body);
    $("p-info").textContent = view.length
      ? "rows " + (start + 1) + "–" + end + " of " + view.length + (view.length !== rows.length ? " (" + rows.length + " in all)" : "") + " · page " + state.page + " of " + pages
      : "no image matches (" + rows.length + " in all)";
    document.querySelectorAll("button.sort").forEach(function (b) {
      if (b.dataset.key === state.sort) b.setAttribute("aria-sort", state.dir === "desc" ? "descending" : "ascending");
      else b.removeAttribute("aria-sort");
    });
    A.lastRender = performance.now();
  }
  function update(resetPage) { if (resetPage) state.page = 1; compute(); renderTable(); writeHash(); }

  /* ---------------------------------------------------------------- controls */
  function bind(id, key) {
    var input = $(id);
    input.value = state[key];
    input.addEventListener("input", function () { state[key] = input.value; update(true); });
  }
  readHash();
  bind("f-status", "status"); bind("f-name", "q"); bind("f-gain-min", "gmin"); bind("f-gain-max", "gmax");
  bind("f-it-min", "imin"); bind("f-it-max", "imax");
  $("p-size").value = String(state.size);
  $("p-size").addEventListener("change", function () { state.size = parseInt($("p-size").value, 10); update(true); });
  $("f-clear").addEventListener("click", function () {
    ["status", "q", "gmin", "gmax", "imin", "imax"].forEach(function (k) { state[k] = ""; });
    ["f-status", "f-name", "f-gain-min", "f-gain-max", "f-it-min", "f-it-max"].forEach(function (id) { $(id).value = ""; });
    update(true);
  });
  document.querySelectorAll("button.sort").forEach(function (b) {
    b.addEventListener("click", function () {
      var key = b.dataset.key;
      if (state.sort === key) state.dir = state.dir === "asc" ? "desc" : "asc";
      else { state.sort = key; state.dir = (key === "name" || key === "status") ? "asc" : "desc"; }
      update(true);
    });
  });
  function go(p) { state.page = p; renderTable(); writeHash(); window.scrollTo(0, $("browser").offsetTop); }
  $("p-first").addEventListener("click", function () { go(1); });
  $("p-prev").addEventListener("click", function () { go(Math.max(1, state.page - 1)); });
  $("p-next").addEventListener("click", function () { go(Math.min(Math.ceil(view.length / state.size) || 1, state.page + 1)); });
  $("p-last").addEventListener("click", function () { go(Math.ceil(view.length / state.size) || 1); });

  renderSummary();
  compute();
  renderTable();
  A.ready = performance.now();
  A.setupMs = A.ready - t0;
  document.documentElement.setAttribute("data-ready", "1");
})();
