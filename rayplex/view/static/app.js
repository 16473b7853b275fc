// rayplex view: the run table, one chart per tag, live polling. Plain ES module, no build step.
// Every name from the logdir is put into the page with textContent, never as HTML.
import uPlot from "/static/vendor/uplot/uPlot.esm.js";

const ROW = 22;            // px per run row (the list is virtual: only visible rows exist)
let BAND_ABOVE = 50;       // more selected runs: a band (min-max envelope + median): the server's
const POLL_MS = 2000;      // live polling, at most this often
const CHART_W = 550, CHART_H = 260;
const IN_FLIGHT = 2;       // chart requests at once: the first chart's answer waits for no other
const STATE_MARK = { running: "●", finished: "", silent: "◌ silent", crashed: "✖ crashed" };
const ALERTS_SHOWN = 200;
let HIGHLIGHT_MAX = 8;     // members drawn over a band at most: the server's (catalog.highlight_max)
const SUMMARY_SECTION = "summaries (store_metrics: mean ± std, min, max)";

const $ = (id) => document.getElementById(id);
const state = {
  catalog: null, version: null, runs: [], colors: new Map(), visible: [],
  selected: new Set(), pins: new Set(), xaxis: "step", walls: null, filter: "", group: "", zoom: null, smooth: 0, full: false, logy: false,
  paused: false,
};
const charts = new Map();  // tag -> {el, plot, answer, markers, seq}
const queue = { waiting: new Set(), running: 0 };  // charts to load, in page order
const view = { state, charts: {}, requests: 0, renders: 0, incremental: 0, previews: 0, stale: 0, paints: [], preview: null, ready: false, error: null };
window.__rayplexView = view;

// ----------------------------------------------------------------------------- helpers

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function colorOf(index) {
  return `hsl(${(index * 137.508) % 360}, 65%, 45%)`;
}

async function getJSON(url, body) {
  view.requests += 1;
  const init = body === undefined ? {} : {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body)};
  const response = await fetch(url, init);
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

function filterRegex() {
  try { return state.filter ? new RegExp(state.filter, "i") : null; }
  catch (e) { return /$^/; }
}

function applyFilter() {
  const re = filterRegex();
  state.visible = state.runs.filter((r) =>
    (!state.group || r.group === state.group) && (!re || re.test(r.run)));
  $("filter").classList.toggle("bad", re !== null && re.source === "$^");
}

function selectedRuns() {
  return state.runs.filter((r) => state.selected.has(r.run)).map((r) => r.run);
}

// ----------------------------------------------------------------------------- URL state

function writeURL() {
  const p = new URLSearchParams();
  if (state.filter) p.set("filter", state.filter);
  if (state.group) p.set("group", state.group);
  const sel = selectedRuns();
  const visible = state.visible.map((r) => r.run);
  if (sel.length === visible.length && visible.every((r) => state.selected.has(r))) p.set("sel", "*");
  else p.set("sel", sel.join("\n"));
  if (state.zoom) p.set("zoom", state.zoom.join(","));
  if (state.pins.size) p.set("pin", [...state.pins].join("\n"));
  if (state.xaxis !== "step") p.set("x", state.xaxis);
  if (state.smooth) p.set("smooth", String(state.smooth));
  if (state.full) p.set("full", "1");
  if (state.logy) p.set("logy", "1");
  history.replaceState(null, "", "#" + p.toString());
}

function readURL() {
  const p = new URLSearchParams(location.hash.slice(1));
  state.filter = p.get("filter") || "";
  state.group = p.get("group") || "";
  const zoom = (p.get("zoom") || "").split(",").map(Number);
  state.zoom = zoom.length === 2 && zoom.every(Number.isFinite) ? zoom : null;
  state.smooth = Math.min(0.99, Math.max(0, Number(p.get("smooth")) || 0));
  state.full = p.get("full") === "1";
  state.logy = p.get("logy") === "1";
  state.xaxis = ["wall", "relative"].includes(p.get("x")) ? p.get("x") : "step";
  state.pins = new Set((p.get("pin") || "").split("\n").filter(Boolean).slice(0, HIGHLIGHT_MAX));
  return p.has("sel") ? p.get("sel") : "*";
}

// ----------------------------------------------------------------------------- run table

function renderRows() {
  const list = $("runlist");
  $("runspacer").style.height = `${state.visible.length * ROW}px`;
  const first = Math.max(0, Math.floor(list.scrollTop / ROW) - 5);
  const last = Math.min(state.visible.length, first + Math.ceil(list.clientHeight / ROW) + 10);
  const rows = $("runrows");
  rows.style.transform = `translateY(${first * ROW}px)`;
  rows.replaceChildren();
  for (let i = first; i < last; i++) {
    const run = state.visible[i];
    const row = el("div", "run");
    row.dataset.index = String(i);
    const box = el("input");
    box.type = "checkbox";
    box.checked = state.selected.has(run.run);
    const swatch = el("span", "swatch");
    swatch.style.background = state.colors.get(run.run);
    const name = el("span", "name", run.run);
    name.title = run.run;
    const step = el("span", "step", run.last_step);
    step.title = `last step ${run.last_step}, last point ${new Date(run.last_wall_time * 1000).toLocaleString()}`;
    const st = el("span", `state state-${run.state}`, STATE_MARK[run.state] ?? "");
    st.title = run.alert ? `${run.state}; last alert: ${run.alert.rule}: ${run.alert.message}` : run.state;
    const pin = el("span", state.pins.has(run.run) ? "pin on" : "pin", state.pins.has(run.run) ? "★" : "☆");
    pin.title = "draw this run over the band (at most " + HIGHLIGHT_MAX + ")";
    pin.addEventListener("click", (event) => {
      event.stopPropagation();
      if (state.pins.has(run.run)) state.pins.delete(run.run);
      else if (state.pins.size < HIGHLIGHT_MAX) state.pins.add(run.run);
      renderRows();
      writeURL();
      for (const c of charts.values()) if (c.answer && c.answer.mode === "band") load(c);
    });
    row.append(box, swatch, pin, name, step, st);
    row.addEventListener("click", () => {
      if (state.selected.has(run.run)) state.selected.delete(run.run);
      else state.selected.add(run.run);
      selectionChanged();
    });
    rows.append(row);
  }
  $("count").textContent = `${state.visible.length} of ${state.runs.length} runs shown, ${state.selected.size} selected`;
}

