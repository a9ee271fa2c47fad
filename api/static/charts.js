/*
 * Backprop Service dashboard: its charts, drawn on a canvas by uPlot (vendored from npm into
 * /ui/vendor/uplot/, loaded before this file). No hand-drawn SVG and nothing from elsewhere.
 *
 * window.backpropCharts.create(options) makes one chart: a box (div.chart-box) holding a
 * toolbar — the linear/log toggle of the y scale and a zoom reset — and the plot. Drag across
 * the plot to zoom into a range of x (epochs, or a parameter's values), double-click (or
 * "reset zoom") to see everything again. Live data keeps a zoom the user chose.
 *
 * chart.update({x, series, markers}) draws new data: x ascending (a scatter sorts it),
 * series [{key, label, color, dash, axis: "y" | "y2", values}] with one value (or null) per
 * x, markers [{x, label, color, id, key}] drawn as dashed vertical lines (the best epoch).
 * Options: id, kind ("line" | "scatter"), title, height, xLabel, yLabel, y2Label (a second
 * axis on the right, 0 to 1, for series with axis "y2"), scale (initial: "linear" | "log"),
 * xIntegers (ticks on whole numbers), xLog, xCategories (labels of x = 0, 1, …), emptyText.
 * The plot is rebuilt only when the series themselves change, or the scale is toggled.
 *
 * What the box shows is in its data attributes, for tests and the curious:
 *   data-points   how many x values (epochs of learning curves, trials of a scatter)
 *   data-series   how many series
 *   data-y-scale  "linear" | "log", data-y-distr the y scale's uPlot distr (1 linear, 3 log)
 *   data-x-min, data-x-max  the x range on show; data-zoomed "true" while zoomed in
 * Each series' legend row (tr.u-series) carries data-key and data-count (its points drawn),
 * each marker is a div.epoch-marker with data-epoch (and the id it was given), and
 * backpropCharts.get(id) returns the chart, whose .uplot is the uPlot instance.
 */
"use strict";

