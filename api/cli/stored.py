"""Stored circuits from the command line: ``circuits store``, ``delete``, ``list``, ``compare``,
``matrix``, ``hubs`` and ``cypher`` (read-only), against the Neo4j named by the settings.

Only the graph store and the neo4j driver are imported, inside the handlers: no torch."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.cli.tables import table

if TYPE_CHECKING:
    from neo4j import Driver

    from workers.settings import Settings

NAMES_SHOWN = 12  # component names printed per list unless --all


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("store", help="write circuit JSON files into Neo4j (rewriting one replaces it)")
    s.add_argument("files", nargs="+", type=Path, metavar="FILE", help="circuit JSON (circuits discover)")
    s.set_defaults(handler=run_store)

    s.add_argument("--keep-dangling", action="store_true",
                   help="store edges that carry nothing as they are (default: remove them first)")
    g = sub.add_parser("prune-stored", help="remove dangling edges (and the nodes they leave) from "
                       "circuits already stored, so old and new circuits' overlaps compare")
    g.add_argument("--model", help="only circuits of this model")
    g.add_argument("--dry-run", action="store_true", help="report, change nothing")
    g.set_defaults(handler=run_prune_stored)
    d = sub.add_parser("delete", help="delete stored circuits (components other circuits use stay)")
    d.add_argument("ids", nargs="+", metavar="ID")
    d.set_defaults(handler=run_delete)

    ls = sub.add_parser("list", help="list stored circuits, newest first")
    ls.add_argument("--model")
    ls.add_argument("--task")
    ls.add_argument("--method")
    ls.add_argument("--min-faithfulness", type=float, metavar="X", help="task-metric faithfulness")
    ls.add_argument("--max-faithfulness", type=float, metavar="X")
    ls.add_argument("--min-faithfulness-search", type=float, metavar="X",
                    help="search-metric faithfulness (KL for ACDC)")
    ls.add_argument("--max-faithfulness-search", type=float, metavar="X")
    ls.add_argument("--sort", choices=["created_at", "faithfulness_task", "faithfulness_search"],
                    default="created_at", help="newest first (default), or most faithful first")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=run_list)

    c = sub.add_parser("compare", help="overlap of two or more stored circuits of one model; "
                                        "circuits of different models: their profiles side by side")
    c.add_argument("ids", nargs="+", metavar="ID")
    c.add_argument("--profiles", action="store_true",
                   help="print the cross-model profile table even when all are of one model")
    c.add_argument("--all", action="store_true", help="print every shared and unique component")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(handler=run_compare)

    m = sub.add_parser("matrix", help="task x task overlap matrix of one model's circuits")
    m.add_argument("--model", required=True)
    m.add_argument("--method", help="only circuits of this method (default: newest per task)")
    m.add_argument("--json", action="store_true", help="print JSON")
    m.set_defaults(handler=run_matrix)

    h = sub.add_parser("hubs", help="components of one model in the most task circuits")
    h.add_argument("--model", required=True)
    h.add_argument("--kinds", default="attention,mlp,neuron", help="comma-separated node kinds")
    h.add_argument("--limit", type=int, default=20)
    h.add_argument("--json", action="store_true", help="print JSON")
    h.set_defaults(handler=run_hubs)

    q = sub.add_parser("cypher", help="run a read-only Cypher query (timeout and row cap apply)")
    q.add_argument("query", help="Cypher text; values as $parameters")
    q.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a parameter; VALUE is read as JSON when it parses (0.9, true, [1,2]), else text")
    q.add_argument("--limit", type=int, help="row cap (default ATLAS_CYPHER_ROW_CAP)")
    q.add_argument("--timeout", type=float, help="seconds (default ATLAS_CYPHER_TIMEOUT_S)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=run_cypher)


@contextmanager
def _store() -> Iterator[tuple[Driver, Settings]]:
    """A driver on the configured Neo4j; connection and server errors become one clear line."""
    from neo4j import GraphDatabase
    from neo4j.exceptions import AuthError, DriverError, Neo4jError, ServiceUnavailable

    from workers.settings import get_settings

    settings = get_settings()
    driver = GraphDatabase.driver(
        settings.neo4j_uri, auth=(settings.neo4j_user, settings.neo4j_password.get_secret_value())
    )
    try:
        driver.verify_connectivity()
        yield driver, settings
    except AuthError:
        raise ValueError(f"Neo4j at {settings.neo4j_uri} refused user {settings.neo4j_user!r}; "
                         "check ATLAS_NEO4J_USER and ATLAS_NEO4J_PASSWORD") from None
    except (ServiceUnavailable, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"Neo4j at {settings.neo4j_uri} is not reachable ({reason}); start it with "
                         "`circuits services up` or point ATLAS_NEO4J_URI at it") from None
    except (Neo4jError, DriverError) as exc:
        raise ValueError(f"Neo4j: {exc}") from None
    finally:
        driver.close()


def _dump(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _load(path: Path):
    from discovery.circuit import Circuit

    if not path.is_file():
        raise ValueError(f"{path} does not exist; write one with `circuits discover ... --out {path}`")
    try:
        return Circuit.from_json(path.read_text())
    except KeyError as exc:
        raise ValueError(f"{path} is not a circuit JSON file (missing field {exc})") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path} is not a circuit JSON file ({type(exc).__name__}: {exc})") from None


def run_store(args: argparse.Namespace) -> int:
    from graphstore.store import check_circuit, ensure_schema, write_circuit

    circuits = [_load(path) for path in args.files]
    if not args.keep_dangling:
        circuits = [_pruned(circuit) for circuit in circuits]
    for path, circuit in zip(args.files, circuits, strict=True):
        try:
            check_circuit(circuit)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    with _store() as (driver, settings):
        ensure_schema(driver, database=settings.neo4j_database)
        for circuit in circuits:
            started = time.perf_counter()
            write_circuit(driver, circuit, database=settings.neo4j_database)
            p = circuit.provenance
            print(f"stored {circuit.id}: {p.model} / {p.task} / {p.method}, {len(circuit.nodes)} "
                  f"nodes, {len(circuit.edges)} edges ({time.perf_counter() - started:.2f}s)")
    return 0


def _pruned(circuit):  # noqa: ANN001, ANN202 - Circuit in, Circuit out
    """``circuit`` without dangling edges (discovery.prune), saying what went."""
    from discovery.prune import prune_circuit

    cleaned, removed = prune_circuit(circuit)
    if removed.edges_removed or removed.nodes_removed:
        print(f"{circuit.id}: removed {removed.edges_removed} dangling edge(s) and "
              f"{removed.nodes_removed} node(s) that carried nothing")
    return cleaned


def run_prune_stored(args: argparse.Namespace) -> int:
    from graphstore.store import list_circuits, read_circuit, write_circuit

    changed = seen = 0
    with _store() as (driver, settings):
        db = settings.neo4j_database
        for summary in list_circuits(driver, database=db, model=args.model, limit=1_000_000):
            circuit = read_circuit(driver, summary.id, database=db)
            if circuit is None:  # deleted meanwhile
                continue
            seen += 1
            cleaned = _pruned(circuit)
            if cleaned is not circuit:
                changed += 1
                if not args.dry_run:
                    write_circuit(driver, cleaned, database=db)
    verb = "would change" if args.dry_run else "changed"
    print(f"{seen} stored circuit(s) checked, {verb} {changed}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    from graphstore.store import delete_circuit

    missing = []
    with _store() as (driver, settings):
        for circuit_id in args.ids:
            if delete_circuit(driver, circuit_id, database=settings.neo4j_database):
                print(f"deleted {circuit_id}")
            else:
                missing.append(circuit_id)
    if missing:
        raise ValueError(f"no stored circuit with id {', '.join(map(repr, missing))}; "
                         "`circuits list` shows the stored ids")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from graphstore.store import list_circuits

    with _store() as (driver, settings):
        rows = list_circuits(driver, database=settings.neo4j_database, model=args.model,
                             task=args.task, method=args.method, limit=args.limit,
                             min_faithfulness=args.min_faithfulness,
                             max_faithfulness=args.max_faithfulness,
                             min_faithfulness_search=args.min_faithfulness_search,
                             max_faithfulness_search=args.max_faithfulness_search, sort=args.sort)
    if args.json:
        _dump([asdict(r) for r in rows])
        return 0
    print(table(["id", "model", "task", "method", "threshold", "faithfulness (task metric)",
                 "faithfulness (search metric)", "nodes", "edges", "created"],
                [[r.id, r.model, r.task, r.method, r.threshold, _faith(r.faithfulness, r.metric),
                  _faith(r.faithfulness_search, r.search_metric), r.n_nodes, r.n_edges,
                  (r.created_at or "")[:19]] for r in rows]))
    print(f"({len(rows)} circuit{'s' * (len(rows) != 1)}"
          + (f"; --limit {args.limit} reached" if len(rows) == args.limit else "") + ")")
    return 0


def _faith(value: float | None, metric: str | None) -> str:
    return "-" if value is None else f"{value:.3f} ({metric or '?'})"


def _names(names: list[str] | tuple[str, ...], show_all: bool) -> str:
    """Heads and MLPs by name, neurons counted (all named with ``--all``)."""
    if show_all:
        return ", ".join(names) or "none"
    coarse = [n for n in names if ".n" not in n]
    neurons = len(names) - len(coarse)
    text = ", ".join(coarse[:NAMES_SHOWN]) + (f" +{len(coarse) - NAMES_SHOWN} more"
                                               if len(coarse) > NAMES_SHOWN else "")
    if neurons:
        text += f"{', ' if coarse else ''}{neurons} neuron{'s' * (neurons != 1)}"
    return text or "none"


def _labels(summaries: list) -> list[str]:
    """Column labels: the task, or task:id-prefix where two circuits share a task."""
    tasks = [s.task for s in summaries]
    return [s.task if tasks.count(s.task) == 1 else f"{s.task}:{s.id[:8]}" for s in summaries]


def run_compare(args: argparse.Namespace) -> int:
    from graphstore.overlap import compare, shared_components
    from graphstore.store import list_circuits

    with _store() as (driver, settings):
        db = settings.neo4j_database
        ids = list(dict.fromkeys(args.ids))
        models = {s.model for s in list_circuits(driver, database=db, ids=ids, limit=len(ids))}
        if args.profiles or len(models) > 1:
            return _compare_models(driver, ids, args, database=db)
        overlap = compare(driver, args.ids, database=db)
        shared = shared_components(driver, list(overlap.circuits), database=db)
        found = {s.id: s for s in list_circuits(driver, database=db, ids=list(overlap.circuits),
                                                limit=len(overlap.circuits))}
    summaries = [found[i] for i in overlap.circuits]
    if args.json:
        _dump(asdict(overlap) | {"node_jaccard": overlap.node_jaccard,
                                 "edge_jaccard": overlap.edge_jaccard,
                                 "shared": [asdict(s) for s in shared]})
        return 0
    labels = _labels(summaries)
    print(f"model {overlap.model}: {len(summaries)} circuits\n")
    print(table(["circuit", "id", "method", "faithfulness", "nodes", "edges", "only-here nodes",
                 "only-here edges"],
                [[label, s.id, s.method, s.faithfulness, s.n_nodes, s.n_edges,
                  len(overlap.unique_nodes[s.id]), overlap.unique_edges[s.id]]
                 for label, s in zip(labels, summaries, strict=True)]))
    print()
    print(table(["", "union", "shared", "Jaccard"],
                [["components", overlap.nodes_union, overlap.nodes_shared, overlap.node_jaccard],
                 ["edges", overlap.edges_union, overlap.edges_shared, overlap.edge_jaccard]]))
    weighted = "-" if overlap.weighted is None else f"{overlap.weighted:.3f}"
    print(f"score-weighted edge overlap: {weighted}\n")
    print("per layer, components present / only in that circuit:")
    print(table(["layer", "union", "shared", *labels],
                [["embed+logits" if x.layer is None else x.layer, x.union, x.shared,
                  *[f"{p}/{u}" for p, u in zip(x.present, x.unique, strict=True)]]
                 for x in overlap.layers]))
    print(f"\nshared by all ({len(shared)}): {_names([s.name for s in shared], args.all)}")
    for label, circuit_id in zip(labels, overlap.circuits, strict=True):
        names = overlap.unique_nodes[circuit_id]
        print(f"only in {label} ({len(names)}): {_names(names, args.all)}")
    return 0


def _compare_models(driver: Driver, ids: list[str], args: argparse.Namespace, *, database: str) -> int:
    """Circuits of different models by profile (graphstore.profiles): per task, metric rows and a
    column per model, since components of different models are never the same component."""
    from graphstore.profiles import INPUTS, circuit_profiles

    profiles = circuit_profiles(driver, ids, database=database)
    if args.json:
        _dump([asdict(p) for p in profiles])
        return 0
    print(f"{len(profiles)} circuits of {len({p.model for p in profiles})} models, compared by "
          "profile (definitions: graphstore/SCHEMA.md, 'Profiles across models')")
    for task in dict.fromkeys(p.task for p in profiles):
        group = [p for p in profiles if p.task == task]
        rows = [(label, [get(p) for p in group]) for label, get in PROFILE_ROWS]
        print(f"\ntask {task}:")
        print(table(["", *[p.model for p in group]], [[label, *values] for label, values in rows]))
    print(f"\nedge share: fractions of edges into {' / '.join(INPUTS)}; composition: head -> head "
          "edges into q / k / v")
    return 0


def _fractions(values: Any) -> str:
    return " ".join("-" if v is None else f"{v:.2f}".rstrip("0").rstrip(".") for v in values)


#: Rows of the cross-model table: label, and what of a profile it shows.
PROFILE_ROWS: tuple[tuple[str, Any], ...] = (
    ("architecture", lambda p: p.architecture),
    ("faithfulness (task metric)", lambda p: _faith(p.faithfulness_task, p.metric)),
    ("faithfulness (search metric)", lambda p: _faith(p.faithfulness_search, p.search_metric)),
    ("components / edges", lambda p: f"{p.n_nodes} / {p.n_edges}"),
    ("heads / MLPs kept", lambda p: f"{p.heads} / {p.mlps}"),
    ("heads kept per layer (fraction)", lambda p: _fractions(p.head_fraction_per_layer)),
    ("edge share q/k/v/mlp/logits", lambda p: _fractions(p.edge_share.values())),
    ("MLP edge share", lambda p: p.mlp_edge_share),
    ("composition q/k/v", lambda p: "/".join(str(v) for v in p.composition.values())),
    ("K-composition from layer 0", lambda p: p.k_composition_from_layer0),
    ("heads into logits per layer", lambda p: " ".join(map(str, p.logit_heads_per_layer))),
    ("MLPs into logits", lambda p: p.logit_mlps),
    ("longest path / most possible", lambda p: f"{p.longest_path} / {p.max_path}"),
)


def run_matrix(args: argparse.Namespace) -> int:
    from graphstore.overlap import overlap_matrix

    with _store() as (driver, settings):
        matrix = overlap_matrix(driver, args.model, database=settings.neo4j_database,
                                method=args.method)
    if args.json:
        _dump(asdict(matrix))
        return 0
    print(table(["task", "circuit"], list(zip(matrix.tasks, matrix.circuits, strict=True))))
    for title, values in (("component Jaccard", matrix.nodes), ("edge Jaccard", matrix.edges),
                          ("score-weighted edge overlap", matrix.weighted)):
        print(f"\n{title}:")
        print(table(["", *matrix.tasks],
                    [[task, *row] for task, row in zip(matrix.tasks, values, strict=True)]))
    return 0


def run_hubs(args: argparse.Namespace) -> int:
    from graphstore.overlap import hubs

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    with _store() as (driver, settings):
        found = hubs(driver, args.model, database=settings.neo4j_database, kinds=kinds,
                     limit=args.limit)
    if args.json:
        _dump([asdict(h) for h in found])
        return 0
    print(table(["component", "kind", "layer", "tasks", "per circuit: share of its score mass (score)"],
                [[h.name, h.kind, h.layer, h.tasks, ", ".join(_use(u) for u in h.uses)]
                 for h in found]))
    return 0


def _use(use) -> str:
    share = "-" if use.share is None else f"{use.share:.2f}"
    return f"{use.task} {share}" + ("" if use.score is None else f" ({use.score:.3g})")


def _params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--param {pair!r}: write NAME=VALUE, e.g. --param model=multitask")
        try:
            params[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            params[name.strip()] = raw
    return params


def run_cypher(args: argparse.Namespace) -> int:
    """The query as the API runs it: as the query user, in a child process, with the timeout
    enforced on both sides and the row and byte caps (:class:`graphstore.sandbox.CypherRunner`)."""
    from api.routers.cypher import cypher_runner
    from graphstore.readonly import CypherError

    params = _params(args.param)
    with _store() as (driver, settings):
        try:
            runner = cypher_runner(settings, driver)
            raw = runner.run(args.query, params, timeout_s=args.timeout, row_cap=args.limit)
        except CypherError as exc:
            if exc.kind == "parameter":
                raise ValueError(f"{exc.message}; e.g. --param NAME=VALUE") from None
            raise
    result = raw.decoded()
    if args.json:
        _dump({"columns": result.columns, "rows": result.rows, "truncated": result.truncated})
        return 0
    print(table(result.columns, result.rows, digits=6))
    more = {"rows": "; more rows were left out (raise --limit or narrow the query)",
            "bytes": "; more rows were left out at the byte cap (ATLAS_CYPHER_BYTE_CAP): "
                     "return fewer or smaller values"}.get(raw.truncated_by, "")
    print(f"({len(result.rows)} row{'s' * (len(result.rows) != 1)}{more})")
    return 0
