// The runs page: one static script, three views read from the address (/, /runs/ID, /compare),
// JSON from /ui/api with the API's auth (a bearer token kept in this browser when one is asked).
"use strict";
(function () {
  const view = document.getElementById("view");
  const COLORS = ["#1473e6", "#e34850", "#2d9d78", "#e68619", "#8e5cd9", "#d83790", "#0d8a8a",
                  "#6f7d00", "#7a5b3b", "#4b5563"];
  window.__charts = {};            // name -> uPlot instance (tests read them)
  let timers = [];
  let shownLog = { runId: null, text: "", offset: 0 };   // a followed run's log, kept across its redraw

  // --- small helpers --------------------------------------------------------------------------
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const short = (id) => (id || "").slice(0, 8);
  function fmt(v) {
    if (v == null) return "";
    if (typeof v === "number") {
      const a = Math.abs(v);
      if (a >= 1e15 || (a !== 0 && a < 1e-4)) return v.toExponential(3);
      if (Number.isInteger(v)) return v.toLocaleString("en");
      if (a >= 1000) return v.toLocaleString("en", { maximumFractionDigits: 1 });   // 28,330.4
      return String(+v.toPrecision(5));
    }
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }
  function secs(s) {
    if (s == null) return "";
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    const m = Math.floor(s / 60);
    return m + " min " + Math.round(s - 60 * m) + " s";
  }
  const when = (t) => (t ? t.replace("T", " ").replace(/\.\d+Z$/, "Z") : "");
  function scopeHeaders() {
    const q = new URLSearchParams(location.search), h = {};
    if (q.get("org")) h["x-gw-ims-org-id"] = q.get("org");
    if (q.get("sandbox")) h["x-sandbox-name"] = q.get("sandbox");
    const token = localStorage.getItem("mlrt-token");
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }
  // Keeps org and sandbox on every in-page link.
  function link(path, extra) {
    const q = new URLSearchParams(location.search), out = new URLSearchParams(extra || {});
    for (const k of ["org", "sandbox"]) if (q.get(k)) out.set(k, q.get(k));
    const s = out.toString();
    return path + (s ? "?" + s : "");
  }
  class AuthNeeded extends Error {}
  async function api(path) {
    const res = await fetch(path, { headers: { Accept: "application/json", ...scopeHeaders() } });
    if (res.status === 401) throw new AuthNeeded();
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error((body.title || res.status) + ": " + (body.detail || res.statusText));
    return body;
  }
  function askToken() {
    const box = document.getElementById("auth");
    box.hidden = false;
    view.innerHTML = "";
    box.querySelector("input").focus();
  }
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    localStorage.setItem("mlrt-token", e.target.token.value.trim());
    document.getElementById("auth").hidden = true;
    route();
  });
  const scopeForm = document.getElementById("scope");
  scopeForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams(location.search);
    for (const k of ["org", "sandbox"]) {
      const v = scopeForm[k].value.trim();
      if (v) q.set(k, v); else q.delete(k);
    }
    q.delete("start");
    go(location.pathname + (q.toString() ? "?" + q : ""));
  });
  function go(url) { history.pushState(null, "", url); route(); }
  document.addEventListener("click", (e) => {
    const a = e.target.closest("a[data-nav]");
    if (a && !e.metaKey && !e.ctrlKey && a.origin === location.origin) {
      e.preventDefault();
      go(a.getAttribute("href"));
    }
  });
  window.addEventListener("popstate", route);

  // Axis labels: steps are whole numbers; values get thousands separators and as many decimals
  // as the tick spacing needs. Each axis is as wide as its longest label (uPlot's default 50 px
  // cuts "42,000" to "0,000").
  const STEP_INCRS = [];
  for (let p = 1; p <= 1e9; p *= 10) STEP_INCRS.push(p, 2 * p, 5 * p);
  function tickLabels(u, splits, axisIdx, space, incr) {
    const decimals = Math.min(6, Math.max(0, -Math.floor(Math.log10(incr || 1) + 1e-9)));
    return splits.map((v) => (v == null ? "" : v.toLocaleString("en", {
      minimumFractionDigits: decimals, maximumFractionDigits: decimals })));
  }
  function fitAxis(u, values, axisIdx, cycleNum) {
    const axis = u.axes[axisIdx];
    if (cycleNum > 1) return axis._size;   // settled: no more layout passes
    let widest = 0;
    if (values && values.length) {
      u.ctx.font = axis.font[0];
      widest = Math.max(...values.map((v) => u.ctx.measureText(String(v)).width)) / devicePixelRatio;
    }
    return Math.ceil(axis.ticks.size + axis.gap + widest) + 4;
  }
  function chart(el, name, xs, ys, labels, xLabel) {
    const width = Math.max(320, el.clientWidth || 420);
    xLabel = xLabel || "step";
    const series = [{ label: xLabel, value: (u, v) => (v == null ? "" : v.toLocaleString("en")) }];
    ys.forEach((_, i) => series.push({ label: labels[i], stroke: COLORS[i % COLORS.length], width: 1.5,
                                       points: { show: xs.length < 60 }, spanGaps: true,
                                       value: (u, v) => fmt(v) }));
    const u = new uPlot({ width: width, height: 220, series: series, scales: { x: { time: false } },
                          axes: [{ label: xLabel, incrs: STEP_INCRS, values: tickLabels },
                                 { values: tickLabels, size: fitAxis }],
                          legend: { live: true } }, [xs, ...ys], el);
    window.__charts[name] = u;
    return u;
  }
  function clearCharts() {
    for (const k of Object.keys(window.__charts)) { window.__charts[k].destroy(); delete window.__charts[k]; }
  }

  // --- the runs table -------------------------------------------------------------------------
  const FILTERS = [["engineId", "Engine", "engines"], ["mlInstanceId", "MLInstance", "mlInstances"],
                   ["experimentId", "Experiment", "experiments"], ["state", "State", "states"],
                   ["mode", "Mode", "modes"]];
  async function runsView() {
    const q = new URLSearchParams(location.search);
    const params = new URLSearchParams();
    for (const [k] of FILTERS) if (q.get(k)) params.set(k, q.get(k));
    for (const k of ["sort", "start", "limit", "params", "filter"]) if (q.get(k) != null) params.set(k, q.get(k));
    const search = `<form class="toolbar" id="search"><input name="filter" size="70" spellcheck="false" ` +
      `placeholder="metrics.MAPE < 0.05 and params.learning_rate = '0.1' and attributes.state = 'DONE'" value="${esc(q.get("filter") || "")}">` +
      `<button>Search</button> <span class="muted">MLflow's syntax: metrics., params., tags., system., attributes.; LIKE, ILIKE, IN, and, or</span></form>`;
    const bindSearch = () => view.querySelector("#search").addEventListener("submit", (e) => {
      e.preventDefault();
      const nq = new URLSearchParams(location.search), v = e.target.filter.value.trim();
      if (v) nq.set("filter", v); else nq.delete("filter");
      nq.delete("start");
      go("/" + (nq.toString() ? "?" + nq : ""));
    });
    let page;
    try { page = await api("/ui/api/runs?" + params); }
    catch (err) {   // a malformed search: the box stays, with what is wrong where
      if (err instanceof AuthNeeded || !q.get("filter")) throw err;
      view.innerHTML = `<h1>Runs</h1>` + search + `<pre class="error" id="search-error">${esc(err.message)}</pre>`;
      bindSearch();
      return;
    }
    const sort = page.sort, desc = sort.startsWith("-"), sortKey = sort.replace(/^[-+]/, "");
    const head = (key, label, cls) => {
      const sorted = key === sortKey;
      return `<th class="sortable ${cls || ""} ${sorted ? "sorted" + (desc ? " desc" : "") : ""}" data-sort="${esc(key)}">${esc(label)}</th>`;
    };
    const pcols = page.columns.params, mcols = page.columns.metrics, scols = page.columns.system || [];
    let rows = "";
    for (const r of page.runs) {
      rows += `<tr data-run="${esc(r.id)}"><td><input type="checkbox" class="pick" value="${esc(r.id)}"></td>` +
        `<td class="mono"><a data-nav href="${esc(link("/runs/" + r.id))}">${short(r.id)}</a></td>` +
        `<td><span class="state ${esc(r.state)}">${esc(r.state)}</span></td><td>${esc(r.mode)}</td>` +
        `<td>${esc(r.engine.name)}</td><td>${esc(r.mlInstance.name)}</td><td>${esc(r.experiment.name)}</td>` +
        `<td>${esc(when(r.created))}</td><td class="num">${esc(secs(r.duration_s))}</td>` +
        mcols.map((k) => `<td class="num" data-metric="${esc(k)}">${esc(fmt(r.metrics[k]))}</td>`).join("") +
        pcols.map((k) => `<td class="num param" title="${esc(fmt(r.params[k]))}">${esc(fmt(r.params[k]))}</td>`).join("") +
        scols.map((k) => `<td class="num" data-system="${esc(k)}">${esc(fmt(r.system[k]))}</td>`).join("") + "</tr>";
    }
    const end = page.start + page.runs.length;
    view.innerHTML =
      `<h1>Runs</h1>` + (scopeNote ? `<p class="muted" id="scope-note">${esc(scopeNote)}</p>` : "") + search +
      `<div class="toolbar" id="filters"></div>` +
      `<div class="toolbar"><button id="compare" disabled>Compare selected</button>` +
      (q.get("experimentId") ? `<a data-nav id="compare-experiment" href="${esc(link("/compare", { experiment: q.get("experimentId") }))}">Compare this Experiment's runs</a>` : "") +
      `<button id="csv">Export CSV</button>` +
      `<span class="muted">Metric columns show each run's final value (its last step when it has no final one); sort by "best" in the menu for its best step.</span></div>` +
      `<div id="runs-wrap"><table id="runs"><thead><tr><th></th><th>Run</th>${head("state", "State")}` +
      `${head("mode", "Mode")}<th>Engine</th><th>MLInstance</th><th>Experiment</th>${head("created", "Created")}` +
      `${head("duration", "Duration", "num")}` +
      mcols.map((k) => head("metric." + k, k, "num")).join("") +
      pcols.map((k) => head("param." + k, k, "num param")).join("") +
      scols.map((k) => head("system." + k, SYSTEM_LABELS[k] || k, "num")).join("") +
      `</tr></thead><tbody>${rows || `<tr><td colspan="9" class="muted">No runs match.</td></tr>`}</tbody></table></div>` +
      `<div class="pager"><button id="prev" ${page.start > 0 ? "" : "disabled"}>‹ Prev</button>` +
      `<span id="range">${page.total ? page.start + 1 : 0}–${end} of ${page.total.toLocaleString("en")}</span>` +
      `<button id="next" ${end < page.total ? "" : "disabled"}>Next ›</button></div>`;
    window.__tableRenderedAt = performance.now();
    // The sorted column is the one being looked at: scroll it into view when it is off to the right.
    const sortedTh = view.querySelector("th.sorted"), wrap = view.querySelector("#runs-wrap");
    if (sortedTh && sortedTh.offsetLeft + sortedTh.offsetWidth > wrap.scrollLeft + wrap.clientWidth) {
      wrap.scrollLeft = sortedTh.offsetLeft + sortedTh.offsetWidth - wrap.clientWidth + 16;
    }
    const setQuery = (changes) => {
      const nq = new URLSearchParams(location.search);
      for (const [k, v] of Object.entries(changes)) { if (v == null || v === "") nq.delete(k); else nq.set(k, v); }
      go("/" + (nq.toString() ? "?" + nq : ""));
    };
    view.querySelectorAll("th.sortable").forEach((th) => th.addEventListener("click", () => {
      const key = th.dataset.sort;
      const metricLike = key.startsWith("metric.") || key.startsWith("best.");
      const next = key === sortKey ? (desc ? key : "-" + key) : (metricLike ? key : "-" + key);
      setQuery({ sort: next, start: null });
    }));
    view.querySelector("#prev").onclick = () => setQuery({ start: Math.max(0, page.start - page.limit) || null });
    view.querySelector("#next").onclick = () => setQuery({ start: page.start + page.limit });
    const picks = () => [...view.querySelectorAll("input.pick:checked")].map((c) => c.value);
    view.querySelectorAll("input.pick").forEach((c) => c.addEventListener("change", () => {
      const n = picks().length;
      view.querySelector("#compare").disabled = n < 2 || n > 10;
    }));
    view.querySelector("#compare").onclick = () => go(link("/compare", { runs: picks().join(",") }));
    bindSearch();
    view.querySelector("#csv").onclick = () => {
      const header = ["run", "state", "mode", "engine", "mlInstance", "experiment", "created", "duration_s",
                      ...mcols, ...pcols.map((k) => "param." + k), ...scols.map((k) => "system." + k)];
      const cell = (v) => { const t = v == null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
                            return /[",\n]/.test(t) ? '"' + t.replace(/"/g, '""') + '"' : t; };
      const lines = [header, ...page.runs.map((r) => [r.id, r.state, r.mode, r.engine.name, r.mlInstance.name,
        r.experiment.name, r.created, r.duration_s, ...mcols.map((k) => r.metrics[k]),
        ...pcols.map((k) => r.params[k]), ...scols.map((k) => r.system[k])])].map((row) => row.map(cell).join(","));
      window.__csv = lines.join("\n") + "\n";
      const a = document.createElement("a");
      a.href = URL.createObjectURL(new Blob([window.__csv], { type: "text/csv" }));
      a.download = "runs.csv"; a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    };
    // The filter menus come after the table has painted.
    api("/ui/api/choices").then((choices) => {
      const box = view.querySelector("#filters");
      if (!box) return;
      let html = "";
      for (const [key, label, list] of FILTERS) {
        html += `<label>${label} <select data-filter="${key}"><option value="">all</option>` +
          choices[list].map((c) => {
            const id = typeof c === "string" ? c : c.id, name = typeof c === "string" ? c : (c.name || short(c.id));
            return `<option value="${esc(id)}" ${q.get(key) === id ? "selected" : ""}>${esc(name)}</option>`;
          }).join("") + `</select></label>`;
      }
      const sortOptions = [["-created", "newest first"], ["created", "oldest first"], ["-duration", "longest"]]
        .concat(choices.keys.metric.flatMap((m) => [["metric." + m, m + " (final) ↑"], ["-metric." + m, m + " (final) ↓"],
                                                    ["best." + m, m + " (best) ↑"], ["-best." + m, m + " (best) ↓"]]))
        .concat(choices.keys.param.flatMap((p) => [["param." + p, p + " ↑"], ["-param." + p, p + " ↓"]]))
        .concat((choices.keys.system || []).flatMap((p) => [["system." + p, (SYSTEM_LABELS[p] || p) + " ↑"], ["-system." + p, (SYSTEM_LABELS[p] || p) + " ↓"]]));
      html += `<label>Sort <select id="sort">` + sortOptions.map(([v, l]) =>
        `<option value="${esc(v)}" ${v === sort ? "selected" : ""}>${esc(l)}</option>`).join("") + `</select></label>`;
      box.innerHTML = html;
      box.querySelectorAll("select[data-filter]").forEach((s) => s.addEventListener("change",
        () => setQuery({ [s.dataset.filter]: s.value, start: null })));
      box.querySelector("#sort").addEventListener("change", (e) => setQuery({ sort: e.target.value, start: null }));
    }).catch(() => {});
  }

  // --- one run --------------------------------------------------------------------------------
  function kvList(obj) {
    const entries = Object.entries(obj || {}).filter(([, v]) => v != null && !(typeof v === "object" && !Object.keys(v).length));
    if (!entries.length) return `<p class="muted">none</p>`;
    return `<dl class="kv">` + entries.map(([k, v]) => `<dt>${esc(k)}</dt><dd class="mono">${esc(fmt(v))}</dd>`).join("") + `</dl>`;
  }
  async function download(url, name) {
    const res = await fetch(url, { headers: scopeHeaders() });
    if (!res.ok) { alert("Download failed: " + res.status); return; }
    const blob = await res.blob(), a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = name; a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }
  const SYSTEM = "system/";
  const SYSTEM_LABELS = { peak_memory_mb: "peak memory (MB)", mean_cpu_percent: "mean CPU %",
                          mean_gpu_percent: "mean GPU %" };
  const splitSeries = (all, system) => Object.fromEntries(Object.entries(all || {}).filter(([n]) => n.startsWith(SYSTEM) === system));
  function seriesCharts(box, seriesByRun, labels, xLabel) {
    // seriesByRun: [{name: {steps, values}}] one entry per run; overlays when several.
    const names = [...new Set(seriesByRun.flatMap((s) => Object.keys(s)))].sort();
    if (!names.length) { box.innerHTML = `<p class="muted">${xLabel ? "No samples yet." : "No per-step metrics."}</p>`; return; }
    box.innerHTML = names.map((n) => `<div class="card"><h3>${esc(n)}</h3><div class="chart" data-chart="${esc(n)}"></div></div>`).join("");
    for (const n of names) {
      const steps = [...new Set(seriesByRun.flatMap((s) => (s[n] ? s[n].steps : [])))].sort((a, b) => a - b);
      const ys = seriesByRun.map((s) => {
        const m = new Map();
        if (s[n]) s[n].steps.forEach((st, i) => m.set(st, s[n].values[i]));
        return steps.map((st) => (m.has(st) ? m.get(st) : null));
      });
      chart(box.querySelector(`[data-chart="${CSS.escape(n)}"]`), n, steps, ys, labels, xLabel);
    }
  }
  function systemSection(r) {
    const s = r.system || {};
    if (!s.sampled) return `<h2>System metrics</h2><p class="muted" id="system-note">${esc(s.reason || "not sampled")}</p>`;
    const summary = s.samples == null ? `<p class="muted" id="system-note">${esc(s.reason || "")}</p>` :
      kvList({ "peak memory (MB)": s.peak_memory_mb, "mean memory (MB)": s.mean_memory_mb,
               ["mean CPU (% of " + s.cores + " cores)"]: s.mean_cpu_percent, "threads (max)": s.max_threads,
               "disk read (MB)": s.disk_read_mb, "disk written (MB)": s.disk_write_mb,
               "mean GPU %": s.mean_gpu_percent, "peak GPU memory (MB)": s.peak_gpu_memory_mb,
               "Spark storage (MB, peak)": s.peak_spark_storage_mb,
               samples: s.samples + " every " + s.interval_s + " s", notes: (s.notes || []).join("; ") || null });
    return `<h2>System metrics</h2><div id="system-summary">${summary}</div><div class="grid" id="system-charts"></div>`;
  }
  async function runView(runId) {
    const r = await api("/ui/api/runs/" + encodeURIComponent(runId));
    const running = r.state === "RUNNING" || r.state === "PENDING";
    const total = r.started ? ((r.ended ? Date.parse(r.ended) : Date.now()) - Date.parse(r.started)) / 1000 : null;
    const params = r.parameters.map((p) => `<tr><td class="mono">${esc(p.key)}</td><td class="mono wrap">${esc(fmt(p.value))}</td><td>${esc(p.source)}</td></tr>`).join("");
    const metrics = r.metrics.map((m) => `<tr><td>${esc(m.name)}</td><td class="num">${esc(fmt(m.value))}</td></tr>`).join("");
    const progress = r.progress && r.progress.bars ? r.progress.bars.map((b) => `${esc(b.desc)} ${b.n}/${b.total}`).join(" · ") : "";
    view.innerHTML =
      `<h1>Run <span class="mono">${esc(r.id)}</span> <span class="state ${esc(r.state)}" id="state">${esc(r.state)}</span></h1>` +
      `<p class="muted">${esc(r.mode)} of MLInstance ${esc(r.mlInstance.name || r.mlInstance.id)}, engine ${esc(r.engine.name)} ` +
      `(${esc(r.engine.plugin || "")}), experiment ${esc(r.experiment.name || r.experiment.id)}. ${esc(r.message || "")}` +
      (progress ? ` <b>${progress}</b>` : "") + `</p>` +
      `<div class="grid">` +
      `<div class="card"><h3>Times</h3>${kvList({ created: when(r.created), started: when(r.started), ended: when(r.ended), "total": secs(total) })}` +
      `<h3 style="margin-top:.6rem">Stages</h3>${kvList(Object.fromEntries(Object.entries(r.durations_s).map(([k, v]) => [k, secs(v)])))}</div>` +
      `<div class="card"><h3>Final metrics</h3>${metrics ? `<table>${metrics}</table>` : `<p class="muted">none yet</p>`}` +
      `<h3 style="margin-top:.6rem">Results</h3>` +
      (r.models.length ? r.models.map((m) => `<p>Model <span class="mono">${esc(m.id)}</span> <a href="${esc(m.download)}" class="download" data-name="model-${esc(short(m.id))}.zip">download</a></p>`).join("") : "") +
      (r.scoringModelId ? `<p>Scored with Model <span class="mono">${esc(r.scoringModelId)}</span></p>` : "") +
      (r.output ? `<p>Output <span class="mono">${esc(r.output)}</span></p>` : "") +
      (!r.models.length && !r.output && !r.scoringModelId ? `<p class="muted">none</p>` : "") + `</div>` +
      `<div class="card"><h3>Resources</h3>${kvList(r.resources)}<h3 style="margin-top:.6rem">Plan</h3>${kvList(r.plan && { backend: r.plan.backend, device: r.plan.device, threads: r.plan.threads, reason: r.plan.reason })}</div>` +
      `</div>` +
      `<h2>Metrics over steps</h2><div class="grid" id="charts"></div>` + systemSection(r) +
      `<h2>Parameters</h2><table><thead><tr><th>key</th><th>value</th><th>source layer</th></tr></thead><tbody>${params}</tbody></table>` +
      `<h2>Log ${running ? `<span class="muted">(following)</span>` : ""} <a class="muted download" href="${esc(r.log)}" data-name="worker-${esc(short(r.id))}.log" target="_blank">raw</a></h2><pre class="log" id="log"></pre>` +
      (r.logs ? `<h2>Failure</h2><pre class="log">${esc(r.logs)}</pre>` : "");
    seriesCharts(view.querySelector("#charts"), [splitSeries(r.series, false)], [short(r.id)]);
    const sysBox = view.querySelector("#system-charts");
    const sysLabel = "sample (every " + ((r.system && r.system.interval_s) || 1) + " s)";
    if (sysBox) seriesCharts(sysBox, [splitSeries(r.series, true)], [short(r.id)], sysLabel);
    view.querySelectorAll("a.download").forEach((a) => a.addEventListener("click", (e) => {
      if (!localStorage.getItem("mlrt-token")) return;   // no token: a plain link works
      e.preventDefault(); download(a.href, a.dataset.name);
    }));
    const logEl = view.querySelector("#log");
    let offset = 0;
    if (shownLog.runId === runId) {   // the same run drawn again (it ended): keep what was shown
      logEl.textContent = shownLog.text;
      offset = shownLog.offset;
    }
    async function pollLog() {
      const chunk = await api(`/ui/api/runs/${encodeURIComponent(runId)}/log?offset=${offset}`);
      if (chunk.text) {
        const atEnd = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 4;
        logEl.textContent += chunk.text;
        if (atEnd) logEl.scrollTop = logEl.scrollHeight;
      }
      offset = chunk.offset;
      shownLog = { runId, text: logEl.textContent, offset };
      return chunk.state;
    }
    await pollLog();
    if (running) {
      const t = setInterval(async () => {
        try {
          const state = await pollLog();
          if (state !== "RUNNING" && state !== "PENDING") { clearInterval(t); route(); }
          else {
            const fresh = await api("/ui/api/runs/" + encodeURIComponent(runId));
            for (const system of [false, true]) {
              const box = view.querySelector(system ? "#system-charts" : "#charts");
              if (!box) continue;
              const part = splitSeries(fresh.series, system);
              for (const [n, s] of Object.entries(part)) {
                if (window.__charts[n]) window.__charts[n].setData([s.steps, s.values]);
                else { seriesCharts(box, [part], [short(runId)], system ? sysLabel : undefined); break; }
              }
            }
          }
        } catch (err) { clearInterval(t); }
      }, 1000);
      timers.push(t);
    }
  }

  // --- compare --------------------------------------------------------------------------------
  async function compareView() {
    const cq = new URLSearchParams(location.search);
    const ids = (cq.get("runs") || "").split(",").filter(Boolean);
    const c = await api("/ui/api/compare?" + (cq.get("experiment") ? "experiment=" + encodeURIComponent(cq.get("experiment"))
                                                                   : "runs=" + encodeURIComponent(ids.join(","))));
    const labels = c.runs.map((r) => short(r.id));
    const heads = c.runs.map((r, i) => `<th style="color:${COLORS[i % COLORS.length]}"><a data-nav href="${esc(link("/runs/" + r.id))}" class="mono">${short(r.id)}</a><br><span class="state ${esc(r.state)}">${esc(r.state)}</span> <span class="muted">${esc(r.mlInstance.name || "")}</span></th>`).join("");
    const ndiff = c.parameters.filter((p) => p.differs).length;
    const prow = (p) => `<tr class="${p.differs ? "diff" : "same"}"><td class="mono">${esc(p.key)}</td>` +
      p.values.map((v, i) => `<td class="mono" title="${esc(p.sources[i] || "")}">${esc(fmt(v))}</td>`).join("") + `</tr>`;
    const mrow = (m) => `<tr><td>${esc(m.name)}</td>` + m.values.map((v) => `<td class="num">${esc(fmt(v))}</td>`).join("") + `</tr>`;
    view.innerHTML =
      `<h1>Compare ${c.runs.length} runs</h1>` +
      `<h2>Sweep in one picture</h2><div id="sweep"></div>` +
      `<h2>Metrics over steps</h2><div class="grid" id="charts"></div>` +
      `<h2>Final metrics</h2><table id="metrics"><thead><tr><th>metric</th>${heads}</tr></thead><tbody>${c.metrics.map(mrow).join("")}</tbody></table>` +
      `<h2>Parameters <span class="muted">(${ndiff} differ, highlighted)</span> <label class="muted"><input type="checkbox" id="only-diff"> only those that differ</label></h2>` +
      `<table id="params"><thead><tr><th>key</th>${heads}</tr></thead><tbody>${c.parameters.map(prow).join("")}</tbody></table>`;
    seriesCharts(view.querySelector("#charts"), c.runs.map((r) => splitSeries(r.series, false)), labels);
    window.sweepPictures(view.querySelector("#sweep"), c, { esc, fmt, short, link, COLORS, chart });
    view.querySelector("#only-diff").addEventListener("change", (e) => {
      view.querySelectorAll("#params tr.same").forEach((tr) => { tr.hidden = e.target.checked; });
    });
  }

  // --- orgs and sandboxes ---------------------------------------------------------------------
  // The header offers the orgs and sandboxes that hold objects; an address without org and
  // sandbox whose default scope holds nothing opens on the one with the most runs instead.
  let scopeNote = "", scopeOptions = [];
  // --- MLServices: schedules, fires, the published Model, the runs they started --------------
  function schedule(spec, st) {
    if (!spec || !spec.cron) return `<span class="muted">none</span>`;
    st = st || {};
    const window_ = [spec.startTime && "from " + when(spec.startTime), spec.endTime && "until " + when(spec.endTime)]
      .filter(Boolean).join(" ");
    return `<span class="mono">${esc(spec.cron)}</span>${window_ ? ` <span class="muted">${esc(window_)}</span>` : ""}` +
      `<br>next <span class="next-fire">${esc(when(st.nextFire) || "—")}</span>` +
      `<br>last ${esc(when(st.lastFire) || "—")}` + (st.lastRunId ? ` (<a data-nav href="${esc(link("/runs/" + st.lastRunId))}">${short(st.lastRunId)}</a>)` : "") +
      ` · ${esc(fmt(st.fires || 0))} ${st.fires === 1 ? "fire" : "fires"}` + (st.error ? `<br><span class="error">${esc(st.error)}</span>` : "");
  }
  async function servicesView() {
    const page = await api("/ui/api/services");
    let rows = "";
    for (const s of page.services) {
      const st = s.status || {}, sch = st.schedules || {}, pub = st.publishedModel;
      const metrics = pub ? (pub.metrics || []).map((m) => `${esc(m.name)} ${esc(fmt(m.value))}`).join(", ") : "";
      const recent = (st.recentRuns || []).slice(0, 5).map((r) =>
        `<a data-nav href="${esc(link("/runs/" + r.runId))}">${esc(r.mode)} ${short(r.runId)}</a>`).join("<br>");
      rows += `<tr data-service="${esc(s.id)}"><td>${esc(s.name)}<br><span class="mono muted">${short(s.id)}</span></td>` +
        `<td>${esc(s.mlInstanceName || short(s.mlInstanceId))}</td>` +
        `<td><span class="state ${st.paused ? "ABORTED" : "DONE"}">${st.paused ? "paused" : "active"}</span></td>` +
        `<td class="train">${schedule(s.trainingSchedule, sch.trainingSchedule)}</td>` +
        `<td class="score">${schedule(s.scoringSchedule, sch.scoringSchedule)}</td>` +
        `<td class="published">${pub ? `<span class="mono">${short(pub.modelId)}</span>` +
          (pub.experimentRunId ? ` from <a data-nav href="${esc(link("/runs/" + pub.experimentRunId))}">${short(pub.experimentRunId)}</a>` : "") +
          `<br>${metrics}<br><span class="muted">${esc(when(pub.publishedAt))}</span>` : `<span class="muted">none yet</span>`}` +
          (st.lastPublication && st.lastPublication.published === false ? `<br><span class="muted">last run not published: ${esc(st.lastPublication.reason)}</span>` : "") + `</td>` +
        `<td class="recent">${recent || `<span class="muted">none yet</span>`}</td></tr>`;
    }
    view.innerHTML = `<h1>Services</h1>` +
      `<p class="muted">MLServices: published Models whose training and scoring run on a schedule (times in UTC unless the schedule names a time zone).</p>` +
      `<div id="runs-wrap"><table id="services"><thead><tr><th>MLService</th><th>MLInstance</th><th>State</th>` +
      `<th>Training schedule</th><th>Scoring schedule</th><th>Published Model</th><th>Recent runs</th></tr></thead>` +
      `<tbody>${rows || `<tr><td colspan="7" class="muted">No MLServices in this sandbox.</td></tr>`}</tbody></table></div>` +
      `<h2>Online traffic</h2><div id="online-traffic"><p class="muted">Loading…</p></div>`;
    await onlineView(page.services);
    timers.push(setInterval(() => { if (location.pathname === "/services") route(); }, 10000));
  }
  async function onlineView(services) {
    const box = view.querySelector("#online-traffic");
    let traffic;
    try {
      traffic = await api("/data/sensei/online/traffic");
    } catch (err) {
      if (err instanceof AuthNeeded) throw err;
      box.innerHTML = `<p class="error">${esc(err.message)}</p>`;
      return;
    }
    window.onlineTraffic(box, traffic, services, { esc, fmt, short, COLORS, charts: window.__charts });
  }

  async function settleScope() {
    const q = new URLSearchParams(location.search);
    const asked = api("/ui/api/scopes");
    if (q.get("org") || q.get("sandbox")) {   // the address names the scope: do not wait for the list
      scopeNote = "";
      asked.then(offerScopes).catch(() => {});
      return;
    }
    offerScopes(await asked);
  }
  function offerScopes(scopes) {
    const q = new URLSearchParams(location.search);
    const here = { org: q.get("org") || scopes.current.org, sandbox: q.get("sandbox") || scopes.current.sandbox };
    const held = scopes.scopes.some((x) => x.org === here.org && x.sandbox === here.sandbox);
    scopeNote = "";
    if (!q.get("org") && !q.get("sandbox") && !held && scopes.scopes.length) {
      const pick = scopes.scopes[0];
      scopeNote = `Org ${here.org}, sandbox ${here.sandbox} holds nothing: showing org ${pick.org}, sandbox ${pick.sandbox}.`;
      q.set("org", pick.org); q.set("sandbox", pick.sandbox);
      history.replaceState(null, "", location.pathname + "?" + q);
      here.org = pick.org; here.sandbox = pick.sandbox;
    }
    const picker = document.getElementById("scope-pick");
    const options = scopes.scopes.slice();
    if (!held && !scopeNote) options.unshift({ org: here.org, sandbox: here.sandbox, runs: 0, objects: 0 });
    scopeOptions = options;
    picker.innerHTML = options.map((x, i) => `<option value="${i}" ` +
      `${x.org === here.org && x.sandbox === here.sandbox ? "selected" : ""}>${esc(x.org)} / ${esc(x.sandbox)} ` +
      `(${x.runs.toLocaleString("en")} run${x.runs === 1 ? "" : "s"})</option>`).join("");
    picker.hidden = options.length < 2;
  }
  document.getElementById("scope-pick").addEventListener("change", (e) => {
    const pick = scopeOptions[+e.target.value];   // filters name the old scope's objects: dropped
    go("/?" + new URLSearchParams({ org: pick.org, sandbox: pick.sandbox }));
  });

  // --- routing --------------------------------------------------------------------------------
  async function route() {
    timers.forEach(clearInterval); timers = [];
    clearCharts();
    const path = location.pathname;
    try {
      await settleScope();
      const q = new URLSearchParams(location.search);
      scopeForm.org.value = q.get("org") || ""; scopeForm.sandbox.value = q.get("sandbox") || "";
      if (path.startsWith("/runs/")) await runView(decodeURIComponent(path.slice(6)));
      else if (path === "/compare") await compareView();
      else if (path === "/services") await servicesView();
      else await runsView();
      document.title = (path.startsWith("/runs/") ? "Run " + short(path.slice(6)) : path === "/compare" ? "Compare"
                        : path === "/services" ? "Services" : "Runs") + " · MLInstance Runtime";
    } catch (err) {
      if (err instanceof AuthNeeded) askToken();
      else view.innerHTML = `<p class="error">${esc(err.message)}</p>`;
    }
    window.__ready = true;
  }
  route();
})();
