// circuit-atlas web page, experiments: the stored competition experiments (GET /v1/experiments)
// and one experiment (GET /v1/experiments/{id}, Experiment.to_dict() of
// discovery/experiments/result.py): per pair the ablation-matrix heatmap, conflict win rates,
// dose-response curves, component roles, the pair's verdicts in words and the union of its two
// circuits (GET /v1/circuits/{id}) with shared components coloured by role; cross-task
// faithfulness for the whole experiment. Uses app.js's helpers (api, $, num, cell, fillRows, show)
// and charts.js's drawings; data goes into the page with textContent only.
"use strict";

const EXPERIMENT_PAGE = 50;
const experimentState = { offset: 0, listRequests: 0, openRequests: 0 };

function el(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function table(headers, rows, className = "") {
  const t = el("table", className ? { class: className } : {});
  const head = t.createTHead().insertRow();
  headers.forEach((h) => head.append(el("th", {}, h)));
  fillRows(t.createTBody(), rows);
  return t;
}

// The pairs of an experiment in the order of Experiment.pair_keys, as [key, a, b].
function pairsOf(e) {
  const out = [];
  e.tasks.forEach((a, i) => e.tasks.slice(i + 1).forEach((b) => out.push([`${a}|${b}`, a, b])));
  return out;
}

// The five sets of pair (a, b) with a label each: A, B, A∩B, A∖B, B∖A (set_names in result.py).
function setsOf(a, b) {
  return [[a, a], [b, b], [`${a}&${b}`, `${a} ∩ ${b}`], [`${a}-${b}`, `${a} ∖ ${b}`], [`${b}-${a}`, `${b} ∖ ${a}`]];
}

// A verdict in one sentence: the claim, what the data say, the statistic and the control.
function verdictWords(v) {
  const p = typeof v.p_value === "number" ? `, p = ${num(v.p_value)}` : "";
  const against = v.control ? `; against ${v.control}` : "";
  const detail = v.detail ? ` ${v.detail}` : "";
  return `${v.claim}: ${v.state} (${v.statistic} = ${num(v.value)}${p}${against}).${detail}`;
}

function rate(value) {
  return typeof value === "number" ? `${(100 * value).toFixed(1)}%` : "–";
}

// ----- the list -----

function experimentQuery() {
  const params = new URLSearchParams({ limit: EXPERIMENT_PAGE, offset: experimentState.offset });
  for (const [name, value] of new FormData($("#experiment-filters"))) if (value.trim()) params.set(name, value.trim());
  return params.toString();
}

async function loadExperiments() {
  const note = $("#experiments-note");
  if (!localStorage.getItem(KEY)) return void (note.textContent = "Enter an API key to see the stored experiments.");
  const mine = ++experimentState.listRequests;
  const query = experimentQuery();
  try {
    const page = await api(`/v1/experiments?${query}`);
    if (mine !== experimentState.listRequests) return;
    renderExperimentList(page);
    $("#experiments tbody").dataset.query = query; // what the rows show (tests wait on it)
    note.className = "";
    note.textContent = `${page.experiments.length} of ${page.total} experiment(s) shown`;
  } catch (error) {
    if (mine !== experimentState.listRequests) return;
    $("#experiments tbody").replaceChildren();
    note.className = "error";
    note.textContent = `Could not list experiments (${error.message})`;
  }
}

function pairVerdicts(pairs) {
  return (pairs || []).map((p) => `${p.pair.replace("|", " × ")}: competes ${p.competes}, cooperates ${p.cooperates}`).join("; ");
}

function renderExperimentList(page) {
  const tbody = $("#experiments tbody");
  tbody.replaceChildren();
  for (const x of page.experiments) {
    const row = tbody.insertRow();
    row.dataset.id = x.id;
    [x.model, x.tasks.join(" × "), x.ablation, x.seed, x.n_controls, pairVerdicts(x.pairs),
      (x.created_at || "").slice(0, 19)].forEach((value) => cell(row, value));
    row.addEventListener("click", () => openExperiment(x.id));
  }
  $("#experiments-newer").disabled = page.offset === 0;
  $("#experiments-older").disabled = page.offset + page.experiments.length >= page.total;
}

// ----- one experiment -----

async function openExperiment(id) {
  for (const row of document.querySelectorAll("#experiments tbody tr")) row.classList.toggle("current", row.dataset.id === id);
  const mine = ++experimentState.openRequests;
  setStatus(`Loading experiment ${id} ...`);
  try {
    const experiment = await api(`/v1/experiments/${encodeURIComponent(id)}`);
    if (mine !== experimentState.openRequests) return;
    renderExperiment(experiment);
    show("#experiment-view");
    setStatus(`Experiment ${id}`);
    await drawPairs(experiment, mine);
  } catch (error) {
    if (mine === experimentState.openRequests) setStatus(`Could not load experiment ${id} (${error.message})`, true);
  }
}

function renderExperiment(e) {
  $("#experiment-title").textContent = `${e.model} / ${e.tasks.join(" × ")} / ${e.ablation} ablation`;
  const p = e.provenance || {};
  $("#experiment-facts").textContent = `id ${e.id} · seed ${e.seed} · ${e.n_controls} random control sets per ablation`
    + ` · ${e.n_prompts} prompts per task · significance level ${e.alpha_level}`
    + ` · ${p.forward_passes || 0} forward passes on ${p.device || "?"} · ${(p.created_at || "").slice(0, 19)}`;
  $("#experiment-view").dataset.id = e.id;
  const holder = $("#experiment-pairs");
  holder.replaceChildren(...pairsOf(e).map(([key, a, b]) => pairSection(e, key, a, b)));
  const cross = $("#cross-faithfulness");
  cross.replaceChildren(crossTable(e.cross || []));
}

function pairSection(e, key, a, b) {
  const section = el("section", { class: "pair", "data-pair": key });
  section.append(el("h3", {}, `${a} × ${b}`));
  section.append(pairSummary((e.pairs || []).find((p) => p.pair === key), a, b));
  section.append(el("h4", {}, "Ablation matrix: faithfulness with each set ablated"));
  section.append(heatmap(e, key, a, b, "nodes"));
  if ((e.ablations || []).some((c) => c.pair === key && c.kind === "edges")) {
    section.append(el("h4", {}, "Ablation matrix at edge level"));
    section.append(heatmap(e, key, a, b, "edges"));
  }
  section.append(el("h4", {}, "Conflict prompts: whose answer wins"));
  section.append(conflictTable((e.conflicts || []).filter((c) => c.pair === key), a, b));
  for (const dose of (e.dose || []).filter((d) => d.pair === key)) section.append(doseBlock(dose, a, b));
  section.append(el("h4", {}, "Components and their roles"));
  section.append(componentTable((e.components || []).filter((r) => r.pair === key), a, b));
  section.append(el("h4", {}, "The two circuits' union, shared components coloured by role"));
  section.append(el("div", { class: "union-drawing", "data-state": "loading" }, "drawing ..."));
  return section;
}

// The pair's verdicts in words (PairSummary): one paragraph per claim.
function pairSummary(summary, a, b) {
  const box = el("div", { class: "pair-summary" });
  if (!summary) {
    box.append(el("p", {}, "No pair summary was stored."));
    return box;
  }
  const claims = [["competes", summary.competes, `Do ${a} and ${b} compete?`], ["cooperates", summary.cooperates, `Do ${a} and ${b} cooperate?`]];
  for (const [name, verdict, question] of claims) {
    const p = el("p", { class: `verdict state-${verdict.state.replace(" ", "-")}`, "data-claim": name, "data-state": verdict.state });
    p.append(el("strong", {}, `${question} `), document.createTextNode(verdictWords(verdict)));
    box.append(p);
  }
  box.append(el("p", { class: "scores" }, `competition ${num(summary.competition)} (mean shift of the conflict win rate when the `
    + `other's unique components are ablated) · cooperation ${num(summary.cooperation)} (the smaller faithfulness loss `
    + "when the shared components are ablated)"));
  return box;
}

// Rows: the pair's five sets; columns: its two tasks; colour: faithfulness; text: faithfulness,
// effect, the control's empirical p and the verdict's state.
function heatmap(e, key, a, b, kind) {
  const cells = new Map((e.ablations || []).filter((c) => c.pair === key && c.kind === kind)
    .map((c) => [`${c.set_name}\u0000${c.task}`, c]));
  const t = el("table", { class: "heatmap", "data-kind": kind });
  const head = t.createTHead().insertRow();
  head.append(el("th", {}, "ablated set"), el("th", {}, "size"), ...[a, b].map((task) => el("th", {}, `on ${task}`)));
  const body = t.createTBody();
  for (const [set, label] of setsOf(a, b)) {
    const row = body.insertRow();
    row.dataset.set = set;
    const found = [a, b].map((task) => cells.get(`${set}\u0000${task}`));
    row.append(el("th", {}, label));
    cell(row, (found.find((c) => c) || {}).size);
    found.forEach((c, i) => row.append(heatCell(c, set, [a, b][i])));
  }
  return t;
}

function heatCell(c, set, task) {
  const td = el("td", { class: "heat", "data-set": set, "data-task": task });
  if (!c) {
    td.textContent = "not measured";
    return td;
  }
  const fill = faithColour(c.faithfulness);
  Object.assign(td.dataset, { faithfulness: c.faithfulness ?? "", effect: c.effect, state: c.verdict.state, fill,
    p: c.control ? c.control.p_value : "" });
  td.style.background = fill;
  td.style.color = inkOn(fill);
  td.append(el("div", { class: "faith" }, `faithfulness ${num(c.faithfulness)}`),
    el("div", { class: "effect" }, `effect ${num(c.effect)}`),
    el("div", { class: "p" }, `control p ${c.control ? num(c.control.p_value) : "–"}`),
    el("div", { class: "state" }, c.verdict.state));
  const control = c.control ? ` Control: ${c.control.n} random sets (${c.control.pool}), mean ${num(c.control.mean)}`
    + ` ± ${num(c.control.std)}, z ${num(c.control.z)}.` : " No control.";
  td.title = `${verdictWords(c.verdict)} Metric ${num(c.metric)} (full ${num(c.full)}, empty ${num(c.empty)}),`
    + ` top-1 ${rate(c.top1)}.${control}`;
  return td;
}

function crossTable(rows) {
  if (!rows.length) return el("p", {}, "Not measured.");
  return table(["circuit of", "run on", "metric", "full model", "everything ablated", "circuit alone", "faithfulness", "top-1"],
    rows.map((c) => [c.circuit_task, c.eval_task, c.metric, num(c.full), num(c.empty), num(c.value), num(c.faithfulness), rate(c.top1)]),
    "cross");
}

function conflictTable(rows, a, b) {
  if (!rows.length) return el("p", {}, "No conflict prompts for this pair.");
  return table(["prompts", "source", `${a} wins`, `${b} wins`, `top-1 ${a}`, `top-1 ${b}`, "top-1 other",
    `logit(${a}) − logit(${b})`, "ablation"],
  rows.map((c) => [c.n_prompts, c.source, rate(c.win_rate[a]), rate(c.win_rate[b]), rate(c.top1_rate[a]),
    rate(c.top1_rate[b]), rate(c.top1_rate.other), `${num(c.logit_diff_mean)} ± ${num(c.logit_diff_std)}`, c.ablation]),
  "conflicts");
}

// One dose-response: alpha vs the scaled task's win rate, and alpha vs both tasks' metrics.
function doseBlock(dose, a, b) {
  const box = el("div", { class: "dose", "data-scaled": dose.scaled_task });
  box.append(el("h4", {}, `Dose-response: ${dose.scaled_task}'s unique components (${dose.components.length}) scaled by alpha`));
  const alphas = dose.points.map((p) => p.alpha);
  const charts = el("div", { class: "columns" });
  charts.append(lineChart({ title: `${dose.scaled_task}'s win rate on conflict prompts`, xLabel: "alpha", xs: alphas,
    series: [{ key: "win_rate", name: `${dose.scaled_task} wins`, values: dose.points.map((p) => p.win_rate) }],
    yRange: [0, 1] }));
  charts.append(lineChart({ title: "each task's metric on its own prompts", xLabel: "alpha", xs: alphas,
    series: [a, b].map((task) => ({ key: task, name: task, values: dose.points.map((p) => p.metrics[task]) })) }));
  box.append(charts);
  box.append(table(["alpha", `${dose.scaled_task} win rate`, `${a} metric`, `${b} metric`, `logit(${a}) − logit(${b})`],
    dose.points.map((p) => [p.alpha, rate(p.win_rate), num(p.metrics[a]), num(p.metrics[b]), num(p.logit_diff)]), "dose-table"));
  box.append(el("p", { class: `verdict state-${dose.verdict.state.replace(" ", "-")}`, "data-state": dose.verdict.state },
    verdictWords(dose.verdict)));
  return box;
}

function membershipLabel(set, a, b) {
  return { [`${a}&${b}`]: "shared", [`${a}-${b}`]: `only ${a}`, [`${b}-${a}`]: `only ${b}` }[set] || set;
}

function effectWithP(r, task) {
  const control = (r.effect_controls || {})[task];
  return `${num(r.effects[task])}${control ? ` (p ${num(control.p_value)})` : ""}`;
}

function componentTable(rows, a, b) {
  if (!rows.length) return el("p", {}, "No component roles were measured.");
  const t = table(["component", "kind", "in", "role", "favours", `effect on ${a}`, `effect on ${b}`, "DLA mean",
    "DLA t", "DLA p", "conflict shift", "verdict"], [], "components");
  const body = t.tBodies[0];
  for (const r of rows) {
    const row = body.insertRow();
    row.dataset.name = r.name;
    row.title = verdictWords(r.verdict);
    [r.name, r.kind, membershipLabel(r.membership, a, b)].forEach((v) => cell(row, v));
    const role = cell(row, r.role);
    role.className = "role";
    role.dataset.role = r.role;
    role.prepend(el("span", { class: "swatch", style: `background:${ROLE_COLOURS[r.role] || SHARED_UNMEASURED}` }));
    const shift = r.conflict_control ? ` (p ${num(r.conflict_control.p_value)})` : "";
    [r.favours || "neither", effectWithP(r, a), effectWithP(r, b), num(r.dla_mean), num(r.dla_t), num(r.dla_p),
      `${num(r.conflict_shift)}${shift}`, r.verdict.state].forEach((v) => cell(row, v));
  }
  return t;
}

// The union drawing of every pair, from the two stored circuits; a pair whose circuits cannot be
// read says so in its place rather than failing the whole view.
async function drawPairs(e, mine) {
  const cache = new Map();
  const circuit = (id) => {
    if (!cache.has(id)) cache.set(id, api(`/v1/circuits/${encodeURIComponent(id)}`));
    return cache.get(id);
  };
  for (const [key, a, b] of pairsOf(e)) {
    const holder = document.querySelector(`#experiment-pairs section[data-pair="${CSS.escape(key)}"] .union-drawing`);
    try {
      const [ca, cb] = await Promise.all([circuit(e.circuits[a]), circuit(e.circuits[b])]);
      if (mine !== experimentState.openRequests) return;
      const roles = new Map((e.components || []).filter((r) => r.pair === key).map((r) => [r.name, r.role]));
      holder.replaceChildren(drawUnion(ca, cb, [a, b], roles));
      holder.dataset.state = "drawn";
    } catch (error) {
      if (mine !== experimentState.openRequests) return;
      holder.textContent = `Could not draw the circuits ${e.circuits[a]} and ${e.circuits[b]} (${error.message})`;
      holder.dataset.state = "error";
    }
  }
}

function startExperiments() {
  $("#key-form").addEventListener("submit", () => { experimentState.offset = 0; loadExperiments(); });
  $("#experiment-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    experimentState.offset = 0;
    loadExperiments();
  });
  $("#experiments-newer").addEventListener("click", () => {
    experimentState.offset = Math.max(0, experimentState.offset - EXPERIMENT_PAGE);
    loadExperiments();
  });
  $("#experiments-older").addEventListener("click", () => { experimentState.offset += EXPERIMENT_PAGE; loadExperiments(); });
  loadExperiments();
}

document.addEventListener("DOMContentLoaded", startExperiments);
