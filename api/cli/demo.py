"""``circuits demo``: the whole product once, over HTTP.

Starts the local services, a worker process and the API; submits IOI, induction and greater-than
discovery jobs on ``multitask``; follows them; reads the stored circuits back; prints their overlap
table and the heads the IOI and induction circuits share (a read-only Cypher query through the
API); runs one competition experiment on the IOI and induction circuits (POST
/v1/experiments) and prints its headline table; ends with the formation timeline of the shipped
checkpointed run ``induction-2l`` (POST /v1/timelines) and prints when its induction circuit
formed; then stops the worker and the API it started (the services keep running).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from api.cli.tables import table
from api.ops.process import ServiceError, port_open, spawn, stop_group, tail

if TYPE_CHECKING:  # httpx, the services and the settings load in the handler: `circuits --help` stays fast
    import httpx

    from workers.settings import Settings

DEMO_TASKS = ("ioi", "induction", "greater_than")
SHARED_HEADS = """
MATCH (a:Circuit {id: $a})-[:INCLUDES]->(h:AttentionHead)<-[:INCLUDES]-(b:Circuit {id: $b})
RETURN h.name AS head ORDER BY h.layer, h.head"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="discover three circuits through the API and compare them")
    parser.add_argument("--model", default="multitask")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the jobs")
    parser.add_argument("--api", help="use the API already serving at this URL (e.g. docker compose's) "
                        "instead of starting services, a worker and an API here")
    parser.set_defaults(handler=run)