function selectionChanged() {
  renderRows();
  writeURL();
  refreshCharts();
}

// ----------------------------------------------------------------------------- charts

function sectionOf(tag) {
  const cut = tag.indexOf("/");
  return cut > 0 ? tag.slice(0, cut) : "";
}

function layoutCharts() {
  const root = $("charts");
  root.replaceChildren();
  for (const c of charts.values()) if (c.plot) c.plot.destroy();
  charts.clear();
  view.charts = {};
  const sections = new Map();
  // store_metrics summaries first: one chart per (summary run, key), mean ± std and min/max.
  const summaryRuns = state.runs.filter((r) => r.run.endsWith("/summary")).map((r) => r.run);
  for (const s of state.catalog.summaries || []) {
    for (const run of s.runs || summaryRuns) {
      if (!sections.has(SUMMARY_SECTION)) sections.set(SUMMARY_SECTION, []);
      sections.get(SUMMARY_SECTION).push({ id: `summary:${run}:${s.key}`, title: `${s.key} · ${run}`, summary: { run, key: s.key } });
    }
  }
  for (const t of state.catalog.tags) {
    const name = sectionOf(t.tag);
    if (!sections.has(name)) sections.set(name, []);
    sections.get(name).push({ id: t.tag, title: t.tag, summary: null });
  }
  const observer = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const chart = charts.get(e.target.dataset.tag);
      if (chart) { chart.shown = e.isIntersecting; if (chart.shown && !chart.answer) enqueue(chart); }
    }
  }, { root: document.querySelector("main"), rootMargin: "300px" });
  for (const [name, tags] of sections) {
    const section = el("section", "tags");
    section.append(el("h2", null, name || "(no section)"));
    const grid = el("div", "grid");
    for (const { id: tag, title: text, summary } of tags) {
      const box = el("div", summary ? "chart summary" : "chart");
      box.dataset.tag = tag;
      const title = el("div", "title", text);
      title.title = text;
      const note = el("div", "note");
      const plotBox = el("div", "plot");
      const hover = el("div", "hover");
      box.append(title, note, plotBox, hover);
      grid.append(box);
      const chart = { tag, summary, box, note, plotBox, hover, plot: null, answer: null, highlight: null, seq: 0, pending: 0, stage: null, shown: false };
      charts.set(tag, chart);
      observer.observe(box);
    }
    section.append(grid);
    root.append(section);
  }
}

function enqueue(chart) {
  // Charts load in page order, at most IN_FLIGHT at once: the first chart in view is the
  // first answer, not one of many read side by side.
  queue.waiting.add(chart);
  pump();
}

function pump() {
  while (queue.running < IN_FLIGHT && queue.waiting.size) {
    const next = [...charts.values()].find((c) => queue.waiting.has(c)) || queue.waiting.values().next().value;
    queue.waiting.delete(next);
    queue.running += 1;
    const done = () => { queue.running -= 1; pump(); };
    (next.shown ? load(next) : Promise.resolve()).then(done, done);
  }
}

async function refreshCharts(first = null) {
  // Every chart again (x ranges are synced: a zoom applies to every chart); the chart the
  // user zoomed first, alone, then the others in view: its repaint waits for no other read.
  for (const chart of charts.values()) chart.answer = null;
  queue.waiting.clear();
  if (first) await load(first);
  for (const chart of charts.values()) if (chart !== first && chart.shown && !chart.answer) enqueue(chart);
}

async function load(chart) {
  const runs = selectedRuns();
  const seq = ++chart.seq;
  chart.pending = 0;
  if (chart.summary && !state.selected.has(chart.summary.run)) {
    if (chart.plot) { chart.plot.destroy(); chart.plot = null; }
    chart.answer = null;
    chart.note.textContent = `${chart.summary.run} not selected`;
    return;
  }
  if (!runs.length) {
    if (chart.plot) { chart.plot.destroy(); chart.plot = null; }
    chart.note.textContent = "no run selected";
    return;
  }
  const all = runs.length === state.runs.length;
  const band = runs.length > BAND_ABOVE;
  const steps = state.zoom;
  const request = (buckets) => {
    const r = chart.summary
      ? { summary: true, run: chart.summary.run, key: chart.summary.key, buckets, steps }
      : { tag: chart.tag, runs: all ? null : runs, buckets, steps, band };
    if (band && !chart.summary) r.highlight = pinned();
    return r;
  };
  // Progressive: a coarse answer first (few pyramid rows: painted at once), then the chart's
  // full width; each one exact M4 at its own buckets. A newer load (a zoom, a selection)
  // bumps chart.seq: an older stage arriving later is dropped, never painted over it.
  const stages = [];
  chart.pending = seq;
  const coarse = coarseBuckets(chart);
  if (coarse) stages.push(coarse);
  stages.push(state.catalog.buckets);
  for (const buckets of stages) {
    try {
      const answer = await getJSON("/api/series", request(buckets));
      if (seq !== chart.seq) { view.stale += 1; return; }  // a newer request is on its way
      chart.highlight = band ? highlights(answer) : null;
      chart.answer = answer;
      chart.stage = buckets === state.catalog.buckets ? "full" : "coarse";
      draw(chart);
    } catch (err) {
      if (seq !== chart.seq) return;
      chart.note.textContent = `error: ${err.message}`;
      view.error = String(err);
      break;
    }
  }
  if (chart.pending === seq) chart.pending = 0;
}

