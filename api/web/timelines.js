// circuit-atlas web page, timelines (issue 14): the stored formation timelines (GET /v1/timelines)
// and one timeline (GET /v1/timelines/{id}: Timeline.to_dict() of discovery/timeline/result.py,
// without the circuits) drawn as SVG: the losses and best head scores over training steps with the
// membership band of a selectable task under them, the task x step heatmap of circuit size, the
// node overlap over time per task pair, and a table of stabilisation steps and the change-point.
// Steps are on a log axis drawn at step + 1 (step 0 fits). Every drawn mark carries data-step /
// data-task / data-component / data-value with the stored number, and a <title> for hovering.
// Uses app.js's helpers (api, $, setStatus, num, cell, show), experiments.js's el and charts.js's
// svgEl, ticks, extent and inkOn.
"use strict";

const TIMELINE_PAGE = 50;
const timelineState = { offset: 0, listRequests: 0, openRequests: 0, data: null };
const TIMELINE_ENDS = new Set(["embed", "logits"]); // in every circuit: no band row
const TIMELINE_SERIES = {
  train_loss: { name: "train loss", colour: "#1f77b4", axis: "loss" },
  in_context_loss: { name: "in-context loss (late − early)", colour: "#d62728", axis: "loss" },
  previous_token: { name: "best previous-token score", colour: "#2ca02c", axis: "score" },
  induction: { name: "best induction score", colour: "#9467bd", axis: "score" },
};

// ----- the list -----

function timelineQuery() {
  const params = new URLSearchParams({ limit: TIMELINE_PAGE, offset: timelineState.offset });
  for (const [name, value] of new FormData($("#timeline-filters"))) if (value.trim()) params.set(name, value.trim());
  return params.toString();
}

async function loadTimelines() {
  const note = $("#timelines-note");
  if (!localStorage.getItem(KEY)) return void (note.textContent = "Enter an API key to see the stored timelines.");
  const mine = ++timelineState.listRequests;
  const query = timelineQuery();
  try {
    const page = await api(`/v1/timelines?${query}`);
    if (mine !== timelineState.listRequests) return;
    renderTimelineList(page);
    $("#timelines tbody").dataset.query = query; // what the rows show (tests wait on it)
    note.className = "";
    note.textContent = `${page.timelines.length} of ${page.total} timeline(s) shown`;
  } catch (error) {
    if (mine !== timelineState.listRequests) return;
    $("#timelines tbody").replaceChildren();
    note.className = "error";
    note.textContent = `Could not list timelines (${error.message})`;
  }
}

function stepRange(steps) {
  return steps.length ? `${steps.length} (${steps[0]} … ${steps[steps.length - 1]})` : "0";
}

function renderTimelineList(page) {
  const tbody = $("#timelines tbody");
  tbody.replaceChildren();
  for (const t of page.timelines) {
    const row = tbody.insertRow();
    row.dataset.id = t.id;
    [t.run, t.tasks.join(", "), stepRange(t.steps), t.method, t.id].forEach((value) => cell(row, value));
    row.addEventListener("click", () => openTimeline(t.id));
  }
  $("#timelines-newer").disabled = page.offset === 0;
  $("#timelines-older").disabled = page.offset + page.timelines.length >= page.total;
}

// ----- one timeline -----

async function openTimeline(id) {
  for (const row of document.querySelectorAll("#timelines tbody tr")) row.classList.toggle("current", row.dataset.id === id);
  const mine = ++timelineState.openRequests;
  setStatus(`Loading timeline ${id} ...`);
  try {
    const data = await api(`/v1/timelines/${encodeURIComponent(id)}`);
    if (mine !== timelineState.openRequests) return;
    timelineState.data = data;
    renderTimeline(data);
    show("#timeline-view");
    setStatus(`Timeline ${id}`);
  } catch (error) {
    if (mine === timelineState.openRequests) setStatus(`Could not load timeline ${id} (${error.message})`, true);
  }
}

function stepsOf(data) {
  return [...new Set(data.rows.map((r) => r.step))].sort((a, b) => a - b);
}