def _wait_healthy(client: httpx.Client, api: subprocess.Popen, log: Path, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise ServiceError(f"the API exited at start; its log says:\n{tail(log)}")
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise ServiceError(f"the API did not report healthy within {timeout:.0f}s:\n{tail(log)}")


def _follow(client: httpx.Client, job_ids: dict[str, str], timeout: float) -> dict[str, dict]:
    """Poll every job to its end, printing each change of state or stage with its progress."""
    deadline, seen, done = time.monotonic() + timeout, {}, {}
    while len(done) < len(job_ids) and time.monotonic() < deadline:
        for task, job_id in job_ids.items():
            if task in done:
                continue
            job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
            p = job["progress"]
            now = (job["state"], p.get("stage"))
            if seen.get(task) != now:
                pct = f" {p['percent']:.0f}%" if p.get("percent") is not None else ""
                print(f"  {task:<13} {job['state']:<9} {p.get('stage') or ''}{pct}", flush=True)
                seen[task] = now
            if job["state"] in ("succeeded", "failed", "cancelled"):
                done[task] = job
        time.sleep(0.5)
    if len(done) < len(job_ids):
        raise ServiceError(f"jobs did not finish within {timeout:.0f}s")
    return done


def run(args: argparse.Namespace) -> int:
    import httpx

    from api.ops.services import local_services, remote_services
    from workers.settings import get_settings

    settings: Settings = get_settings()
    headers = {"X-API-Key": settings.api_key.get_secret_value()}
    if args.api:
        with httpx.Client(base_url=args.api, timeout=30, headers=headers) as client:
            _discover_and_compare(client, args)
        return 0
    remote = set(remote_services(settings))
    for name, service in local_services(settings).items():
        if name not in remote:
            print(service.up(), flush=True)
    port = settings.api_port
    if port_open(settings.api_host, port):
        raise ServiceError(f"port {port} is busy; set ATLAS_API_PORT to a free port for the demo, "
                           "or pass --api URL to use the API serving there")
    logs = settings.local_dir.resolve() / "demo"
    worker = spawn([sys.executable, "-m", "api.cli", "worker"], logs / "worker.log")
    api = spawn([sys.executable, "-m", "api.cli", "api", "--port", str(port)], logs / "api.log")
    try:
        with httpx.Client(base_url=f"http://{settings.api_host}:{port}", timeout=30, headers=headers) as client:
            _wait_healthy(client, api, logs / "api.log", timeout=60)
            print(f"API healthy on port {port}; worker pid {worker.pid}", flush=True)
            _discover_and_compare(client, args, logs / "worker.log")
    finally:
        stop_group(api)
        stop_group(worker)
    print("services keep running; `circuits services down` stops them")
    return 0


def _discover_and_compare(client: httpx.Client, args: argparse.Namespace, worker_log: Path | None = None) -> None:
    jobs = {task: client.post("/v1/jobs", json={"model": args.model, "task": task, "method": "acdc"})
            .raise_for_status().json()["id"] for task in DEMO_TASKS}
    print(f"submitted {len(jobs)} discovery jobs on {args.model}: {', '.join(jobs)}", flush=True)
    finished = _follow(client, jobs, args.timeout)
    failed = {t: j.get("error") for t, j in finished.items() if j["state"] != "succeeded"}
    if failed:
        raise ServiceError(f"jobs did not succeed: {failed}" + (f"\n{tail(worker_log)}" if worker_log else ""))
    ids = {task: job["circuit_id"] for task, job in finished.items()}
    _report(client, ids)
    _compete(client, args, ids, worker_log)
    _timeline(client, args, worker_log)


def _timeline(client: httpx.Client, args: argparse.Namespace, worker_log: Path | None) -> None:
    """The induction circuit of the shipped run at each of its checkpoints (~10 s), summarised."""
    from api.cli.timelines import summary

    body = {"run": "induction-2l", "tasks": ["induction"]}
    job_id = client.post("/v1/timelines", json=body).raise_for_status().json()["id"]
    print(f"\nsubmitted a formation timeline (induction over the checkpoints of induction-2l, {job_id})",
          flush=True)
    job = _follow(client, {"timeline": job_id}, args.timeout)["timeline"]
    if job["state"] != "succeeded":
        raise ServiceError(f"the timeline did not succeed: {job.get('error')}"
                           + (f"\n{tail(worker_log)}" if worker_log else ""))
    data = client.get(f"/v1/timelines/{job['result_id']}").raise_for_status().json()
    facts = [line for line in summary(data).splitlines() if line.startswith(("induction:", "in-context"))]
    print("\n".join(facts))  # when its components joined, when it stabilised, the change-point
    print(f"draw it: circuits timelines show {job['result_id']} --png timeline.png")


def _compete(client: httpx.Client, args: argparse.Namespace, ids: dict[str, str],
             worker_log: Path | None) -> None:
    """One competition experiment on the IOI and induction circuits; its headline tables."""
    from api.cli.report import as_experiment, headline

    body = {"model": args.model, "tasks": ["ioi", "induction"], "circuits": [ids["ioi"], ids["induction"]]}
    job_id = client.post("/v1/experiments", json=body).raise_for_status().json()["id"]
    print(f"\nsubmitted a competition experiment (ioi x induction, {job_id})", flush=True)
    job = _follow(client, {"experiment": job_id}, args.timeout)["experiment"]
    if job["state"] != "succeeded":
        raise ServiceError(f"the experiment did not succeed: {job.get('error')}"
                           + (f"\n{tail(worker_log)}" if worker_log else ""))
    experiment = client.get(f"/v1/experiments/{job['result_id']}").raise_for_status().json()
    print(headline(as_experiment(experiment)))


def _report(client: httpx.Client, ids: dict[str, str]) -> None:
    """The circuits, their pairwise overlap, and the heads IOI and induction share."""
    rows = []
    for task, cid in ids.items():
        c = client.get(f"/v1/circuits/{cid}").raise_for_status().json()
        heads = sorted(n["name"] for n in c["nodes"] if n["kind"] == "attention")
        m = c["metrics"]
        rows.append([task, len(c["edges"]), f"{m['faithfulness_task']:.3f} ({m['name']})",
                     f"{m['faithfulness_search']:.3f} ({m['search_metric']})", " ".join(heads)])
    print("\ncircuits stored in Neo4j (read back through the API):")
    print(table(["task", "edges", "faithfulness (task metric)", "faithfulness (search metric)", "heads"],
                rows))
    tasks, pairs = list(ids), []
    for i, a in enumerate(tasks):
        for b in tasks[i + 1:]:
            o = client.get("/v1/compare", params={"ids": f"{ids[a]},{ids[b]}"}).raise_for_status().json()
            pairs.append([f"{a} x {b}", o["node_jaccard"], o["edge_jaccard"], o["weighted"]])
    print("\noverlap (GET /v1/compare):")
    print(table(["pair", "node Jaccard", "edge Jaccard", "weighted"], pairs))
    rows = client.post("/v1/cypher", json={"query": SHARED_HEADS, "params": {"a": ids["ioi"], "b": ids["induction"]}}
                       ).raise_for_status().json()["rows"]
    print(f"\nheads shared by the IOI and induction circuits (POST /v1/cypher): "
          f"{', '.join(r[0] for r in rows) or 'none'}")
