// drift-detector report: draws the charts of the data embedded in the page as SVG.
// Plain browser JavaScript, no library, nothing fetched: the file opens offline.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
                  "#17becf", "#bcbd22", "#7f7f7f"];
  const W = 360, H = 170, M = {l: 46, r: 18, t: 8, b: 26};
  let charts = 0;

  function h(tag, attrs, parent, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function s(tag, attrs, parent, text) {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    return Number.isInteger(v) ? v.toLocaleString("en") : v.toPrecision(4).replace(/\.?0+$/, "");
  }
  function finite(xs) { return xs.filter(v => v !== null && isFinite(v)); }
  function extent(xs) {
    const f = finite(xs);
    return f.length ? [Math.min.apply(null, f), Math.max.apply(null, f)] : [0, 1];
  }
  function ticks(lo, hi, n) {
    const step0 = (hi - lo) / n || 1, p = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 5, 10].map(k => k * p).find(k => k >= step0);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
    return out;
  }

  // A chart frame: axes, ticks, scales. Returns {g, x, y} with x/y mapping data to pixels.
  function frame(parent, title, xr, yr, ylabel, xlabels) {
    const box = h("figure", {class: "chart"}, parent);
    h("figcaption", {}, box, title);
    const svg = s("svg", {viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img"}, box);
    if (xr[0] === xr[1]) xr = [xr[0] - 1, xr[1] + 1];
    if (yr[0] === yr[1]) yr = [yr[0] - 1, yr[1] + 1];
    const x = v => M.l + (v - xr[0]) / (xr[1] - xr[0]) * (W - M.l - M.r);
    const y = v => H - M.b - (v - yr[0]) / (yr[1] - yr[0]) * (H - M.t - M.b);
    const axes = s("g", {class: "axes"}, svg);
    s("line", {x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b}, axes);
    s("line", {x1: M.l, x2: M.l, y1: M.t, y2: H - M.b}, axes);
    for (const t of ticks(yr[0], yr[1], 4)) {
      s("line", {class: "grid", x1: M.l, x2: W - M.r, y1: y(t), y2: y(t)}, axes);
      s("text", {x: M.l - 4, y: y(t) + 3, "text-anchor": "end"}, axes, fmt(t));
    }
    for (const [t, label] of xlabels || ticks(xr[0], xr[1], 4).map(t => [t, fmt(t)])) {
      s("text", {x: x(t), y: H - M.b + 14, "text-anchor": "middle"}, axes, label);
    }
    if (ylabel) s("text", {x: 4, y: M.t + 2, class: "unit", "dominant-baseline": "hanging"}, axes, ylabel);
    const g = s("g", {class: "plot"}, svg);
    charts += 1;
    return {box: box, svg: svg, g: g, x: x, y: y, xr: xr, yr: yr};
  }
  function path(c, xs, ys, color, cls, tip) {
    let d = "", pen = false;
    for (let i = 0; i < xs.length; i++) {
      if (ys[i] === null || !isFinite(ys[i])) { pen = false; continue; }
      d += (pen ? "L" : "M") + c.x(xs[i]).toFixed(1) + " " + c.y(ys[i]).toFixed(1);
      pen = true;
    }
    const p = s("path", {d: d, fill: "none", stroke: color, class: cls || "line"}, c.g);
    if (tip) s("title", {}, p, tip);
    return p;
  }
  function band(c, xs, lo, hi, color) {
    let top = "", bottom = "";
    for (let i = 0; i < xs.length; i++) {
      if (lo[i] === null || hi[i] === null) continue;
      top += (top ? "L" : "M") + c.x(xs[i]).toFixed(1) + " " + c.y(hi[i]).toFixed(1);
      bottom = "L" + c.x(xs[i]).toFixed(1) + " " + c.y(lo[i]).toFixed(1) + bottom;
    }
    if (top) s("path", {d: top + bottom + "Z", fill: color, class: "band"}, c.g);
  }
  function hline(c, v, color, tip) {
    if (v < c.yr[0] || v > c.yr[1]) return;
    const l = s("line", {x1: M.l, x2: W - M.r, y1: c.y(v), y2: c.y(v), stroke: color,
                         class: "threshold"}, c.g);
    s("title", {}, l, tip);
  }
  function marks(c, dets) {
    for (const d of dets) {
      const x0 = c.x(Math.max(d.onset_x, c.xr[0])), x1 = c.x(d.x);
      const g = s("g", {class: "detection"}, c.g);
      if (x1 - x0 >= 1) s("rect", {x: x0, width: x1 - x0, y: M.t, height: H - M.t - M.b}, g);
      s("line", {x1: x1, x2: x1, y1: M.t, y2: H - M.b}, g);
      s("title", {}, g, `${d.detector}${d.category ? " [" + d.category + "]" : ""} fired at ` +
        `index ${d.index}, onset ${d.onset_index === null ? "unknown" : d.onset_index}`);
    }
  }
  function legend(c, items) {
    const l = h("div", {class: "legend"}, c.box);
    for (const [name, color] of items) {
      const i = h("span", {}, l);
      h("i", {style: `background:${color}`}, i);
      i.appendChild(document.createTextNode(name));
    }
  }

  function histogram(parent, ref) {
    const labels = ref.kind === "numeric"
      ? ref.shares.map((_, i) => i === 0 ? `< ${fmt(ref.edges[0])}` : i === ref.edges.length
        ? `≥ ${fmt(ref.edges[i - 1])}` : `${fmt(ref.edges[i - 1])}–${fmt(ref.edges[i])}`)
      : ref.categories;
    const recent = ref.recent || [];
    const top = Math.max.apply(null, finite(ref.shares.concat(recent)).concat([0.01]));
    const edges = ref.kind === "numeric" ? ref.edges.map((e, i) => [i + 1, fmt(e)])
      .filter((_, i, all) => all.length < 6 || i % Math.ceil(all.length / 5) === 0)
      : labels.length <= 6 ? labels.map((l, i) => [i + 0.5, l.slice(0, 8)]) : [];
    const c = frame(parent, `reference vs last ${fmt(ref.recent_values)} values`,
                    [0, labels.length], [0, top * 1.1], "share", edges);
    const bw = (c.x(1) - c.x(0)) / 2.4;
    labels.forEach((label, i) => {
      for (const [k, v, color] of [[0, ref.shares[i], COLORS[7]], [1, recent[i], COLORS[0]]]) {
        if (v === null || v === undefined) continue;
        const r = s("rect", {x: c.x(i) + bw * (0.2 + k), width: bw, y: c.y(v),
                             height: c.y(0) - c.y(v), fill: color, class: "bar"}, c.g);
        s("title", {}, r, `${label}: ${k ? "recent" : "reference"} ${fmt(v)}`);
      }
    });
    legend(c, [["reference" + (ref.warmup ? ` (first ${fmt(ref.warmup)} values)` : " (profile)"),
                COLORS[7]], ["recent", COLORS[0]]]);
  }

  // distances over time, each as a multiple of its threshold (chi2: log p / log threshold)
  function distances(parent, dist, dets) {
    const names = Object.keys(dist);
    const ratio = (m, v) => dist[m].pvalue ? Math.log(Math.max(v, 1e-300)) / Math.log(dist[m].threshold)
                                           : v / dist[m].threshold;
    let xs = [], ys = [1.2];
    for (const m of names) { xs = xs.concat(dist[m].x); ys = ys.concat(dist[m].y.map(v => ratio(m, v))); }
    const c = frame(parent, "distance ÷ threshold (1 = threshold)", extent(xs), [0, extent(ys)[1] * 1.05], "");
    marks(c, dets.filter(d => d.detector in dist));
    hline(c, 1, "#d62728", "threshold");
    names.forEach((m, i) => path(c, dist[m].x, dist[m].y.map(v => ratio(m, v)), COLORS[i],
                                  "line", `${m}: latest ${fmt(dist[m].latest)}, threshold ${fmt(dist[m].threshold)}`));
    legend(c, names.map((m, i) => [`${m} ${fmt(dist[m].latest)} / ${fmt(dist[m].threshold)}` +
                                   (dist[m].pvalue ? " (p)" : ""), COLORS[i]]));
  }

  function values(parent, v, dets) {
    const xs = v.lo.map((_, b) => v.origin + (b + 0.5) * v.width);
    const yr = extent(v.lo.concat(v.hi));
    const c = frame(parent, `values (${v.width > 1 ? "min–max and mean per " + fmt(v.width) + " values" : "each value"})`,
                    [v.origin, v.origin + v.lo.length * v.width], [yr[0], yr[1]], "");
    marks(c, dets);
    band(c, xs, v.lo, v.hi, COLORS[0]);
    path(c, xs, v.mean, COLORS[0], "line");
    legend(c, [["min–max", "rgba(31,119,180,0.3)"], ["mean", COLORS[0]],
               ["detection (shaded from onset)", "#d62728"]]);
  }

  function shares(parent, v, dets) {
    const n = v.counts.length, xs = v.counts.map((_, b) => v.origin + (b + 0.5) * v.width);
    const c = frame(parent, `category shares per ${fmt(v.width)} values`,
                    [v.origin, v.origin + n * v.width], [0, 1], "share");
    marks(c, dets);
    const totals = v.counts.map(row => row.reduce((a, b) => a + b, 0));
    v.categories.forEach((cat, k) => {
      path(c, xs, v.counts.map((row, b) => totals[b] ? row[k] / totals[b] : null),
           COLORS[k % COLORS.length], "line", cat);
    });
    legend(c, v.categories.map((cat, k) => [cat, COLORS[k % COLORS.length]]));
  }

  function metrics(parent, series, thresholds, dets, over) {
    const names = Object.keys(series);
    if (!names.length) return;
    const groups = [["quality (ratio, 1 = perfect)", names.filter(n => !/^(mae|rmse)\//.test(n))],
                    ["error (unit of the label)", names.filter(n => /^(mae|rmse)\//.test(n))]];
    for (const [title, group] of groups) {
      if (!group.length) continue;
      let xs = [], ys = [];
      for (const n of group) { xs = xs.concat(series[n].x); ys = ys.concat(series[n].y); }
      for (const n of group) { const t = thresholds[n.split("/")[0]]; if (t) ys.push(t.value); }
      const yr = extent(ys);
      const c = frame(parent, `${title} over ${over}`, extent(xs),
                      [Math.min(0, yr[0]), Math.max(yr[1], group[0].startsWith("r2") ? 1 : yr[1])], "");
      marks(c, dets);
      group.forEach((n, i) => {
        const color = COLORS[Math.floor(i / 2) % COLORS.length];
        path(c, series[n].x, series[n].y, color,
             n.endsWith("/rolling") ? "line" : "line dashed", n);
        const t = thresholds[n.split("/")[0]];
        if (t && n.endsWith("/rolling")) hline(c, t.value, color, `${n.split("/")[0]} ${t.bound} bound ${t.value}`);
      });
      legend(c, group.filter((_, i) => i % 2 === 0).map((n, i) => [n.split("/")[0] +
        " (solid rolling, dashed cumulative)", COLORS[i % COLORS.length]]));
    }
  }

  function table(parent, head, rows, cls) {
    const t = h("table", {class: cls || ""}, parent);
    const tr = h("tr", {}, h("thead", {}, t));
    for (const c of head) h("th", {}, tr, c);
    const body = h("tbody", {}, t);
    for (const r of rows) {
      const row = h("tr", {}, body);
      for (const c of r) h("td", {}, row, typeof c === "number" ? fmt(c) : String(c));
    }
    return t;
  }

  function worst(stream) {
    let best = 0;
    for (const m in stream.distances || {}) {
      const d = stream.distances[m];
      if (d.latest === null) continue;
      const r = d.pvalue ? Math.log(Math.max(d.latest, 1e-300)) / Math.log(d.threshold) : d.latest / d.threshold;
      best = Math.max(best, r);
    }
    return best;
  }
  function streamName(st) { return st.signal === "feature" ? st.feature : st.signal; }
  function detsOf(model, version, signal, feature) {
    return D.detections.filter(d => d.model === model && d.version === version &&
                                    d.signal === signal && d.feature === feature);
  }

  const root = document.getElementById("report");
  const meta = D.meta;
  h("p", {class: "meta"}, root, `drift-detector ${meta.version} · ${meta.source} · ` +
    `created ${meta.created} · ${fmt(meta.batches)} batches since ${meta.since}`);

  h("h2", {}, root, "Summary");
  const rows = [];
  for (const m of D.models) for (const v of m.versions) {
    const bySignal = ["feature", "prediction", "label", "error"].map(k => `${k} ${v.detections[k] || 0}`).join(", ");
    const top = v.streams.filter(st => st.distances).sort((a, b) => worst(b) - worst(a)).slice(0, 3)
      .map(st => `${streamName(st)} ${worst(st).toFixed(2)}×`).join(", ");
    rows.push([m.name, v.name, m.events.prediction, m.events.label, m.join.matched, bySignal, top || "–"]);
  }
  table(root, ["model", "version", "predictions", "labels", "labels joined",
               "detections by signal", "worst by distance ÷ threshold"], rows, "summary");
  const rejected = Object.entries(D.rejected);
  if (rejected.length) {
    h("h3", {}, root, "Rejected messages");
    table(root, ["kind/reason", "count"], rejected);
  }

  for (const m of D.models) {
    h("h2", {}, root, `Model ${m.name}`);
    const join = h("section", {class: "row"}, root);
    const js = m.join_series, outcomes = Object.keys(js).filter(k => js[k].y.some(v => v > 0));
    if (outcomes.length) {
      let xs = [], ys = [0];
      for (const k of outcomes) { xs = xs.concat(js[k].x); ys = ys.concat(js[k].y); }
      const c = frame(join, "label join outcomes over events", extent(xs), extent(ys), "");
      outcomes.forEach((k, i) => path(c, js[k].x, js[k].y, COLORS[i], "line", k));
      legend(c, outcomes.map((k, i) => [k, COLORS[i]]));
    }
    table(join, ["label join", "count"], Object.entries(m.join).concat([["waiting now", m.pending]]), "join");
    for (const v of m.versions) {
      h("h3", {}, root, `${m.name} version ${v.name}: ${fmt(v.predictions)} predictions, ` +
        `${fmt(v.pairs)} labelled pairs${v.task ? " (" + v.task + ")" : ""}`);
      const perf = h("section", {class: "row"}, root);
      metrics(perf, v.metrics, m.thresholds, detsOf(m.name, v.name, "error", ""), "labelled pairs");
      metrics(perf, v.estimated || {}, m.thresholds, [], "predictions, estimated before the labels");
      if (Object.keys(v.latest_metrics).length) {
        table(perf, ["metric", "now", "threshold"], Object.entries(v.latest_metrics).map(([k, x]) => {
          const t = m.thresholds[k.split("/")[0]];
          return [k, x, t ? `${t.bound === "lower" ? "≥" : "≤"} ${t.value}` : "–"];
        }), "metrics");
      }
      const streams = v.streams.slice().sort((a, b) => worst(b) - worst(a));
      for (const st of streams) {
        const card = h("section", {class: "stream"}, root);
        const dets = detsOf(m.name, v.name, st.signal, st.feature);
        h("h4", {}, card, `${streamName(st)} · ${fmt(st.seen)} values` + (st.missing ? ` · ${fmt(st.missing)} missing` : "") +
          ` · ${dets.length} detection${dets.length === 1 ? "" : "s"}`);
        const row = h("div", {class: "row"}, card);
        if (st.reference) histogram(row, st.reference);
        if (st.distances) distances(row, st.distances, dets);
        if (st.values) values(row, st.values, dets.filter(d => !d.category));
        if (st.shares) shares(row, st.shares, dets);
      }
    }
  }

  h("h2", {}, root, `Detections (${fmt(D.detections_total)})`);
  if (D.detections.length < D.detections_total) {
    h("p", {}, root, `The last ${fmt(D.detections.length)} are listed.`);
  }
  table(root, ["model", "version", "signal", "feature", "category", "detector", "index", "onset",
               "value"],
        D.detections.map(d => [d.model, d.version, d.signal, d.feature, d.category, d.detector,
                               String(d.index), d.onset_index === null ? "–" : String(d.onset_index),
                               d.value]),
        "detections");
  document.documentElement.setAttribute("data-charts", String(charts));
})();