function renderTimeline(data) {
  const run = String(data.run_dir || "").split("/").filter(Boolean).pop() || data.run_dir;
  $("#timeline-title").textContent = `${run} / ${data.method} / ${data.tasks.join(", ")}`;
  $("#timeline-facts").textContent = `id ${data.id} · run ${data.run_dir} · threshold ${data.threshold}`
    + ` · ${data.n_prompts} prompts · seed ${data.seed} · stable at edge Jaccard ≥ ${data.level} to the final circuit`;
  const select = $("#timeline-task");
  select.replaceChildren(...data.tasks.map((t) => el("option", { value: t }, t)));
  select.value = data.tasks.includes("induction") ? "induction" : data.tasks[0];
  $("#timeline-view").dataset.id = data.id;
  drawFocus(data, select.value);
  $("#timeline-sizes").replaceChildren(sizeHeatmap(data));
  $("#timeline-pairs").replaceChildren(...(data.pairs || []).map((p) => overlapChart(data, p)));
  $("#timeline-pairs-note").textContent = (data.pairs || []).length ? "" : "One task only: no pairs.";
  stabilisationTable(data);
}

// The parts that depend on the selected task: the curves (its stabilisation line) and the band.
function drawFocus(data, task) {
  const holder = $("#timeline-curves");
  holder.replaceChildren(curvesChart(data, task), membershipBand(data, task));
  holder.dataset.task = task;
}

// x of a step on the shared log axis (drawn at step + 1), between `left` and `right` pixels.
function logScale(steps, left, right) {
  const lo = Math.log10(steps[0] + 1), hi = Math.log10(steps[steps.length - 1] + 1);
  const pad = Math.max((hi - lo) * 0.04, 0.05);
  return (step) => left + ((Math.log10(step + 1) - lo + pad) / (hi - lo + 2 * pad)) * (right - left);
}

// Series of the curves chart: {key: [[step, value]]}; head scores are the maximum over heads.
function curveSeries(data) {
  const loss = new Map();
  for (const r of data.rows) if (typeof r.train_loss === "number" && !loss.has(r.step)) loss.set(r.step, r.train_loss);
  const out = { train_loss: [...loss].sort((a, b) => a[0] - b[0]) };
  const induction = [...(data.induction || [])].sort((a, b) => a.step - b.step);
  if (induction.length) {
    out.in_context_loss = induction.map((d) => [d.step, d.in_context_loss]);
    for (const score of ["previous_token", "induction"]) {
      out[score] = induction.map((d) => [d.step, Math.max(...Object.values(d.heads || {}).map((h) => h[score]))]);
    }
  }
  return out;
}

const CHART = { width: 900, left: 56, right: 56 };

function stepAxis(svg, steps, x, y) {
  const axis = svgEl("g", { class: "axis" });
  axis.append(svgEl("line", { x1: CHART.left, y1: y, x2: CHART.width - CHART.right, y2: y }));
  let last = -Infinity;
  for (const s of steps) {  // skip labels that would overlap the previous one (about 34 px apart)
    if (x(s) - last < 34) continue;
    last = x(s);
    axis.append(svgEl("text", { x: x(s), y: y + 14, "text-anchor": "middle", "data-step": s }, String(s)));
  }
  svg.append(axis);
}

