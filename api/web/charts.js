// circuit-atlas web page, drawings for the experiment view: the faithfulness colour scale of the
// ablation heatmap, line charts (dose-response curves) and a circuit drawing of two circuits'
// union. All SVG is built with createElementNS and textContent, never from HTML strings, so the
// page's CSP (scripts from this server only) holds and no data can inject markup.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

// Edge colours of the server's drawing (discovery/export.py QKV_COLORS, PLAIN_COLOR), so a union
// drawing reads like a single circuit's drawing.
const QKV_COLOURS = { q: "#1f77b4", k: "#ff7f0e", v: "#2ca02c" };
const PLAIN_COLOUR = "#7f7f7f";

// A shared component's fill by its role in the pair's competition (ComponentRole.role).
const ROLE_COLOURS = { cooperative: "#1b9e77", competitive: "#d95f02", mixed: "#7570b3", neutral: "#9e9e9e" };
const SHARED_UNMEASURED = "#ffd92f"; // shared, but the experiment gave it no role
const ONLY_COLOURS = ["#cfe2f3", "#fce5cd"]; // in the pair's first / second circuit only
const END_COLOUR = "#e0e0e0"; // embed and logits
const SERIES_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

function svgEl(tag, attrs = {}, text = null) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  if (text !== null) el.textContent = text;
  return el;
}

// Heatmap colour of a faithfulness: 1 (untouched) near white, 0 (as if all ablated) red, above 1
// (the ablation helped) blue, unmeasured grey. Linear in sRGB: readable, not perceptual.
function faithColour(f) {
  if (typeof f !== "number" || !Number.isFinite(f)) return "#e6e6e6";
  const mix = (from, to, t) => from.map((c, i) => Math.round(c + (to[i] - c) * t));
  const white = [247, 247, 247];
  const rgb = f <= 1 ? mix([215, 48, 39], white, Math.max(0, f)) : mix(white, [116, 169, 207], Math.min(1, (f - 1) * 2));
  return `rgb(${rgb.join(",")})`;
}

// Readable text on a fill: white on dark fills.
function inkOn(fill) {
  const m = /rgb\((\d+),(\d+),(\d+)\)/.exec(fill) || [];
  const [r, g, b] = m.length ? m.slice(1).map(Number) : [200, 200, 200];
  return 0.299 * r + 0.587 * g + 0.114 * b < 140 ? "#fff" : "#222";
}

// Tick values spanning [lo, hi]: about `n` round numbers.
function ticks(lo, hi, n = 4) {
  const step0 = (hi - lo) / n || 1;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((s) => s * mag).find((s) => s >= step0);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toFixed(10)));
  return out;
}

function extent(values, pad = 0.08) {
  const finite = values.filter((v) => typeof v === "number" && Number.isFinite(v));
  let lo = Math.min(...finite), hi = Math.max(...finite);
  if (!finite.length) [lo, hi] = [0, 1];
  if (lo === hi) [lo, hi] = [lo - 0.5, hi + 0.5];
  const margin = (hi - lo) * pad;
  return [lo - margin, hi + margin];
}