function coarseBuckets(chart) {
  // The first stage's buckets, or 0 for none: a summary (one run: cheap), or a span so short
  // that the coarse buckets would be raw points too (the server's api.coarse_first rule).
  if (chart.summary) return 0;
  const cat = state.catalog;
  const info = cat.tags.find((t) => t.tag === chart.tag);
  const [lo, hi] = state.zoom || (info ? [info.first_step, info.last_step] : [0, 0]);
  const coarse = state.zoom ? cat.zoom_coarse_buckets : cat.coarse_buckets;
  if (!coarse || coarse >= cat.buckets) return 0;
  return Math.ceil((hi - lo + 1) / coarse) >= cat.pyramid_base ? coarse : 0;
}

function pinned() {
  // The members drawn over a band besides its extremes: the pinned ones that are selected.
  return [...state.pins].filter((r) => state.selected.has(r)).slice(0, HIGHLIGHT_MAX);
}

function highlights(answer) {
  // A band's answer carries the lines of the pinned members and of its extremes (highest and
  // lowest last value), read with it.
  return answer.lines && answer.lines.length ? { runs: answer.lines } : null;
}

const RUN_KEYS = ["step_lo", "step_hi", "first", "last", "min", "max", "count"];
const BAND_KEYS = ["x", "step_hi", "min", "max", "median", "runs"];

function cutAt(columns, keys, position, cut, width) {
  // The rows of `columns` whose output bucket is before `cut` (their step / width).
  const keep = position.map((step, i) => (Math.floor(step / width) < cut ? i : -1)).filter((i) => i >= 0);
  const out = {};
  for (const k of keys) out[k] = keep.map((i) => columns[k][i]);
  return out;
}

async function update(chart) {
  // Live: fetch only the buckets from the last one seen on, and merge them in.
  const old = chart.answer;
  const runs = selectedRuns();
  if (chart.pending) return;  // a load's stages are under way: its full answer is the newest
  if (chart.stage === "coarse") return load(chart);  // its full stage failed: load again
  if (!old || chart.summary || state.zoom || !old.width || !runs.length || (old.mode === "band") !== (runs.length > BAND_ABOVE)) return load(chart);
  const lasts = old.mode === "band" ? [old.x[old.x.length - 1]] : old.runs.map((r) => r.step_lo[r.step_lo.length - 1]);
  const since = Math.min(...lasts.filter((v) => v !== undefined));
  if (!Number.isFinite(since)) return load(chart);
  const all = runs.length === state.runs.length;
  const request = { tag: chart.tag, runs: all ? null : runs, buckets: old.buckets, steps: null, band: old.mode === "band", since };
  if (request.band) request.highlight = pinned();
  const seq = ++chart.seq;
  let answer;
  try { answer = await getJSON("/api/series", request); } catch (err) { return load(chart); }
  if (seq !== chart.seq) return;
  if (answer.since === null) { chart.answer = answer; draw(chart); return; }
  if (answer.width !== old.width) return load(chart);
  const cut = Math.floor(answer.since / answer.width);
  const mergeRuns = (oldRuns, newRuns) => {
    const fresh = new Map(newRuns.map((r) => [r.run, r]));
    const mergedRuns = oldRuns.map((r) => {
      const kept = { run: r.run, ...cutAt(r, RUN_KEYS, r.step_lo, cut, old.width) };
      const add = fresh.get(r.run);
      fresh.delete(r.run);
      if (add) for (const k of RUN_KEYS) kept[k] = kept[k].concat(add[k]);
      return kept;
    });
    return mergedRuns.concat([...fresh.values()]);
  };
  let merged;
  if (old.mode === "band") {
    merged = { ...answer, ...cutAt(old, BAND_KEYS, old.x, cut, old.width) };
    for (const k of BAND_KEYS) merged[k] = merged[k].concat(answer[k]);
    // The members on top: the same ones (their new buckets merged in), else read again.
    const same = (a, b) => a.map((r) => r.run).join("\n") === b.map((r) => r.run).join("\n");
    if (!same(old.lines || [], answer.lines || [])) return load(chart);
    merged.lines = mergeRuns(old.lines || [], answer.lines || []);
    chart.highlight = highlights(merged);
  } else {
    merged = { ...answer, runs: mergeRuns(old.runs, answer.runs) };
  }
  merged.since = null;
  view.incremental += 1;
  chart.answer = merged;
  draw(chart);
}

function updateCharts() {
  for (const chart of charts.values()) {
    if (chart.shown) update(chart); else chart.answer = null;
  }
}

function ema(values, weight) {
  // TensorBoard's debiased exponential moving average; nulls stay null.
  const out = new Array(values.length);
  let last = 0, n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || v === undefined) { out[i] = null; continue; }
    last = last * weight + (1 - weight) * v;
    n += 1;
    out[i] = last / (1 - Math.pow(weight, n));
  }
  return out;
}