function curvesChart(data, task) {
  const steps = stepsOf(data);
  const series = curveSeries(data);
  const height = 300, top = 52, bottom = 44;
  const x = logScale(steps, CHART.left, CHART.width - CHART.right);
  const losses = Object.entries(series).filter(([k]) => TIMELINE_SERIES[k].axis === "loss").flatMap(([, v]) => v.map(([, y]) => y));
  const [y0, y1] = extent(losses);
  const py = { loss: (v) => height - bottom - ((v - y0) / (y1 - y0)) * (height - top - bottom),
    score: (v) => height - bottom - v * (height - top - bottom) };
  const svg = svgEl("svg", { class: "chart timeline-curves", viewBox: `0 0 ${CHART.width} ${height}`, width: CHART.width, height, role: "img" });
  svg.append(svgEl("title", {}, "losses and best head scores over training steps"));
  const axis = svgEl("g", { class: "axis" });
  for (const v of ticks(y0, y1)) {
    axis.append(svgEl("line", { x1: CHART.left, y1: py.loss(v), x2: CHART.width - CHART.right, y2: py.loss(v), class: "grid" }));
    axis.append(svgEl("text", { x: CHART.left - 5, y: py.loss(v) + 4, "text-anchor": "end" }, String(v)));
  }
  if (series.induction) {
    for (const v of [0, 0.5, 1]) axis.append(svgEl("text", { x: CHART.width - CHART.right + 5, y: py.score(v) + 4 }, String(v)));
    axis.append(svgEl("text", { x: CHART.width - 12, y: top - 8, "text-anchor": "end" }, "score"));
  }
  axis.append(svgEl("text", { x: 6, y: top - 8 }, "loss"));
  svg.append(axis);
  stepAxis(svg, steps, x, height - bottom);
  svg.append(svgEl("text", { x: CHART.width / 2, y: height - 8, "text-anchor": "middle" }, "training step (log scale, drawn at step + 1)"));
  const markers = [["change-point", data.in_context_change_point, "in-context change point", "#555"],
    ["stabilisation", (data.stabilisation || {})[task], `${task} stable`, "#ff7f0e"]];
  for (const [kind, step, label, colour] of markers) {
    if (typeof step !== "number") continue;
    const g = svgEl("g", { class: "marker", "data-kind": kind, "data-step": step, "data-task": kind === "stabilisation" ? task : "" });
    g.append(svgEl("line", { x1: x(step), y1: top, x2: x(step), y2: height - bottom, stroke: colour, "stroke-dasharray": "5 4" }));
    g.append(svgEl("text", { x: x(step) + 3, y: top + 10 + (kind === "stabilisation" ? 12 : 0), fill: colour }, `${label}: ${step}`));
    g.append(svgEl("title", {}, `${label} at step ${step}`));
    svg.append(g);
  }
  let legendX = CHART.left;
  for (const [key, points] of Object.entries(series)) {
    const { name, colour, axis: which } = TIMELINE_SERIES[key];
    const g = svgEl("g", { class: "series", "data-series": key });
    g.append(svgEl("polyline", { points: points.map(([s, v]) => `${x(s)},${py[which](v)}`).join(" "), fill: "none",
      stroke: colour, "stroke-width": 2, "stroke-dasharray": which === "score" ? "6 3" : "none" }));
    for (const [s, v] of points) {
      const dot = svgEl("circle", { cx: x(s), cy: py[which](v), r: 3.5, fill: colour, "data-step": s, "data-value": v });
      dot.append(svgEl("title", {}, `${name} at step ${s}: ${num(v)}`));
      g.append(dot);
    }
    g.append(svgEl("line", { x1: legendX, y1: 20, x2: legendX + 16, y2: 20, stroke: colour, "stroke-width": 2 }));
    g.append(svgEl("text", { x: legendX + 20, y: 24, fill: colour }, name));
    legendX += 40 + 5.5 * name.length;
    svg.append(g);
  }
  return svg;
}

// Components of a label like a0.h1 / a0.kv0 / m1 in layer order (heads, kv groups, then the MLP).
function componentKey(name) {
  const head = /^a(\d+)\.(h|kv)(\d+)$/.exec(name), mlp = /^m(\d+)$/.exec(name);
  if (head) return [Number(head[1]), head[2] === "h" ? 0 : 1, Number(head[3]), name];
  if (mlp) return [Number(mlp[1]), 2, 0, name];
  return [Infinity, 0, 0, name];
}

function compareKeys(a, b) {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
  return 0;
}

