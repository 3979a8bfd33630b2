"""Circuits from other tools in, studies out in MIB's submission layout.

Formats read (:func:`detect_format` tells them apart, :func:`parse_circuit` reads any):

* ``ours``: :meth:`Circuit.to_dict` JSON (what ``circuits discover --out`` writes);
* ``eap-ig``: EAP-IG's ``Graph.to_json`` / MIB graph JSON: ``{"cfg", "nodes", "edges":
  {"input->a0.h1<q>": {"score", "in_graph"}}}`` (:func:`discovery.export.from_mib_json`);
* ``auto-circuit``: edges named as auto-circuit names them (``Resid Start->A0.1.Q``,
  ``A0.1->MLP 2``, ``MLP 3->Resid End``): a list of the circuit's edges, or
  ``{"edges": [...], "scores": {name: score}}``, or the prune scores alone ``{name: score}``
  (then ``top_n`` picks the circuit: auto-circuit ranks by |score|).

The files carry no task measurement: imported circuits are :meth:`Metrics.unmeasured`, and their
provenance names the tool's format and the source under ``params.imported``.

:func:`export_mib` writes circuits as MIB expects a submission: one folder per method, in it one
``<task>_<model>`` folder per circuit holding ``importances.json`` (every edge's score; MIB ranks
them itself).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from discovery.circuit import Circuit, Edge, GraphShape, Metrics, Node, Provenance
from discovery.export import from_mib_json, to_mib_json

FORMATS = ("ours", "eap-ig", "auto-circuit")

_AC_SRC = re.compile(r"^(?:(Resid Start)|A(\d+)\.(\d+)|MLP (\d+))$")
_AC_DST = re.compile(r"^(?:(Resid End)|A(\d+)\.(\d+)\.([QKV])|MLP (\d+))$")


def detect_format(data: Any) -> str:
    """Which of :data:`FORMATS` ``data`` (parsed JSON) is in; ValueError saying what each looks like."""
    if isinstance(data, dict) and "provenance" in data and "nodes" in data and "edges" in data:
        return "ours"
    if isinstance(data, dict) and "cfg" in data and isinstance(data.get("edges"), dict):
        return "eap-ig"
    if isinstance(data, list) or (isinstance(data, dict) and isinstance(data.get("edges"), list)):
        return "auto-circuit"
    if isinstance(data, dict) and data and all(isinstance(v, int | float) for v in data.values()):
        return "auto-circuit"
    raise ValueError("unrecognised circuit file: expected our circuit JSON (id, nodes, edges, metrics, "
                     "provenance), EAP-IG / MIB graph JSON (cfg, nodes, edges) or an auto-circuit edge "
                     "list (a list of names such as 'A0.1->A2.3.Q', or {edges, scores})")


def from_auto_circuit_name(name: str) -> str:
    """``A0.1->A2.3.Q`` -> ``a0.h1->a2.h3<q>``; ValueError naming the accepted forms."""
    src, sep, dst = name.partition("->")
    s, d = _AC_SRC.match(src.strip()), _AC_DST.match(dst.strip())
    if not (sep and s and d):
        raise ValueError(f"bad auto-circuit edge name {name[:80]!r}: expected SRC->DST with SRC one of "
                         "'Resid Start', 'A<L>.<H>', 'MLP <L>' and DST one of 'A<L>.<H>.Q|K|V', "
                         "'MLP <L>', 'Resid End'")
    ours_src = "embed" if s[1] else f"a{s[2]}.h{s[3]}" if s[2] is not None else f"m{s[4]}"
    if d[1]:
        return f"{ours_src}->logits"
    if d[2] is not None:
        return f"{ours_src}->a{d[2]}.h{d[3]}<{d[4].lower()}>"
    return f"{ours_src}->m{d[5]}"


def to_auto_circuit(circuit: Circuit) -> dict[str, Any]:
    """The circuit as an auto-circuit edge list ``{"edges": [...], "scores": {...}}``."""
    from discovery.orders import auto_circuit_edge

    def name(edge_name: str) -> str:
        return auto_circuit_edge(Edge.parse(edge_name))

    return {"edges": [auto_circuit_edge(e) for e in circuit.edges],
            "scores": {name(k): v for k, v in circuit.edge_scores.items()}}


def _auto_circuit_edges(data: Any, top_n: int | None) -> tuple[list[str], dict[str, float]]:
    """(the circuit's edges, every score given) in our names."""
    if isinstance(data, list):
        names, scores = data, {}
    elif isinstance(data.get("edges"), list):
        names, scores = data["edges"], data.get("scores") or {}
    else:  # prune scores alone
        if top_n is None:
            raise ValueError("top_n: an auto-circuit file of scores alone names no circuit; give top_n "
                             "(the n edges of largest |score| are kept)")
        scores = data
        names = sorted(scores, key=lambda n: -abs(float(scores[n])))[:top_n]
    if not all(isinstance(n, str) for n in names):
        raise ValueError("edges: give edge names as strings, e.g. 'A0.1->A2.3.Q'")
    ours = {n: from_auto_circuit_name(n) for n in {*names, *scores}}
    return [ours[n] for n in names], {ours[n]: float(v) for n, v in scores.items()}


def _circuit_of_edges(edges: list[str], scores: dict[str, float], shape: GraphShape | None,
                      provenance: Provenance) -> Circuit:
    if shape is not None:
        known = set(shape.edges())
        bad = [e for e in [*edges, *scores] if e not in known]
        if bad:
            raise ValueError(f"edges: {bad[0]!r} is not an edge of the model's graph ({shape.n_layers} "
                             f"layers x {shape.n_heads} heads); check the model")
    kept = tuple(Edge.parse(e, scores.get(e)) for e in dict.fromkeys(edges))
    names = sorted({e.src for e in kept} | {e.dst for e in kept})
    return Circuit(id="", nodes=tuple(Node.parse(n) for n in names), edges=kept,
                   metrics=Metrics.unmeasured(), provenance=provenance, graph=shape, edge_scores=scores)


def parse_circuit(data: Any, *, fmt: str | None = None, model: str | None = None, task: str | None = None,
                  method: str | None = None, shape: GraphShape | None = None, top_n: int | None = None,
                  source: str = "") -> Circuit:
    """A circuit from another tool's file (``data``: its parsed JSON), in format ``fmt`` (default:
    detected), stored under ``model``/``task``/``method`` (our files carry their own; another
    value for them is refused). ``shape``: the model's graph, to check the edges against (an
    EAP-IG file carries its own). Its id is a hash of model, task, method and kept edges, so
    importing one file twice gives one circuit."""
    fmt = fmt or detect_format(data)
    if fmt not in FORMATS:
        raise ValueError(f"format: unknown {fmt!r}; use one of {', '.join(FORMATS)}")
    imported = {"format": fmt, "source": source[:200], "at": datetime.now(UTC).isoformat()}
    if fmt == "ours":
        try:
            circuit = Circuit.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a circuit JSON file ({exc})") from None
        p = circuit.provenance
        for field, given in (("model", model), ("task", task), ("method", method)):
            if given is not None and given != getattr(p, field):
                raise ValueError(f"{field}: the file's circuit is for {field} {getattr(p, field)!r}, "
                                 f"not {given!r}; leave {field} out for our own files")
        circuit = replace(circuit, provenance=replace(p, params={**p.params, "imported": imported}))
    else:
        missing = [name for name, v in (("model", model), ("task", task), ("method", method)) if not v]
        if missing:
            raise ValueError(f"{', '.join(missing)}: a {fmt} file does not say; give "
                             f"{' and '.join(missing)} (e.g. model multitask, task ioi, method eap-ig)")
        provenance = Provenance(model=model, task=task, method=method, params={"imported": imported},
                                created_at=imported["at"])
        try:
            if fmt == "eap-ig":
                circuit = replace(from_mib_json(data, model=model, task=task, method=method),
                                  provenance=provenance)
                if shape is not None and (shape.n_layers, shape.n_heads) != (circuit.graph.n_layers,
                                                                             circuit.graph.n_heads):
                    raise ValueError(f"cfg: the file's graph ({circuit.graph.n_layers} layers x "
                                     f"{circuit.graph.n_heads} heads) is not model {model}'s "
                                     f"({shape.n_layers} x {shape.n_heads})")
            else:
                circuit = _circuit_of_edges(*_auto_circuit_edges(data, top_n), shape, provenance)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"a malformed {fmt} file ({type(exc).__name__}: {exc})") from None
    digest = hashlib.sha256("\n".join([circuit.provenance.model, circuit.provenance.task, circuit.provenance.method,
                                       *sorted(e.name for e in circuit.edges)]).encode()).hexdigest()
    return replace(circuit, id=f"imported-{digest[:16]}")


def mib_folder(method: str, task: str, model: str) -> Path:
    """Where MIB wants one circuit: ``<method>/<task>_<model>``, names made path-safe (MIB splits
    the folder's name at its underscore, so one inside a name becomes a hyphen)."""
    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9.+-]", "-", text)
    return Path(safe(method)) / f"{safe(task)}_{safe(model)}"


def export_mib(circuits: Iterable[Circuit], out: Path, d_model: int | None = None) -> list[Path]:
    """Write each circuit's ``importances.json`` under ``out`` in MIB's submission layout (unscored
    edges score 0.0: MIB reads a float for every edge). Returns the files written; refuses two
    circuits for one folder."""
    written: list[Path] = []
    for circuit in circuits:
        p = circuit.provenance
        target = out / mib_folder(p.method, p.task, p.model) / "importances.json"
        if target in written:
            raise ValueError(f"two circuits for {target.parent}: give one per method and task")
        data = to_mib_json(circuit, d_model if d_model is not None else p.params.get("d_model"))
        for entry in data["edges"].values():
            entry["score"] = 0.0 if entry["score"] is None else entry["score"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data))
        written.append(target)
    return written
