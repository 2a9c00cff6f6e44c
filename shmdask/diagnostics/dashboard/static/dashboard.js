/* shmdask dashboard page.
 *
 * Live: polls the JSON API of the server that served the page (/api/...) a few
 * times a second and draws what it gets; the task stream is redrawn on every
 * animation frame so its time axis moves smoothly between polls.
 * Report: the same page with a <script id="shmdask-data"> holding the whole
 * run in the API's shapes; nothing is fetched.
 *
 * Everything is drawn with the canvas API and the DOM: no library, nothing
 * loaded from elsewhere, and text from the cluster (task keys, hosts) only ever
 * goes into textContent.
 */
(function () {
  "use strict";

  var POLL_MS = 400;           // at least two updates a second
  var MAX_BACKOFF_MS = 5000;
  var LEAD_SECONDS = 1.5;      // the task stream slides this long after each update
  var STATE_COLORS = {
    waiting: "#d9d9d9", ready: "#9ecae1", processing: "#31a354", memory: "#e6550d",
    released: "#3182bd", erred: "#000000", forgotten: "#f2f2f2"
  };

  var dataNode = document.getElementById("shmdask-data");
  var report = dataNode ? JSON.parse(dataNode.textContent) : null;

  // What the page knows; exposed for people and tests as window.shmdaskDashboard.
  var S = {
    live: !report,
    updates: 0,
    failures: 0,
    lastError: null,
    barsDrawn: 0,
    frames: 0,
    renderMs: 0,    // time spent taking in updates and drawing, in all
    windowSeconds: 30,
    info: null,
    progress: null,
    workers: [],
    memory: { time: [], shm: [], memory: [], done: [], rate: [], cursor: null },
    graph: null,
    stream: {
      lanes: [], groups: [], colors: {}, cursor: null,
      start: [], stop: [], lane: [], group: [], kind: [],
      offset: 0, newest: 0, oldest: Infinity
    }
  };
  window.shmdaskDashboard = S;

  function $(id) { return document.getElementById(id); }

  // ------------------------------------------------------------------ formatting

  function formatBytes(n) {
    if (n === null || n === undefined) { return "–"; }
    var units = [["PiB", 1125899906842624], ["TiB", 1099511627776], ["GiB", 1073741824],
                 ["MiB", 1048576], ["KiB", 1024]];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(n) >= units[i][1] * 0.9) { return (n / units[i][1]).toFixed(2) + " " + units[i][0]; }
    }
    return Math.round(n) + " B";
  }

  function formatSeconds(t) {
    if (t < 1) { return Math.round(t * 1000) + " ms"; }
    if (t < 120) { return t.toFixed(t < 10 ? 2 : 1) + " s"; }
    return (t / 60).toFixed(1) + " min";
  }

  function formatCount(n) { return (n === null || n === undefined) ? "–" : String(n); }

  function naturalCompare(a, b) {
    return String(a).localeCompare(String(b), undefined, { numeric: true });
  }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = text; }
    if (cls) { e.className = cls; }
    return e;
  }

  function swatch(color) {
    var s = el("span", null, "swatch");
    s.style.background = color;
    return s;
  }

  // A canvas sized to its CSS box at the screen's pixel density.
  function prepare(canvas) {
    var ratio = window.devicePixelRatio || 1;
    var w = Math.max(1, canvas.clientWidth), h = Math.max(1, canvas.clientHeight);
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return { ctx: ctx, w: w, h: h };
  }

  function niceStep(span, count) {
    var raw = span / Math.max(1, count);
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * mag >= raw) { return steps[i] * mag; }
    }
    return 10 * mag;
  }

  // ------------------------------------------------------------------ the data

  function otherColor() { return (S.info && S.info.colors && S.info.colors.other) || "#b0b0b0"; }
  function transferColor() { return (S.info && S.info.colors && S.info.colors.transfer) || "#d62728"; }

  function addTasks(p) {
    var st = S.stream;
    st.lanes = p.lanes;
    st.groups = p.groups;
    st.colors = p.colors;
    st.cursor = p.cursor;
    var epoch = p.epoch;
    for (var i = 0; i < p.start.length; i++) {
      var a = epoch + p.start[i], b = epoch + p.stop[i];
      st.start.push(a);
      st.stop.push(b);
      st.lane.push(p.lane[i]);
      st.group.push(p.group[i]);
      st.kind.push(p.kind[i]);
      if (b > st.newest) { st.newest = b; }
      if (a < st.oldest) { st.oldest = a; }
    }
    if (S.live) {
      // server clock - local clock, smoothed so the axis does not jump
      var offset = p.now - Date.now() / 1000;
      st.offset = S.updates === 0 ? offset : st.offset + 0.2 * (offset - st.offset);
      trimTasks(p.now - S.windowSeconds - 5);
    }
  }

  function trimTasks(cutoff) {
    var st = S.stream, n = 0;
    while (n < st.stop.length && st.stop[n] < cutoff) { n++; }
    if (n > 0) {
      ["start", "stop", "lane", "group", "kind"].forEach(function (k) { st[k].splice(0, n); });
    }
  }

  function addMemory(p) {
    var m = S.memory;
    m.cursor = p.cursor;
    ["time", "shm", "memory", "done", "rate"].forEach(function (k) {
      Array.prototype.push.apply(m[k], p[k]);
    });
    if (S.live && m.time.length) {
      var cutoff = m.time[m.time.length - 1] - Math.max(S.windowSeconds, 60) - 5, n = 0;
      while (n < m.time.length && m.time[n] < cutoff) { n++; }
      if (n > 0) { ["time", "shm", "memory", "done", "rate"].forEach(function (k) { m[k].splice(0, n); }); }
    }
  }

  // ------------------------------------------------------------------ task stream

  function streamRange() {
    var st = S.stream;
    if (S.live) {
      var now = Date.now() / 1000 + st.offset;
      return [now - S.windowSeconds, now];
    }
    if (!st.start.length) { return [0, 1]; }
    var span = Math.max(st.newest - st.oldest, 1e-3);
    return [st.oldest, st.oldest + span * 1.005];
  }

  function visibleLanes(t0) {
    var st = S.stream, seen = {}, rows = [];
    for (var i = st.stop.length - 1; i >= 0; i--) {
      if (st.stop[i] < t0 && S.live) { break; }
      seen[st.lane[i]] = true;
    }
    // the lanes of the workers there are now, even when idle
    var current = {};
    S.workers.forEach(function (w) { current[w.id] = w.nthreads || 1; });
    st.lanes.forEach(function (lane, id) {
      var worker = lane[1];
      if (seen[id] || (S.live && current[worker] !== undefined && lane[0].indexOf("/transfer") < 0)) {
        rows.push(id);
      }
    });
    var known = {};
    rows.forEach(function (id) { known[st.lanes[id][0]] = true; });
    var extra = [];
    if (S.live) {
      S.workers.forEach(function (w) {
        for (var t = 0; t < (w.nthreads || 1); t++) {
          var name = w.id + "/" + t;
          if (!known[name]) { extra.push([name, w.id, w.kind === "remote"]); }
        }
      });
    }
    var entries = rows.map(function (id) { return { id: id, lane: st.lanes[id] }; });
    extra.forEach(function (lane) { entries.push({ id: -1, lane: lane }); });
    entries.sort(function (a, b) {
      return naturalCompare(a.lane[1], b.lane[1]) || naturalCompare(a.lane[0], b.lane[0]);
    });
    return entries;
  }

  // The task stream is two canvases: a still frame (lane labels and shading, the
  // time axis) and, over its plot area, the bars, drawn a little into the future
  // and slid left by a CSS transition until the next update redraws them.  The
  // bars move smoothly while the page draws only twice or so a second.
  function drawStream() {
    var frame = $("stream-frame"), bars = $("task-stream"), clip = $("stream-clip");
    var st = S.stream;
    var range = streamRange(), t0 = range[0], t1 = range[1];
    var lead = S.live ? LEAD_SECONDS : 0;
    var rows = visibleLanes(t0);
    var rowH = rows.length > 24 ? Math.max(6, Math.floor(360 / rows.length)) : 18;
    var top = 4, rowsH = Math.max(rows.length, 1) * rowH;
    var wantH = Math.max(60, rowsH + 28);
    if (Math.abs(frame.clientHeight - wantH) > 1) { frame.style.height = wantH + "px"; }
    var c = prepare(frame), ctx = c.ctx, w = c.w;
    ctx.font = Math.min(11, rowH - 2) + "px system-ui, sans-serif";
    var labelW = 40;
    rows.forEach(function (r) { labelW = Math.max(labelW, ctx.measureText(r.lane[0] + (r.lane[2] ? " (remote)" : "")).width + 10); });
    labelW = Math.min(labelW, 200);
    var plotW = Math.max(10, w - labelW - 8);
    var scale = plotW / (t1 - t0);
    var rowOf = {};
    var workerBand = {}, band = 0, lastWorker = null;
    rows.forEach(function (r, i) {
      if (r.id >= 0) { rowOf[r.id] = i; }
      if (r.lane[1] !== lastWorker) { band++; lastWorker = r.lane[1]; }
      workerBand[i] = band;
    });
    // the frame: lanes shaded per worker, labelled
    rows.forEach(function (r, i) {
      var y = top + i * rowH;
      if (workerBand[i] % 2 === 1) {
        ctx.fillStyle = "#f2f2f2";
        ctx.fillRect(labelW, y, plotW, rowH);
      }
      ctx.fillStyle = r.lane[2] ? "#7b3294" : "#444";
      ctx.textBaseline = "middle";
      ctx.textAlign = "right";
      ctx.fillText(r.lane[0] + (r.lane[2] ? " (remote)" : ""), labelW - 6, y + rowH / 2);
    });
    // the bars, on their own canvas over the plot area
    clip.style.left = labelW + "px";
    clip.style.top = top + "px";
    clip.style.width = plotW + "px";
    clip.style.height = rowsH + "px";
    bars.style.width = Math.ceil(plotW + lead * scale) + "px";
    bars.style.height = rowsH + "px";
    var b = prepare(bars), bctx = b.ctx, barsW = b.w;
    var tEnd = t1 + lead;
    // neighbours of one colour closer than a pixel are drawn as one
    // and a bar inside a pixel already painted in its lane is skipped, so a
    // redraw costs at most one rectangle per pixel per lane however many tasks ran
    var drawn = 0, other = otherColor(), transfer = transferColor();
    var pending = {};  // row -> [x0, x1, color]
    var painted = {};  // row -> the pixel column painted last
    function flush(row) {
      var p = pending[row];
      if (!p) { return; }
      bctx.fillStyle = p[2];
      bctx.fillRect(p[0], row * rowH + rowH * 0.1, Math.max(1, p[1] - p[0]), rowH * 0.8);
      painted[row] = Math.floor(Math.max(p[1], p[0] + 1));
      drawn++;
      pending[row] = null;
    }
    var transfers = [], erred = [];
    var first = 0;
    if (S.live) {
      first = st.stop.length;
      while (first > 0 && st.stop[first - 1] >= t0) { first--; }
      // records arrive nearly in stop order; a few before "first" may still show
      first = Math.max(0, first - 256);
    }
    for (var i = first; i < st.start.length; i++) {
      if (st.stop[i] < t0 || st.start[i] > tEnd) { continue; }
      var row = rowOf[st.lane[i]];
      if (row === undefined) { continue; }
      var x0 = Math.max(0, (st.start[i] - t0) * scale);
      var x1 = Math.min(barsW, (st.stop[i] - t0) * scale);
      if (st.kind[i] === 1) { transfers.push([x0, x1, row]); continue; }
      if (st.kind[i] === 2) { erred.push([x0, x1, row]); }
      var color = st.colors[st.groups[st.group[i]]] || other;
      var p = pending[row];
      if (p && p[2] === color && x0 <= p[1] + 1) {
        if (x1 > p[1]) { p[1] = x1; }
      } else if (p && Math.floor(x1) <= Math.floor(p[1])) {
        continue;  // within the pixel the pending bar ends in
      } else if (!p && painted[row] !== undefined && Math.floor(x1) <= painted[row]) {
        continue;  // within a pixel already painted
      } else {
        flush(row);
        pending[row] = [x0, Math.max(x1, x0 + 1), color];
      }
    }
    Object.keys(pending).forEach(function (row) { flush(row); });
    bctx.fillStyle = transfer;
    transfers.forEach(function (t) {
      bctx.fillRect(t[0], t[2] * rowH + rowH * 0.275, Math.max(2, t[1] - t[0]), rowH * 0.45);
      drawn++;
    });
    bctx.strokeStyle = "#000";
    bctx.lineWidth = 1;
    erred.forEach(function (t) {
      bctx.strokeRect(t[0] + 0.5, t[2] * rowH + rowH * 0.1 + 0.5, Math.max(2, t[1] - t[0]) - 1, rowH * 0.8 - 1);
    });
    S.barsDrawn = drawn;
    S.frames++;
    slide(bars, drawn > 0 ? lead * scale : 0, lead);
    // the frame's time axis: seconds before now (live) or since the first task
    var axisY = top + rowsH + 4;
    ctx.strokeStyle = "#999";
    ctx.beginPath();
    ctx.moveTo(labelW, axisY + 0.5);
    ctx.lineTo(labelW + plotW, axisY + 0.5);
    ctx.stroke();
    ctx.fillStyle = "#555";
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    var span = t1 - t0, step = niceStep(span, Math.max(2, Math.floor(plotW / 90)));
    if (S.live) {
      for (var ago = 0; ago <= span + 1e-9; ago += step) {
        var x = labelW + plotW - ago * scale;
        ctx.fillText(ago === 0 ? "now" : "-" + formatSeconds(ago), x, axisY + 3);
        ctx.fillRect(x, axisY, 1, 3);
      }
    } else {
      for (var t = 0; t <= span + 1e-9; t += step) {
        var xs = labelW + t * scale;
        ctx.fillText(formatSeconds(t), xs, axisY + 3);
        ctx.fillRect(xs, axisY, 1, 3);
      }
    }
    if (!rows.length) {
      ctx.fillStyle = "#888";
      ctx.textAlign = "left";
      ctx.fillText(S.live ? "no tasks in the last " + formatSeconds(S.windowSeconds) : "no tasks recorded", labelW + 8, top + 8);
    }
  }

  // Move ``el`` left by ``px`` over ``seconds``, starting from where it was drawn.
  function slide(el, px, seconds) {
    el.style.transition = "none";
    el.style.transform = "translateX(0)";
    if (!(px > 0)) { return; }
    void el.offsetWidth;  // apply the reset before the transition starts
    el.style.transition = "transform " + seconds + "s steps(" + Math.max(1, Math.round(seconds * 12)) + ", end)";
    el.style.transform = "translateX(" + (-px).toFixed(1) + "px)";
  }

  var legendKey = null;
  function drawLegend() {
    var st = S.stream, box = $("legend");
    var names = Object.keys(st.colors);
    var key = JSON.stringify([st.colors, st.groups.length > names.length, st.kind.indexOf(1) >= 0]);
    if (key === legendKey) { return; }
    legendKey = key;
    box.textContent = "";
    names.forEach(function (name) {
      var item = el("span");
      item.appendChild(swatch(st.colors[name]));
      item.appendChild(document.createTextNode(name));
      box.appendChild(item);
    });
    var extra = [["other", otherColor()], ["transfer", transferColor()]];
    if (st.groups.length > names.length) {
      var item = el("span");
      item.appendChild(swatch(extra[0][1]));
      item.appendChild(document.createTextNode(extra[0][0]));
      box.appendChild(item);
    }
    if (st.kind.indexOf(1) >= 0) {
      var t = el("span");
      t.appendChild(swatch(extra[1][1]));
      t.appendChild(document.createTextNode(extra[1][0]));
      box.appendChild(t);
    }
  }

  // ------------------------------------------------------------------ progress

  function renderProgress() {
    var p = S.progress;
    if (!p) { return; }
    var body = $("progress").tBodies[0];
    body.textContent = "";
    $("progress-empty").classList.toggle("hidden", p.groups.length > 0);
    p.groups.forEach(function (g) {
      var tr = el("tr");
      tr.dataset.group = g.name;
      tr.dataset.done = g.done;
      tr.dataset.total = g.total;
      var name = el("td", null, "name");
      name.title = g.name;
      name.appendChild(swatch(g.color));
      name.appendChild(document.createTextNode(g.name));
      tr.appendChild(name);
      var barCell = el("td");
      var bar = el("div", null, "bar");
      var total = Math.max(g.total, 1);
      [["memory", g.memory, g.color], ["released", g.released, g.color],
       ["erred", g.erred, null], ["processing", g.processing, null]].forEach(function (part) {
        if (part[1] <= 0) { return; }
        var s = el("span", null, part[0]);
        s.style.width = (100 * part[1] / total) + "%";
        if (part[2]) { s.style.background = part[2]; }
        bar.appendChild(s);
      });
      barCell.appendChild(bar);
      tr.appendChild(barCell);
      tr.appendChild(el("td", g.done + " / " + g.total, "done"));
      ["waiting", "ready", "processing", "memory", "erred"].forEach(function (k) {
        tr.appendChild(el("td", String(g[k]), k));
      });
      body.appendChild(tr);
    });
    var t = p.totals;
    $("progress-total").textContent = t.total ? t.done + " of " + t.total + " tasks done" +
      (t.erred ? ", " + t.erred + " erred" : "") : "";
  }

  // ------------------------------------------------------------------ workers

  function renderWorkers() {
    var body = $("workers").tBodies[0];
    body.textContent = "";
    var threads = 0, cpu = 0, shm = 0, priv = 0;
    S.workers.forEach(function (w) {
      var tr = el("tr");
      tr.dataset.worker = w.id;
      tr.dataset.pid = w.pid === null || w.pid === undefined ? "" : w.pid;
      if (w.kind === "remote") { tr.className = "remote"; }
      var cells = [
        w.name !== w.id ? w.name + " (" + w.id + ")" : w.id,
        formatCount(w.pid), w.host || "–", w.kind || "–", formatCount(w.nthreads),
        w.cpu === null || w.cpu === undefined ? "–" : Math.round(w.cpu) + "%",
        formatBytes(w.private === null || w.private === undefined ? w.memory : w.private),
        formatBytes(w.shm), formatCount(w.executing),
        w.memory_limit ? formatBytes(w.memory_limit) : "none"
      ];
      cells.forEach(function (text, i) {
        var td = el("td", text);
        if (i === 5 && w.cpu !== null && w.cpu !== undefined) {
          var meter = el("span", null, "meter"), fill = el("span");
          fill.style.width = Math.min(100, w.cpu / Math.max(1, w.nthreads || 1)) + "%";
          meter.appendChild(fill);
          td.appendChild(meter);
        }
        tr.appendChild(td);
      });
      body.appendChild(tr);
      threads += w.nthreads || 0;
      cpu += w.cpu || 0;
      shm += w.shm || 0;
      priv += (w.private === null || w.private === undefined ? w.memory : w.private) || 0;
    });
    $("workers-total").textContent = S.workers.length + " workers, " + threads + " threads" +
      (S.live ? ", CPU " + Math.round(cpu) + "%" : "") + ", private memory " + formatBytes(priv) +
      ", shm owned " + formatBytes(shm);
  }

  // ------------------------------------------------------------------ memory and rate

  function lineChart(canvas, series, opts) {
    var c = prepare(canvas), ctx = c.ctx, w = c.w, h = c.h;
    var m = S.memory, times = m.time;
    var left = 64, right = 8, top = 6, bottom = 18;
    var pw = w - left - right, ph = h - top - bottom;
    var t0, t1;
    if (S.live) {
      t1 = Date.now() / 1000 + S.stream.offset;
      t0 = t1 - Math.max(S.windowSeconds, 60);
    } else {
      t0 = times.length ? times[0] : 0;
      t1 = times.length ? Math.max(times[times.length - 1], t0 + 1e-3) : 1;
    }
    var peak = 0;
    series.forEach(function (s) {
      for (var i = times.length - 1; i >= 0 && times[i] >= t0; i--) {
        if (s.values[i] > peak) { peak = s.values[i]; }
      }
    });
    peak = peak > 0 ? peak * 1.1 : 1;
    function X(t) { return left + (t - t0) / (t1 - t0) * pw; }
    function Y(v) { return top + ph - v / peak * ph; }
    ctx.strokeStyle = "#e5e5e5";
    ctx.fillStyle = "#666";
    ctx.font = "10px system-ui, sans-serif";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (var k = 0; k <= 3; k++) {
      var v = peak * k / 3, y = Math.round(Y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + pw, y); ctx.stroke();
      ctx.fillText(opts.format(v), left - 4, y);
    }
    var firstShown = 0;
    while (firstShown < times.length && times[firstShown] < t0) { firstShown++; }
    // at most about one point per pixel
    var stride = Math.max(1, Math.floor((times.length - firstShown) / Math.max(pw, 1)));
    series.forEach(function (s) {
      ctx.beginPath();
      var started = false, lastX = left;
      for (var i = firstShown; i < times.length; i += stride) {
        var x = X(times[i]), y = Y(s.values[i] || 0);
        if (!started) {
          if (s.fill) { ctx.moveTo(x, top + ph); ctx.lineTo(x, y); } else { ctx.moveTo(x, y); }
          started = true;
        } else { ctx.lineTo(x, y); }
        lastX = x;
      }
      if (!started) { return; }
      if (s.fill) {
        ctx.lineTo(lastX, top + ph);
        ctx.closePath();
        ctx.fillStyle = s.color;
        ctx.fill();
      } else {
        ctx.strokeStyle = s.color;
        ctx.lineWidth = 1.5;
        ctx.stroke();
        ctx.lineWidth = 1;
      }
    });
    // legend and time labels
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    var lx = left + 6;
    series.forEach(function (s) {
      ctx.fillStyle = s.color;
      ctx.fillRect(lx, top + 2, 10, 8);
      ctx.fillStyle = "#444";
      ctx.fillText(s.label, lx + 14, top + 1);
      lx += 24 + ctx.measureText(s.label).width;
    });
    ctx.fillStyle = "#666";
    ctx.textAlign = "center";
    var span = t1 - t0, step = niceStep(span, Math.max(2, Math.floor(pw / 90)));
    for (var d = 0; d <= span + 1e-9; d += step) {
      var xt = S.live ? left + pw - d / span * pw : left + d / span * pw;
      ctx.fillText(S.live ? (d === 0 ? "now" : "-" + formatSeconds(d)) : formatSeconds(d), xt, top + ph + 4);
    }
    if (!times.length) {
      ctx.fillStyle = "#888";
      ctx.textAlign = "left";
      ctx.fillText("no samples yet", left + 8, top + ph / 2);
    }
  }

  function renderMemory() {
    var m = S.memory;
    lineChart($("memory-chart"), [
      { label: "shared memory", values: m.shm, color: "#9ecae1", fill: true },
      { label: "worker memory (RSS)", values: m.memory, color: "#444444" }
    ], { format: formatBytes });
    lineChart($("rate-chart"), [
      { label: "tasks/s", values: m.rate, color: "#1f77b4" }
    ], { format: function (v) { return v >= 100 ? Math.round(v) : v.toFixed(1); } });
    var n = m.time.length;
    $("memory-now").textContent = n ? "shared " + formatBytes(m.shm[n - 1]) + ", workers " +
      formatBytes(m.memory[n - 1]) : "";
    $("rate-now").textContent = n ? (S.live ? Math.round(m.rate[n - 1]) + " tasks/s now" :
      "peak " + Math.round(Math.max.apply(null, m.rate)) + " tasks/s") : "";
  }

  // ------------------------------------------------------------------ graph

  var graphKey = null;
  function renderGraph(force) {
    var g = S.graph, canvas = $("graph");
    var note = $("graph-note");
    var legend = $("graph-legend");
    // drawn again only when something changed: the graph, a state, the size
    var key = g ? JSON.stringify([g.id, g.status, g.states, canvas.clientWidth]) : null;
    if (key === graphKey && !force) { return; }
    graphKey = key;
    legend.textContent = "";
    if (!g || g.status !== "ok") {
      note.textContent = g ? g.message : "";
      canvas.classList.add("hidden");
      return;
    }
    canvas.classList.remove("hidden");
    var c = prepare(canvas), ctx = c.ctx, w = c.w, h = c.h;
    note.textContent = g.n_tasks + " keys";
    var xs = g.nodes.x, ys = g.nodes.y;
    var minX = Math.min.apply(null, xs), maxX = Math.max.apply(null, xs);
    var minY = Math.min.apply(null, ys), maxY = Math.max.apply(null, ys);
    var pad = 18;
    var sx = (w - 2 * pad) / Math.max(maxX - minX, 1), sy = (h - 2 * pad) / Math.max(maxY - minY, 1);
    var s = Math.min(sx, sy * 1.5, 60);
    var offX = (w - (maxX - minX) * s) / 2, offY = (h - (maxY - minY) * Math.min(sy, s)) / 2;
    var sY = Math.min(sy, s);
    function X(x) { return offX + (x - minX) * s; }
    function Y(y) { return offY + (maxY - y) * sY; }
    var r = Math.max(2.5, Math.min(9, s * 0.28, sY * 0.28));
    ctx.strokeStyle = "#bbb";
    ctx.lineWidth = 1;
    g.edges.forEach(function (route) {
      ctx.beginPath();
      for (var i = 0; i < route.length; i += 2) {
        var px = X(route[i]), py = Y(route[i + 1]);
        if (i === 0) { ctx.moveTo(px, py); } else { ctx.lineTo(px, py); }
      }
      ctx.stroke();
    });
    var used = {};
    for (var i = 0; i < xs.length; i++) {
      var state = g.states[g.nodes.key[i]];
      used[state] = true;
      ctx.fillStyle = STATE_COLORS[state] || "#ccc";
      ctx.strokeStyle = "#555";
      var x = X(xs[i]), y = Y(ys[i]);
      ctx.beginPath();
      if (g.nodes.kind[i] === 0) {
        ctx.arc(x, y, r, 0, 2 * Math.PI);
      } else {
        ctx.rect(x - r, y - r * 0.8, 2 * r, 1.6 * r);
      }
      ctx.fill();
      ctx.stroke();
    }
    if (xs.length <= 80 && s > 30) {
      ctx.fillStyle = "#333";
      ctx.font = "10px system-ui, sans-serif";
      ctx.textAlign = "left";
      ctx.textBaseline = "middle";
      for (var j = 0; j < xs.length; j++) {
        if (g.nodes.kind[j] === 0) { ctx.fillText(g.nodes.label[j], X(xs[j]) + r + 3, Y(ys[j])); }
      }
    }
    Object.keys(STATE_COLORS).forEach(function (state) {
      if (!used[state]) { return; }
      var item = el("span");
      item.appendChild(swatch(STATE_COLORS[state]));
      item.appendChild(document.createTextNode(state));
      legend.appendChild(item);
    });
  }

  // ------------------------------------------------------------------ header

  function renderHeader() {
    var info = S.info;
    if (!info) { return; }
    $("cluster-name").textContent = info.cluster || info.id || info.title || "";
    var workers = S.workers.length || info.workers || 0;
    var threads = 0, limit = 0;
    S.workers.forEach(function (w) { threads += w.nthreads || 0; limit += w.memory_limit || 0; });
    var parts = [workers + " workers", (threads || info.threads || 0) + " threads"];
    if (limit) { parts.push("memory limit " + formatBytes(limit)); }
    var done = S.progress ? S.progress.tasks_done : info.tasks_done;
    if (done !== undefined) { parts.push(done + " tasks done"); }
    if (info.scheduler) { parts.push("scheduler " + info.scheduler); }
    $("headline").textContent = parts.join(" · ");
  }

  // ------------------------------------------------------------------ live polling

  function getJSON(path) {
    return fetch(path, { cache: "no-store" }).then(function (r) {
      if (!r.ok) { throw new Error(path + ": HTTP " + r.status); }
      return r.json();
    });
  }

  var polls = 0, backoff = POLL_MS;

  function poll() {
    // one request per update: /api/update is /api/task-stream, /progress, /workers
    // and /memory (and now and then /graph and /info) in one answer
    var st = S.stream;
    var url = "/api/update?window=" + S.windowSeconds +
      (st.cursor === null ? "" : "&since=" + st.cursor) +
      (S.memory.cursor === null ? "" : "&memory_since=" + S.memory.cursor) +
      (polls % 2 === 0 ? "&graph=1" : "") + (polls % 10 === 0 ? "&info=1" : "");
    polls++;
    var started = performance.now();
    getJSON(url).then(function (answer) {
      var t0 = performance.now();
      if (answer.info) { S.info = answer.info; }
      if (answer.graph) { S.graph = answer.graph; }
      addTasks(answer.task_stream);
      S.progress = answer.progress;
      S.workers = answer.workers.workers;
      addMemory(answer.memory);
      S.updates++;
      backoff = POLL_MS;
      $("connection").textContent = "live";
      $("connection").className = "status live";
      renderAll();
      S.renderMs += performance.now() - t0;
    }).catch(function (err) {
      S.failures++;
      S.lastError = String(err);
      backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
      $("connection").textContent = "no answer from the scheduler, retrying";
      $("connection").className = "status down";
      drawStream();  // time goes on: the stream moves on, empty
    }).then(function () {
      // every POLL_MS from the start of this update, not after it: a slow answer
      // does not slow the rate down
      var wait = backoff === POLL_MS ? POLL_MS - (performance.now() - started) : backoff;
      setTimeout(poll, Math.max(20, wait));
    });
  }

  function renderAll() {
    renderHeader();
    renderProgress();
    renderWorkers();
    if (S.updates % 2 === 0 || !S.live) { renderMemory(); }
    if (S.updates % 2 === 1 || !S.live) { renderGraph(); }
    drawLegend();
    drawStream();
  }

  // ------------------------------------------------------------------ start

  $("window-select").addEventListener("change", function (e) {
    var seconds = Number(e.target.value) || 30;
    if (S.live && seconds > S.windowSeconds) {
      // a longer window than we hold: ask for it whole at the next update
      var st = S.stream;
      st.cursor = null;
      ["start", "stop", "lane", "group", "kind"].forEach(function (k) { st[k] = []; });
    }
    S.windowSeconds = seconds;
    drawStream();
  });

  if (report) {
    S.info = report.info;
    addTasks(report.tasks);
    S.progress = report.progress;
    S.workers = report.workers.workers;
    addMemory(report.memory);
    S.graph = report.graph;
    S.updates = 1;
    $("connection").textContent = "saved report";
    $("connection").className = "status report";
    $("window-control").classList.add("hidden");
    $("stream-note").textContent = "whole run: " + formatSeconds(Math.max(0, S.stream.newest - S.stream.oldest));
    $("footer").textContent = (report.info.title || "shmdask report") + " · saved " +
      new Date(report.info.saved * 1000).toLocaleString();
    document.title = report.info.title || "shmdask report";
    renderAll();
    window.addEventListener("resize", renderAll);
  } else {
    $("footer").textContent = "shmdask live dashboard · JSON API under /api/ · Prometheus metrics at /metrics";
    poll();
    window.addEventListener("resize", function () { renderMemory(); renderGraph(true); drawStream(); });
  }
}());