// One row per component ever in the task's circuit, one cell per step, filled when a member.
function membershipBand(data, task) {
  const steps = stepsOf(data);
  const members = new Map(data.rows.filter((r) => r.task === task).map((r) => [r.step, new Set(r.nodes)]));
  const components = [...new Set([...members.values()].flatMap((s) => [...s]))].filter((c) => !TIMELINE_ENDS.has(c))
    .sort((a, b) => compareKeys(componentKey(a), componentKey(b)));
  const rowH = 16, top = 22, height = top + Math.max(1, components.length) * rowH + 8;
  const x = logScale(steps, CHART.left, CHART.width - CHART.right);
  // a cell spans midway to the neighbouring steps, the outer ones to the plot's edges (the curves' x)
  const bounds = steps.map((s, i) => [i ? (x(steps[i - 1]) + x(s)) / 2 : CHART.left,
    i < steps.length - 1 ? (x(s) + x(steps[i + 1])) / 2 : CHART.width - CHART.right]);
  const svg = svgEl("svg", { class: "chart timeline-band", viewBox: `0 0 ${CHART.width} ${height}`, width: CHART.width, height, role: "img", "data-task": task });
  svg.append(svgEl("title", {}, `membership of the ${task} circuit per step`));
  svg.append(svgEl("text", { x: CHART.left, y: 14, class: "chart-title" }, `membership of the ${task} circuit (filled: in the circuit at that step)`));
  components.forEach((c, row) => {
    const y = top + row * rowH;
    svg.append(svgEl("text", { x: CHART.left - 5, y: y + rowH - 4, "text-anchor": "end", class: "row-label" }, c));
    steps.forEach((s, i) => {
      const member = members.get(s)?.has(c) ? 1 : 0;
      const rect = svgEl("rect", { x: bounds[i][0] + 0.5, y: y + 0.5, width: Math.max(1, bounds[i][1] - bounds[i][0] - 1), height: rowH - 1,
        fill: member ? "#2b5c8a" : "#e8eef5", class: "member-cell", "data-task": task, "data-step": s, "data-component": c, "data-value": member });
      rect.append(svgEl("title", {}, `${c} at step ${s}: ${member ? "in" : "not in"} the ${task} circuit`));
      svg.append(rect);
    });
  });
  if (!components.length) svg.append(svgEl("text", { x: CHART.left, y: top + 12 }, "never a component besides embed and logits"));
  return svg;
}

