"""``circuits submit``, ``circuits jobs`` and ``circuits cancel``: the job API from the shell.

They talk HTTP to the API at ``ATLAS_API_URL`` (default ``http://ATLAS_API_HOST:ATLAS_API_PORT``)
with the key ``ATLAS_API_KEY``; ``--wait`` follows a job with a progress bar fed by its status.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from api.ops.process import ServiceError

if TYPE_CHECKING:  # httpx loads with the first request: `circuits --help` stays fast
    import httpx

TERMINAL = ("succeeded", "failed", "cancelled")


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("submit", help="submit a discovery job to the API")
    s.add_argument("--model", required=True)
    s.add_argument("--task", required=True, help="built-in task name or a custom-task JSON file")
    s.add_argument("--method", default="acdc")
    s.add_argument("--threshold", type=float, default=0.01)
    s.add_argument("--granularity", default="edges", choices=["edges", "neurons"])
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    s.add_argument("--n-prompts", type=int, default=50)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--top-n", type=int)
    s.add_argument("--edge-order", default="ours", help="ACDC's edge order: ours, auto-circuit, random:SEED")
    s.add_argument("--stability", type=int, default=0,
                   help="also score stability: N re-runs under random edge orders and N on other prompts")
    s.add_argument("--wait", action="store_true", help="follow the job to its end with a progress bar")
    s.set_defaults(handler=run_submit)
    j = sub.add_parser("jobs", help="list jobs, newest first (or show one)")
    j.add_argument("id", nargs="?", help="one job's id")
    j.add_argument("--limit", type=int, default=20)
    j.set_defaults(handler=run_jobs)
    c = sub.add_parser("cancel", help="cancel a queued or running job")
    c.add_argument("id")
    c.set_defaults(handler=run_cancel)


def _client() -> httpx.Client:
    import httpx

    from workers.settings import get_settings

    settings = get_settings()
    return httpx.Client(base_url=settings.base_url, timeout=30,
                        headers={"X-API-Key": settings.api_key.get_secret_value()})


def _call(method: str, path: str, **kwargs: object) -> dict:
    """One request; transport failures and 4xx/5xx become one clear line."""
    import httpx

    with _client() as client:
        try:
            response = client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceError(f"cannot reach the API at {client.base_url} ({exc}); start it with "
                               "`circuits api` or set ATLAS_API_URL") from None
    if response.status_code >= 400:
        raise ServiceError(f"the API answered {response.status_code}: {_detail(response)}")
    return response.json()


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return response.text[:500]
    if isinstance(detail, list):  # validation errors: name each field
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}" for e in detail)
    return str(detail)


def run_submit(args: argparse.Namespace) -> int:
    task: object = args.task
    if args.task.endswith(".json"):
        path = Path(args.task)
        if not path.exists():
            raise ValueError(f"--task {args.task}: no such file")
        task = json.loads(path.read_text())
    spec = {"model": args.model, "task": task, "method": args.method, "threshold": args.threshold,
            "granularity": args.granularity, "device": args.device, "n_prompts": args.n_prompts,
            "seed": args.seed, "top_n": args.top_n, "edge_order": args.edge_order, "stability": args.stability}
    job = _call("POST", "/v1/jobs", json=spec)
    print(f"submitted job {job['id']} to the {job['queue']} queue", flush=True)
    if not args.wait:
        return 0
    job = follow(job["id"])
    print(_line(job))
    return 0 if job["state"] == "succeeded" else 1


def follow(job_id: str, poll_s: float = 0.5) -> dict:
    """Poll a job to its end, drawing a bar of edges done (percent and ETA from the server)."""
    from tqdm import tqdm

    with tqdm(total=100, unit="%", file=sys.stderr, bar_format="{desc} {bar} {n:.0f}% {postfix}") as bar:
        while True:
            job = _call("GET", f"/v1/jobs/{job_id}")
            p = job["progress"]
            bar.set_description_str(f"{job['state']}: {p.get('stage') or ''}")
            eta = p.get("eta_s")
            edges = f"{p['done']}/{p['total']} edges" if p.get("total") else ""
            bar.set_postfix_str(f"{edges} ETA {eta:.0f}s" if eta is not None else edges)
            bar.n = p.get("percent") or 0
            bar.refresh()
            if job["state"] in TERMINAL:
                return job
            time.sleep(poll_s)


def _task_name(task: str | dict) -> str:
    return task if isinstance(task, str) else f"custom:{task.get('name', '?')}"


def _line(job: dict) -> str:
    """One job of any kind: an experiment names its tasks joined by ``x``."""
    spec = job["spec"]
    tasks = spec.get("tasks") or [spec.get("task", "?")]
    joiner = "," if job.get("kind") == "timeline" else " x "
    task = joiner.join(_task_name(t) for t in tasks)
    subject = spec.get("model") or Path(spec.get("run", "?")).name  # a timeline is of a run
    tail = job.get("result_id") or job.get("circuit_id") or job.get("error") or (job["progress"].get("stage") or "")
    return (f"{job['id']}  {job.get('kind', 'discovery'):<10} {job['state']:<10} "
            f"{subject}/{task}/{spec.get('method', 'acdc')}  {tail}")


def run_jobs(args: argparse.Namespace) -> int:
    if args.id:
        print(json.dumps(_call("GET", f"/v1/jobs/{args.id}"), indent=2))
        return 0
    page = _call("GET", "/v1/jobs", params={"limit": args.limit})
    for job in page["jobs"]:
        print(_line(job))
    print(f"({len(page['jobs'])} of {page['total']} jobs)")
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    job = _call("DELETE", f"/v1/jobs/{args.id}")
    print(f"job {job['id']}: {'cancel requested' if job['state'] == 'running' else job['state']}")
    return 0
