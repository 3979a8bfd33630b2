// circuit-atlas web page: list stored circuits, draw one (the API's SVG, inlined), compare two or
// more. Every request sends the key from localStorage in X-API-Key. Data is put in the page with
// textContent only, never as HTML.
"use strict";

const KEY = "atlas-api-key";
const PAGE = 50;
const state = { offset: 0, selected: new Set() };
const $ = (selector) => document.querySelector(selector);

function setStatus(text, isError = false) {
  const status = $("#status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

// GET `path` with the key; the parsed JSON (or text), or an Error carrying the API's detail.
async function api(path, as = "json") {
  const response = await fetch(path, { headers: { "X-API-Key": localStorage.getItem(KEY) || "" } });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) { /* not JSON: keep the status text */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return as === "text" ? response.text() : response.json();
}

// A number to three decimals, "–" for null; the exact value in `data-value` where asked.
function num(value, digits = 3) {
  return typeof value === "number" ? value.toFixed(digits) : "–";
}

// A faithfulness with the metric it was measured under: "1.016 (logit_diff)", "–" when unmeasured.
function faith(value, metric) {
  return typeof value === "number" ? `${num(value)} (${metric || "?"})` : "–";
}

function cell(row, value) {
  const td = row.insertCell();
  td.textContent = value === null || value === undefined ? "–" : String(value);
  return td;
}

function fillRows(tbody, rows) {
  tbody.replaceChildren();
  for (const values of rows) {
    const row = tbody.insertRow();
    values.forEach((value) => cell(row, value));
  }
}

function show(id) {
  for (const view of ["#circuit-view", "#compare-view", "#experiment-view", "#timeline-view"]) $(view).hidden = view !== id;
  $(id).scrollIntoView({ block: "start" });
}

function filterQuery() {
  const params = new URLSearchParams({ limit: PAGE, offset: state.offset });
  for (const [name, value] of new FormData($("#filters"))) if (value.trim()) params.set(name, value.trim());
  return params.toString();
}

let listRequests = 0; // only the latest list request may render: answers can arrive out of order

async function loadList() {
  if (!localStorage.getItem(KEY)) return setStatus("Enter an API key to see the stored circuits.");
  const mine = ++listRequests;
  const query = filterQuery();
  try {
    const page = await api(`/v1/circuits?${query}`);
    if (mine !== listRequests) return;
    renderList(page);
    $("#circuits tbody").dataset.query = query; // what the rows show (tests wait on it)
    setStatus(`${page.items.length} circuit(s) shown`);
  } catch (error) {
    if (mine !== listRequests) return;
    $("#circuits tbody").replaceChildren();
    setStatus(`Could not list circuits (${error.message})`, true);
  }
}

function renderList(page) {
  const tbody = $("#circuits tbody");
  tbody.replaceChildren();
  for (const c of page.items) {
    const row = tbody.insertRow();
    row.dataset.id = c.id;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = state.selected.has(c.id);
    box.title = "select for comparison";
    box.addEventListener("click", (event) => { event.stopPropagation(); toggle(c.id, box.checked); });
    row.insertCell().append(box);
    [c.model, c.task, c.method, faith(c.faithfulness_task, c.metric),
      faith(c.faithfulness_search, c.search_metric), c.n_nodes, c.n_edges, (c.created_at || "").slice(0, 19)]
      .forEach((value) => cell(row, value));
    row.addEventListener("click", () => openCircuit(c.id));
  }
  $("#newer").disabled = page.offset === 0;
  $("#older").disabled = page.next_offset === null;
}

function toggle(id, on) {
  if (on) state.selected.add(id); else state.selected.delete(id);
  $("#compare-button").disabled = state.selected.size < 2;
  $("#compare-button").textContent = `Compare selected (${state.selected.size})`;
}

async function openCircuit(id) {
  for (const row of document.querySelectorAll("#circuits tbody tr")) {
    row.classList.toggle("current", row.dataset.id === id);
  }
  setStatus(`Loading circuit ${id} ...`);
  try {
    const [circuit, svg] = await Promise.all([
      api(`/v1/circuits/${encodeURIComponent(id)}`),
      api(`/v1/circuits/${encodeURIComponent(id)}?format=svg`, "text"),
    ]);
    renderCircuit(circuit, svg);
    show("#circuit-view");
    setStatus(`Circuit ${id}`);
  } catch (error) {
    setStatus(`Could not load circuit ${id} (${error.message})`, true);
  }
}

function renderCircuit(circuit, svgText) {
  const p = circuit.provenance;
  $("#circuit-title").textContent = `${p.model} / ${p.task} / ${p.method}`;
  const m = circuit.metrics;
  $("#circuit-facts").textContent = `id ${circuit.id}`
    + ` · faithfulness under the task metric ${faith(m.faithfulness_task, m.name)}`
    + ` · under the search metric ${faith(m.faithfulness_search, m.search_metric)}`
    + ` · ${circuit.nodes.length} nodes · ${circuit.edges.length} edges`;
  const drawing = new DOMParser().parseFromString(svgText, "image/svg+xml");
  const holder = $("#drawing");
  holder.replaceChildren();
  if (!drawing.querySelector("parsererror")) {
    const svg = document.importNode(drawing.documentElement, true);
    svg.removeAttribute("height");
    svg.setAttribute("width", "100%");
    holder.append(svg);
  }
  renderCurve(circuit.curve, p);
  renderStability(circuit.stability);
  const share = (circuit.stability && circuit.stability.edge_share) || {};
  fillRows($("#nodes tbody"), circuit.nodes.map((n) => [n.name, n.kind, n.layer, n.head, num(n.score)]));
  fillRows($("#edges tbody"), circuit.edges.map((e) => {
    const name = `${e.src}->${e.dst}${["q", "k", "v"].includes(e.input) ? `<${e.input}>` : ""}`;
    const kept = share[name];
    return [e.src, e.dst, e.input, num(e.score), typeof kept === "number" ? `${Math.round(100 * kept)}%` : "–"];
  }));
}

// How stable the circuit is (discovery.stability): Jaccard with its re-runs under other edge orders
// and other prompt draws, and its core (edges every re-run keeps).
function jaccardText(section) {
  if (!section || !section.n || section.jaccard_mean === null) return "not measured";
  return `Jaccard ${num(section.jaccard_mean)} ± ${num(section.jaccard_std)} (min ${num(section.jaccard_min)}, n ${section.n})`;
}

function renderStability(s) {
  const holder = $("#stability");
  if (!s) {
    holder.textContent = "No stability score stored with this circuit (jobs with \"stability\": N store one).";
    return;
  }
  const share = typeof s.core_share === "number" ? ` (${Math.round(100 * s.core_share)}%)` : "";
  const core = s.core ? `core ${s.core.length} of ${s.edges} edges${share} kept by every re-run`
    : "no core (no re-runs)";
  const cross = s.auto_circuit ? ` · in auto-circuit's order: Jaccard ${num(s.auto_circuit.jaccard)}` : "";
  holder.textContent = `Stability · other edge orders: ${jaccardText(s.orders)} · other prompts: `
    + `${jaccardText(s.prompts)} · ${core}${cross}`;
}

// The method's faithfulness curve (MIB: faithfulness at a ladder of shares of the edges), stored with
// circuits of studies and `circuits curve`; the x axis is log10 of the share, labelled as the share.
function renderCurve(curve, provenance) {
  const holder = $("#curve");
  holder.replaceChildren();
  if (!curve || !curve.points || !curve.points.length) {
    holder.textContent = "No faithfulness curve stored with this circuit (studies store one).";
    return;
  }
  const xs = curve.points.map((pt) => Math.log10(pt.fraction));
  const values = curve.points.map((pt) => (pt.faithfulness === null ? NaN : pt.faithfulness));
  const stat = curve.cpr === null || curve.cpr === undefined ? "faithfulness undefined"
    : `CPR ${num(curve.cpr)}, CMD ${num(curve.cmd)}`;
  holder.append(lineChart({
    title: `${provenance.method} faithfulness (${curve.metric}) by circuit size: ${stat}`,
    xLabel: "share of the graph's edges kept (log scale)", xs, xName: "share",
    xFormat: (x) => String(Number((10 ** x).toPrecision(2))),
    series: [{ key: "faithfulness", name: "faithfulness", values }], width: 520,
  }));
}

function setNumber(selector, value) {
  const target = $(selector);
  target.textContent = num(value, 4);
  target.dataset.value = value === null ? "" : String(value);
}

async function compareSelected() {
  const ids = [...state.selected];
  setStatus(`Comparing ${ids.length} circuits ...`);
  try {
    const overlap = await api(`/v1/compare?ids=${ids.map(encodeURIComponent).join(",")}`);
    renderOverlap(overlap);
    show("#compare-view");
    setStatus(`Compared ${ids.length} circuits of ${overlap.model}`);
  } catch (error) {
    setStatus(`Could not compare (${error.message})`, true);
  }
}

function renderOverlap(o) {
  $("#compare-title").textContent = o.summaries.map((s) => `${s.task} (${s.method})`).join(" · ");
  $("#nodes-union").textContent = o.nodes_union;
  $("#nodes-shared").textContent = o.nodes_shared;
  $("#edges-union").textContent = o.edges_union;
  $("#edges-shared").textContent = o.edges_shared;
  setNumber("#node-jaccard", o.node_jaccard);
  setNumber("#edge-jaccard", o.edge_jaccard);
  setNumber("#weighted", o.weighted);
  fillRows($("#compare-circuits tbody"), o.summaries.map((s) => [
    s.task, s.method, s.id, faith(s.faithfulness_task, s.metric), faith(s.faithfulness_search, s.search_metric),
    o.unique_nodes[s.id].length, o.unique_edges[s.id],
  ]));
  $("#shared").textContent = o.shared.map((s) => s.name).join(", ") || "none";
}

function start() {
  $("#api-key").value = localStorage.getItem(KEY) || "";
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem(KEY, $("#api-key").value.trim());
    state.offset = 0;
    loadList();
  });
  $("#filters").addEventListener("submit", (event) => { event.preventDefault(); state.offset = 0; loadList(); });
  $("#newer").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadList(); });
  $("#older").addEventListener("click", () => { state.offset += PAGE; loadList(); });
  $("#compare-button").addEventListener("click", compareSelected);
  loadList();
}

document.addEventListener("DOMContentLoaded", start);