// Task x step grid of circuit sizes (edges), the number in each cell; shade by size.
function sizeHeatmap(data) {
  const steps = stepsOf(data);
  const size = new Map(data.rows.map((r) => [`${r.task}|${r.step}`, r.n_edges]));
  const top = Math.max(1, ...size.values());
  const left = 110, cellW = Math.max(34, Math.min(70, (CHART.width - left - 10) / steps.length)), cellH = 24, head = 22;
  const width = left + steps.length * cellW + 10, height = head + data.tasks.length * cellH + 24;
  const svg = svgEl("svg", { class: "chart timeline-sizes", viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  svg.append(svgEl("title", {}, "circuit size (edges) per task and step"));
  steps.forEach((s, j) => svg.append(svgEl("text", { x: left + (j + 0.5) * cellW, y: height - 8, "text-anchor": "middle" }, String(s))));
  svg.append(svgEl("text", { x: 6, y: height - 8 }, "step →"));
  data.tasks.forEach((t, i) => {
    const y = head + i * cellH;
    svg.append(svgEl("text", { x: left - 6, y: y + cellH / 2 + 4, "text-anchor": "end" }, t));
    steps.forEach((s, j) => {
      const value = size.get(`${t}|${s}`);
      const shade = typeof value === "number" ? Math.round(245 - 150 * (value / top)) : 230;
      const fill = `rgb(${shade},${Math.round(250 - 80 * ((value || 0) / top))},${shade})`;
      const g = svgEl("g", { class: "size-cell", "data-task": t, "data-step": s, "data-value": value ?? "" });
      g.append(svgEl("rect", { x: left + j * cellW, y, width: cellW - 2, height: cellH - 2, fill }));
      g.append(svgEl("text", { x: left + (j + 0.5) * cellW, y: y + cellH / 2 + 3, "text-anchor": "middle", fill: inkOn(fill) },
        value === undefined ? "–" : String(value)));
      g.append(svgEl("title", {}, `${t} at step ${s}: ${value ?? "–"} edges`));
      svg.append(g);
    });
  });
  svg.append(svgEl("text", { x: left, y: 14, class: "chart-title" }, "circuit size: edges per task and step"));
  return svg;
}

// Node Jaccard of the pair's circuits per step, 0..1, on the shared log step axis.
function overlapChart(data, pair) {
  const steps = stepsOf(data);
  const height = 190, top = 30, bottom = 40;
  const x = logScale(steps, CHART.left, CHART.width - CHART.right);
  const py = (v) => height - bottom - v * (height - top - bottom);
  const key = `${pair.first}|${pair.second}`;
  const svg = svgEl("svg", { class: "chart timeline-overlap", viewBox: `0 0 ${CHART.width} ${height}`, width: CHART.width, height, role: "img", "data-pair": key });
  svg.append(svgEl("title", {}, `node overlap of ${pair.first} and ${pair.second} over training`));
  svg.append(svgEl("text", { x: CHART.left, y: 16, class: "chart-title" }, `${pair.first} × ${pair.second}: node Jaccard of their circuits`));
  const axis = svgEl("g", { class: "axis" });
  for (const v of [0, 0.5, 1]) {
    axis.append(svgEl("line", { x1: CHART.left, y1: py(v), x2: CHART.width - CHART.right, y2: py(v), class: "grid" }));
    axis.append(svgEl("text", { x: CHART.left - 5, y: py(v) + 4, "text-anchor": "end" }, String(v)));
  }
  svg.append(axis);
  stepAxis(svg, steps, x, height - bottom);
  // null: both circuits empty at that step (no overlap to speak of), left out of the line
  const points = [...(pair.overlap || [])].filter(([, v]) => v !== null).sort((a, b) => a[0] - b[0]);
  const g = svgEl("g", { class: "series", "data-series": key });
  g.append(svgEl("polyline", { points: points.map(([s, v]) => `${x(s)},${py(v)}`).join(" "), fill: "none", stroke: "#1b9e77", "stroke-width": 2 }));
  for (const [s, v] of points) {
    const dot = svgEl("circle", { cx: x(s), cy: py(v), r: 3.5, fill: "#1b9e77", "data-step": s, "data-value": v });
    dot.append(svgEl("title", {}, `${pair.first} × ${pair.second} at step ${s}: Jaccard ${num(v)}`));
    g.append(dot);
  }
  svg.append(g);
  return svg;
}

function stabilisationTable(data) {
  const tbody = $("#timeline-stabilisation tbody");
  tbody.replaceChildren();
  for (const t of data.tasks) {
    const step = (data.stabilisation || {})[t];
    const row = tbody.insertRow();
    row.dataset.task = t;
    row.dataset.value = typeof step === "number" ? String(step) : "";
    cell(row, t);
    cell(row, typeof step === "number" ? step : "never");
  }
  const change = data.in_context_change_point;
  const target = $("#timeline-change-point");
  target.textContent = typeof change === "number" ? String(change)
    : (data.induction || []).length ? "none found" : "not measured (no induction diagnostics)";
  target.dataset.value = typeof change === "number" ? String(change) : "";
}

function startTimelines() {
  $("#key-form").addEventListener("submit", () => { timelineState.offset = 0; loadTimelines(); });
  $("#timeline-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    timelineState.offset = 0;
    loadTimelines();
  });
  $("#timelines-newer").addEventListener("click", () => {
    timelineState.offset = Math.max(0, timelineState.offset - TIMELINE_PAGE);
    loadTimelines();
  });
  $("#timelines-older").addEventListener("click", () => { timelineState.offset += TIMELINE_PAGE; loadTimelines(); });
  $("#timeline-task").addEventListener("change", (event) => {
    if (timelineState.data) drawFocus(timelineState.data, event.target.value);
  });
  loadTimelines();
}

document.addEventListener("DOMContentLoaded", startTimelines);
