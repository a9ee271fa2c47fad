/*
 * Backprop Service dashboard: the runs list, a run's page with live learning curves, the
 * datasets list and the registered models. Plain browser JavaScript with no dependencies and
 * nothing from other origins.
 *
 * Routes (URL fragment): "#/" runs, "#/runs/<id>" one run, "#/datasets" datasets,
 * "#/models" registered models.
 * Every API call carries "Authorization: Bearer <key>" when an API key is saved in the page
 * (localStorage); with authentication off the key is simply unused. Live epochs come from
 * GET /api/v1/runs/<id>/events read with fetch() and a stream reader, because EventSource
 * cannot send headers; the text/event-stream format is parsed here, and a dropped stream is
 * resumed with Last-Event-ID.
 *
 * For tests and the curious, window.backpropUI exposes the state: the run's metric items
 * (one per epoch, in order) and the chart element, whose data-points attribute counts them.
 */
"use strict";

(function () {
  const API = "/api/v1";
  const KEY_STORAGE = "backprop.apiKey";
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const POLL_MS = 2000;
  const MAX_DRAWN = 1500; // points per curve drawn; more epochs are evenly sampled
  const SERIES = [
    { key: "loss", axis: "left", color: "#1f77b4", dash: "" },
    { key: "val_loss", axis: "left", color: "#ff7f0e", dash: "" },
    { key: "accuracy", axis: "right", color: "#2ca02c", dash: "6 4" },
    { key: "val_accuracy", axis: "right", color: "#d62728", dash: "6 4" },
  ];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const ui = {
    view: null, // "runs" | "run" | "datasets"
    run: null, // the run record shown on the run page
    items: [], // metric items of that run, one per epoch, in order
    stream: "idle", // SSE state: idle | connecting | open | ended | error
    lastEventId: null,
    runs: [],
    datasets: [],
    models: [],
    epochs: () => ui.items.map((item) => item.epoch),
  };
  window.backpropUI = ui;

  // -- small helpers ------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") el.className = value;
      else if (name === "text") el.textContent = value;
      else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function svg(tag, attrs) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "text") el.textContent = value;
      else el.setAttribute(name, String(value));
    }
    return el;
  }

  function fmt(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value !== "number" || !isFinite(value)) return String(value);
    const a = Math.abs(value);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return value.toExponential(3);
    return String(Number(value.toPrecision(4)));
  }

  function when(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }

  function apiKey() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch (err) {
      return "";
    }
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    const key = apiKey();
    if (key) headers["Authorization"] = "Bearer " + key;
    return headers;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function apiFetch(path, options) {
    const opts = Object.assign({}, options || {});
    opts.headers = authHeaders(opts.headers);
    const resp = await fetch(path.startsWith("/") ? path : API + "/" + path, opts);
    if (!resp.ok) {
      let detail = resp.statusText;
      try {
        const body = await resp.json();
        detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      } catch (err) {
        /* not JSON */
      }
      if (resp.status === 401 || resp.status === 403) {
        detail += " — set a valid API key above";
      }
      throw new ApiError(resp.status, `${resp.status}: ${detail}`);
    }
    return resp;
  }

  async function apiJson(path, options) {
    return (await apiFetch(path, options)).json();
  }

  function notice(message) {
    const box = document.getElementById("notice");
    box.textContent = message || "";
    box.hidden = !message;
  }

  function statusBadge(status, id) {
    return h("span", { class: `status status-${status}`, id, "data-status": status, text: status });
  }

  function progressBar(progress) {
    const epoch = (progress && progress.epoch) || 0;
    const total = (progress && progress.epochs) || 0;
    const fill = h("span", { class: "bar-fill" });
    fill.style.width = (total ? Math.min(100, (100 * epoch) / total) : 0).toFixed(1) + "%";
    return h(
      "span",
      { class: "progress" },
      h("span", { class: "bar" }, fill),
      h("span", { class: "bar-text", text: `${epoch} / ${total}` }),
    );
  }

  // -- view lifecycle -----------------------------------------------------------------------

  // Each rendered view gets a session; leaving the view ends it (timers, open streams).
  let session = null;

  function newSession() {
    if (session) session.end();
    const s = {
      alive: true,
      cleanups: [],
      onEnd(fn) {
        this.cleanups.push(fn);
      },
      end() {
        this.alive = false;
        for (const fn of this.cleanups.splice(0)) {
          try {
            fn();
          } catch (err) {
            /* already gone */
          }
        }
      },
    };
    session = s;
    return s;
  }

  function poll(s, fn, ms) {
    let timer = null;
    const tick = async () => {
      if (!s.alive) return;
      try {
        await fn();
        notice("");
      } catch (err) {
        if (s.alive) notice(err.message);
      }
      if (s.alive) timer = setTimeout(tick, ms);
    };
    s.onEnd(() => clearTimeout(timer));
    tick();
  }

  function setView(name, ...children) {
    ui.view = name;
    const main = document.getElementById("view");
    main.replaceChildren(...children);
    for (const link of document.querySelectorAll("nav a")) link.classList.remove("active");
    const navs = { datasets: "nav-datasets", models: "nav-models" };
    const nav = document.getElementById(navs[name] || "nav-runs");
    if (nav) nav.classList.add("active");
  }

  function route() {
    const hash = location.hash.replace(/^#/, "") || "/";
    const s = newSession();
    notice("");
    const runMatch = hash.match(/^\/runs\/([^/?#]+)$/);
    if (runMatch) return showRun(s, decodeURIComponent(runMatch[1]));
    if (hash === "/datasets") return showDatasets(s);
    if (hash === "/models") return showModels(s);
    return showRuns(s);
  }

  // -- runs list ----------------------------------------------------------------------------

  function showRuns(s) {
    const tbody = h("tbody");
    const updated = h("span", { class: "muted", id: "runs-updated" });
    const table = h(
      "table",
      { id: "runs-table", class: "grid" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Run", "Status", "Progress", "Loss", "Val loss", "Accuracy", "Created"].map((t) =>
            h("th", { text: t }),
          ),
        ),
      ),
      tbody,
    );
    setView("runs", h("div", { class: "heading" }, h("h1", { text: "Runs" }), updated), table);

    poll(
      s,
      async () => {
        const body = await apiJson("runs?limit=50");
        if (!s.alive) return;
        ui.runs = body.items;
        const rows = body.items.map((run) => {
          const m = run.metrics || {};
          return h(
            "tr",
            { "data-run-id": run.id, "data-status": run.status },
            h(
              "td",
              {},
              h("a", { href: `#/runs/${encodeURIComponent(run.id)}`, text: run.name || run.id }),
              run.name ? h("div", { class: "muted small", text: run.id }) : null,
            ),
            h("td", {}, statusBadge(run.status)),
            h("td", {}, progressBar(run.progress)),
            h("td", { class: "num", "data-metric": "loss", text: fmt(m.loss) }),
            h("td", { class: "num", text: fmt(m.val_loss) }),
            h("td", { class: "num", text: fmt(m.accuracy) }),
            h("td", { text: when(run.created_at) }),
          );
        });
        if (!rows.length) {
          rows.push(
            h("tr", {}, h("td", { colspan: 7, class: "muted", text: "No runs yet: POST /api/v1/runs." })),
          );
        }
        tbody.replaceChildren(...rows);
        updated.textContent = "updated " + new Date().toLocaleTimeString();
      },
      POLL_MS,
    );
  }

  // -- datasets list ------------------------------------------------------------------------

  function showDatasets(s) {
    const tbody = h("tbody");
    const table = h(
      "table",
      { id: "datasets-table", class: "grid" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Dataset", "Task", "Samples", "Features", "Targets", "Classes", "Size", "Created"].map(
            (t) => h("th", { text: t }),
          ),
        ),
      ),
      tbody,
    );
    setView("datasets", h("div", { class: "heading" }, h("h1", { text: "Datasets" })), table);
    poll(
      s,
      async () => {
        const body = await apiJson("datasets?limit=200");
        if (!s.alive) return;
        ui.datasets = body.items;
        const rows = body.items.map((ds) =>
          h(
            "tr",
            { "data-dataset-id": ds.id },
            h(
              "td",
              {},
              h("div", { text: ds.name || "(unnamed)" }),
              h("div", { class: "muted small", text: ds.id }),
            ),
            h("td", { text: ds.task }),
            h("td", { class: "num", text: ds.n_samples }),
            h("td", { class: "num", text: ds.n_features }),
            h("td", { class: "num", text: ds.n_targets }),
            h("td", { text: ds.classes ? ds.classes.join(", ") : "—" }),
            h("td", { class: "num", text: `${ds.size_bytes} B` }),
            h("td", { text: when(ds.created_at) }),
          ),
        );
        if (!rows.length) {
          rows.push(
            h("tr", {}, h("td", { colspan: 8, class: "muted", text: "No datasets yet: POST /api/v1/datasets." })),
          );
        }
        tbody.replaceChildren(...rows);
      },
      POLL_MS * 2,
    );
  }

  // -- registered models --------------------------------------------------------------------

  function showModels(s) {
    const tbody = h("tbody");
    const table = h(
      "table",
      { id: "models-table", class: "grid" },
      h("thead", {}, h("tr", {}, ["Model", "Version", "Run", "Updated"].map((t) => h("th", { text: t })))),
      tbody,
    );
    setView("models", h("div", { class: "heading" }, h("h1", { text: "Models" })), table);
    poll(
      s,
      async () => {
        const body = await apiJson("models?limit=200");
        if (!s.alive) return;
        ui.models = body.items;
        const rows = body.items.map((m) =>
          h(
            "tr",
            { "data-model-name": m.name, "data-run-id": m.run_id, "data-updated": m.updated_at },
            h("td", { class: "model-name", text: m.name }),
            h("td", { class: "model-version", text: `${m.current_version} of ${m.latest_version}` }),
            h("td", {}, h("a", { class: "model-run", href: `#/runs/${encodeURIComponent(m.run_id)}`, text: m.run_id })),
            h("td", { text: when(m.updated_at) }),
          ),
        );
        if (!rows.length) {
          rows.push(
            h("tr", {}, h("td", { colspan: 4, class: "muted", text: "No models yet: PUT /api/v1/models/<name>." })),
          );
        }
        tbody.replaceChildren(...rows);
      },
      POLL_MS,
    );
  }

  // -- one run ------------------------------------------------------------------------------

  function downloadLink(id, label, path, filename) {
    // A plain link works when auth is off; with a key the file is fetched with the header.
    return h("a", {
      id,
      class: "button",
      href: path,
      download: filename,
      text: label,
      onclick: async (event) => {
        if (!apiKey()) return;
        event.preventDefault();
        try {
          const blob = await (await apiFetch(path)).blob();
          const url = URL.createObjectURL(blob);
          const a = h("a", { href: url, download: filename });
          document.body.append(a);
          a.click();
          a.remove();
          setTimeout(() => URL.revokeObjectURL(url), 10000);
        } catch (err) {
          notice(err.message);
        }
      },
    });
  }

  function showRun(s, runId) {
    ui.run = null;
    ui.items = [];
    ui.lastEventId = null;
    ui.stream = "idle";
    const base = `${API}/runs/${encodeURIComponent(runId)}`;
    const title = h("h1", { text: runId });
    const status = h("span", { id: "run-status-slot" });
    const progress = h("span", { id: "run-progress" });
    const streamState = h("span", { class: "muted small", id: "stream-state" });
    const actions = h(
      "div",
      { class: "actions", id: "run-actions" },
      downloadLink("download-npz", "Weights (.npz)", `${base}/weights?format=npz`, `run-${runId}-weights.npz`),
      downloadLink("download-onnx", "Model (.onnx)", `${base}/weights?format=onnx`, `run-${runId}.onnx`),
      downloadLink("download-plot", "Plot (.png)", `${base}/plot.png`, `run-${runId}-plot.png`),
    );
    const cancel = h("button", {
      id: "cancel-run",
      class: "secondary",
      text: "Cancel run",
      hidden: true,
      onclick: async () => {
        try {
          renderHeader(await apiJson(`runs/${encodeURIComponent(runId)}/cancel`, { method: "POST" }));
        } catch (err) {
          notice(err.message);
        }
      },
    });
    actions.append(cancel);
    const latest = h("dl", { class: "latest", id: "latest-metrics" });
    const chart = svg("svg", {
      id: "chart",
      class: "chart",
      role: "img",
      "aria-label": "learning curves",
      "data-points": 0,
      "data-drawn": 0,
    });
    const legend = h(
      "div",
      { class: "legend", id: "chart-legend" },
      SERIES.map((ser) => {
        const swatch = h("span", { class: `swatch swatch-${ser.key}` });
        return h("span", { class: "legend-item", "data-key": ser.key }, swatch, ser.key);
      }),
    );
    const spec = h("pre", { id: "run-spec", class: "json" });
    const config = h("pre", { id: "run-config", class: "json" });
    const errorBox = h("pre", { id: "run-error", class: "error", hidden: true });
    const meta = h("dl", { class: "meta", id: "run-meta" });
    const timeline = h("ol", { class: "timeline", id: "run-timeline" });

    setView(
      "run",
      h("p", {}, h("a", { href: "#/", text: "← all runs" })),
      h("div", { class: "heading" }, title, status, progress, streamState),
      actions,
      errorBox,
      h("section", { class: "card" }, h("h2", { text: "Learning curves" }), chart, legend, latest),
      h("section", { class: "card" }, h("h2", { text: "Timeline" }), timeline),
      h(
        "div",
        { class: "columns" },
        h("section", { class: "card" }, h("h2", { text: "Network" }), spec),
        h("section", { class: "card" }, h("h2", { text: "Training" }), config, meta),
      ),
    );

    function renderHeader(run) {
      ui.run = run;
      title.textContent = run.name || run.id;
      status.replaceChildren(statusBadge(run.status, "run-status"));
      const epoch = Math.max(run.progress.epoch, ui.items.length ? ui.items[ui.items.length - 1].epoch : 0);
      progress.replaceChildren(progressBar({ epoch, epochs: run.progress.epochs }));
      cancel.hidden = TERMINAL.has(run.status);
      const ok = run.status === "succeeded";
      for (const link of actions.querySelectorAll("a.button")) {
        if (link.id === "download-plot") continue;
        link.classList.toggle("disabled", !ok);
        link.title = ok ? "" : "available once the run succeeded";
      }
      errorBox.hidden = !run.error;
      errorBox.textContent = run.error || "";
      // Every change of status, oldest first: when, what, why, on which worker.
      timeline.replaceChildren(
        ...(run.transitions || []).map((t) =>
          h(
            "li",
            { class: "transition", "data-status": t.status },
            h("time", { datetime: t.at, text: when(t.at) }),
            statusBadge(t.status),
            h("span", { class: "reason", text: t.reason }),
            t.worker ? h("span", { class: "muted small", text: ` · ${t.worker}` }) : "",
          ),
        ),
      );
      const specText = JSON.stringify(run.network, null, 2);
      if (spec.textContent !== specText) spec.textContent = specText;
      const configText = JSON.stringify(run.training, null, 2);
      if (config.textContent !== configText) config.textContent = configText;
      meta.replaceChildren(
        ...[
          ["id", run.id],
          ["dataset", run.dataset_id],
          ["created", when(run.created_at)],
          ["started", when(run.started_at)],
          ["finished", when(run.finished_at)],
        ].flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })]),
      );
    }

    let drawTimer = null;
    function scheduleDraw() {
      if (drawTimer !== null) return;
      drawTimer = setTimeout(() => {
        drawTimer = null;
        if (!s.alive) return;
        drawChart(chart, ui.items, ui.run && ui.run.best_epoch);
        const last = ui.items[ui.items.length - 1];
        latest.replaceChildren(
          ...(last
            ? Object.entries(last).flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: fmt(v) })])
            : [h("dd", { class: "muted", text: "waiting for the first epoch…" })]),
        );
        if (ui.run) {
          const epoch = last ? last.epoch : ui.run.progress.epoch;
          progress.replaceChildren(progressBar({ epoch, epochs: ui.run.progress.epochs }));
        }
      }, 100);
    }
    s.onEnd(() => clearTimeout(drawTimer));

    function setStream(state) {
      ui.stream = state;
      streamState.textContent = state === "open" ? "● live" : state === "ended" ? "" : state;
      streamState.dataset.state = state;
    }

    const refresh = async () => {
      const run = await apiJson(`runs/${encodeURIComponent(runId)}`);
      if (s.alive) renderHeader(run);
      return run;
    };

    (async () => {
      try {
        await refresh();
      } catch (err) {
        notice(err.message);
        title.textContent = err.status === 404 ? `Run ${runId} not found` : runId;
        return;
      }
      scheduleDraw();
      await followEvents(s, runId, {
        metric(item) {
          const last = ui.items[ui.items.length - 1];
          if (last && item.epoch <= last.epoch) return; // already have it
          ui.items.push(item);
          scheduleDraw();
        },
        async status(data) {
          if (ui.run) renderHeader(Object.assign({}, ui.run, { status: data.status }));
          try {
            await refresh(); // the record brings the new transition of the timeline
          } catch (err) {
            notice(err.message);
          }
        },
        state: setStream,
      });
    })();
  }

  // -- Server-Sent Events over fetch --------------------------------------------------------

  // Parse text/event-stream chunks; calls emit(type, data, id) per complete event.
  function sseParser(emit) {
    let buffer = "";
    let type = "";
    let id = null;
    let data = [];
    return function feed(text) {
      buffer += text;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        let line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (data.length) emit(type || "message", data.join("\n"), id);
          type = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue; // comment / keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field === "event") type = value;
        else if (field === "id") id = value;
      }
    };
  }

  async function followEvents(s, runId, handlers) {
    let delay = 500;
    let ended = false;
    while (s.alive && !ended) {
      const controller = new AbortController();
      s.onEnd(() => controller.abort());
      handlers.state("connecting");
      try {
        const headers = { Accept: "text/event-stream" };
        if (ui.lastEventId) headers["Last-Event-ID"] = ui.lastEventId;
        const resp = await apiFetch(`runs/${encodeURIComponent(runId)}/events`, {
          headers,
          signal: controller.signal,
          cache: "no-store",
        });
        handlers.state("open");
        delay = 500;
        const reader = resp.body.getReader();
        const decoder = new TextDecoder();
        const pending = [];
        const feed = sseParser((type, text, id) => pending.push([type, text, id]));
        for (;;) {
          const { value, done } = await reader.read();
          if (done || !s.alive) break;
          feed(decoder.decode(value, { stream: true }));
          for (const [type, text, id] of pending.splice(0)) {
            const data = JSON.parse(text);
            if (type === "metric") handlers.metric(data);
            else if (type === "status") {
              await handlers.status(data);
              if (TERMINAL.has(data.status)) ended = true;
            }
            if (id !== null) ui.lastEventId = id;
          }
        }
      } catch (err) {
        if (!s.alive || err.name === "AbortError") return;
        notice(err.message);
        if (err.status && err.status >= 400 && err.status < 500) {
          handlers.state("error");
          return; // not found or not allowed: retrying will not help
        }
      }
      if (!ended && s.alive) {
        handlers.state("reconnecting");
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, 10000);
      }
    }
    if (s.alive) handlers.state("ended");
  }

  // -- the chart ----------------------------------------------------------------------------

  function sample(items, max) {
    if (items.length <= max) return items;
    const out = [];
    const step = (items.length - 1) / (max - 1);
    for (let i = 0; i < max; i++) out.push(items[Math.round(i * step)]);
    return out;
  }

  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) || raw;
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      ticks.push(Number(v.toPrecision(12)));
    }
    return ticks;
  }

  function drawChart(el, items, bestEpoch) {
    const width = Math.max(320, Math.round(el.getBoundingClientRect().width) || 800);
    const height = 320;
    const m = { left: 64, right: 56, top: 12, bottom: 36 };
    const w = width - m.left - m.right;
    const hgt = height - m.top - m.bottom;
    el.setAttribute("viewBox", `0 0 ${width} ${height}`);
    el.setAttribute("height", height);
    el.dataset.points = String(items.length);
    const nodes = [];
    nodes.push(svg("rect", { x: m.left, y: m.top, width: w, height: hgt, class: "plot-bg" }));
    if (!items.length) {
      nodes.push(
        svg("text", {
          x: m.left + w / 2,
          y: m.top + hgt / 2,
          class: "empty",
          "text-anchor": "middle",
          text: "no epochs yet",
        }),
      );
      el.dataset.drawn = "0";
      el.replaceChildren(...nodes);
      return;
    }
    const drawn = sample(items, MAX_DRAWN);
    el.dataset.drawn = String(drawn.length);
    const firstEpoch = items[0].epoch;
    const lastEpoch = items[items.length - 1].epoch;
    const x0 = firstEpoch;
    const x1 = lastEpoch > firstEpoch ? lastEpoch : firstEpoch + 1;
    const sx = (e) => m.left + ((e - x0) / (x1 - x0)) * w;

    const present = SERIES.filter((ser) => items.some((it) => typeof it[ser.key] === "number"));
    const lossValues = [];
    for (const ser of present) {
      if (ser.axis !== "left") continue;
      for (const it of drawn) if (isFinite(it[ser.key])) lossValues.push(it[ser.key]);
    }
    let lo = lossValues.length ? Math.min(...lossValues) : 0;
    let hi = lossValues.length ? Math.max(...lossValues) : 1;
    const log = lo > 0 && hi / lo > 100;
    let ty, leftTicks;
    if (log) {
      const l0 = Math.floor(Math.log10(lo));
      const l1 = Math.ceil(Math.log10(hi));
      ty = (v) => m.top + hgt - ((Math.log10(v) - l0) / Math.max(l1 - l0, 1)) * hgt;
      leftTicks = [];
      for (let p = l0; p <= l1; p++) leftTicks.push(Math.pow(10, p));
    } else {
      if (hi === lo) {
        hi += Math.abs(hi) * 0.1 || 1;
        lo -= Math.abs(lo) * 0.1 || 0;
      }
      const pad = (hi - lo) * 0.05;
      lo = lo >= 0 && lo - pad < 0 ? 0 : lo - pad;
      hi += pad;
      ty = (v) => m.top + hgt - ((v - lo) / (hi - lo)) * hgt;
      leftTicks = niceTicks(lo, hi, 5);
    }
    const ry = (v) => m.top + hgt - v * hgt; // accuracy axis: 0..1

    for (const t of leftTicks) {
      const y = ty(t);
      if (y < m.top - 0.5 || y > m.top + hgt + 0.5) continue;
      nodes.push(svg("line", { x1: m.left, x2: m.left + w, y1: y, y2: y, class: "grid-line" }));
      nodes.push(svg("text", { x: m.left - 6, y: y + 4, "text-anchor": "end", class: "tick", text: fmt(t) }));
    }
    for (const t of niceTicks(x0, x1, Math.max(2, Math.floor(w / 90)))) {
      if (!Number.isInteger(t)) continue;
      const x = sx(t);
      nodes.push(svg("line", { x1: x, x2: x, y1: m.top + hgt, y2: m.top + hgt + 4, class: "axis" }));
      nodes.push(svg("text", { x, y: m.top + hgt + 17, "text-anchor": "middle", class: "tick", text: t }));
    }
    const hasRight = present.some((ser) => ser.axis === "right");
    if (hasRight) {
      for (const t of [0, 0.25, 0.5, 0.75, 1]) {
        nodes.push(svg("text", { x: m.left + w + 6, y: ry(t) + 4, class: "tick", text: t }));
      }
      nodes.push(
        svg("text", {
          x: width - 8,
          y: m.top + hgt / 2,
          class: "axis-label",
          "text-anchor": "middle",
          transform: `rotate(90 ${width - 8} ${m.top + hgt / 2})`,
          text: "accuracy",
        }),
      );
    }
    nodes.push(svg("text", { x: m.left + w / 2, y: height - 4, "text-anchor": "middle", class: "axis-label", text: "epoch" }));
    nodes.push(
      svg("text", {
        x: 12,
        y: m.top + hgt / 2,
        class: "axis-label",
        "text-anchor": "middle",
        transform: `rotate(-90 12 ${m.top + hgt / 2})`,
        text: log ? "loss (log)" : "loss",
      }),
    );
    nodes.push(svg("rect", { x: m.left, y: m.top, width: w, height: hgt, class: "frame" }));
    if (bestEpoch && bestEpoch >= x0 && bestEpoch <= x1) {
      // The epoch whose weights the model holds (early stopping kept it).
      const x = sx(bestEpoch);
      nodes.push(svg("line", { id: "best-epoch-marker", x1: x, x2: x, y1: m.top, y2: m.top + hgt, class: "best-epoch", "data-epoch": bestEpoch }));
      nodes.push(svg("text", { x: x + 4, y: m.top + 12, class: "tick", text: `best epoch ${bestEpoch}` }));
    }

    for (const ser of present) {
      const yOf = ser.axis === "left" ? ty : ry;
      const pts = [];
      for (const it of drawn) {
        const v = it[ser.key];
        if (typeof v !== "number" || !isFinite(v) || (log && ser.axis === "left" && v <= 0)) continue;
        pts.push(`${sx(it.epoch).toFixed(1)},${yOf(v).toFixed(1)}`);
      }
      const attrs = {
        points: pts.join(" "),
        class: `curve curve-${ser.key}`,
        "data-key": ser.key,
        "data-count": pts.length,
        fill: "none",
        stroke: ser.color,
        "stroke-width": 1.8,
      };
      if (ser.dash) attrs["stroke-dasharray"] = ser.dash;
      nodes.push(svg("polyline", attrs));
      if (drawn.length === 1 && pts.length) {
        const [cx, cy] = pts[0].split(",");
        nodes.push(svg("circle", { cx, cy, r: 3, fill: ser.color }));
      }
    }
    el.replaceChildren(...nodes);
    for (const item of document.querySelectorAll("#chart-legend .legend-item")) {
      item.hidden = !present.some((ser) => ser.key === item.dataset.key);
    }
  }

  // -- API key field ------------------------------------------------------------------------

  function setupKeyForm() {
    const input = document.getElementById("api-key");
    input.value = apiKey();
    document.getElementById("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      try {
        if (input.value.trim()) localStorage.setItem(KEY_STORAGE, input.value.trim());
        else localStorage.removeItem(KEY_STORAGE);
      } catch (err) {
        notice("cannot store the API key: " + err.message);
      }
      route();
    });
    document.getElementById("api-key-clear").addEventListener("click", () => {
      input.value = "";
      try {
        localStorage.removeItem(KEY_STORAGE);
      } catch (err) {
        /* nothing stored */
      }
      route();
    });
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      const chart = document.getElementById("chart");
      if (chart && ui.view === "run") drawChart(chart, ui.items);
    }, 150);
  });
  window.addEventListener("hashchange", route);
  setupKeyForm();
  route();
})();
