// Each MLService's online traffic, for the Services view: requests, errors, p50 and p99 since
// the server started, and two charts per service over the last 10 minutes (requests and errors
// per second; p50 and p99 latency in ms), drawn with the vendored uPlot. Nothing fetched here:
// the view hands over /data/sensei/online/traffic's document.
"use strict";
(function () {
  const ERROR = "#c62828", WINDOW_S = 600, BUCKET_S = 5;   // as runtime/serving/traffic.py

  function timeChart(el, name, series, labels, colors, yLabel, charts) {
    const width = Math.max(320, el.clientWidth || 420);
    const defs = [{ label: "time" }];
    labels.forEach((label, i) => defs.push({ label, stroke: colors[i], width: 1.5, spanGaps: false,
                                              points: { show: series.t.length < 30 },
                                              value: (u, v) => (v == null ? "—" : String(+v.toPrecision(4))) }));
    // the whole 10-minute window, ending with the current bucket, however few buckets hold data
    const last = series.t.length ? series.t[series.t.length - 1] : Date.now() / 1000;
    const x = { time: true, range: () => [last - WINDOW_S + BUCKET_S, last + BUCKET_S] };
    const u = new uPlot({ width, height: 180, series: defs, scales: { x },
                          axes: [{}, { label: yLabel }], legend: { live: true } },
                        [series.t, ...labels.map((label) => series[label === "requests/s" ? "requestsPerS"
                          : label === "errors/s" ? "errorsPerS" : label === "p50 ms" ? "p50Ms" : "p99Ms"])], el);
    charts[name] = u;
    return u;
  }

  // box: the element to fill; traffic: {services: {id: {...}}}; services: the view's MLServices
  // (names); h: the page's helpers.
  window.onlineTraffic = function (box, traffic, services, h) {
    const names = {};
    for (const s of services) names[s.id] = s.name;
    const ids = Object.keys((traffic && traffic.services) || {}).sort((a, b) => (names[a] || a).localeCompare(names[b] || b));
    if (!ids.length) {
      box.innerHTML = `<p class="muted" id="online-none">No online requests yet: score rows with POST /data/sensei/mlServices/ID/invocations.</p>`;
      return;
    }
    const ms = (v) => (v == null ? "—" : h.fmt(v) + " ms");
    let rows = "", cards = "";
    for (const id of ids) {
      const t = traffic.services[id];
      rows += `<tr data-online="${h.esc(id)}"><td>${h.esc(names[id] || h.short(id))}<br><span class="mono muted">${h.short(id)}</span></td>` +
        `<td class="mono">${h.esc(h.short(t.modelId))}</td><td class="num requests">${h.esc(h.fmt(t.requests))}</td>` +
        `<td class="num errors${t.errors ? " error" : ""}">${h.esc(h.fmt(t.errors))}</td>` +
        `<td class="num p50">${ms(t.p50Ms)}</td><td class="num p99">${ms(t.p99Ms)}</td></tr>`;
      cards += `<div class="card"><h3>${h.esc(names[id] || h.short(id))}: requests</h3><div class="chart" data-chart="rate" data-id="${h.esc(id)}"></div></div>` +
        `<div class="card"><h3>${h.esc(names[id] || h.short(id))}: latency</h3><div class="chart" data-chart="latency" data-id="${h.esc(id)}"></div></div>`;
    }
    box.innerHTML = `<table id="online"><thead><tr><th>MLService</th><th>Model answering</th><th class="num">Requests</th>` +
      `<th class="num">Errors</th><th class="num">p50</th><th class="num">p99</th></tr></thead><tbody>${rows}</tbody></table>` +
      `<p class="muted">Since the server started (latencies: the last 2,000 requests); charts: per 5 s over the last 10 minutes.</p>` +
      `<div class="grid">${cards}</div>`;
    for (const el of box.querySelectorAll(".chart")) {
      const id = el.dataset.id, series = traffic.services[id].series;
      if (el.dataset.chart === "rate") {
        timeChart(el, "online:" + id + ":rate", series, ["requests/s", "errors/s"], [h.COLORS[0], ERROR], "per second", h.charts);
      } else {
        timeChart(el, "online:" + id + ":latency", series, ["p50 ms", "p99 ms"], [h.COLORS[2], h.COLORS[3]], "ms", h.charts);
      }
    }
  };
})();
