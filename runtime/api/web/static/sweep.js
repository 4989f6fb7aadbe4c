// A sweep in one picture, for the compare view: parallel coordinates (each run a line across the
// parameters that differ and the chosen metric; dragging along an axis brushes it and filters the
// trials table) and a metric-vs-parameter scatter (uPlot). Drawn on a canvas: nothing fetched.
"use strict";
(function () {
  const PAD = { top: 28, bottom: 34, side: 60 };

  // One axis: its values per run, numeric (a linear scale) or categories (evenly spaced).
  function makeAxis(name, values, isMetric) {
    const present = values.filter((v) => v != null);
    const numeric = present.length > 0 && present.every((v) => typeof v === "number" && isFinite(v));
    const axis = { name, values, numeric, isMetric };
    if (numeric) {
      let lo = Math.min(...present), hi = Math.max(...present);
      if (lo === hi) { lo -= 1; hi += 1; }
      axis.lo = lo; axis.hi = hi;
      axis.frac = (v) => (v == null ? null : (v - lo) / (hi - lo));
      axis.ticks = [lo, (lo + hi) / 2, hi];
    } else {
      const cats = [...new Set(present.map((v) => JSON.stringify(v)))].sort();
      axis.cats = cats;
      axis.frac = (v) => (v == null ? null : cats.length < 2 ? 0.5 : cats.indexOf(JSON.stringify(v)) / (cats.length - 1));
    }
    return axis;
  }

  function parallel(box, runs, axes, h, onFilter) {
    const canvas = document.createElement("canvas");
    const width = Math.max(480, box.clientWidth || 800), height = 300;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = width * dpr; canvas.height = height * dpr;
    canvas.style.width = width + "px"; canvas.style.height = height + "px";
    canvas.id = "parcoords";
    box.appendChild(canvas);
    const ctx = canvas.getContext("2d");
    const xOf = (i) => PAD.side + (axes.length < 2 ? 0 : i * (width - 2 * PAD.side) / (axes.length - 1));
    const yOf = (f) => PAD.top + (1 - f) * (height - PAD.top - PAD.bottom);
    const brushes = new Map();   // axis index -> [lo, hi] in fractions
    const metric = axes[axes.length - 1];
    const mfrac = (i) => metric.frac(metric.values[i]);
    const color = (i) => {   // low metric blue, high red
      const f = mfrac(i);
      if (f == null) return "#9ca3af";
      return `hsl(${Math.round(220 - 220 * f)}, 70%, 45%)`;
    };
    const passes = (i) => [...brushes].every(([a, [lo, hi]]) => {
      const f = axes[a].frac(axes[a].values[i]);
      return f != null && f >= lo - 1e-9 && f <= hi + 1e-9;
    });
    function draw() {
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, width, height);
      ctx.font = "12px system-ui, sans-serif";
      const order = runs.map((_, i) => i).sort((a, b) => passes(a) - passes(b));   // kept lines on top
      for (const i of order) {
        const ok = passes(i);
        ctx.strokeStyle = ok ? color(i) : "rgba(156,163,175,0.25)";
        ctx.lineWidth = ok ? 2 : 1;
        ctx.beginPath();
        let started = false;
        axes.forEach((a, k) => {
          const f = a.frac(a.values[i]);
          if (f == null) { started = false; return; }
          if (started) ctx.lineTo(xOf(k), yOf(f)); else { ctx.moveTo(xOf(k), yOf(f)); started = true; }
        });
        ctx.stroke();
      }
      axes.forEach((a, k) => {
        const x = xOf(k);
        ctx.strokeStyle = "#1d2330"; ctx.lineWidth = 1;
        ctx.beginPath(); ctx.moveTo(x, yOf(0)); ctx.lineTo(x, yOf(1)); ctx.stroke();
        ctx.fillStyle = "#1d2330"; ctx.textAlign = "center";
        ctx.fillText(a.name + (a.isMetric ? " (metric)" : ""), x, PAD.top - 12);
        ctx.fillStyle = "#6b7280"; ctx.textAlign = "left";
        const labels = a.numeric ? a.ticks.map((t) => [(t - a.lo) / (a.hi - a.lo), h.fmt(+t.toPrecision(4))])
                                 : a.cats.map((c, j) => [a.cats.length < 2 ? 0.5 : j / (a.cats.length - 1), h.fmt(JSON.parse(c))]);
        for (const [f, text] of labels) ctx.fillText(String(text), x + 4, yOf(f) + 4);
        const b = brushes.get(k);
        if (b) {
          ctx.fillStyle = "rgba(20,115,230,0.18)"; ctx.strokeStyle = "#1473e6";
          ctx.fillRect(x - 7, yOf(b[1]), 14, yOf(b[0]) - yOf(b[1]));
          ctx.strokeRect(x - 7, yOf(b[1]), 14, yOf(b[0]) - yOf(b[1]));
        }
      });
    }
    function changed() { draw(); onFilter(runs.map((_, i) => passes(i))); }
    let drag = null;
    const fracAt = (y) => Math.max(0, Math.min(1, 1 - (y - PAD.top) / (height - PAD.top - PAD.bottom)));
    canvas.addEventListener("mousedown", (e) => {
      const r = canvas.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top;
      const k = axes.findIndex((_, j) => Math.abs(xOf(j) - x) < 14);
      if (k < 0) return;
      drag = { k, from: fracAt(y), moved: false };
    });
    window.addEventListener("mousemove", (e) => {
      if (!drag) return;
      const r = canvas.getBoundingClientRect(), f = fracAt(e.clientY - r.top);
      drag.moved = true;
      brushes.set(drag.k, [Math.min(drag.from, f), Math.max(drag.from, f)]);
      changed();
    });
    window.addEventListener("mouseup", () => {
      if (drag && !drag.moved) { brushes.delete(drag.k); changed(); }   // a click clears the axis
      drag = null;
    });
    draw();
    // For tests and the keyboard-less: brush axis `name` to [lo, hi] in its own units (or clear).
    return {
      axes: axes.map((a) => a.name),
      brush(name, lo, hi) {
        const k = axes.findIndex((a) => a.name === name);
        if (k < 0) throw new Error("no axis " + name);
        if (lo == null) brushes.delete(k);
        else brushes.set(k, axes[k].numeric ? [(lo - axes[k].lo) / (axes[k].hi - axes[k].lo), (hi - axes[k].lo) / (axes[k].hi - axes[k].lo)]
                                            : [lo, hi]);
        changed();
      },
      kept() { return runs.filter((_, i) => passes(i)).map((r) => r.id); },
    };
  }

  window.sweepPictures = function (box, c, h) {
    const runs = c.runs;
    const differing = c.parameters.filter((p) => p.differs);
    if (!c.metrics.length || !differing.length) {
      box.innerHTML = `<p class="muted" id="sweep-note">The runs share every parameter${c.metrics.length ? "" : " and have no final metrics"}: nothing to draw.</p>`;
      return;
    }
    const prefer = c.metrics.find((m) => m.values.some((v) => typeof v === "number") && m.name !== "rows") || c.metrics[0];
    box.innerHTML =
      `<div class="toolbar"><label>Metric <select id="sweep-metric">${c.metrics.map((m) =>
        `<option ${m === prefer ? "selected" : ""}>${h.esc(m.name)}</option>`).join("")}</select></label>` +
      `<span class="muted">Drag along an axis to keep the runs inside; click an axis to clear it.</span></div>` +
      `<div class="card"><h3>Parallel coordinates</h3><div id="parcoords-box"></div></div>` +
      `<div class="grid" style="margin-top:1rem"><div class="card"><h3>Metric vs parameter <select id="scatter-param">` +
      differing.map((p) => `<option>${h.esc(p.key)}</option>`).join("") + `</select></h3><div class="chart" id="scatter"></div></div>` +
      `<div class="card"><h3>Trials <span class="muted" id="trials-count"></span></h3><div id="runs-wrap"><table id="trials"></table></div></div></div>`;
    function render() {
      const mname = box.querySelector("#sweep-metric").value;
      const metric = c.metrics.find((m) => m.name === mname);
      const axes = differing.map((p) => makeAxis(p.key, p.values, false)).concat([makeAxis(mname, metric.values, true)]);
      const table = box.querySelector("#trials");
      table.innerHTML = `<thead><tr><th>run</th><th>state</th>${differing.map((p) => `<th>${h.esc(p.key)}</th>`).join("")}<th>${h.esc(mname)}</th></tr></thead><tbody>` +
        runs.map((r, i) => `<tr data-run="${h.esc(r.id)}"><td class="mono"><a data-nav href="${h.esc(h.link("/runs/" + r.id))}">${h.short(r.id)}</a></td>` +
          `<td><span class="state ${h.esc(r.state)}">${h.esc(r.state)}</span></td>` +
          differing.map((p) => `<td class="num">${h.esc(h.fmt(p.values[i]))}</td>`).join("") +
          `<td class="num">${h.esc(h.fmt(metric.values[i]))}</td></tr>`).join("") + `</tbody>`;
      const pbox = box.querySelector("#parcoords-box");
      pbox.innerHTML = "";
      window.__parcoords = parallel(pbox, runs, axes, h, (keep) => {
        table.querySelectorAll("tbody tr").forEach((tr, i) => { tr.hidden = !keep[i]; });
        box.querySelector("#trials-count").textContent = `(${keep.filter(Boolean).length} of ${runs.length})`;
      });
      box.querySelector("#trials-count").textContent = `(${runs.length} of ${runs.length})`;
      scatter(mname, metric);
    }
    function scatter(mname, metric) {
      const key = box.querySelector("#scatter-param").value;
      const p = differing.find((q) => q.key === key);
      const axis = makeAxis(key, p.values, false);
      const xOf = (v) => (axis.numeric ? v : axis.cats.indexOf(JSON.stringify(v)));
      const pts = runs.map((_, i) => [p.values[i] == null ? null : xOf(p.values[i]), metric.values[i]])
        .filter(([x, y]) => x != null && typeof y === "number").sort((a, b) => a[0] - b[0]);
      const el = box.querySelector("#scatter");
      el.innerHTML = "";
      if (window.__charts.scatter) { window.__charts.scatter.destroy(); delete window.__charts.scatter; }
      const u = new uPlot({
        width: Math.max(320, el.clientWidth || 420), height: 240, scales: { x: { time: false } },
        series: [{ label: key, value: (u, v) => (v == null ? "" : axis.numeric ? h.fmt(v) : h.fmt(JSON.parse(axis.cats[v] || "null"))) },
                 { label: mname, stroke: h.COLORS[0], width: 0, paths: () => null, points: { show: true, size: 8, fill: h.COLORS[0] } }],
        axes: [{ label: key, values: (u, splits) => splits.map((v) => (axis.numeric ? h.fmt(v) : Number.isInteger(v) && axis.cats[v] ? h.fmt(JSON.parse(axis.cats[v])) : "")) },
               { label: mname, size: 70 }],
      }, [pts.map((q) => q[0]), pts.map((q) => q[1])], el);
      window.__charts.scatter = u;
    }
    box.querySelector("#sweep-metric").addEventListener("change", render);
    box.querySelector("#scatter-param").addEventListener("change", () => {
      const mname = box.querySelector("#sweep-metric").value;
      scatter(mname, c.metrics.find((m) => m.name === mname));
    });
    render();
  };
})();