function linesData(answer) {
  // M4 buckets drawn as first -> min -> max -> last within the bucket's step span.
  const xs = new Set();
  const points = answer.runs.map((r) => {
    const pts = [];
    for (let i = 0; i < r.step_lo.length; i++) {
      const lo = r.step_lo[i], hi = r.step_hi[i], c = r.count[i];
      if (c <= 1 || hi === lo) { pts.push([lo, r.last[i]]); continue; }
      pts.push([lo, r.first[i]]);
      if (c > 2) {
        const minFirst = true;
        const a = lo + (hi - lo) / 3, b = lo + 2 * (hi - lo) / 3;
        pts.push([a, minFirst ? r.min[i] : r.max[i]], [b, minFirst ? r.max[i] : r.min[i]]);
      }
      pts.push([hi, r.last[i]]);
    }
    for (const [x] of pts) xs.add(x);
    return pts;
  });
  const x = Float64Array.from(xs).sort();
  const at = new Map();
  x.forEach((v, i) => at.set(v, i));
  const ys = points.map((pts) => {
    const y = new Array(x.length).fill(null);
    for (const [px, py] of pts) y[at.get(px)] = py;
    return y;
  });
  return { x, ys };
}

function yRange(answer) {
  const r = answer.range;
  if (!r || !r.full) return null;
  return state.full ? r.full : r.robust;
}

function outliers(answer) {
  // Buckets whose max (or min) is outside the shown range: marked at the chart's edge.
  const range = yRange(answer);
  const marks = [];
  if (!range) return marks;
  const [lo, hi] = range;
  const add = (x0, x1, mn, mx, run = null) => {
    if (mx !== null && mx > hi) marks.push({ x: (x0 + x1) / 2, edge: "top", value: mx, run });
    if (mn !== null && mn < lo) marks.push({ x: (x0 + x1) / 2, edge: "bottom", value: mn, run });
  };
  if (answer.mode === "band") {
    for (let i = 0; i < answer.x.length; i++) add(answer.x[i], answer.step_hi[i], answer.min[i], answer.max[i]);
  } else {
    for (const r of answer.runs) for (let i = 0; i < r.step_lo.length; i++) add(r.step_lo[i], r.step_hi[i], r.min[i], r.max[i], r.run);
  }
  return marks;
}

// ----------------------------------------------------------------------------- x in time

async function loadWalls() {
  // Each run's step -> wall-time anchors (server: once per store version), for a time x-axis.
  if (state.xaxis === "step") return;
  const answer = await getJSON("/api/walltimes");
  const walls = new Map();
  const last = new Map(state.runs.map((r) => [r.run, r]));
  for (const [run, a] of Object.entries(answer.runs)) {
    const steps = a.step.slice(), times = a.wall.slice();
    const r = last.get(run);  // the catalog's last point extends a live run past the anchors
    if (r && r.last_wall_time !== null && r.last_step > steps[steps.length - 1]) { steps.push(r.last_step); times.push(r.last_wall_time); }
    walls.set(run, { steps, times });
  }
  state.walls = walls;
}

function wallOf(run, step) {
  // Linear between the run's anchors (exact at them); null for a run without anchors.
  const w = state.walls && state.walls.get(run);
  if (!w || !w.steps.length) return null;
  const { steps, times } = w;
  if (step <= steps[0]) return times[0];
  const n = steps.length - 1;
  if (step >= steps[n]) return times[n];
  let lo = 0, hi = n;
  while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (steps[mid] <= step) lo = mid; else hi = mid; }
  const f = (step - steps[lo]) / ((steps[hi] - steps[lo]) || 1);
  return times[lo] + f * (times[hi] - times[lo]);
}

function xOf(run, step) {
  if (state.xaxis === "step") return step;
  const wall = wallOf(run, step);
  if (wall === null) return null;
  return state.xaxis === "wall" ? wall : wall - state.walls.get(run).times[0];
}

function bandXOf(step) {
  // A band's bucket in time: the median over (up to 25 of) its members' times at that step.
  const runs = selectedRuns();
  const every = Math.max(1, Math.floor(runs.length / 25));
  const values = [];
  for (let i = 0; i < runs.length; i += every) { const v = xOf(runs[i], step); if (v !== null) values.push(v); }
  if (!values.length) return null;
  values.sort((a, b) => a - b);
  return values[(values.length - 1) >> 1];
}

function inTime(layers) {
  // Layers on one time axis: each point's step mapped to its run's time, snapped to a grid
  // of 4 slots per pixel (a slot keeps the value farthest from its series' median: a spike
  // stays); each slot remembers its steps (hover, zoom).
  const mapped = layers.map((l) => Array.from(l.x, (step) => (l.run === null ? bandXOf(step) : xOf(l.run, step))));
  let lo = Infinity, hi = -Infinity;
  for (const xs of mapped) for (const v of xs) if (v !== null) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (lo === Infinity) return { x: new Float64Array(0), ys: layers.map(() => []), steps: [] };
  const q = (hi - lo) / (4 * CHART_W) || 1;
  const slotsSet = new Set();
  for (const xs of mapped) for (const v of xs) if (v !== null) slotsSet.add(Math.round((v - lo) / q));
  const slots = Int32Array.from(slotsSet).sort();
  const at = new Map();
  slots.forEach((v, i) => at.set(v, i));
  const steps = Array.from(slots, () => [Infinity, -Infinity]);
  const ys = layers.map((l, k) => {
    const finite = l.y.filter((v) => v !== null).sort((a, b) => a - b);
    const mid = finite.length ? finite[finite.length >> 1] : 0;
    const y = new Array(slots.length).fill(null);
    mapped[k].forEach((v, i) => {
      if (v === null) return;
      const j = at.get(Math.round((v - lo) / q));
      const s = steps[j];
      s[0] = Math.min(s[0], l.x[i]); s[1] = Math.max(s[1], l.x[i]);
      const value = l.y[i];
      if (value !== null && (y[j] === null || Math.abs(value - mid) > Math.abs(y[j] - mid))) y[j] = value;
    });
    return y;
  });
  return { x: Float64Array.from(slots, (v) => lo + v * q), ys, steps };
}

