// servekit's dashboard: reads /ui/api/state every second and draws it.
// Every value from the server reaches the page as text (textContent,
// attributes), never as HTML. The management token stays in this page.
"use strict";

(() => {
  const POLL_MS = 1000;
  const KEEP_SECONDS = 120; // how much history the plots show
  const WINDOW = 5; // samples over which quantiles and batch sizes are read
  const SVG = "http://www.w3.org/2000/svg";
  const UNKNOWN = "(unknown)"; // calls to names the server does not serve
  const W = 300;
  const H = 70;

  const history = []; // {t, stats}
  let bounds = [];
  let lastSignature = "";
  let lastErrorsKey = "";
  let timer = null;
  const cards = new Map(); // model name -> {root, charts}

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "onclick") node.addEventListener("click", value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    return node;
  }

  // -- numbers ---------------------------------------------------------------------
  const sum = (values) => values.reduce((a, b) => a + b, 0);
  const total = (map) => sum(Object.values(map || {}));

  // a counter's growth; a counter that went down restarted (a replaced worker)
  function grown(now, before) {
    if (before === undefined || before === null) return null;
    return now >= before ? now - before : now;
  }

  function histDelta(now, before) {
    if (!before) return now.slice();
    if (sum(now) < sum(before)) return now.slice();
    return now.map((v, i) => Math.max(0, v - (before[i] || 0)));
  }

  // the q-quantile of a latency histogram, in seconds (geometric within a bucket)
  function quantile(hist, q) {
    const n = sum(hist);
    if (!n) return null;
    const target = q * n;
    let seen = 0;
    for (let i = 0; i < hist.length; i++) {
      if (hist[i] && seen + hist[i] >= target) {
        const frac = (target - seen) / hist[i];
        const hi = bounds[i];
        const lo = i === 0 ? 0 : bounds[i - 1];
        return lo > 0 ? lo * Math.pow(hi / lo, frac) : hi * frac;
      }
      seen += hist[i];
    }
    return bounds[bounds.length - 1];
  }

  function binsDelta(now, before) {
    const out = {};
    for (const [k, v] of Object.entries(now || {})) {
      const b = before ? before[k] || 0 : 0;
      out[k] = v >= b ? v - b : v;
    }
    return out;
  }

  // per model: the series the plots draw, from the history of cumulative counters
  function seriesFor(name) {
    const times = [], rps = [], eps = [], p50 = [], p99 = [], queue = [];
    for (let i = 1; i < history.length; i++) {
      const now = history[i].stats[name];
      const prev = history[i - 1].stats[name];
      const dt = history[i].t - history[i - 1].t;
      if (!now || dt <= 0) continue;
      const back = history[Math.max(0, i - WINDOW)].stats[name];
      times.push(history[i].t);
      const requests = grown(now.requests, prev ? prev.requests : 0);
      rps.push(requests === null ? null : requests / dt);
      const errors = grown(total(now.statuses), prev ? total(prev.statuses) : 0);
      eps.push(errors === null ? null : errors / dt);
      const hist = histDelta(now.latency, back ? back.latency : null);
      const a = quantile(hist, 0.5), b = quantile(hist, 0.99);
      p50.push(a === null ? null : a * 1000);
      p99.push(b === null ? null : b * 1000);
      const queued = grown(now.queued, prev ? prev.queued : 0);
      const queueNs = grown(now.queue_ns, prev ? prev.queue_ns : 0);
      queue.push(queued ? queueNs / queued / 1e6 : null);
    }
    const latest = history.length ? history[history.length - 1].stats[name] : null;
    const older = history.length ? history[Math.max(0, history.length - 1 - WINDOW)].stats[name] : null;
    let batches = latest ? binsDelta(latest.batches, older && older !== latest ? older.batches : null) : {};
    let batchScope = "last " + WINDOW + " s";
    if (!total(batches) && latest) {
      batches = latest.batches || {};
      batchScope = "since start";
    }
    return { times, rps, eps, p50, p99, queue, batches, batchScope };
  }

  function fmt(value, unit) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    const digits = value >= 100 ? 0 : value >= 10 ? 1 : value >= 1 ? 2 : 3;
    return value.toFixed(digits) + (unit ? " " + unit : "");
  }

  const last = (values) => {
    for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
    return null;
  };

  // -- plots -----------------------------------------------------------------------
  function makeChart(metric, title, labels) {
    const now = el("span", { class: "now" });
    const polylines = labels.map((_, i) => svg("polyline", { class: "s" + i, points: "" }));
    const drawing = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
    drawing.setAttribute("aria-label", title);
    polylines.forEach((p) => drawing.append(p));
    const legend = el("div", { class: "legend" });
    labels.forEach((label, i) => legend.append(el("span", { class: "s" + i, text: (i ? " · " : "") + label })));
    const max = el("span");
    legend.append(max);
    const root = el("div", { class: "chart", "data-metric": metric },
      el("div", { class: "title" }, el("span", { text: title }), now), drawing, legend);
    return { root, now, max, drawing, polylines };
  }

  function drawLines(chart, times, seriesList, unit) {
    const tEnd = times.length ? times[times.length - 1] : 0;
    const span = Math.min(KEEP_SECONDS, Math.max(30, times.length ? tEnd - times[0] : 0));
    const tStart = tEnd - span;
    let max = 0;
    for (const values of seriesList) for (const v of values) if (v !== null && v > max) max = v;
    const top = max > 0 ? max * 1.1 : 1;
    seriesList.forEach((values, s) => {
      const points = [];
      values.forEach((v, i) => {
        if (v === null || times[i] < tStart) return;
        const x = ((times[i] - tStart) / span) * W;
        const y = H - (v / top) * (H - 4);
        points.push(x.toFixed(1) + "," + y.toFixed(1));
      });
      chart.polylines[s].setAttribute("points", points.join(" "));
    });
    const first = seriesList[0];
    chart.now.textContent = fmt(last(first), unit);
    chart.max.textContent = max > 0 ? ` — max ${fmt(max, unit)} over ${Math.round(span)} s` : "";
    const recent = first.slice(-10).map((v) => (v === null ? null : Math.round(v * 1000) / 1000));
    chart.root.setAttribute("data-values", JSON.stringify(recent));
    chart.root.setAttribute("data-last", last(first) === null ? "" : String(last(first)));
  }

  function makeBars(metric, title) {
    const now = el("span", { class: "now" });
    const drawing = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
    drawing.setAttribute("aria-label", title);
    const legend = el("div", { class: "legend" });
    const root = el("div", { class: "chart", "data-metric": metric },
      el("div", { class: "title" }, el("span", { text: title }), now), drawing, legend);
    return { root, now, drawing, legend };
  }

  function drawBars(chart, bins, scope) {
    const keys = Object.keys(bins).map(Number).sort((a, b) => a - b);
    const max = Math.max(1, ...keys.map((k) => bins[k]));
    chart.drawing.replaceChildren();
    const width = W / Math.max(keys.length, 1);
    keys.forEach((k, i) => {
      const h = (bins[k] / max) * (H - 4);
      chart.drawing.append(svg("rect", { x: i * width + 2, y: H - h, width: Math.max(width - 4, 1), height: h }));
    });
    const label = (k) => (k <= 2 ? String(k) : `${k / 2 + 1}-${k}`);
    chart.legend.textContent = keys.length ? keys.map((k) => `${label(k)}: ${bins[k]}`).join(" · ") : "no batches yet";
    chart.now.textContent = scope;
    chart.root.setAttribute("data-values", JSON.stringify(bins));
  }

  function card(name) {
    let found = cards.get(name);
    if (found) return found;
    const charts = {
      rps: makeChart("rps", "requests/s", ["requests/s", "errors/s"]),
      latency: makeChart("latency", "latency (ms)", ["p50", "p99"]),
      queue: makeChart("queue", "mean queue time (ms)", ["queue"]),
      batches: makeBars("batches", "batch sizes"),
    };
    const statuses = el("div", { class: "legend statuses" });
    const root = el("div", { class: "card", "data-model": name },
      el("h3", { text: name === UNKNOWN ? "(names not served)" : name }),
      el("div", { class: "charts" }, charts.rps.root, charts.latency.root, charts.queue.root, charts.batches.root),
      statuses);
    found = { root, charts, statuses };
    cards.set(name, found);
    $("cards").append(root);
    return found;
  }

  function drawCards(state) {
    const shown = new Set();
    const rows = state.models.map((m) => ({ name: m.name, ready: m.versions.some((v) => v.state === "READY") }));
    if (state.stats[UNKNOWN]) rows.push({ name: UNKNOWN, ready: false });
    for (const model of rows) {
      const counted = state.stats[model.name];
      if (!model.ready && !(counted && counted.requests > 0)) continue;
      shown.add(model.name);
      const s = seriesFor(model.name);
      const c = card(model.name);
      drawLines(c.charts.rps, s.times, [s.rps, s.eps], "");
      drawLines(c.charts.latency, s.times, [s.p50, s.p99], "ms");
      drawLines(c.charts.queue, s.times, [s.queue], "ms");
      drawBars(c.charts.batches, s.batches, s.batchScope);
      const stats = state.stats[model.name];
      const statuses = stats ? Object.entries(stats.statuses) : [];
      c.statuses.textContent = statuses.length
        ? "errors by status (since start): " + statuses.map(([k, v]) => `${k}: ${v}`).join(" · ")
        : "no errors";
    }
    for (const [name, c] of cards) {
      if (!shown.has(name)) {
        c.root.remove();
        cards.delete(name);
      }
    }
  }

  // -- the models table ---------------------------------------------------------
  function pill(state) {
    return el("span", { class: "pill " + state, text: state });
  }

  function workersText(workers, count) {
    const parts = Object.entries(workers || {});
    if (!parts.length) return "";
    if (parts.length === 1 && parts[0][1] === count) return `on ${count}/${count} workers`;
    return parts.map(([state, n]) => `${state} on ${n}`).join(", ") + ` of ${count} workers`;
  }

  function drawModels(state) {
    const management = state.server.management;
    const signature = JSON.stringify([management, state.server.workers, state.models, state.traffic]);
    if (signature !== lastSignature) {
      lastSignature = signature;
      const body = $("models");
      body.replaceChildren();
      for (const model of state.models) {
        const versions = model.versions.length ? model.versions : [{ version: "", state: "UNLOADED", reason: "" }];
        versions.forEach((v, i) => {
          const row = el("tr", { class: i === 0 ? "first" : "", "data-model": model.name, "data-version": v.version });
          row.append(el("td", { class: "name" }, i === 0 ? el("strong", { text: model.name }) : ""));
          row.append(el("td", { class: "version", text: v.version || "(none)" }));
          row.append(el("td", { class: "state" }, pill(v.state),
            el("span", { class: "by-worker", text: workersText(v.workers, state.server.workers) })));
          row.append(el("td", { class: v.state === "UNLOADED" ? "reason muted" : "reason", text: v.state === "READY" ? "" : v.reason || "" }));
          row.append(el("td", { class: "runtime", text: v.runtime || "" }));
          row.append(el("td", { class: "num load", text: v.load_seconds === null || v.load_seconds === undefined ? "" : fmt(v.load_seconds, "s") }));
          const isDefault = model.default_version !== null && model.default_version === v.version;
          const serving = model.serving !== null && model.serving === v.version;
          row.append(el("td", { class: "default", text: i === 0 ? (model.default_version ?? (model.serving !== null ? `newest (${model.serving || "-"})` : "")) : "" }));
          const labels = el("td", { class: "labels" });
          for (const [label, version] of Object.entries(model.labels || {})) {
            if (version === v.version) labels.append(el("span", { class: "tag", text: label }));
          }
          const routing = (state.traffic || {})[model.name];
          if (routing) {  // canary and shadow (PUT /v2/repository/models/{name}/traffic)
            const share = routing.traffic[v.version];
            if (share) labels.append(el("span", { class: "tag canary", text: `canary ${share} %` }));
            const shadow = routing.shadow;
            if (shadow && shadow.version === v.version) {
              const c = routing.shadow_stats || {};
              labels.append(el("span", { class: "tag shadow", text: `shadow ${shadow.percent} %: ${c.equal || 0} equal, ${c.different || 0} different, ${c.failed || 0} failed, ${c.dropped || 0} dropped` }));
            }
          }
          row.append(labels);
          for (const cls of ["requests", "rps", "p50", "p99", "errors"]) {
            row.append(el("td", { class: "num " + cls, text: i === 0 ? "" : "" }));
          }
          const actions = el("td", { class: "actions" });
          if (management) {
            if (i === 0) {
              if (model.loaded) {
                actions.append(el("button", { class: "danger", "data-action": "unload", onclick: () => act(`unload ${model.name}`, `/v2/repository/models/${encodeURIComponent(model.name)}/unload`) , text: "Unload" }));
              } else {
                actions.append(el("button", { "data-action": "load", onclick: () => act(`load ${model.name}`, `/v2/repository/models/${encodeURIComponent(model.name)}/load`), text: "Load" }));
              }
              if (model.default_version !== null) {
                actions.append(el("button", { "data-action": "clear-default", onclick: () => act(`newest by default for ${model.name}`, `/ui/api/models/${encodeURIComponent(model.name)}/default`, { version: null }), text: "Newest by default" }));
              }
            }
            if (model.loaded && v.state === "READY" && !isDefault && v.version) {
              actions.append(el("button", { "data-action": "set-default", onclick: () => act(`default ${model.name} → ${v.version}`, `/ui/api/models/${encodeURIComponent(model.name)}/default`, { version: v.version }), text: "Make default" }));
            }
          }
          if (serving) row.classList.add("serving");
          row.append(actions);
          body.append(row);
        });
      }
    }
    // the numbers change every second: written in place
    for (const row of $("models").querySelectorAll("tr.first")) {
      const name = row.getAttribute("data-model");
      const stats = state.stats[name];
      const s = seriesFor(name);
      const cell = (cls) => row.querySelector("td." + cls);
      cell("requests").replaceChildren();
      if (stats) {
        cell("requests").append(String(stats.requests));
        const parts = Object.entries(stats.by_worker).sort((a, b) => Number(a[0]) - Number(b[0]));
        cell("requests").append(el("span", { class: "by-worker", text: parts.map(([w, n]) => `w${w}: ${n}`).join(" · ") }));
      }
      cell("rps").textContent = stats ? fmt(last(s.rps)) : "";
      cell("p50").textContent = stats ? fmt(last(s.p50), "ms") : "";
      cell("p99").textContent = stats ? fmt(last(s.p99), "ms") : "";
      cell("errors").textContent = stats ? String(total(stats.statuses)) : "";
    }
  }

  // -- recent errors ------------------------------------------------------------
  function drawErrors(errors) {
    const key = JSON.stringify(errors.slice(0, 3));
    if (key === lastErrorsKey) return;
    lastErrorsKey = key;
    const body = $("errors");
    body.replaceChildren();
    for (const e of errors) {
      body.append(el("tr", {},
        el("td", { text: new Date(e.time * 1000).toLocaleTimeString() }),
        el("td", { text: e.model }),
        el("td", { text: e.version || "" }),
        el("td", { text: e.protocol }),
        el("td", { class: "num", text: String(e.status) }),
        el("td", { class: "message", text: e.message })));
    }
    $("no-errors").hidden = errors.length > 0;
    $("errors-table").hidden = errors.length === 0;
  }

  // -- the server ------------------------------------------------------------------
  function drawServer(state) {
    const server = state.server;
    $("server-name").textContent = server.name === "servekit" ? "" : server.name;
    $("server-version").textContent = server.version;
    const answered = server.answered.length;
    $("workers").textContent = `${server.workers} (pids ${Object.entries(server.pids).map(([w, p]) => `w${w}: ${p}`).join(", ")})` +
      (server.missing.length ? `; not answering: ${server.missing.map((w) => "w" + w).join(", ")}` : "");
    $("answered-by").textContent = `worker ${server.worker}`;
    const residency = server.residency;  // lazy loading (servekit.residency), summed over the workers
    $("residency-label").hidden = $("residency").hidden = !residency;
    if (residency) {
      const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;
      const budget = [residency.max_loaded_models && `${residency.max_loaded_models} models`,
        residency.max_loaded_bytes && mb(residency.max_loaded_bytes)].filter(Boolean).join(", ") || "none";
      $("residency").textContent = `${residency.loaded} (~${mb(residency.loaded_bytes)}; budget per worker: ${budget}); ` +
        `loaded on request ${residency.loads}, unloaded to make room ${residency.evictions}, failed ${residency.load_failures}`;
    }
    const up = Math.max(0, state.time - server.started);
    $("uptime").textContent = `${new Date(server.started * 1000).toLocaleString()} (${fmtDuration(up)})`;
    const listeners = $("listeners");
    listeners.replaceChildren(...(server.listeners || []).map((line) => el("li", { text: line })));
    $("skins").textContent = (server.skins || []).join(", ");
    $("management").textContent = server.management
      ? "on: load, unload and set-default need the management token"
      : "off: this page is read-only (start the server with a management token to manage models here)";
    $("manage").hidden = !server.management;
    const status = $("status");
    if (server.note) {
      status.dataset.state = "partial";
      status.textContent = server.note;
    } else if (server.missing.length) {
      status.dataset.state = "partial";
      status.textContent = `${answered}/${server.workers} workers answered`;
    } else {
      status.dataset.state = "live";
      status.textContent = `live · ${answered}/${server.workers} workers`;
    }
    $("window").textContent = `${WINDOW} s`;
  }

  function fmtDuration(seconds) {
    const s = Math.floor(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  // -- management ---------------------------------------------------------------
  async function act(label, url, body) {
    const result = $("action-result");
    const token = $("token").value;
    if (!token) {
      result.className = "bad";
      result.textContent = "Type the management token first.";
      return;
    }
    result.className = "";
    result.textContent = `${label}…`;
    try {
      const response = await fetch(url, {
        method: "POST",
        headers: { Authorization: "Bearer " + token, "Content-Type": "application/json", Accept: "application/json" },
        body: body === undefined ? "" : JSON.stringify(body),
      });
      let message = response.statusText;
      try {
        const data = await response.json();
        message = data.error || "";
      } catch (e) { /* not JSON */ }
      result.className = response.ok ? "ok" : "bad";
      result.textContent = response.ok ? `${label}: done` : `${label}: refused (${response.status}) ${message}`;
    } catch (e) {
      result.className = "bad";
      result.textContent = `${label}: ${e}`;
    }
    refresh();
  }

  // -- the loop ---------------------------------------------------------------------
  function update(state) {
    bounds = state.latency_bounds;
    history.push({ t: state.time, stats: state.stats });
    while (history.length > 2 && history[history.length - 1].t - history[0].t > KEEP_SECONDS + 5) history.shift();
    drawServer(state);
    drawModels(state);
    drawCards(state);
    drawErrors(state.errors);
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  }

  let busy = false;
  let again = false;

  async function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    clearTimeout(timer);
    try {
      const response = await fetch("/ui/api/state", { cache: "no-store", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      update(await response.json());
    } catch (e) {
      const status = $("status");
      status.dataset.state = "down";
      status.textContent = `cannot reach the server (${e.message || e}); retrying`;
    } finally {
      busy = false;
    }
    if (again) {
      again = false;
      refresh();
      return;
    }
    timer = setTimeout(refresh, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("manage").addEventListener("submit", (event) => event.preventDefault());
    refresh();
  });
})();