(function () {
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  const DISTR = { linear: 1, log: 3 };
  // Tick steps of an axis of whole numbers (epochs): 1, 2, 5, 10, 20, 50, …
  const INTEGER_INCRS = [];
  for (let p = 1; p <= 1e7; p *= 10) INTEGER_INCRS.push(p, 2 * p, 5 * p);
  const charts = new Map(); // id -> chart, while its box is in the page

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    node.append(...children);
    return node;
  }

  function fmt(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value !== "number" || !isFinite(value)) return String(value);
    const a = Math.abs(value);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return value.toExponential(2);
    return String(Number(value.toPrecision(4)));
  }

  const finite = (v) => typeof v === "number" && isFinite(v);

  // Padding around the data on an axis that uPlot would otherwise fit edge to edge.
  function padded(lo, hi, log) {
    if (log) {
      if (!(lo > 0)) return [0.1, 10];
      const l0 = Math.log10(lo);
      const l1 = Math.log10(hi);
      const pad = Math.max((l1 - l0) * 0.06, 0.15);
      return [Math.pow(10, l0 - pad), Math.pow(10, l1 + pad)];
    }
    const pad = (hi - lo) * 0.06 || Math.abs(hi) * 0.1 || 1;
    // Data that never goes below zero (losses, accuracies) gets no axis below zero.
    return [lo >= 0 && lo - pad < 0 ? 0 : lo - pad, hi + pad];
  }

  function create(options) {
    const o = Object.assign(
      { kind: "line", height: 300, xLabel: "", yLabel: "", y2Label: "", scale: "linear", emptyText: "no data yet" },
      options,
    );
    const state = {
      scale: o.scale === "log" ? "log" : "linear",
      u: null,
      sig: null,
      data: { x: [], series: [], markers: [] },
      zoomed: false,
      resize: null,
    };

    const plot = el("div", { class: "chart-plot" });
    const empty = el("div", { class: "chart-empty", text: o.emptyText, hidden: true });
    const scaleButtons = ["linear", "log"].map((name) =>
      el("button", {
        type: "button",
        class: "scale-btn",
        "data-scale": name,
        "aria-pressed": String(state.scale === name),
        title: `${name} y scale`,
        text: name,
        onclick: () => setScale(name),
      }),
    );
    const reset = el("button", {
      type: "button",
      class: "zoom-reset secondary",
      text: "reset zoom",
      disabled: true,
      onclick: () => resetZoom(),
    });
    const toolbar = el(
      "div",
      { class: "chart-tools" },
      el("span", { class: "scale-toggle", role: "group", "aria-label": "y scale" }, ...scaleButtons),
      reset,
      el("span", { class: "muted small", text: "drag to zoom · double-click to reset" }),
    );
    const box = el(
      "div",
      {
        class: `chart-box chart-${o.kind}`,
        id: o.id,
        "data-points": "0",
        "data-series": "0",
        "data-zoomed": "false",
      },
      toolbar,
      el("div", { class: "chart-area" }, plot, empty),
    );
    if (o.title) box.prepend(el("h3", { class: "chart-title", text: o.title }));

    const chart = { el: box, uplot: null, update, destroy, setScale, resetZoom, options: o };
    if (o.id) charts.set(o.id, chart);
    writeScaleHooks();

    function writeScaleHooks() {
      box.dataset.yScale = state.scale;
      box.dataset.yDistr = String(DISTR[state.scale]);
      for (const b of scaleButtons) {
        const on = b.dataset.scale === state.scale;
        b.classList.toggle("active", on);
        b.setAttribute("aria-pressed", String(on));
      }
    }

    function writeRangeHooks() {
      const u = state.u;
      box.dataset.zoomed = String(state.zoomed);
      reset.disabled = !state.zoomed;
      if (!u || u.scales.x.min === null || u.scales.x.min === undefined) {
        delete box.dataset.xMin;
        delete box.dataset.xMax;
        return;
      }
      box.dataset.xMin = String(Number(u.scales.x.min.toPrecision(8)));
      box.dataset.xMax = String(Number(u.scales.x.max.toPrecision(8)));
    }

    // The arrays uPlot draws: non-finite values (and non-positive ones on a log scale) are gaps.
    function columns() {
      const log = state.scale === "log";
      return state.data.series.map((ser) =>
        ser.values.map((v) => {
          if (!finite(v)) return null;
          if (log && (ser.axis || "y") === "y" && v <= 0) return null;
          return v;
        }),
      );
    }

    function signature() {
      const d = state.data;
      return JSON.stringify([
        state.scale,
        d.series.map((s) => [s.key, s.label, s.color, s.dash, s.axis]),
        o.xCategories ? o.xCategories.length : null,
      ]);
    }

    function xRange(u, min, max) {
      // Auto-ranging asks for the first and last x: pad those. A zoom asks for its own range.
      const x = state.data.x;
      if (min === null || max === null || min === undefined) return [0, 1];
      const auto = x.length && min === x[0] && max === x[x.length - 1];
      if (!auto) return [min, max];
      if (o.xCategories) return [-0.5, o.xCategories.length - 0.5];
      if (o.kind === "scatter") return padded(min, max, !!o.xLog);
      if (min === max) return [min - 1, max + 1];
      return [min, max];
    }

    function yRange(cols, log) {
      return (u, min, max) => {
        if (min === null || max === null || !isFinite(min) || !isFinite(max)) {
          return log ? [0.1, 10] : [0, 1];
        }
        return padded(min, max, log);
      };
    }

    function build() {
      if (state.u) state.u.destroy();
      state.u = null;
      const d = state.data;
      const log = state.scale === "log";
      const cols = columns();
      const hasY2 = d.series.some((s) => s.axis === "y2");
      const scatter = o.kind === "scatter";
      const series = [
        {
          label: o.xLabel || "x",
          value: (u, v) => (v === null || v === undefined ? "—" : o.xCategories ? o.xCategories[v] : fmt(v)),
        },
        ...d.series.map((s, i) => {
          const color = s.color || PALETTE[i % PALETTE.length];
          const ser = {
            label: s.label || s.key,
            stroke: color,
            width: 1.8,
            scale: s.axis === "y2" ? "y2" : "y",
            spanGaps: true,
            value: (u, v) => fmt(v),
          };
          if (s.dash) ser.dash = s.dash;
          if (scatter) {
            ser.paths = () => null;
            ser.points = { show: true, size: 9, space: 0, fill: color, stroke: color, width: 1 };
          }
          return ser;
        }),
      ];
      const axes = [
        {
          label: o.xLabel,
          values: o.xCategories
            ? (u, splits) => splits.map((v) => (Number.isInteger(v) ? o.xCategories[v] ?? "" : ""))
            : (u, splits) => splits.map((v) => (v === null ? "" : fmt(v))),
          incrs: o.xCategories ? [1] : o.xIntegers ? INTEGER_INCRS : undefined,
        },
        {
          label: o.yLabel + (log ? " (log)" : ""),
          scale: "y",
          values: (u, splits) => splits.map((v) => (v === null ? "" : fmt(v))),
          size: 60,
        },
      ];
      if (hasY2) {
        axes.push({
          label: o.y2Label,
          scale: "y2",
          side: 1,
          grid: { show: false },
          values: (u, splits) => splits.map((v) => (v === null ? "" : fmt(v))),
        });
      }
      const scales = {
        x: { time: false, range: xRange },
        y: log ? { distr: 3, log: 10, range: yRange(cols, true) } : { distr: 1, range: yRange(cols, false) },
      };
      if (o.xLog) Object.assign(scales.x, { distr: 3, log: 10 });
      if (hasY2) scales.y2 = { range: [0, 1] };
      const uopts = {
        width: Math.max(300, plot.clientWidth || box.clientWidth || 800),
        height: o.height,
        scales,
        axes,
        series,
        legend: { show: true, live: true },
        cursor: { drag: { x: true, y: false, setScale: true }, points: { size: 6 } },
        hooks: {
          setSelect: [
            (u) => {
              if (u.select.width > 2) state.zoomed = true;
            },
          ],
          setScale: [
            (u, key) => {
              if (key === "x") writeRangeHooks();
            },
          ],
          draw: [drawMarkers],
        },
      };
      state.u = new uPlot(uopts, [d.x.slice(), ...cols], plot);
      chart.uplot = state.u;
      state.sig = signature();
      state.u.over.addEventListener("dblclick", () => {
        state.zoomed = false;
        writeRangeHooks();
      });
      writeLegendHooks(cols);
      writeRangeHooks();
      watchSize();
    }

    function writeLegendHooks(cols) {
      if (!state.u) return;
      const rows = state.u.root.querySelectorAll(".u-legend .u-series");
      rows.forEach((row, i) => {
        if (i === 0) {
          row.dataset.key = "x";
          return;
        }
        const ser = state.data.series[i - 1];
        if (!ser) return;
        row.dataset.key = ser.key;
        if (ser.runId) row.dataset.runId = ser.runId;
        row.dataset.count = String(cols[i - 1].filter((v) => v !== null).length);
      });
    }

    function drawMarkers(u) {
      let layer = u.over.querySelector(".marker-layer");
      if (!layer) {
        layer = el("div", { class: "marker-layer" });
        u.over.append(layer);
      }
      const nodes = (state.data.markers || []).map((m) => {
        const node = el(
          "div",
          {
            class: "epoch-marker",
            id: m.id,
            "data-epoch": m.x,
            "data-key": m.key,
            title: m.title || m.label,
          },
          m.label ? el("span", { class: "epoch-marker-label", text: m.label }) : "",
        );
        if (m.color) node.style.borderLeftColor = m.color;
        const min = u.scales.x.min;
        const max = u.scales.x.max;
        const inside = finite(m.x) && min !== null && m.x >= min && m.x <= max;
        node.hidden = !inside;
        if (inside) node.style.left = `${u.valToPos(m.x, "x")}px`;
        return node;
      });
      layer.replaceChildren(...nodes);
    }

    function watchSize() {
      if (state.resize || typeof ResizeObserver === "undefined") return;
      state.resize = new ResizeObserver(() => {
        const u = state.u;
        const width = plot.clientWidth;
        if (u && width > 0 && Math.abs(width - u.width) > 1) u.setSize({ width, height: o.height });
      });
      state.resize.observe(plot);
    }

    function update(data) {
      let x = (data.x || []).slice();
      let series = (data.series || []).map((s) => Object.assign({}, s, { values: (s.values || []).slice() }));
      if (o.kind === "scatter" && x.length) {
        const order = x.map((v, i) => i).sort((a, b) => x[a] - x[b]);
        x = order.map((i) => x[i]);
        series = series.map((s) => Object.assign(s, { values: order.map((i) => s.values[i]) }));
      }
      state.data = { x, series, markers: data.markers || [] };
      box.dataset.points = String(x.length);
      box.dataset.series = String(series.length);
      empty.hidden = x.length > 0;
      if (!state.u || signature() !== state.sig) {
        build();
        return;
      }
      const cols = columns();
      const u = state.u;
      if (state.zoomed) {
        const keep = { min: u.scales.x.min, max: u.scales.x.max };
        u.setData([x, ...cols], false);
        u.setScale("x", keep);
      } else {
        u.setData([x, ...cols], true);
      }
      writeLegendHooks(cols);
      writeRangeHooks();
    }

    function setScale(name) {
      if (name === state.scale || !DISTR[name]) return;
      const keep = state.zoomed && state.u ? { min: state.u.scales.x.min, max: state.u.scales.x.max } : null;
      state.scale = name;
      writeScaleHooks();
      build();
      if (keep && state.u) state.u.setScale("x", keep);
    }

    function resetZoom() {
      state.zoomed = false;
      if (state.u) state.u.setData(state.u.data, true);
      writeRangeHooks();
    }

    function destroy() {
      if (state.resize) state.resize.disconnect();
      state.resize = null;
      if (state.u) state.u.destroy();
      state.u = null;
      chart.uplot = null;
      if (o.id && charts.get(o.id) === chart) charts.delete(o.id);
    }

    return chart;
  }

  window.backpropCharts = {
    create,
    get: (id) => charts.get(id) || null,
    all: () => Array.from(charts.values()),
    palette: PALETTE,
    fmt,
  };
})();