// A line chart: xs shared by every series; series = [{key, name, values}]; yRange fixed or fitted.
// Each point is a <circle data-x data-y> inside <g class="series" data-series=key>, with a <title>.
// xFormat labels the x ticks (e.g. a log axis passes log10 values and formats them back); xName
// names x in each point's tooltip.
function lineChart({ title, xLabel, xs, series, yRange = null, width = 380, height = 230,
  xFormat = String, xName = "alpha" }) {
  const m = { left: 52, right: 12, top: 30 + 13 * series.length, bottom: 40 }; // legend under the title
  const svg = svgEl("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  svg.append(svgEl("title", {}, title));
  const [x0, x1] = extent(xs, 0.04);
  const [y0, y1] = yRange || extent(series.flatMap((s) => s.values));
  const px = (x) => m.left + ((x - x0) / (x1 - x0)) * (width - m.left - m.right);
  const py = (y) => height - m.bottom - ((y - y0) / (y1 - y0)) * (height - m.top - m.bottom);
  svg.append(svgEl("text", { x: m.left, y: 16, class: "chart-title" }, title));
  const axis = svgEl("g", { class: "axis" });
  axis.append(svgEl("line", { x1: m.left, y1: py(y0), x2: width - m.right, y2: py(y0) }));
  axis.append(svgEl("line", { x1: m.left, y1: py(y0), x2: m.left, y2: m.top }));
  for (const x of xs) {
    axis.append(svgEl("text", { x: px(x), y: height - m.bottom + 14, "text-anchor": "middle" }, xFormat(x)));
  }
  for (const y of ticks(y0, y1)) {
    axis.append(svgEl("line", { x1: m.left, y1: py(y), x2: width - m.right, y2: py(y), class: "grid" }));
    axis.append(svgEl("text", { x: m.left - 5, y: py(y) + 4, "text-anchor": "end" }, String(y)));
  }
  axis.append(svgEl("text", { x: (m.left + width - m.right) / 2, y: height - 6, "text-anchor": "middle" }, xLabel));
  svg.append(axis);
  series.forEach((s, i) => {
    const colour = SERIES_COLOURS[i % SERIES_COLOURS.length];
    const g = svgEl("g", { class: "series", "data-series": s.key });
    const points = xs.map((x, j) => [x, s.values[j]]).filter(([, y]) => Number.isFinite(y));
    g.append(svgEl("polyline", { points: points.map(([x, y]) => `${px(x)},${py(y)}`).join(" "),
      fill: "none", stroke: colour, "stroke-width": 2 }));
    for (const [x, y] of points) {
      const dot = svgEl("circle", { cx: px(x), cy: py(y), r: 3.5, fill: colour, "data-x": x, "data-y": y });
      dot.append(svgEl("title", {}, `${s.name}: ${y.toFixed(3)} at ${xName} ${xFormat(x)}`));
      g.append(dot);
    }
    g.append(svgEl("line", { x1: m.left, y1: 26 + 13 * i, x2: m.left + 16, y2: 26 + 13 * i, stroke: colour, "stroke-width": 2 }));
    g.append(svgEl("text", { x: m.left + 20, y: 30 + 13 * i, fill: colour, class: "legend" }, s.name));
    svg.append(g);
  });
  return svg;
}

// ----- circuit drawing: the layout of discovery/export.py (_row, _positions), in the browser -----

function graphShape(circuits) {
  const given = circuits.map((c) => c.graph).find((g) => g);
  if (given) return given;
  const nodes = circuits.flatMap((c) => c.nodes);
  const max = (key) => Math.max(-1, ...nodes.map((n) => n[key]).filter((v) => typeof v === "number"));
  return { n_layers: max("layer") + 1, n_heads: max("head") + 1, mlp: nodes.some((n) => n.kind === "mlp" || n.kind === "neuron") };
}

// Row from the bottom: embed, then per layer its heads and then its MLP (with neurons), logits.
function nodeRow(node, shape) {
  const stride = shape.mlp ? 2 : 1;
  if (node.kind === "embed") return 0;
  if (node.kind === "logits") return 1 + stride * shape.n_layers;
  return 1 + stride * node.layer + (node.kind !== "attention" && node.kind !== "kv_group" ? 1 : 0);
}

function rowLabels(shape) {
  const kinds = shape.mlp ? ["heads", "MLP"] : ["heads"];
  const labels = ["embed"];
  for (let i = 0; i < shape.n_layers; i++) kinds.forEach((k) => labels.push(`L${i} ${k}`));
  return [...labels, "logits"];
}

// Heads at their head index, embed/MLP/logits centred, neurons in a row right of their MLP.
function nodePositions(nodes, shape) {
  const centre = (Math.max(shape.n_heads, 1) - 1) / 2;
  const slots = new Map();
  const perLayer = new Map();
  nodes.filter((n) => n.kind === "neuron").sort((p, q) => p.layer - q.layer || p.neuron - q.neuron).forEach((n) => {
    const used = perLayer.get(n.layer) || 0;
    slots.set(n.name, used);
    perLayer.set(n.layer, used + 1);
  });
  const pos = new Map();
  for (const n of nodes) {
    if (n.kind === "kv_group") {  // a{L}.kv{G}: centred under the heads that read it, just below them
      const size = shape.n_heads / (shape.kv_groups || shape.n_heads);
      pos.set(n.name, [n.head * size + (size - 1) / 2, nodeRow(n, shape) - 0.4]);
      continue;
    }
    const x = n.kind === "attention" ? n.head : n.kind === "neuron" ? centre + 0.7 + 0.55 * slots.get(n.name) : centre;
    pos.set(n.name, [x, nodeRow(n, shape)]);
  }
  return pos;
}

// Where a node of the union stands: "shared" (in both circuits), or only in the first / second.
function membershipOf(name, inA, inB) {
  return inA.has(name) && inB.has(name) ? "shared" : inA.has(name) ? "a" : "b";
}

function nodeFill(node, membership, role) {
  if (node.kind === "embed" || node.kind === "logits") return END_COLOUR;
  if (membership === "shared") return role ? ROLE_COLOURS[role] || SHARED_UNMEASURED : SHARED_UNMEASURED;
  return ONLY_COLOURS[membership === "a" ? 0 : 1];
}

// The union of circuits `a` and `b` (GET /v1/circuits/{id} JSON) drawn bottom (embed) to top
// (logits); shared components filled by `roles` (component name -> role), the rest by circuit.
function drawUnion(a, b, tasks, roles) {
  const inA = new Set(a.nodes.map((n) => n.name));
  const inB = new Set(b.nodes.map((n) => n.name));
  const nodes = [...new Map([...a.nodes, ...b.nodes].map((n) => [n.name, n])).values()];
  const edges = [...new Map([...a.edges, ...b.edges].map((e) => [`${e.src}>${e.dst}<${e.input}`, e])).values()];
  const shape = graphShape([a, b]);
  const pos = nodePositions(nodes, shape);
  const labels = rowLabels(shape);
  const xs = [...pos.values()].map(([x]) => x);
  const [minX, maxX] = [Math.min(0, ...xs), Math.max(0, ...xs)];
  const col = 64, rowH = 46, left = 86, top = 44;
  const legend = unionLegend(tasks);
  const width = Math.max(legend.width, left + (maxX - minX + 1) * col + 20);
  const height = top + labels.length * rowH;
  const at = (name) => {
    const [x, row] = pos.get(name);
    return [left + (x - minX + 0.5) * col, top + (labels.length - 1 - row + 0.5) * rowH];
  };
  const svg = svgEl("svg", { class: "union", viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  svg.append(svgEl("title", {}, `union of the ${tasks[0]} and ${tasks[1]} circuits`));
  labels.forEach((label, i) => {
    const y = top + (labels.length - 1 - i + 0.5) * rowH;
    svg.append(svgEl("line", { x1: left, y1: y, x2: width - 10, y2: y, class: "grid" }));
    svg.append(svgEl("text", { x: 6, y: y + 4, class: "row-label" }, label));
  });
  svg.append(legend.g);
  const bend = { q: 0.1, k: 0.2, v: 0.3 };
  for (const e of edges) {
    if (!pos.has(e.src) || !pos.has(e.dst)) continue;
    const [[x0, y0], [x1, y1]] = [at(e.src), at(e.dst)];
    const r = (bend[e.input] || 0.08) * Math.min(1, 180 / Math.hypot(x1 - x0, y1 - y0));
    const [cx, cy] = [(x0 + x1) / 2 - (y1 - y0) * r, (y0 + y1) / 2 + (x1 - x0) * r];
    const both = inA.has(e.src) && inB.has(e.src) && inA.has(e.dst) && inB.has(e.dst);
    svg.append(svgEl("path", { d: `M${x0},${y0} Q${cx},${cy} ${x1},${y1}`, fill: "none", class: "edge",
      stroke: QKV_COLOURS[e.input] || PLAIN_COLOUR, "stroke-width": both ? 2 : 1.2, opacity: 0.55 }));
  }
  for (const n of nodes) {
    const membership = n.kind === "embed" || n.kind === "logits" ? "end" : membershipOf(n.name, inA, inB);
    const role = membership === "shared" ? roles.get(n.name) || "" : "";
    const fill = nodeFill(n, membership, role);
    const [x, y] = at(n.name);
    const g = svgEl("g", { class: "node", "data-name": n.name, "data-membership": membership, "data-role": role, "data-fill": fill });
    g.append(svgEl("rect", { x: x - 25, y: y - 11, width: 50, height: 22, rx: 6, fill, stroke: "#555" }));
    g.append(svgEl("text", { x, y: y + 4, "text-anchor": "middle", fill: inkOn(hexToRgb(fill)) }, n.name));
    const who = membership === "shared" ? `shared${role ? `, ${role}` : ", no role measured"}`
      : membership === "end" ? "" : `only in ${tasks[membership === "a" ? 0 : 1]}`;
    g.append(svgEl("title", {}, who ? `${n.name}: ${who}` : n.name));
    svg.append(g);
  }
  return svg;
}

function hexToRgb(hex) {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  return m ? `rgb(${m.slice(1).map((h) => parseInt(h, 16)).join(",")})` : hex;
}

function unionLegend(tasks) {
  const entries = [...Object.entries(ROLE_COLOURS).map(([role, c]) => [`shared, ${role}`, c]),
    ["shared, no role", SHARED_UNMEASURED], [`only ${tasks[0]}`, ONLY_COLOURS[0]], [`only ${tasks[1]}`, ONLY_COLOURS[1]]];
  const g = svgEl("g", { class: "legend" });
  let x = 6;
  for (const [label, colour] of entries) {
    g.append(svgEl("rect", { x, y: 8, width: 12, height: 12, fill: colour, stroke: "#555" }));
    const text = svgEl("text", { x: x + 16, y: 18 }, label);
    g.append(text);
    x += 28 + 6.5 * label.length; // about 6.5 px a character at the drawing's 10 px font
  }
  return { g, width: x };
}