function stepAt(chart, u, idx) {
  // The step under the cursor: the x itself, or in time the last step of its slot.
  return chart.slotSteps ? chart.slotSteps[idx][1] : u.data[0][idx];
}

function combine(parts) {
  // Layers with x arrays of their own on one x axis: the union of their x, nulls elsewhere.
  const xs = new Set();
  for (const p of parts) for (const v of p.x) xs.add(v);
  const x = Float64Array.from(xs).sort();
  const at = new Map();
  x.forEach((v, i) => at.set(v, i));
  const ys = [];
  for (const p of parts) {
    if (p.x.length === x.length) { ys.push(...p.ys); continue; }
    for (const src of p.ys) {
      const y = new Array(x.length).fill(null);
      p.x.forEach((v, i) => { y[at.get(v)] = src[i]; });
      ys.push(y);
    }
  }
  return { x, ys };
}

function lineSeries(answer, data, series, width) {
  // One uPlot series per run (and its EMA over the faint raw line when smoothing).
  const { x, ys } = linesData(answer);
  answer.runs.forEach((r, i) => {
    const color = state.colors.get(r.run) || "#888";
    if (state.smooth) {
      data.push({ x, y: ys[i], run: r.run });
      series.push({ label: r.run, stroke: color, width: 1, alpha: 0.25 });
      data.push({ x, y: ema(ys[i], state.smooth), run: r.run });
      series.push({ label: r.run, stroke: color, width: width + 0.25 });
    } else {
      data.push({ x, y: ys[i], run: r.run });
      series.push({ label: r.run, stroke: color, width });
    }
  });
}

function draw(chart) {
  const answer = chart.answer;
  const range = yRange(answer);
  const marks = answer.mode === "summary" ? [] : outliers(answer);
  const layers = [];  // {x, y} per uPlot series
  let series, bands;
  if (answer.mode === "band") {
    const median = state.smooth ? ema(answer.median, state.smooth) : answer.median;
    for (const y of [answer.min, answer.max, median]) layers.push({ x: answer.x, y, run: null });
    series = [{}, { label: "min", stroke: "rgba(40,90,200,0.35)", width: 1 },
      { label: "max", stroke: "rgba(40,90,200,0.35)", width: 1 },
      { label: "median", stroke: "rgb(20,60,160)", width: 1.5 }];
    bands = [{ series: [2, 1], fill: "rgba(40,90,200,0.15)" }];
    // Highlighted members (pinned in the table, and the extremes) drawn over the band.
    if (chart.highlight) lineSeries(chart.highlight, layers, series, 1.5);
  } else if (answer.mode === "summary") {
    const lo = answer.mean.map((m, i) => (m === null || answer.std[i] === null ? null : m - answer.std[i]));
    const hi = answer.mean.map((m, i) => (m === null || answer.std[i] === null ? null : m + answer.std[i]));
    const mean = state.smooth ? ema(answer.mean, state.smooth) : answer.mean;
    for (const y of [lo, hi, mean]) layers.push({ x: answer.x, y, run: answer.run });
    series = [{}, { label: "mean - std", stroke: "rgba(200,90,40,0.45)", width: 1 },
      { label: "mean + std", stroke: "rgba(200,90,40,0.45)", width: 1 },
      { label: "mean", stroke: "rgb(170,60,20)", width: 1.75 }];
    bands = [{ series: [2, 1], fill: "rgba(200,90,40,0.15)" }];
    for (const stat of ["min", "max"]) if (answer[stat]) {
      layers.push({ x: answer.x, y: answer[stat], run: answer.run });
      series.push({ label: stat, stroke: "rgba(120,120,120,0.8)", width: 1, dash: [4, 3] });
    }
  } else {
    series = [{}];
    lineSeries(answer, layers, series, 1.25);
  }
  let merged;
  chart.slotSteps = null;
  if (state.xaxis === "step" || !state.walls) {
    const parts = [];
    for (const layer of layers) {
      const last = parts[parts.length - 1];
      if (last && last.x === layer.x) last.ys.push(layer.y); else parts.push({ x: layer.x, ys: [layer.y] });
    }
    merged = combine(parts);
  } else {
    merged = inTime(layers);
    chart.slotSteps = merged.steps;
    for (const m of marks) m.x = m.run ? xOf(m.run, m.x) : bandXOf(m.x);
  }
  const data = [merged.x, ...merged.ys];
  for (const s of series.slice(1)) { s.spanGaps = true; s.points = { show: false }; }
  const opts = {
    width: CHART_W, height: CHART_H, legend: { show: false },
    axes: [{ label: { step: "step", wall: "wall time", relative: "seconds since the run's first point" }[state.xaxis], labelSize: 14, labelFont: "12px system-ui" }, {}],
    scales: { x: { time: state.xaxis === "wall" && !!state.walls }, y: {
      distr: state.logy ? 3 : 1,
      range: (u, dmin, dmax) => range && !state.logy ? [range[0] - 1e-9 * Math.abs(range[0]), range[1] + 1e-9 * Math.abs(range[1])] : [dmin, dmax],
    } },
    cursor: { drag: { x: true, y: false, setScale: false }, focus: { prox: 20 } },
    focus: { alpha: 0.35 },
    series, bands,
    hooks: {
      draw: [(u) => drawMarks(u, marks)],
      setSelect: [(u) => zoomTo(u, chart)],
      setCursor: [(u) => hoverText(chart, u)],
    },
  };
  if (chart.plot) chart.plot.destroy();
  chart.plotBox.replaceChildren();
  chart.plot = new uPlot(opts, data, chart.plotBox);
  chart.plot.over.addEventListener("dblclick", () => { if (state.zoom) { state.zoom = null; writeURL(); refreshCharts(chart); } });
  const onTop = chart.highlight && answer.mode === "band" ? chart.highlight.runs.map((r) => r.run) : [];
  const n = answer.mode === "band" ? `band of ${answer.members} runs (min-max, median)${onTop.length ? `, ${onTop.length} on top` : ""}`
    : answer.mode === "summary" ? `${answer.run}: mean ± std, min and max (store_metrics)` : `${answer.runs.length} runs`;
  chart.note.replaceChildren(el("span", null, `${n}${marks.length ? `, ${marks.length} bucket${marks.length > 1 ? "s" : ""} beyond the range (▲▼)` : ""}`));
  if (answer.range && answer.range.clipped) {
    const button = el("button", "full", state.full ? "robust range" : "full range");
    button.type = "button";
    button.addEventListener("click", () => setFull(!state.full));
    chart.note.prepend(button);  // first: a long note cannot push it out of sight
  }
  chart.note.title = onTop.length ? `on top: ${onTop.join(", ")}` : "";
  let max = null, argmax = null;
  const consider = (v, lo, hi) => { if (v !== null && (max === null || v > max)) { max = v; argmax = [lo, hi]; } };
  if (answer.mode === "band") answer.max.forEach((v, i) => consider(v, answer.x[i], answer.step_hi[i]));
  else if (answer.mode === "summary") (answer.max || answer.mean).forEach((v, i) => consider(v, answer.x[i], answer.x[i]));
  else for (const r of answer.runs) r.max.forEach((v, i) => consider(v, r.step_lo[i], r.step_hi[i]));
  view.charts[chart.tag] = { mode: answer.mode, answer, marks, max, argmax, yRange: range,
    highlight: chart.highlight ? chart.highlight.runs.map((r) => r.run) : [], series: series.length - 1,
    xaxis: chart.slotSteps ? state.xaxis : "step", xSpan: [data[0][0], data[0][data[0].length - 1]],
    shownScale: [chart.plot.scales.y.min, chart.plot.scales.y.max], stage: chart.stage || "full" };
  // Every paint in order (tests and the benchmark read the stages): the last 200.
  view.paints.push({ tag: chart.tag, stage: chart.stage || "full", buckets: answer.buckets, width: answer.width,
    steps: answer.steps, max, argmax, at: performance.now() });
  if (view.paints.length > 200) view.paints.shift();
  view.renders += 1;
}

