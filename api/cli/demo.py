"""``circuits demo``: the whole path once, API -> Redis -> worker -> Neo4j -> API.

Starts the local services, a worker process and the API, submits a job over HTTP, follows it to the
end, reads the stored circuit back through the API, and stops the worker and the API it started.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import httpx

from api.ops.process import ServiceError, port_open, spawn, stop_group, tail
from api.ops.services import local_services, remote_services
from discovery.circuit import Edge
from workers.settings import Settings, get_settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="run a demo job end to end and print what was stored")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the job")
    parser.set_defaults(handler=run)


def _wait_healthy(client: httpx.Client, api: subprocess.Popen, log: Path, timeout: float) -> None:
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


def _follow(client: httpx.Client, job_id: str, timeout: float) -> dict:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["state"] != last:
            print(f"  job {job_id}: {job['state']}", flush=True)
            last = job["state"]
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise ServiceError(f"job {job_id} did not finish within {timeout:.0f}s")


def run(args: argparse.Namespace) -> int:
    settings: Settings = get_settings()
    remote = set(remote_services(settings))
    for name, service in local_services(settings).items():
        if name not in remote:
            print(service.up(), flush=True)
    port = settings.api_port
    if port_open(settings.api_host, port):
        raise ServiceError(f"port {port} is busy; set ATLAS_API_PORT to a free port for the demo")
    logs = settings.local_dir.resolve() / "demo"
    worker = spawn([sys.executable, "-m", "api.cli", "worker"], logs / "worker.log")
    api = spawn([sys.executable, "-m", "api.cli", "api", "--port", str(port)], logs / "api.log")
    try:
        with httpx.Client(base_url=f"http://{settings.api_host}:{port}", timeout=10) as client:
            _wait_healthy(client, api, logs / "api.log", timeout=60)
            print(f"API healthy on port {port}; worker pid {worker.pid}", flush=True)
            job = client.post("/v1/jobs", json={"kind": "placeholder"}).raise_for_status().json()
            job = _follow(client, job["id"], args.timeout)
            if job["state"] != "succeeded":
                raise ServiceError(f"job ended {job['state']}: {job.get('error')}\n{tail(logs / 'worker.log')}")
            circuit = client.get(f"/v1/circuits/{job['result']['circuit_id']}").raise_for_status().json()
    finally:
        stop_group(api)
        stop_group(worker)
    print(f"stored circuit {circuit['id']} in Neo4j, read back through the API:")
    print(f"  method={circuit['provenance']['method']} model={circuit['provenance']['model']} "
          f"nodes={len(circuit['nodes'])} edges={len(circuit['edges'])}")
    for edge in circuit["edges"]:
        print(f"    {Edge(**edge).name}")
    print("services keep running; `circuits services down` stops them")
    return 0
