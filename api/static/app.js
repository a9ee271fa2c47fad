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
 *
 * Working with many runs (issue #13): the runs list filters (status, several at once; tags;
 * a name search), sorts, folds a sweep's trials under one row per sweep, and marks runs to
 * compare; "#/compare?runs=<id>,<id>" overlays their curves and lists the settings in which
 * they differ; "#/sweeps" lists sweeps and "#/sweeps/<id>" shows one: leaderboard, objective
 * against each parameter, why each pruned trial was pruned; "#/datasets/<id>" is a dataset
 * with its runs. Charts are uPlot's (charts.js): each has a linear/log toggle and zoom.
 * The runs list keeps its filters in the URL fragment ("#/?status=failed&sort=loss"), so a
 * view can be bookmarked; they are the query parameters of GET /api/v1/runs.
 */
"use strict";

(function () {
  const API = "/api/v1";
  const KEY_STORAGE = "backprop.apiKey";
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const POLL_MS = 2000;
  const SERIES = [
    { key: "loss", axis: "y", color: "#1f77b4" },
    { key: "val_loss", axis: "y", color: "#ff7f0e" },
    { key: "accuracy", axis: "y2", color: "#2ca02c", dash: [6, 4] },
    { key: "val_accuracy", axis: "y2", color: "#d62728", dash: [6, 4] },
  ];
  const METRICS = SERIES.map((ser) => ser.key);
  const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
  const RUN_SORTS = ["created_at", "loss", "val_loss", "accuracy", "val_accuracy", "best_epoch"];
  const PAGE = 50; // runs per page of the runs list ("show more" adds a page)
  const COMPARE_MAX = 8;
  const charts = window.backpropCharts;

  const ui = {
    view: null, // "runs" | "run" | "datasets"
    run: null, // the run record shown on the run page
    items: [], // metric items of that run, one per epoch, in order
    stream: "idle", // SSE state: idle | connecting | open | ended | error
    lastEventId: null,
    selected: new Set(), // runs marked on the runs list for the compare view
    expanded: new Set(), // sweeps whose trials the runs list shows
    sweep: null, // the sweep record on the sweep page
    compare: null, // {runs, metrics} on the compare view
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

  function lastTransition(run) {
    const steps = run.transitions || [];
    return steps.length ? steps[steps.length - 1] : null;
  }

  // What a run's status means to a person: "pruned", "early stopped" or "diverged" where
  // that is why it ended, "waiting" for a sweep trial paused at an ASHA rung, else its status.
  function shownStatus(run) {
    const last = lastTransition(run);
    if (run.stop_reason === "pruned") return "pruned";
    if (run.stop_reason === "early_stopped") return "early stopped";
    if (run.status === "failed" && /diverged/i.test(run.error || (last && last.reason) || "")) {
      return "diverged";
    }
    if (run.status === "queued" && last && /^waiting at rung/i.test(last.reason || "")) return "waiting";
    return run.status;
  }

  // A run's status badge: the status shown (data-shown) and the stored one (data-status),
  // with the reason of its last transition as the tooltip.
  function runBadge(run, id) {
    const shown = shownStatus(run);
    const last = lastTransition(run);
    const extra = shown !== run.status ? ` status-${shown.replace(/ /g, "-")}` : "";
    return h("span", {
      class: `status status-${run.status}${extra}`,
      id,
      "data-status": run.status,
      "data-shown": shown,
      title: last ? last.reason : null,
      text: shown,
    });
  }

  // Tags as chips; with onPick, each is a button that picks it (as a filter).
  function tagChips(tags, onPick) {
    return Object.entries(tags || {})
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) =>
        h(onPick ? "button" : "span", {
          type: onPick ? "button" : null,
          class: "tag",
          "data-tag": `${k}:${v}`,
          title: onPick ? `show only runs tagged ${k}:${v}` : null,
          text: v === "" ? k : `${k}: ${v}`,
          onclick: onPick
            ? (event) => {
                event.preventDefault();
                onPick(`${k}:${v}`);
              }
            : null,
        }),
      );
  }

  function shortId(id) {
    return String(id || "").slice(0, 8);
  }

  function runLabel(run) {
    return run.name || shortId(run.id);
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
      clearTimeout(timer);
      timer = null;
      if (!s.alive) return;
      try {
        await fn();
        notice("");
      } catch (err) {
        if (s.alive) notice(err.message);
      }
      if (s.alive && timer === null) timer = setTimeout(tick, ms);
    };
    s.onEnd(() => clearTimeout(timer));
    tick();
    return tick; // calling it loads again at once
  }

  function setView(name, ...children) {
    ui.view = name;
    const main = document.getElementById("view");
    main.replaceChildren(...children);
    for (const link of document.querySelectorAll("nav a")) link.classList.remove("active");
    const navs = {
      datasets: "nav-datasets",
      dataset: "nav-datasets",
      sweeps: "nav-sweeps",
      sweep: "nav-sweeps",
      models: "nav-models",
    };
    const nav = document.getElementById(navs[name] || "nav-runs");
    if (nav) nav.classList.add("active");
  }

  function route() {
    const full = location.hash.replace(/^#/, "") || "/";
    const cut = full.indexOf("?");
    const hash = cut < 0 ? full : full.slice(0, cut);
    const params = new URLSearchParams(cut < 0 ? "" : full.slice(cut + 1));
    const s = newSession();
    notice("");
    const runMatch = hash.match(/^\/runs\/([^/?#]+)$/);
    if (runMatch) return showRun(s, decodeURIComponent(runMatch[1]));
    const datasetMatch = hash.match(/^\/datasets\/([^/?#]+)$/);
    if (datasetMatch) return showDataset(s, decodeURIComponent(datasetMatch[1]));
    const sweepMatch = hash.match(/^\/sweeps\/([^/?#]+)$/);
    if (sweepMatch) return showSweep(s, decodeURIComponent(sweepMatch[1]));
    if (hash === "/sweeps") return showSweeps(s);
    if (hash === "/compare") return showCompare(s, (params.get("runs") || "").split(",").filter(Boolean));
    if (hash === "/datasets") return showDatasets(s);
    if (hash === "/models") return showModels(s);
    return showRuns(s, params);
  }

  // -- runs list ----------------------------------------------------------------------------

  // The runs list's filters and sort: the query of the URL fragment, which are also the query
  // parameters of GET /api/v1/runs (API.md §5c).
  function runFilters(params) {
    const sort = params.get("sort");
    const order = params.get("order");
    return {
      status: params.getAll("status").filter((st) => STATUSES.includes(st)),
      tag: params.getAll("tag").filter((t) => t.indexOf(":") > 0),
      q: (params.get("q") || "").trim(),
      sort: RUN_SORTS.includes(sort) ? sort : "created_at",
      order: order === "asc" || order === "desc" ? order : "",
    };
  }

  function filterQuery(f, extra) {
    const p = new URLSearchParams();
    for (const st of f.status || []) p.append("status", st);
    for (const t of f.tag || []) p.append("tag", t);
    if (f.q) p.set("q", f.q);
    if (f.sort && f.sort !== "created_at") p.set("sort", f.sort);
    if (f.order) p.set("order", f.order);
    for (const [k, v] of Object.entries(extra || {})) p.set(k, String(v));
    return p;
  }

  // The filters once more on the records the API answered: nothing changes when the API
  // applied them, and the list stays right with a server that does not know one of them.
  function matches(record, f, scope) {
    if (f.status && f.status.length && !f.status.includes(record.status)) return false;
    if (f.q && !(record.name || "").toLowerCase().includes(f.q.toLowerCase())) return false;
    for (const t of f.tag || []) {
      const cut = t.indexOf(":");
      if ((record.tags || {})[t.slice(0, cut)] !== t.slice(cut + 1)) return false;
    }
    if (!scope) return true;
    if (scope.sweep_id !== undefined && record.sweep_id !== scope.sweep_id) return false;
    if (scope.top_level && record.sweep_id) return false;
    if (scope.dataset_id !== undefined && record.dataset_id !== scope.dataset_id) return false;
    return true;
  }

  const RUN_COLUMNS = ["", "Run", "Status", "Progress", "Loss", "Val loss", "Accuracy", "Val acc.", "Best epoch", "Created"];

  function runsTableHead() {
    return h("thead", {}, h("tr", {}, RUN_COLUMNS.map((t) => h("th", { text: t }))));
  }

  // One run as a row of a runs table: a box that marks it for the compare view, its name
  // (a link to its page) with its id and tags, its status, progress, metrics and age.
  function runRow(run, ctx) {
    const m = run.metrics || {};
    const marked = ui.selected.has(run.id);
    const tags = tagChips(run.tags, ctx.onTag);
    return h(
      "tr",
      {
        "data-run-id": run.id,
        "data-status": run.status,
        "data-sweep-id": run.sweep_id,
        class: ctx.trial ? "trial-row" : null,
      },
      h(
        "td",
        { class: "select" },
        h("input", {
          type: "checkbox",
          class: "select-run",
          "data-run-id": run.id,
          "aria-label": `compare ${runLabel(run)}`,
          title: "mark to compare",
          checked: marked,
          disabled: !marked && ui.selected.size >= COMPARE_MAX,
          onchange: (event) => ctx.onSelect(run.id, event.target.checked),
        }),
      ),
      h(
        "td",
        { class: "run-name" },
        h("a", { href: `#/runs/${encodeURIComponent(run.id)}`, text: run.name || run.id }),
        run.name ? h("div", { class: "muted small", text: run.id }) : null,
        tags.length ? h("div", { class: "tags" }, tags) : null,
      ),
      h("td", {}, runBadge(run)),
      h("td", {}, progressBar(run.progress)),
      METRICS.map((k) => h("td", { class: "num", "data-metric": k, text: fmt(m[k]) })),
      h("td", { class: "num", "data-metric": "best_epoch", text: run.best_epoch ?? "—" }),
      h("td", { text: when(run.created_at) }),
    );
  }

  // One sweep as a row of the runs list, with a button that shows or hides its trials.
  function sweepRow(sweep, open, ctx) {
    const best = sweep.best || null;
    const value = best ? best[sweep.metric] : null;
    const tags = tagChips(sweep.tags, ctx.onTag);
    const progress = sweep.progress || { finished: 0, total: 0 };
    return h(
      "tr",
      { class: "sweep-row", "data-sweep-id": sweep.id, "data-status": sweep.status },
      h(
        "td",
        { class: "select" },
        h("button", {
          type: "button",
          class: "expand secondary",
          "data-sweep-id": sweep.id,
          "aria-expanded": String(open),
          title: open ? "hide its trials" : "show its trials",
          text: open ? "▾" : "▸",
          onclick: () => ctx.onExpand(sweep.id),
        }),
      ),
      h(
        "td",
        { class: "run-name" },
        h("a", { href: `#/sweeps/${encodeURIComponent(sweep.id)}`, text: sweep.name || sweep.id }),
        h("div", {
          class: "muted small",
          text: `sweep · ${sweep.n_trials} trials · ${(sweep.search && sweep.search.type) || ""} search`,
        }),
        tags.length ? h("div", { class: "tags" }, tags) : null,
      ),
      h("td", {}, statusBadge(sweep.status)),
      h("td", {}, progressBar({ epoch: progress.finished, epochs: progress.total })),
      h("td", {
        colspan: METRICS.length + 1,
        class: "muted sweep-best",
        text: value === null || value === undefined
          ? `${sweep.metric}: no finished trial yet`
          : `best ${sweep.metric} ${fmt(value)} (trial ${best.trial})`,
      }),
      h("td", { text: when(sweep.created_at) }),
    );
  }

  // Trials by number and fold; a refit (no number) after them.
  function byTrial(a, b) {
    const ta = a.trial ?? Infinity;
    const tb = b.trial ?? Infinity;
    return ta !== tb ? ta - tb : (a.fold ?? 0) - (b.fold ?? 0);
  }

  function toggleMarked(runId, on) {
    if (!on) ui.selected.delete(runId);
    else if (ui.selected.size < COMPARE_MAX) ui.selected.add(runId);
  }

  // The button that opens the compare view of the marked runs, and their count.
  function compareBar(onChange) {
    const button = h("button", {
      type: "button",
      id: "compare-button",
      onclick: () => {
        if (ui.selected.size >= 2) location.hash = `#/compare?runs=${[...ui.selected].map(encodeURIComponent).join(",")}`;
      },
    });
    const clear = h("button", {
      type: "button",
      class: "secondary",
      id: "compare-clear",
      text: "unmark all",
      onclick: () => {
        ui.selected.clear();
        refresh();
        onChange();
      },
    });
    const count = h("span", { class: "muted small", id: "compare-count" });
    function refresh() {
      const n = ui.selected.size;
      button.textContent = n >= 2 ? `Compare ${n} runs` : "Compare";
      button.disabled = n < 2 || n > COMPARE_MAX;
      clear.hidden = n === 0;
      count.textContent = n
        ? `${n} marked (at most ${COMPARE_MAX})`
        : `mark 2–${COMPARE_MAX} runs with their boxes to compare them`;
    }
    refresh();
    return { el: h("div", { class: "compare-bar" }, button, clear, count), refresh };
  }

  function showRuns(s, params) {
    const f = runFilters(params || new URLSearchParams());
    let pages = 1;
    let generation = 0;
    let last = null; // what the latest load found, to render again after a click
    const tbody = h("tbody");
    const updated = h("span", { class: "muted", id: "runs-updated" });
    const more = h("button", {
      type: "button",
      class: "secondary",
      id: "runs-more",
      text: "show more",
      hidden: true,
      onclick: () => {
        pages += 1;
        refresh();
      },
    });
    const table = h("table", { id: "runs-table", class: "grid" }, runsTableHead(), tbody);
    const bar = compareBar(() => render());

    // -- the filter form: every change is written to the URL and the list reloads at once
    const statusBoxes = STATUSES.map((st) =>
      h(
        "label",
        { class: "check" },
        h("input", {
          type: "checkbox",
          name: "status",
          value: st,
          checked: f.status.includes(st),
          onchange: () => {
            f.status = statusBoxes.map((l) => l.firstChild).filter((b) => b.checked).map((b) => b.value);
            changed();
          },
        }),
        st,
      ),
    );
    let typing = null;
    const search = h("input", {
      type: "search",
      id: "runs-q",
      placeholder: "name contains…",
      value: f.q,
      maxlength: 200,
      oninput: () => {
        clearTimeout(typing);
        typing = setTimeout(() => {
          f.q = search.value.trim();
          changed();
        }, 250);
      },
    });
    s.onEnd(() => clearTimeout(typing));
    const tagInput = h("input", { type: "text", id: "runs-tag", placeholder: "tag key:value", size: 14 });
    const tagForm = h(
      "form",
      {
        class: "inline",
        id: "runs-tag-form",
        onsubmit: (event) => {
          event.preventDefault();
          const tag = tagInput.value.trim();
          if (tag.indexOf(":") <= 0) {
            notice("a tag filter is key:value (the value may be empty: key:)");
            return;
          }
          tagInput.value = "";
          addTag(tag);
        },
      },
      tagInput,
      h("button", { type: "submit", class: "secondary", text: "add" }),
    );
    const activeTags = h("span", { class: "tags", id: "runs-tags" });
    const sortSelect = h(
      "select",
      { id: "runs-sort", "aria-label": "sort by", onchange: () => ((f.sort = sortSelect.value), changed()) },
      RUN_SORTS.map((k) => h("option", { value: k, selected: f.sort === k, text: k === "created_at" ? "created" : k.replace("_", " ") })),
    );
    const orderSelect = h(
      "select",
      { id: "runs-order", "aria-label": "order", onchange: () => ((f.order = orderSelect.value), changed()) },
      [
        ["", "best / newest first"],
        ["asc", "ascending"],
        ["desc", "descending"],
      ].map(([v, t]) => h("option", { value: v, selected: f.order === v, text: t })),
    );
    const clearFilters = h("button", {
      type: "button",
      class: "secondary",
      id: "runs-clear-filters",
      text: "clear filters",
      onclick: () => {
        location.hash = "#/";
      },
    });
    const filters = h(
      "div",
      { class: "filters", id: "runs-filters" },
      h("div", { class: "filter-group", id: "runs-status" }, h("span", { class: "muted", text: "status" }), statusBoxes),
      h("div", { class: "filter-group" }, search, tagForm, activeTags),
      h("div", { class: "filter-group" }, h("span", { class: "muted", text: "sort" }), sortSelect, orderSelect, clearFilters),
    );

    function addTag(tag) {
      if (!f.tag.includes(tag)) f.tag.push(tag);
      changed();
    }

    function renderActiveTags() {
      activeTags.replaceChildren(
        ...f.tag.map((t) =>
          h("button", {
            type: "button",
            class: "tag tag-filter",
            "data-tag": t,
            title: "remove this filter",
            text: `${t} ×`,
            onclick: () => {
              f.tag = f.tag.filter((x) => x !== t);
              changed();
            },
          }),
        ),
      );
    }

    function changed() {
      const query = filterQuery(f).toString();
      history.replaceState(null, "", `#/${query ? "?" + query : ""}`);
      pages = 1;
      renderActiveTags();
      refresh();
    }

    const ctx = {
      onTag: addTag,
      onSelect: (runId, on) => {
        toggleMarked(runId, on);
        bar.refresh();
        render();
      },
      onExpand: (sweepId) => {
        if (ui.expanded.has(sweepId)) ui.expanded.delete(sweepId);
        else ui.expanded.add(sweepId);
        render();
        refresh();
      },
    };

    setView(
      "runs",
      h("div", { class: "heading" }, h("h1", { text: "Runs" }), updated),
      filters,
      bar.el,
      table,
      h("p", {}, more),
      h("p", {
        class: "muted small",
        text: "A sweep's trials are folded under its row (▸). The filters select runs and sweeps " +
          "by their own status, tags and name; an opened sweep lists its trials that match them.",
      }),
    );
    renderActiveTags();

    // Top-level runs and sweeps in one list: by creation time when sorted by it, else the
    // sweeps first (they have no value of a run's metric to sort by).
    function merged(runs, sweeps, complete) {
      const desc = f.order !== "asc";
      if (f.sort !== "created_at") return [...sweeps.map((sw) => ({ sweep: sw })), ...runs.map((run) => ({ run }))];
      let shown = sweeps;
      if (!complete && runs.length) {
        // Only sweeps inside the time span of the runs loaded so far; more come with "show more".
        const edge = runs[runs.length - 1].created_at;
        shown = sweeps.filter((sw) => (desc ? sw.created_at >= edge : sw.created_at <= edge));
      }
      const items = [...shown.map((sw) => ({ sweep: sw, at: sw.created_at })), ...runs.map((run) => ({ run, at: run.created_at }))];
      items.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0) * (desc ? -1 : 1));
      return items;
    }

    function render() {
      if (!last) return;
      const rows = [];
      for (const item of merged(last.runs, last.sweeps, last.complete)) {
        if (item.run) {
          rows.push(runRow(item.run, ctx));
          continue;
        }
        const sweep = item.sweep;
        const open = ui.expanded.has(sweep.id);
        rows.push(sweepRow(sweep, open, ctx));
        if (!open) continue;
        const trials = last.trials.get(sweep.id);
        if (!trials) {
          rows.push(h("tr", { class: "trial-row" }, h("td", {}), h("td", { colspan: RUN_COLUMNS.length - 1, class: "muted", text: "loading its trials…" })));
        } else if (!trials.length) {
          rows.push(h("tr", { class: "trial-row" }, h("td", {}), h("td", { colspan: RUN_COLUMNS.length - 1, class: "muted", text: "no trial matches the filters" })));
        } else {
          for (const run of trials) rows.push(runRow(run, Object.assign({ trial: true }, ctx)));
        }
      }
      if (!rows.length) {
        const filtered = f.status.length || f.tag.length || f.q;
        rows.push(
          h(
            "tr",
            {},
            h("td", {
              colspan: RUN_COLUMNS.length,
              class: "muted",
              text: filtered ? "No runs match these filters." : "No runs yet: POST /api/v1/runs.",
            }),
          ),
        );
      }
      tbody.replaceChildren(...rows);
      more.hidden = last.complete;
    }

    const load = async () => {
      const gen = ++generation;
      const limit = Math.min(500, PAGE * pages);
      const sweepQuery = new URLSearchParams();
      for (const st of f.status) sweepQuery.append("status", st);
      for (const t of f.tag) sweepQuery.append("tag", t);
      if (f.q) sweepQuery.set("q", f.q);
      sweepQuery.set("limit", "100");
      const [runsBody, sweepsBody] = await Promise.all([
        apiJson(`runs?${filterQuery(f, { top_level: "true", limit })}`),
        apiJson(`sweeps?${sweepQuery}`),
      ]);
      const sweeps = sweepsBody.items.filter((sw) => matches(sw, f));
      const open = sweeps.filter((sw) => ui.expanded.has(sw.id));
      const trials = new Map(
        await Promise.all(
          open.map(async (sw) => {
            const body = await apiJson(`runs?${filterQuery(f, { sweep_id: sw.id, limit: 500 })}`);
            const trials = body.items.filter((run) => matches(run, f, { sweep_id: sw.id }));
            // A sweep creates its trials together: in creation order they go by number.
            if (f.sort === "created_at" && !f.order) trials.sort(byTrial);
            return [sw.id, trials];
          }),
        ),
      );
      if (!s.alive || gen !== generation) return;
      const runs = runsBody.items.filter((run) => matches(run, f, { top_level: true }));
      ui.runs = runs;
      ui.sweeps = sweeps;
      last = { runs, sweeps, trials, complete: !runsBody.next_cursor || limit >= 500 };
      render();
      updated.textContent = "updated " + new Date().toLocaleTimeString();
    };
    const refresh = poll(s, load, POLL_MS);
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
              h("a", { href: `#/datasets/${encodeURIComponent(ds.id)}`, text: ds.name || "(unnamed)" }),
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
    const chart = charts.create({
      id: "chart",
      height: 320,
      xLabel: "epoch",
      xIntegers: true,
      yLabel: "loss",
      y2Label: "accuracy",
      emptyText: "no epochs yet",
    });
    s.onEnd(() => chart.destroy());
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
      h("section", { class: "card" }, h("h2", { text: "Learning curves" }), chart.el, latest),
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
      status.replaceChildren(runBadge(run, "run-status"));
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
      const tags = tagChips(run.tags);
      meta.replaceChildren(
        ...[
          ["id", run.id],
          ["dataset", h("a", { href: `#/datasets/${encodeURIComponent(run.dataset_id)}`, text: run.dataset_id })],
          run.sweep_id
            ? ["sweep", h("a", { href: `#/sweeps/${encodeURIComponent(run.sweep_id)}`, text: run.trial === null || run.trial === undefined ? run.sweep_id : `trial ${run.trial} of ${run.sweep_id}` })]
            : null,
          run.best_epoch ? ["best epoch", String(run.best_epoch)] : null,
          tags.length ? ["tags", h("span", { class: "tags", id: "run-tags" }, tags)] : null,
          run.notes ? ["notes", h("span", { id: "run-notes", text: run.notes })] : null,
          ["created", when(run.created_at)],
          ["started", when(run.started_at)],
          ["finished", when(run.finished_at)],
        ]
          .filter(Boolean)
          .flatMap(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)]),
      );
    }

    let drawTimer = null;
    function scheduleDraw() {
      if (drawTimer !== null) return;
      drawTimer = setTimeout(() => {
        drawTimer = null;
        if (!s.alive) return;
        drawRunChart(chart, ui.items, ui.run && ui.run.best_epoch);
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
            scheduleDraw(); // and, at the end, the best epoch to mark
          } catch (err) {
            notice(err.message);
          }
        },
        state: setStream,
      });
    })();
  }

  // -- one dataset and its runs ---------------------------------------------------------------

  function showDataset(s, datasetId) {
    const title = h("h1", { text: datasetId });
    const meta = h("dl", { class: "meta", id: "dataset-meta" });
    const tbody = h("tbody");
    const count = h("span", { class: "muted small", id: "dataset-runs-count" });
    let runs = null;
    const ctx = {
      onSelect: (runId, on) => {
        toggleMarked(runId, on);
        bar.refresh();
        render();
      },
    };
    const bar = compareBar(() => render());
    setView(
      "dataset",
      h("p", {}, h("a", { href: "#/datasets", text: "← all datasets" })),
      h("div", { class: "heading" }, title),
      h("section", { class: "card" }, meta),
      h(
        "section",
        { class: "card" },
        h("h2", {}, "Runs on this dataset ", count),
        bar.el,
        h("table", { id: "dataset-runs", class: "grid" }, runsTableHead(), tbody),
      ),
    );

    function render() {
      if (!runs) return;
      const rows = runs.map((run) => runRow(run, Object.assign({ trial: !!run.sweep_id }, ctx)));
      if (!rows.length) {
        rows.push(h("tr", {}, h("td", { colspan: RUN_COLUMNS.length, class: "muted", text: "No run has trained on it yet." })));
      }
      tbody.replaceChildren(...rows);
      count.textContent = `(${runs.length})`;
    }

    (async () => {
      try {
        const ds = await apiJson(`datasets/${encodeURIComponent(datasetId)}`);
        if (!s.alive) return;
        title.textContent = ds.name || ds.id;
        const tags = tagChips(ds.tags);
        meta.replaceChildren(
          ...[
            ["id", ds.id],
            ["task", ds.task],
            ["samples", ds.n_samples],
            ["features", ds.n_features],
            ["targets", ds.n_targets],
            ["classes", ds.classes ? ds.classes.join(", ") : "—"],
            ["size", `${ds.size_bytes} B`],
            tags.length ? ["tags", h("span", { class: "tags" }, tags)] : null,
            ds.notes ? ["notes", ds.notes] : null,
            ["created", when(ds.created_at)],
          ]
            .filter(Boolean)
            .flatMap(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)]),
        );
      } catch (err) {
        notice(err.message);
        title.textContent = err.status === 404 ? `Dataset ${datasetId} not found` : datasetId;
        return;
      }
      poll(
        s,
        async () => {
          const body = await apiJson(`runs?dataset_id=${encodeURIComponent(datasetId)}&limit=500`);
          if (!s.alive) return;
          runs = body.items.filter((run) => run.dataset_id === datasetId);
          render();
        },
        POLL_MS * 2,
      );
    })();
  }

  // -- sweeps ---------------------------------------------------------------------------------

  function sweepProgressText(sweep) {
    const p = sweep.progress || {};
    const parts = [`${p.finished || 0} / ${p.total || 0} finished`];
    if (p.running) parts.push(`${p.running} running`);
    if (p.waiting) parts.push(`${p.waiting} waiting`);
    if (p.pruned) parts.push(`${p.pruned} pruned`);
    return parts.join(" · ");
  }

  function showSweeps(s) {
    const tbody = h("tbody");
    const table = h(
      "table",
      { id: "sweeps-table", class: "grid" },
      h(
        "thead",
        {},
        h("tr", {}, ["Sweep", "Status", "Search", "Metric", "Progress", "Best", "Created"].map((t) => h("th", { text: t }))),
      ),
      tbody,
    );
    setView("sweeps", h("div", { class: "heading" }, h("h1", { text: "Sweeps" })), table);
    poll(
      s,
      async () => {
        const body = await apiJson("sweeps?limit=200");
        if (!s.alive) return;
        ui.sweeps = body.items;
        const rows = body.items.map((sw) => {
          const best = sw.best ? sw.best[sw.metric] : null;
          return h(
            "tr",
            { "data-sweep-id": sw.id, "data-status": sw.status },
            h(
              "td",
              {},
              h("a", { href: `#/sweeps/${encodeURIComponent(sw.id)}`, text: sw.name || sw.id }),
              sw.name ? h("div", { class: "muted small", text: sw.id }) : null,
              h("div", { class: "tags" }, tagChips(sw.tags)),
            ),
            h("td", {}, statusBadge(sw.status)),
            h("td", { text: `${(sw.search && sw.search.type) || "—"}${sw.pruning ? " + " + sw.pruning.type : ""}` }),
            h("td", { text: `${sw.metric} (${sw.mode})` }),
            h("td", {}, progressBar({ epoch: sw.progress.finished, epochs: sw.progress.total }), h("div", { class: "muted small", text: sweepProgressText(sw) })),
            h("td", { class: "num", text: best === null ? "—" : fmt(best) }),
            h("td", { text: when(sw.created_at) }),
          );
        });
        if (!rows.length) {
          rows.push(h("tr", {}, h("td", { colspan: 7, class: "muted", text: "No sweeps yet: POST /api/v1/sweeps." })));
        }
        tbody.replaceChildren(...rows);
      },
      POLL_MS * 2,
    );
  }

  function paramText(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "number") return fmt(value);
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  // How a swept parameter is drawn on a chart's x axis: its categories when it takes values
  // that are not numbers, and a log axis when it is drawn from a log-uniform distribution.
  function paramAxis(space) {
    const values = Array.isArray(space)
      ? space
      : space && space.distribution === "choice" && Array.isArray(space.values)
        ? space.values
        : null;
    if (values && values.some((v) => typeof v !== "number")) {
      return { categories: values.map(paramText), log: false };
    }
    const log = !!(space && !Array.isArray(space) && space.distribution === "log_uniform");
    return { categories: null, log: log || (!!values && values.length > 2 && values.every((v) => v > 0) && Math.max(...values) / Math.min(...values) >= 100) };
  }

  // Why a pruned trial was pruned: its rung, value and the cutoff from stop_details (ASHA
  // records them), else the reason its timeline gives.
  function prunedDetails(entry, run) {
    const details = entry.stop_details || (run && run.stop_details) || null;
    const last = run ? lastTransition(run) : null;
    const reason = (last && last.reason) || (run && run.error) || "";
    return { details, reason };
  }

  function showSweep(s, sweepId) {
    ui.sweep = null;
    const title = h("h1", { text: sweepId });
    const status = h("span", { id: "sweep-status-slot" });
    const progress = h("span", { id: "sweep-progress" });
    const progressText = h("span", { class: "muted small", id: "sweep-progress-text" });
    const meta = h("dl", { class: "meta", id: "sweep-meta" });
    const board = h("table", { id: "leaderboard", class: "grid" });
    const chartsBox = h("div", { class: "chart-grid", id: "objective-charts" });
    const pruned = h("table", { id: "pruned-trials", class: "grid" });
    const prunedNone = h("p", { class: "muted", id: "pruned-none", text: "No trial was pruned." });
    const objective = new Map(); // parameter -> chart
    s.onEnd(() => objective.forEach((c) => c.destroy()));
    setView(
      "sweep",
      h("p", {}, h("a", { href: "#/sweeps", text: "← all sweeps" })),
      h("div", { class: "heading" }, title, status, progress, progressText),
      h("section", { class: "card" }, meta),
      h("section", { class: "card" }, h("h2", { text: "Leaderboard" }), h("div", { class: "scroll" }, board)),
      h("section", { class: "card" }, h("h2", { text: "Objective against each parameter" }), chartsBox),
      h("section", { class: "card" }, h("h2", { text: "Pruned trials" }), prunedNone, h("div", { class: "scroll" }, pruned)),
    );

    let done = false;
    const load = async () => {
      if (done) return;
      const sweep = await apiJson(`sweeps/${encodeURIComponent(sweepId)}`);
      const body = await apiJson(`runs?sweep_id=${encodeURIComponent(sweep.id)}&limit=500`);
      if (!s.alive) return;
      const runs = new Map(body.items.filter((run) => run.sweep_id === sweep.id).map((run) => [run.id, run]));
      ui.sweep = sweep;
      render(sweep, runs);
      done = TERMINAL.has(sweep.status);
    };

    function render(sweep, runs) {
      const metric = sweep.metric;
      const params = Object.keys((sweep.search && sweep.search.parameters) || {});
      title.textContent = sweep.name || sweep.id;
      status.replaceChildren(statusBadge(sweep.status, "sweep-status"));
      progress.replaceChildren(progressBar({ epoch: sweep.progress.finished, epochs: sweep.progress.total }));
      progressText.textContent = sweepProgressText(sweep);
      const tags = tagChips(sweep.tags);
      meta.replaceChildren(
        ...[
          ["id", sweep.id],
          ["search", `${sweep.search.type}${sweep.search.seed !== undefined ? `, seed ${sweep.search.seed}` : ""}`],
          ["metric", `${metric} (${sweep.mode === "max" ? "higher" : "lower"} is better)`],
          ["trials", String(sweep.n_trials)],
          ["pruning", sweep.pruning ? JSON.stringify(sweep.pruning) : "none"],
          sweep.cross_validation ? ["cross-validation", JSON.stringify(sweep.cross_validation)] : null,
          sweep.refit_run_id ? ["refit", h("a", { href: `#/runs/${encodeURIComponent(sweep.refit_run_id)}`, text: sweep.refit_run_id })] : null,
          tags.length ? ["tags", h("span", { class: "tags" }, tags)] : null,
          sweep.notes ? ["notes", sweep.notes] : null,
          ["created", when(sweep.created_at)],
          ["finished", when(sweep.finished_at)],
        ]
          .filter(Boolean)
          .flatMap(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)]),
      );

      // The leaderboard, best first, as the API ranks it.
      const entries = sweep.leaderboard || [];
      board.replaceChildren(
        h(
          "thead",
          {},
          h("tr", {}, ["#", "Trial", "Run", ...params, metric, "Status", "Epoch"].map((t) => h("th", { text: t }))),
        ),
        h(
          "tbody",
          {},
          entries.map((entry, i) => {
            const run = runs.get(entry.run_id);
            const shown = run || { status: entry.status, stop_reason: entry.stop_reason, transitions: [] };
            return h(
              "tr",
              { "data-run-id": entry.run_id, "data-rank": i + 1, "data-trial": entry.trial, "data-status": entry.status },
              h("td", { class: "num", text: i + 1 }),
              h("td", { class: "num", text: entry.trial }),
              h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(entry.run_id)}`, text: run ? runLabel(run) : shortId(entry.run_id) })),
              params.map((p) => h("td", { class: "param", "data-param": p, text: paramText((entry.params || {})[p]) })),
              h("td", { class: "num", "data-metric": metric, text: fmt(entry[metric]) }),
              h("td", {}, runBadge(shown)),
              h("td", { class: "num", text: entry.epoch ?? "—" }),
            );
          }),
        ),
      );

      // The objective against each parameter: finished trials, and those stopped early at
      // the value they had then.
      for (const [i, p] of params.entries()) {
        const axis = paramAxis(sweep.search.parameters[p]);
        let chart = objective.get(p);
        if (!chart) {
          chart = charts.create({
            id: `objective-${i}`,
            kind: "scatter",
            title: p,
            height: 240,
            xLabel: p,
            yLabel: metric,
            xLog: axis.log,
            xCategories: axis.categories,
            emptyText: "no trial has a value yet",
          });
          chart.el.dataset.param = p;
          objective.set(p, chart);
          chartsBox.append(chart.el);
        }
        const points = entries.filter((e) => typeof e[metric] === "number" && isFinite(e[metric]));
        const xOf = (e) => {
          const v = (e.params || {})[p];
          return axis.categories ? axis.categories.indexOf(paramText(v)) : v;
        };
        const usable = points.filter((e) => typeof xOf(e) === "number" && xOf(e) >= 0 && (!axis.log || xOf(e) > 0));
        const finished = (e) => e.status === "succeeded";
        chart.update({
          x: usable.map(xOf),
          series: [
            { key: "finished", label: "finished", color: "#1f77b4", values: usable.map((e) => (finished(e) ? e[metric] : null)) },
            { key: "stopped", label: "pruned or stopped", color: "#d62728", values: usable.map((e) => (finished(e) ? null : e[metric])) },
          ],
        });
      }

      // Each pruned trial: its rung, its value there and the cutoff it missed.
      const prunedEntries = entries.filter((e) => e.stop_reason === "pruned" || (runs.get(e.run_id) || {}).stop_reason === "pruned");
      prunedNone.hidden = prunedEntries.length > 0;
      pruned.hidden = !prunedEntries.length;
      pruned.replaceChildren(
        h(
          "thead",
          {},
          h("tr", {}, ["Trial", "Run", "Rung", "Epoch", "Value", "Cutoff", "Kept", "Why"].map((t) => h("th", { text: t }))),
        ),
        h(
          "tbody",
          {},
          prunedEntries.map((entry) => {
            const run = runs.get(entry.run_id);
            const { details, reason } = prunedDetails(entry, run);
            const d = details || {};
            return h(
              "tr",
              { "data-run-id": entry.run_id, "data-trial": entry.trial, "data-rung": d.rung ?? "" },
              h("td", { class: "num", text: entry.trial }),
              h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(entry.run_id)}`, text: run ? runLabel(run) : shortId(entry.run_id) })),
              h("td", { class: "num rung", text: d.rung ?? "—" }),
              h("td", { class: "num epoch", text: d.epoch ?? entry.epoch ?? "—" }),
              h("td", { class: "num value", text: fmt(d.value ?? entry[metric]) }),
              h("td", { class: "num cutoff", text: fmt(d.cutoff) }),
              h("td", { class: "kept", text: d.kept !== undefined && d.trials_at_rung !== undefined ? `best ${d.kept} of ${d.trials_at_rung}` : "—" }),
              h("td", { class: "reason", text: reason }),
            );
          }),
        ),
      );
    }

    poll(s, load, POLL_MS + 1000);
  }

  // -- compare runs ---------------------------------------------------------------------------

  // Every leaf of a run's network and training as "path": value, in the dotted paths that
  // sweeps use ("training.optimizer.learning_rate", "network.layers.0.units").
  function flatten(value, path, out) {
    if (path === "network.initial_weights" && value) {
      out[path] = `given (${value.length} layers)`;
    } else if (Array.isArray(value)) {
      if (value.every((v) => v === null || typeof v !== "object")) out[path] = JSON.stringify(value);
      else value.forEach((v, i) => flatten(v, `${path}.${i}`, out));
    } else if (value && typeof value === "object") {
      const keys = Object.keys(value);
      if (!keys.length) out[path] = "{}";
      for (const k of keys) flatten(value[k], path ? `${path}.${k}` : k, out);
    } else {
      out[path] = value;
    }
    return out;
  }

  // The paths whose values are not the same in every run (a path some runs lack included).
  function differences(runs) {
    const flat = runs.map((run) => flatten({ network: run.network, training: run.training }, "", {}));
    const paths = [...new Set(flat.flatMap((f) => Object.keys(f)))].sort();
    return {
      flat,
      paths: paths.filter((p) => new Set(flat.map((f) => JSON.stringify(f[p] === undefined ? null : f[p]))).size > 1),
    };
  }

  function showCompare(s, ids) {
    ids = [...new Set(ids)].slice(0, COMPARE_MAX);
    ui.compare = null;
    const title = h("h1", { text: `Compare ${ids.length} runs` });
    const summary = h("table", { id: "compare-summary", class: "grid" });
    const paramsTable = h("table", { id: "compare-params", class: "grid" });
    const same = h("p", { class: "muted", id: "compare-same", hidden: true, text: "Their network and training settings are the same." });
    const chartsBox = h("div", { class: "chart-grid", id: "compare-charts" });
    const made = new Map(); // metric -> chart
    s.onEnd(() => made.forEach((c) => c.destroy()));
    setView(
      "compare",
      h("p", {}, h("a", { href: "#/", text: "← all runs" })),
      h("div", { class: "heading" }, title),
      h("section", { class: "card" }, h("div", { class: "scroll" }, summary)),
      h("section", { class: "card" }, h("h2", { text: "Learning curves" }), chartsBox),
      h("section", { class: "card" }, h("h2", { text: "Settings that differ" }), same, h("div", { class: "scroll" }, paramsTable)),
    );
    if (ids.length < 2) {
      notice(`Mark 2 to ${COMPARE_MAX} runs on the runs list to compare them.`);
      return;
    }

    const colors = ids.map((id, i) => charts.palette[i % charts.palette.length]);
    const header = (runs) =>
      h(
        "tr",
        {},
        h("th", { text: "" }),
        runs.map((run, i) => {
          const swatch = h("span", { class: "swatch" });
          swatch.style.borderTopColor = colors[i];
          return h("th", { "data-run-id": run.id }, swatch, " ", h("a", { href: `#/runs/${encodeURIComponent(run.id)}`, text: runLabel(run) }));
        }),
      );

    function render(runs, metrics) {
      ui.compare = { runs, metrics };
      // Status and results side by side.
      const rows = [
        ["status", (run) => runBadge(run)],
        ["dataset", (run) => h("a", { href: `#/datasets/${encodeURIComponent(run.dataset_id)}`, text: shortId(run.dataset_id) })],
        ["epochs", (run) => `${run.progress.epoch} / ${run.progress.epochs}`],
        ["best epoch", (run) => (run.best_epoch ? String(run.best_epoch) : "—")],
        ...METRICS.map((k) => [k, (run) => fmt((run.metrics || {})[k])]),
      ];
      summary.replaceChildren(
        h("thead", {}, header(runs)),
        h(
          "tbody",
          {},
          rows.map(([label, cell]) =>
            h("tr", { "data-key": label }, h("th", { text: label }), runs.map((run) => h("td", { "data-run-id": run.id }, cell(run)))),
          ),
        ),
      );

      // One chart per metric, one series per run.
      for (const key of METRICS) {
        const perRun = metrics.map((items) => new Map(items.filter((it) => typeof it[key] === "number").map((it) => [it.epoch, it[key]])));
        if (!perRun.some((m) => m.size)) continue;
        let chart = made.get(key);
        if (!chart) {
          chart = charts.create({ id: `compare-${key}`, title: key, height: 260, xLabel: "epoch", xIntegers: true, yLabel: key, emptyText: "no epochs yet" });
          chart.el.dataset.metric = key;
          made.set(key, chart);
          chartsBox.append(chart.el);
        }
        const epochs = [...new Set(perRun.flatMap((m) => [...m.keys()]))].sort((a, b) => a - b);
        chart.update({
          x: epochs,
          series: runs.map((run, i) => ({
            key: run.id,
            runId: run.id,
            label: runLabel(run),
            color: colors[i],
            values: epochs.map((e) => (perRun[i].has(e) ? perRun[i].get(e) : null)),
          })),
          markers: runs
            .map((run, i) =>
              run.best_epoch && perRun[i].size
                ? { x: run.best_epoch, key: run.id, color: colors[i], title: `${runLabel(run)}: best epoch ${run.best_epoch}` }
                : null,
            )
            .filter(Boolean),
        });
      }

      // Only the settings in which they differ.
      const { flat, paths } = differences(runs);
      same.hidden = paths.length > 0;
      paramsTable.hidden = !paths.length;
      paramsTable.replaceChildren(
        h("thead", {}, header(runs)),
        h(
          "tbody",
          {},
          paths.map((p) =>
            h(
              "tr",
              { "data-key": p },
              h("th", { class: "param", text: p }),
              flat.map((f, i) => h("td", { "data-run-id": runs[i].id, text: paramText(f[p]) })),
            ),
          ),
        ),
      );
    }

    let done = false;
    poll(
      s,
      async () => {
        if (done) return;
        const runs = await Promise.all(ids.map((id) => apiJson(`runs/${encodeURIComponent(id)}`)));
        const metrics = await Promise.all(
          runs.map(async (run) => (await apiJson(`runs/${encodeURIComponent(run.id)}/metrics`)).items),
        );
        if (!s.alive) return;
        title.textContent = `Compare ${runs.length} runs`;
        render(runs, metrics);
        done = runs.every((run) => TERMINAL.has(run.status));
      },
      POLL_MS + 1000,
    );
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

  // A run's learning curves: losses on the left axis, accuracies (0-1) on the right, one
  // point per epoch, and the best epoch marked when early stopping kept its weights.
  function drawRunChart(chart, items, bestEpoch) {
    const present = SERIES.filter((ser) => items.some((it) => typeof it[ser.key] === "number"));
    chart.update({
      x: items.map((it) => it.epoch),
      series: present.map((ser) => ({
        key: ser.key,
        label: ser.key,
        color: ser.color,
        dash: ser.dash,
        axis: ser.axis,
        values: items.map((it) => (typeof it[ser.key] === "number" ? it[ser.key] : null)),
      })),
      markers: bestEpoch
        ? [
            {
              x: bestEpoch,
              id: "best-epoch-marker",
              key: "best_epoch",
              label: `best epoch ${bestEpoch}`,
              title: "the epoch whose weights the model holds: early stopping kept it",
            },
          ]
        : [],
    });
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

  window.addEventListener("hashchange", route);
  setupKeyForm();
  route();
})();