function drawMarks(u, marks) {
  const ctx = u.ctx;
  ctx.save();
  ctx.fillStyle = "#d1242f";
  const s = 5 * devicePixelRatio;
  for (const m of marks) {
    const x = u.valToPos(m.x, "x", true);
    if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
    const y = m.edge === "top" ? u.bbox.top : u.bbox.top + u.bbox.height;
    const d = m.edge === "top" ? s : -s;
    ctx.beginPath();
    ctx.moveTo(x - s / 2, y + d);
    ctx.lineTo(x + s / 2, y + d);
    ctx.lineTo(x, y);
    ctx.closePath();
    ctx.fill();
  }
  ctx.restore();
}

function zoomTo(u, chart) {
  if (u.select.width < 3) return;
  let lo = Math.floor(u.posToVal(u.select.left, "x"));
  let hi = Math.ceil(u.posToVal(u.select.left + u.select.width, "x"));
  const x0 = u.posToVal(u.select.left, "x"), x1 = u.posToVal(u.select.left + u.select.width, "x");
  if (chart.slotSteps) {  // x is time: the steps of the slots selected
    lo = Infinity; hi = -Infinity;
    u.data[0].forEach((v, i) => { if (v >= x0 && v <= x1) { lo = Math.min(lo, chart.slotSteps[i][0]); hi = Math.max(hi, chart.slotSteps[i][1]); } });
    if (!Number.isFinite(lo)) return;
  }
  u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
  if (hi <= lo) return;
  state.zoom = [lo, hi];
  writeURL();
  preview(chart, [x0, x1]);
  refreshCharts(chart);
}

function preview(chart, [x0, x1]) {
  // At once, before the finer buckets come: the charts' x-scale cut to the zoom, drawn from
  // the buckets they have (coarser, still exact: each one's min and max).
  const [lo, hi] = state.zoom;
  for (const c of charts.values()) {
    if (!c.plot) continue;
    if (c.slotSteps) {  // x is time: only the zoomed chart, by the selected pixels
      if (c !== chart) continue;
      c.plot.setScale("x", { min: x0, max: x1 });
    } else c.plot.setScale("x", { min: lo, max: hi });
  }
  view.previews += 1;
  view.preview = [lo, hi];
}

function hoverText(chart, u) {
  const idx = u.cursor.idx;
  const answer = chart.answer;
  if (idx === null || idx === undefined || !answer) { chart.hover.textContent = ""; return; }
  const x = stepAt(chart, u, idx);
  if (answer.mode === "band" || answer.mode === "summary") {
    let i = -1;
    while (i + 1 < answer.x.length && answer.x[i + 1] <= x) i += 1;
    if (i < 0) { chart.hover.textContent = ""; return; }
    chart.hover.textContent = answer.mode === "band"
      ? `step ${answer.x[i]}-${answer.step_hi[i]}: median ${fmt(answer.median[i])}, min ${fmt(answer.min[i])}, max ${fmt(answer.max[i])}, ${answer.runs[i]} runs`
      : `step ${answer.x[i]}: mean ${fmt(answer.mean[i])} ± ${fmt(answer.std[i])}${answer.min ? `, min ${fmt(answer.min[i])}` : ""}${answer.max ? `, max ${fmt(answer.max[i])}` : ""}`;
    return;
  }
  const top = u.posToVal(u.cursor.top, "y");
  let best = null;
  for (const r of answer.runs) {
    for (let i = 0; i < r.step_lo.length; i++) {
      if (r.step_lo[i] <= x && x <= r.step_hi[i]) {
        const d = Math.abs((r.last[i] ?? Infinity) - top);
        if (!best || d < best.d) best = { d, r, i };
        break;
      }
    }
  }
  if (!best) { chart.hover.textContent = ""; return; }
  const { r, i } = best;
  const span = r.count[i] > 1 ? ` (bucket ${r.step_lo[i]}-${r.step_hi[i]}: min ${fmt(r.min[i])}, max ${fmt(r.max[i])})` : "";
  chart.hover.textContent = `${r.run} step ${r.step_hi[i]}: ${fmt(r.last[i])}${span}`;
}

