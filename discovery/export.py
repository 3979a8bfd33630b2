"""Export circuits to other tools' formats: MIB / EAP-IG JSON, networkx and GraphML, Graphviz DOT,
and PNG/SVG drawings; ``export(circuit, fmt, path)`` writes any of them by format name.

Pure library: no torch, Neo4j, Celery or FastAPI. matplotlib is imported only inside ``draw`` so
that the text formats stay cheap to import.

In networkx a circuit is a ``MultiDiGraph`` whose edge *key is the edge's input* (q, k, v, mlp,
logits): ``(src, dst, input)`` is exactly what identifies an ``Edge``, so the q, k and v edges
between one pair of heads stay three distinct edges with scalar attributes. A plain ``DiGraph``
would have to fold them into one edge with a dict attribute, which GraphML cannot hold.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import networkx as nx

from discovery.circuit import Circuit, Edge, GraphShape, Metrics, Node, Provenance

MIB_INPUT = "input"  # the EAP-IG / MIB name of our ``embed`` node
_MIB_MLP_RE = re.compile(r"^m\d+$")  # an MLP node: the graph has MLPs
QKV_COLORS = {"q": "#1f77b4", "k": "#ff7f0e", "v": "#2ca02c"}
PLAIN_COLOR = "#7f7f7f"  # MLP and logits edges
_FILL = {"embed": "#e0e0e0", "attention": "#cfe2f3", "kv_group": "#d9d2e9", "mlp": "#fce5cd", "neuron": "#fff2cc",
         "logits": "#e0e0e0"}


def _to_mib(name: str) -> str:
    """``embed`` -> ``input`` in a node or edge name (the embedding is only ever a source)."""
    return MIB_INPUT + name[len("embed"):] if name.startswith("embed") else name


def _from_mib(name: str) -> str:
    return "embed" + name[len(MIB_INPUT):] if name.startswith(MIB_INPUT) else name


def _json_float(value: float | None) -> float | None:
    # NaN/inf are not JSON: strict readers (and the MIB scripts) would reject the whole file.
    return float(value) if value is not None and math.isfinite(value) else None


def to_mib_json(circuit: Circuit, d_model: int | None = None) -> dict[str, Any]:
    """The EAP-IG ``Graph.to_json`` / MIB layout: every node (``{"in_graph": bool}``) and edge
    (``{"score", "in_graph"}``) of the full graph, with ``in_graph`` for the circuit's and
    ``score`` from ``edge_scores`` (else the kept edge's). ``d_model``: the model's width, which
    MIB's loader reads from ``cfg`` (None when unknown)."""
    if circuit.graph is None:
        raise ValueError(f"circuit {circuit.id} has no graph shape: the MIB layout lists the full graph")
    # Neurons are no nodes of the MIB edge graph: edges into or out of them are left out.
    kept = {e.name: e for e in circuit.edges
            if "neuron" not in {Node.parse(e.src).kind, Node.parse(e.dst).kind}}
    full = circuit.graph.edges()
    foreign = set(kept) - set(full)
    if foreign:
        raise ValueError(f"circuit {circuit.id}: edges outside its graph {circuit.graph}: {sorted(foreign)}")
    in_graph = {n.name for n in circuit.nodes}
    edges = {}
    for name in full:
        score = circuit.edge_scores.get(name)
        if score is None and name in kept:
            score = kept[name].score
        edges[_to_mib(name)] = {"score": _json_float(score), "in_graph": name in kept}
    cfg = {"n_layers": circuit.graph.n_layers, "n_heads": circuit.graph.n_heads,
           "parallel_attn_mlp": circuit.graph.parallel, "d_model": d_model}
    if circuit.graph.kv_groups is not None:  # one k/v input per key-value group (not MIB's default)
        cfg["kv_groups"] = circuit.graph.kv_groups
    nodes = [*circuit.graph.upstream(), *circuit.graph.kv_nodes(), "logits"]
    return {
        "cfg": cfg,
        "nodes": {_to_mib(n): {"in_graph": n in in_graph} for n in nodes},
        "edges": edges,
    }


def from_mib_json(data: dict[str, Any] | str, *, model: str, task: str, method: str,
                  metrics: Metrics | None = None, circuit_id: str | None = None) -> Circuit:
    """A circuit from an EAP-IG / MIB graph: the ``in_graph`` edges, their endpoints as nodes.

    The layout carries no task metric, so unless ``metrics`` is given they are
    :meth:`Metrics.unmeasured` (None under the name ``unmeasured``; faithfulness None too).
    The id defaults to a hash of the kept edges, so one file always gives the same id."""
    if isinstance(data, str):
        data = json.loads(data)
    cfg = data["cfg"]
    # Parallel blocks (GPT-NeoX): a layer's MLP reads what its heads read, not their outputs.
    shape = GraphShape(int(cfg["n_layers"]), int(cfg["n_heads"]),
                       mlp=any(_MIB_MLP_RE.match(n) for n in data["nodes"]),
                       parallel=bool(cfg.get("parallel_attn_mlp")),
                       kv_groups=int(cfg["kv_groups"]) if cfg.get("kv_groups") else None)
    scores: dict[str, float] = {}
    kept: list[Edge] = []
    for mib_name, entry in data["edges"].items():
        name, score = _from_mib(mib_name), entry.get("score")
        if score is not None:
            scores[name] = float(score)
        if entry.get("in_graph"):
            kept.append(Edge.parse(name, scores.get(name)))
    order = {n: i for i, n in enumerate([*shape.upstream(), *shape.kv_nodes(), "logits"])}
    names = sorted({e.src for e in kept} | {e.dst for e in kept}, key=order.__getitem__)
    digest = hashlib.sha256("\n".join(sorted(e.name for e in kept)).encode()).hexdigest()[:12]
    return Circuit(id=circuit_id or f"mib-{digest}", nodes=tuple(Node.parse(n) for n in names),
                   edges=tuple(kept), graph=shape, edge_scores=scores,
                   metrics=metrics or Metrics.unmeasured(),
                   provenance=Provenance(model=model, task=task, method=method))


def _scalars(**attrs: Any) -> dict[str, Any]:
    """Drop None (GraphML has no null) and make scores plain floats (one GraphML key type each)."""
    return {k: float(v) if k == "score" else v for k, v in attrs.items() if v is not None}


def to_networkx(circuit: Circuit) -> nx.MultiDiGraph:
    """A ``MultiDiGraph`` keyed by edge input; metrics, provenance and edge scores ride along as
    JSON strings in ``g.graph`` so that GraphML (scalars only) can carry the whole circuit."""
    g = nx.MultiDiGraph(
        circuit_id=circuit.id,  # not "id": the GraphML writer pops that one off g.graph
        metrics=json.dumps(asdict(circuit.metrics)), provenance=json.dumps(asdict(circuit.provenance)),
        edge_scores=json.dumps(circuit.edge_scores),
        **(_scalars(**asdict(circuit.graph)) if circuit.graph else {}))  # kv_groups None: absent
    for n in circuit.nodes:
        g.add_node(n.name, **_scalars(kind=n.kind, layer=n.layer, head=n.head, neuron=n.neuron,
                                      score=n.score))
    for i, e in enumerate(circuit.edges):
        # index: networkx groups edges by source, so the circuit's own edge order is kept here.
        g.add_edge(e.src, e.dst, key=e.input, **_scalars(input=e.input, score=e.score, index=i))
    return g


def from_networkx(g: nx.DiGraph, *, metrics: Metrics | None = None,
                  provenance: Provenance | None = None, circuit_id: str | None = None) -> Circuit:
    """A circuit from a graph made by ``to_networkx`` (or any DiGraph with node names as ids and
    an ``input`` edge attribute); arguments override what ``g.graph`` carries."""
    meta = g.graph
    if (metrics is None or provenance is None or circuit_id is None) and "metrics" not in meta:
        raise ValueError("graph carries no circuit metadata: pass metrics, provenance and circuit_id")
    # Names are authoritative: kind/layer/head/neuron attributes are derived data for other tools.
    nodes = tuple(Node.parse(str(name), score=data.get("score")) for name, data in g.nodes(data=True))
    indexed = []
    for pos, (u, v, data) in enumerate(g.edges(data=True)):
        qkv = data.get("input")
        name = f"{u}->{v}<{qkv}>" if qkv in QKV_COLORS else f"{u}->{v}"
        indexed.append((data.get("index", pos), Edge.parse(name, data.get("score"))))
    shape = GraphShape(int(meta["n_layers"]), int(meta["n_heads"]), bool(meta["mlp"]),
                       parallel=bool(meta.get("parallel", False)),
                       kv_groups=int(meta["kv_groups"]) if meta.get("kv_groups") else None,
                       ) if "n_layers" in meta else None
    return Circuit(id=circuit_id or str(meta["circuit_id"]), nodes=nodes, graph=shape,
                   edges=tuple(e for _, e in sorted(indexed, key=lambda t: t[0])),
                   metrics=metrics or Metrics(**json.loads(meta["metrics"])),
                   provenance=provenance or Provenance(**json.loads(meta["provenance"])),
                   edge_scores=json.loads(meta.get("edge_scores", "{}")))


def to_graphml(circuit: Circuit) -> str:
    return "\n".join(nx.generate_graphml(to_networkx(circuit)))


def from_graphml(text: str, **overrides: Any) -> Circuit:
    """Inverse of ``to_graphml``; ``overrides`` are ``from_networkx``'s keyword arguments."""
    # str keys: our edge ids are the inputs ("q", "mlp"), not networkx's default int keys.
    g = nx.parse_graphml(text, edge_key_type=str, force_multigraph=True)
    return from_networkx(g, **overrides)


def _shape(circuit: Circuit) -> GraphShape:
    """The circuit's graph shape, or the smallest one that holds its nodes."""
    if circuit.graph is not None:
        return circuit.graph
    layers = [n.layer for n in circuit.nodes if n.layer is not None]
    heads = [n.head for n in circuit.nodes if n.head is not None]
    return GraphShape(max(layers, default=-1) + 1, max(heads, default=-1) + 1,
                      mlp=any(n.kind in ("mlp", "neuron") for n in circuit.nodes))


def _row(node: Node, shape: GraphShape) -> int:
    """Row from the bottom: embed, then per layer its heads and then its MLP (with neurons), logits."""
    stride = 2 if shape.mlp else 1
    if node.kind == "embed":
        return 0
    if node.kind == "logits":
        return 1 + stride * shape.n_layers
    return 1 + stride * node.layer + (node.kind not in ("attention", "kv_group"))


def _row_labels(shape: GraphShape) -> list[str]:
    kinds = ["heads", "MLP"] if shape.mlp else ["heads"]
    return ["embed", *[f"L{i} {k}" for i in range(shape.n_layers) for k in kinds], "logits"]


def _weight(edges: Iterable[Edge]) -> Callable[[Edge], float | None]:
    """|score| over the largest |score|, in [0, 1]; None where no edge has a nonzero score."""
    top = max((abs(e.score) for e in edges if e.score is not None and math.isfinite(e.score)), default=0)
    if top == 0:
        return lambda e: None
    return lambda e: abs(e.score) / top if e.score is not None and math.isfinite(e.score) else 0.0


def _title(circuit: Circuit) -> str:
    p, f = circuit.provenance, circuit.metrics.faithfulness
    faith = f"{f:.3f}" if f is not None and math.isfinite(f) else "n/a"
    return f"{p.model} / {p.task} / {p.method}  (faithfulness {faith})"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(circuit: Circuit) -> str:
    """Graphviz DOT, bottom to top like the residual stream: one rank per row of ``_row``."""
    shape, weight = _shape(circuit), _weight(circuit.edges)
    lines = ["digraph circuit {", f"  rankdir=BT; labelloc=t; label={_q(_title(circuit))};",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];']
    rows: dict[int, list[str]] = {}
    for n in circuit.nodes:
        small = ", fontsize=8, height=0.25" if n.kind == "neuron" else ""
        lines.append(f"  {_q(n.name)} [label={_q(n.name)}, fillcolor={_q(_FILL[n.kind])}{small}];")
        rows.setdefault(_row(n, shape), []).append(_q(n.name))
    top = _row(Node.parse("logits"), shape)
    for row, names in sorted(rows.items()):
        rank = "min" if row == 0 else "max" if row == top else "same"
        lines.append(f"  {{rank={rank}; {'; '.join(names)};}}")
    for e in circuit.edges:
        attrs = [f"color={_q(QKV_COLORS.get(e.input, PLAIN_COLOR))}"]
        if e.input in QKV_COLORS:  # label and color both, so q/k/v survive grayscale printing
            attrs += [f"label={_q(e.input)}", f"fontcolor={_q(QKV_COLORS[e.input])}", "fontsize=8"]
        if (w := weight(e)) is not None:
            attrs.append(f"penwidth={0.5 + 3.5 * w:.2f}")
        lines.append(f"  {_q(e.src)} -> {_q(e.dst)} [{', '.join(attrs)}];")
    return "\n".join([*lines, "}"]) + "\n"


def _positions(nodes: Iterable[Node], shape: GraphShape) -> dict[str, tuple[float, float]]:
    """Heads at their head index, embed/MLP/logits centred, neurons in a row right of their MLP."""
    centre = (max(shape.n_heads, 1) - 1) / 2
    slot: dict[tuple[int, int], int] = {}
    per_layer: Counter[int] = Counter()
    nodes = list(nodes)
    for key in sorted((n.layer, n.neuron) for n in nodes if n.kind == "neuron"):
        slot[key], per_layer[key[0]] = per_layer[key[0]], per_layer[key[0]] + 1
    pos = {}
    for n in nodes:
        if n.kind == "attention":
            x = float(n.head)
        elif n.kind == "kv_group":  # centred under the heads that read it, just below their row
            size = shape.n_heads // (shape.kv_groups or shape.n_heads)
            pos[n.name] = (n.head * size + (size - 1) / 2, _row(n, shape) - 0.4)
            continue
        elif n.kind == "neuron":
            x = centre + 0.7 + 0.55 * slot[(n.layer, n.neuron)]
        else:
            x = centre
        pos[n.name] = (x, float(_row(n, shape)))
    return pos


def draw(circuit: Circuit, path: Path | str, *, format: str | None = None) -> Path:
    """A PNG or SVG drawing: rows from embed (bottom) to logits (top), q/k/v edges in colour."""
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in ("png", "svg"):
        raise ValueError(f"draw writes png or svg, not {fmt!r}")
    # Figure without pyplot: no global state and no GUI backend; PNG renders through Agg.
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    shape, weight = _shape(circuit), _weight(circuit.edges)
    pos, labels = _positions(circuit.nodes, shape), _row_labels(shape)
    xs = [x for x, _ in pos.values()] or [0.0]
    width = min(max(7.0, 1.1 * (max(xs) - min(xs) + 1) + 3), 28.0)
    fig = Figure(figsize=(width, min(max(4.0, 0.7 * len(labels) + 1.5), 22.0)), layout="constrained")
    ax = fig.add_subplot()
    # Curvature per input keeps the q, k and v edges of one pair of nodes apart; it shrinks with
    # length because arc3's bulge grows with it, and long edges would leave the axes.
    bend = {"q": 0.1, "k": 0.2, "v": 0.3}
    thick = 2.4 if len(circuit.edges) <= 40 else 1.2  # thinner lines where many edges cross
    for e in circuit.edges:
        (x0, y0), (x1, y1), w = pos[e.src], pos[e.dst], weight(e)
        rad = bend.get(e.input, 0.08) * min(1.0, 3.0 / math.hypot(x1 - x0, y1 - y0))
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=1, arrowprops=dict(
            arrowstyle="-|>", color=QKV_COLORS.get(e.input, PLAIN_COLOR), shrinkA=9, shrinkB=9,
            lw=0.6 + thick * (0.5 if w is None else w), alpha=0.75 if w is None else 0.45 + 0.45 * w,
            connectionstyle=f"arc3,rad={rad:.3f}"))
    if circuit.graph is not None:  # components left out, faint, so the columns stay readable
        present = {n.name for n in circuit.nodes}
        ghosts = [Node.parse(m) for m in circuit.graph.upstream() if m not in present]
        for g, (x, y) in _positions(ghosts, shape).items():
            ax.text(x, y, g, ha="center", va="center", fontsize=7, color="#c8c8c8", zorder=0)
    for n in circuit.nodes:
        small = n.kind == "neuron"
        ax.text(*pos[n.name], n.name, ha="center", va="center", fontsize=6 if small else 8, zorder=3,
                bbox=dict(boxstyle="round,pad=0.2" if small else "round,pad=0.35",
                          fc=_FILL[n.kind], ec="#555555", lw=0.6))
    ax.set(xlim=(min(xs) - 0.8, max(xs) + 0.8), ylim=(-0.6, len(labels) - 0.4), xticks=[])
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.spines[:].set_visible(False)
    ax.grid(axis="y", color="#eeeeee", zorder=0)
    handles = [Line2D([], [], color=c, lw=2, label=x) for x, c in QKV_COLORS.items()]
    handles.append(Line2D([], [], color=PLAIN_COLOR, lw=2, label="mlp / logits"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    ax.set_title(f"{_title(circuit)}\n{len(circuit.nodes)} nodes, {len(circuit.edges)} edges", fontsize=10)
    fig.savefig(path, format=fmt, dpi=150)
    return path


Writer = Callable[[Circuit, Path], Path]


def _text_writer(render: Callable[[Circuit], str]) -> Writer:
    def write(circuit: Circuit, path: Path) -> Path:
        path.write_text(render(circuit), encoding="utf-8")
        return path

    return write


EXPORTERS: dict[str, Writer] = {
    "json": _text_writer(lambda c: c.to_json()),
    "mib": _text_writer(lambda c: json.dumps(to_mib_json(c, c.provenance.params.get("d_model")))),
    "graphml": _text_writer(to_graphml),
    "dot": _text_writer(to_dot),
    "png": partial(draw, format="png"),
    "svg": partial(draw, format="svg"),
}


def export(circuit: Circuit, fmt: str, path: Path | str) -> Path:
    """Write ``circuit`` to ``path`` in format ``fmt`` (a key of ``EXPORTERS``)."""
    writer = EXPORTERS.get(fmt.lower())
    if writer is None:
        raise ValueError(f"unknown export format {fmt!r}: known formats are {', '.join(EXPORTERS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return writer(circuit, path)
