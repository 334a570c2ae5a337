// streamkit's line charts: SVG, no dependencies, no network. One function, SkCharts.line,
// draws (or redraws) a chart of several series into a container element.
//
// SkCharts.line(el, {
//   title: "rows/s", x: [..numbers..], xTime: false, yTime: false, yUnit: "ms",
//   series: [{name: "input", values: [..numbers or null..]}, ...], stacked: false,
// })
// Nulls break a line. Each series' path carries data-points (how many points it drew), so
// a test (or a user's script) can tell a filled chart from an empty one.
"use strict";

const SkCharts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2",
                  "#db2777", "#4b5563", "#65a30d", "#9333ea"];
  const PAD = {left: 64, right: 12, top: 8, bottom: 24};

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }

  // Round tick steps (1, 2 or 5 times a power of ten) covering [lo, hi] in about n ticks.
  function ticks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    const raw = (hi - lo) / Math.max(1, n);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return out;
  }

  // Tick steps for time axes (milliseconds): whole seconds, minutes or hours.
  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
                      21600, 43200, 86400].map((s) => s * 1000);
  function timeTicks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1000; }
    const raw = (hi - lo) / Math.max(1, n);
    const step = TIME_STEPS.find((s) => s >= raw) || TIME_STEPS[TIME_STEPS.length - 1];
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) out.push(v);
    return out;
  }

  function pad2(n) { return String(n).padStart(2, "0"); }
  function clock(ms) {
    const d = new Date(ms);
    return `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}`;
  }

  function number(v) {
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (a >= 100 || v === Math.round(v)) return String(Math.round(v));
    return v.toPrecision(2);
  }

  // The values to draw: stacked series are cumulative sums (nulls count as 0).
  function prepare(series, stacked) {
    if (!stacked) return series.map((s) => s.values);
    const sums = [];
    return series.map((s) => s.values.map((v, i) => {
      sums[i] = (sums[i] || 0) + (v == null ? 0 : v);
      return sums[i];
    }));
  }

  function extent(arrays, floorAtZero) {
    let lo = Infinity, hi = -Infinity;
    for (const a of arrays) {
      for (const v of a) {
        if (v == null || !isFinite(v)) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    if (lo === Infinity) return null;
    if (floorAtZero) lo = Math.min(0, lo);
    if (hi === lo) hi = lo + (Math.abs(lo) || 1) * 0.1;
    return [lo, hi];
  }

  function line(container, spec) {
    const width = Math.max(240, container.clientWidth || 480);
    const height = spec.height || 180;
    container.textContent = "";
    const svg = el("svg", {width, height, viewBox: `0 0 ${width} ${height}`,
                           class: "sk-chart", role: "img", "aria-label": spec.title || ""},
                   container);
    const x = spec.x || [];
    const drawn = prepare(spec.series, spec.stacked);
    const xs = extent([x], false);
    const ys = extent(drawn, !spec.yTime);
    const plotW = width - PAD.left - PAD.right;
    const plotH = height - PAD.top - PAD.bottom;
    el("rect", {x: PAD.left, y: PAD.top, width: plotW, height: plotH, class: "sk-plot"}, svg);
    if (xs === null || ys === null) {
      const t = el("text", {x: PAD.left + plotW / 2, y: PAD.top + plotH / 2,
                            "text-anchor": "middle", class: "sk-empty"}, svg);
      t.textContent = "no data yet";
      for (const s of spec.series) {
        el("path", {d: "", class: "sk-series", "data-name": s.name, "data-points": 0}, svg);
      }
      legend(container, spec.series);
      return;
    }
    const [x0, x1] = xs[0] === xs[1] ? [xs[0] - 1, xs[1] + 1] : xs;
    const [y0, y1] = ys;
    const sx = (v) => PAD.left + ((v - x0) / (x1 - x0)) * plotW;
    const sy = (v) => PAD.top + plotH - ((v - y0) / (y1 - y0)) * plotH;
    const yt = spec.yTime ? timeTicks(y0, y1, 4) : ticks(y0, y1, 4);
    for (const v of yt) {
      el("line", {x1: PAD.left, x2: PAD.left + plotW, y1: sy(v), y2: sy(v), class: "sk-grid"},
         svg);
      const t = el("text", {x: PAD.left - 6, y: sy(v) + 4, "text-anchor": "end",
                            class: "sk-tick"}, svg);
      t.textContent = (spec.yTime ? clock(v) : number(v)) + (spec.yUnit && !spec.yTime ?
        " " + spec.yUnit : "");
    }
    const xt = spec.xTime ? timeTicks(x0, x1, 5) : ticks(x0, x1, 5).filter(
      (v) => v === Math.round(v));
    for (const v of xt) {
      const t = el("text", {x: sx(v), y: height - 6, "text-anchor": "middle",
                            class: "sk-tick"}, svg);
      t.textContent = spec.xTime ? clock(v) : number(v);
    }
    drawn.forEach((values, i) => {
      let d = "", points = 0, pen = false;
      values.forEach((v, j) => {
        if (v == null || x[j] == null || !isFinite(v)) { pen = false; return; }
        d += `${pen ? "L" : "M"}${sx(x[j]).toFixed(1)},${sy(v).toFixed(1)}`;
        pen = true;
        points += 1;
      });
      const color = spec.series[i].color || COLORS[i % COLORS.length];
      el("path", {d, fill: "none", stroke: color, "stroke-width": 1.75,
                  class: "sk-series", "data-name": spec.series[i].name,
                  "data-points": points}, svg);
      if (points === 1) {  // a single point still shows
        const j = values.findIndex((v) => v != null);
        el("circle", {cx: sx(x[j]), cy: sy(values[j]), r: 2.5, fill: color}, svg);
      }
    });
    legend(container, spec.series);
  }

  function legend(container, series) {
    const box = document.createElement("div");
    box.className = "sk-legend";
    series.forEach((s, i) => {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = s.color || COLORS[i % COLORS.length];
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(s.name));
      box.appendChild(item);
    });
    container.appendChild(box);
  }

  return {line, ticks, timeTicks, clock, number};
})();