function fmt(v) {
  return v === null || v === undefined ? "—" : Number(v).toPrecision(6);
}

function setFull(full) {
  state.full = full;
  $("full").checked = full;
  writeURL();
  for (const c of charts.values()) if (c.answer) draw(c);
}

// ----------------------------------------------------------------------------- catalog, live

async function loadCatalog() {
  const catalog = await getJSON("/api/catalog");
  const first = state.catalog === null;
  const tagsBefore = state.catalog ? state.catalog.tags.map((t) => t.tag).join("\n") : null;
  state.catalog = catalog;
  state.version = catalog.version;
  HIGHLIGHT_MAX = catalog.highlight_max;
  BAND_ABOVE = catalog.band_above;
  const known = new Set(state.runs.map((r) => r.run));
  const selectionBefore = [...state.selected].join("\n");
  state.runs = catalog.runs;
  catalog.runs.forEach((r, i) => state.colors.set(r.run, colorOf(i)));
  $("logdir").textContent = catalog.logdir;
  const groups = [...new Set(catalog.runs.map((r) => r.group))];
  const groupSelect = $("group");
  const chosen = state.group;
  groupSelect.replaceChildren(el("option", null, "all groups"));
  groupSelect.firstChild.value = "";
  for (const g of groups) { const o = el("option", null, g); o.value = g; groupSelect.append(o); }
  groupSelect.value = chosen;
  if (first) {
    const sel = readURL();
    $("filter").value = state.filter;
    groupSelect.value = state.group;
    $("smooth").value = String(state.smooth);
    $("smooth-value").textContent = String(state.smooth);
    $("full").checked = state.full;
    $("logy").checked = state.logy;
    $("xaxis").value = state.xaxis;
    applyFilter();
    if (sel === "*") state.visible.forEach((r) => state.selected.add(r.run));
    else for (const name of sel.split("\n")) if (name) state.selected.add(name);
  } else {
    applyFilter();
    // New runs join the selection when every visible run was selected.
    for (const r of state.runs) if (!known.has(r.run) && selectedRuns().length >= known.size) state.selected.add(r.run);
  }
  renderRows();
  if (state.xaxis !== "step") await loadWalls();
  if (first || tagsBefore !== catalog.tags.map((t) => t.tag).join("\n")) layoutCharts();
  else if (selectionBefore === [...state.selected].join("\n")) updateCharts();
  else refreshCharts();
  writeURL();
}

async function poll() {
  if (!state.paused) {
    try {
      const { version } = await getJSON("/api/version");
      if (version !== state.version) {
        await loadCatalog();
        await loadAlerts();
        if ($("params").open) await loadParams();
      }
      $("status").textContent = `live · ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      $("status").textContent = `offline: ${err.message}`;
    }
    if ($("logs").open && $("log-follow").checked) await loadLogs();
  }
  setTimeout(poll, POLL_MS);
}

async function loadLogs() {
  const p = new URLSearchParams({ lines: "500" });
  const client = $("log-client").value.trim();
  if (client) p.set("client", client);
  if ($("log-level").value) p.set("level", $("log-level").value);
  try {
    const answer = await getJSON("/api/logs?" + p.toString());
    const pre = $("log-lines");
    pre.textContent = answer.exists ? answer.lines.join("\n") : "(no logs/all.log in this logdir)";
    if ($("log-follow").checked) pre.scrollTop = pre.scrollHeight;
    $("log-status").textContent = `${answer.lines.length} lines`;
  } catch (err) {
    $("log-status").textContent = `error: ${err.message}`;
  }
}

// ----------------------------------------------------------------------------- alerts

async function loadAlerts() {
  let answer;
  try { answer = await getJSON(`/api/alerts?limit=${ALERTS_SHOWN}`); }
  catch (err) { $("alerts-status").textContent = `error: ${err.message}`; return; }
  view.alerts = answer.alerts;
  $("alerts").hidden = answer.total === 0;
  $("alerts-count").textContent = String(answer.total);
  const body = document.createDocumentFragment();
  for (const a of answer.alerts) {
    const tr = el("tr", a.run ? "link" : null);
    if (a.run) tr.dataset.run = a.run;
    const when = a.wall_time === null || typeof a.wall_time === "string" ? "" : new Date(a.wall_time * 1000).toLocaleTimeString();
    for (const v of [when, a.rule, a.client, a.step ?? "", typeof a.value === "number" ? fmt(a.value) : (a.value ?? ""), a.message]) {
      tr.append(el("td", null, v));
    }
    tr.title = `node ${a.node || "?"}, pid ${a.pid ?? "?"}${a.median !== null ? `, group median ${a.median}` : ""}`;
    if (a.run) tr.addEventListener("click", () => selectOnly(a.run));
    body.append(tr);
  }
  $("alerts-table").tBodies[0].replaceChildren(body);
  $("alerts-status").textContent = answer.total > answer.alerts.length ? `newest ${answer.alerts.length} shown` : "newest first; click one to select its run";
}

function selectOnly(run) {
  // An alert's run: selected alone, shown in the table (the filter is cleared if it hid it).
  state.selected = new Set([run]);
  if (!state.visible.some((r) => r.run === run)) {
    state.filter = ""; state.group = ""; $("filter").value = ""; $("group").value = ""; applyFilter();
  }
  const index = state.visible.findIndex((r) => r.run === run);
  if (index >= 0) $("runlist").scrollTop = Math.max(0, index * ROW - $("runlist").clientHeight / 2);
  selectionChanged();
}

// ----------------------------------------------------------------------------- params table

const PARAM_ROWS_MAX = 2000;
const paramsView = { answer: null, sortKey: "run", sortDir: 1 };

function cellValue(row, column) {
  if (column === "run") return row.run;
  if (column.startsWith("param:")) return row.params[column.slice(6)];
  return row.last[column.slice(5)];
}

function compareCells(a, b) {
  const x = Number(a), y = Number(b);
  if (a !== undefined && b !== undefined && a !== null && b !== null && a !== "" && b !== "" && !Number.isNaN(x) && !Number.isNaN(y)) return x - y;
  if (a === undefined || a === null) return 1;
  if (b === undefined || b === null) return -1;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

async function loadParams() {
  try {
    paramsView.answer = await getJSON("/api/params");
    renderParams();
  } catch (err) {
    $("params-status").textContent = `error: ${err.message}`;
  }
}

function renderParams() {
  const answer = paramsView.answer;
  if (!answer) return;
  const columns = ["run", ...answer.keys.map((k) => `param:${k}`), ...answer.tags.map((t) => `last:${t}`)];
  const head = el("tr");
  for (const column of columns) {
    const label = column === "run" ? "run" : column.slice(column.indexOf(":") + 1);
    const th = el("th", null, label + (paramsView.sortKey === column ? (paramsView.sortDir > 0 ? " ▲" : " ▼") : ""));
    th.dataset.column = column;
    th.title = column.startsWith("last:") ? `last value of ${label}` : label;
    th.addEventListener("click", () => {
      paramsView.sortDir = paramsView.sortKey === column ? -paramsView.sortDir : 1;
      paramsView.sortKey = column;
      renderParams();
    });
    head.append(th);
  }
  $("params-table").tHead.replaceChildren(head);
  const rows = [...answer.rows].sort((a, b) => paramsView.sortDir * compareCells(cellValue(a, paramsView.sortKey), cellValue(b, paramsView.sortKey)));
  const body = document.createDocumentFragment();
  for (const row of rows.slice(0, PARAM_ROWS_MAX)) {
    const tr = el("tr", state.selected.has(row.run) ? "selected" : null);
    tr.dataset.run = row.run;
    for (const column of columns) {
      const v = cellValue(row, column);
      tr.append(el("td", null, v === undefined || v === null ? "" : (typeof v === "number" ? fmt(v) : v)));
    }
    if (row.has_scalars) tr.addEventListener("click", () => {
      if (state.selected.has(row.run)) state.selected.delete(row.run); else state.selected.add(row.run);
      selectionChanged();
      renderParams();
    });
    body.append(tr);
  }
  $("params-table").tBodies[0].replaceChildren(body);
  $("params-status").textContent = `${answer.rows.length} runs${answer.rows.length > PARAM_ROWS_MAX ? ` (first ${PARAM_ROWS_MAX} shown)` : ""}; click a header to sort, a row to select its run`;
}

// ----------------------------------------------------------------------------- wiring

function wire() {
  $("runlist").addEventListener("scroll", renderRows, { passive: true });
  window.addEventListener("resize", renderRows);
  $("filter").addEventListener("input", () => {
    state.filter = $("filter").value; applyFilter(); renderRows(); writeURL();
  });
  $("group").addEventListener("change", () => {
    state.group = $("group").value; applyFilter(); renderRows(); writeURL();
  });
  $("sel-all").addEventListener("click", () => { state.runs.forEach((r) => state.selected.add(r.run)); selectionChanged(); });
  $("sel-none").addEventListener("click", () => { state.selected.clear(); selectionChanged(); });
  $("sel-filtered").addEventListener("click", () => {
    state.selected = new Set(state.visible.map((r) => r.run)); selectionChanged();
  });
  $("smooth").addEventListener("input", () => {
    state.smooth = Number($("smooth").value);
    $("smooth-value").textContent = state.smooth.toFixed(2);
    writeURL();
    for (const c of charts.values()) if (c.answer) draw(c);
  });
  $("full").addEventListener("change", () => setFull($("full").checked));
  $("logy").addEventListener("change", () => {
    state.logy = $("logy").checked; writeURL();
    for (const c of charts.values()) if (c.answer) draw(c);
  });
  $("xaxis").addEventListener("change", async () => {
    state.xaxis = $("xaxis").value;
    writeURL();
    try { await loadWalls(); } catch (err) { view.error = String(err); }
    for (const c of charts.values()) if (c.answer) draw(c);
  });
  $("reset-zoom").addEventListener("click", () => { state.zoom = null; writeURL(); refreshCharts(); });
  $("pause").addEventListener("change", () => { state.paused = $("pause").checked; });
  $("logs").addEventListener("toggle", () => { if ($("logs").open) loadLogs(); });
  $("params").addEventListener("toggle", () => { if ($("params").open) loadParams(); });
  $("log-client").addEventListener("change", loadLogs);
  $("log-level").addEventListener("change", loadLogs);
}

wire();
loadCatalog().then(loadAlerts).then(() => { view.ready = true; setTimeout(poll, POLL_MS); })
  .catch((err) => { view.error = String(err); $("status").textContent = `error: ${err.message}`; });
