"""Job service under concurrent submissions: an API and one worker on a private Redis database,
N small discovery jobs (EAP, 8 prompts, top 20 edges) submitted at once from N threads. Prints how
many were accepted and finished, submission latency, and throughput. Needs the local services
(`circuits services up`).

    python bench/service.py [--jobs 50] [--workers 1]
    python bench/service.py --soak [--jobs 40]
    python bench/service.py --study [--n-prompts 50]

``--study`` times one study of 5 tasks x 3 methods (acdc, eap, eap-ig on ``multitask``: 15 pieces)
from submission to its stored summary, with 1 and then 2 worker processes (OMP_NUM_THREADS=1
each), and prints the wall times and the speed-up; the study is deleted afterwards.

``--soak`` runs on scratch servers of its own instead (a Redis and a Neo4j on free ports in a
temporary folder, never the shared ones): N jobs are submitted at a steady pace while Redis and then
Neo4j are restarted once each, and it prints jobs accepted, finished, duplicated (attempts > 1, or
more than one Circuit with the job's id) and lost, with each restart's time and downtime.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.ops.process import spawn, stop_group  # noqa: E402
from tests.conftest import ROOT, ApiServer  # noqa: E402
from workers.settings import get_settings  # noqa: E402

HEADERS = {"X-API-Key": "atlas-dev-write"}
TASKS = ("ioi", "induction", "greater_than", "successor", "pronoun")


def submit_all(url: str, n: int) -> tuple[list[str], list[float]]:
    ids, latency = [None] * n, [0.0] * n

    def post(i: int) -> None:
        body = {"model": "multitask", "task": TASKS[i % 5], "method": "eap", "top_n": 20, "n_prompts": 8, "seed": i}
        with httpx.Client(base_url=url, headers=HEADERS, timeout=60) as client:
            start = time.perf_counter()
            response = client.post("/v1/jobs", json=body)
            latency[i] = time.perf_counter() - start
            ids[i] = response.json()["id"] if response.status_code == 202 else None

    threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ids, latency


# -- the soak: jobs through a Redis restart and a Neo4j restart --------------------------------
SOAK_PASSWORD = "soak-bench-pass"
TERMINAL = ("succeeded", "failed", "cancelled")


class Restarts:
    """Restart each scratch server once, recording when (seconds from the soak's start) and how
    long it was down (stop begun to answering again)."""

    def __init__(self, t0: float) -> None:
        self.t0, self.rows = t0, []

    def restart(self, name: str, server, pause_s: float) -> None:  # noqa: ANN001 - RedisLocal | Neo4jLocal
        down = time.monotonic()
        server.down()
        time.sleep(pause_s)
        server.up()
        self.rows.append((name, down - self.t0, time.monotonic() - down))


def _soak_submit(url: str, n: int, pace_s: float, ids: list, refused: list) -> None:
    """Submit ``n`` jobs one every ``pace_s``; a 503 (an outage) is retried after half a second."""
    with httpx.Client(base_url=url, headers=HEADERS, timeout=60) as client:
        for i in range(n):
            body = {"model": "multitask", "task": TASKS[i % 5], "method": "eap", "top_n": 20,
                    "n_prompts": 8, "seed": i}
            for _ in range(240):
                try:
                    response = client.post("/v1/jobs", json=body)
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code == 202:
                    ids.append(response.json()["id"])
                    break
                refused.append(response.status_code if response is not None else "no answer")
                time.sleep(0.5)
            time.sleep(pace_s)


def _soak_collect(url: str, ids: list[str], deadline: float) -> dict[str, dict]:
    """Each job's last record, polled until all are finished or ``deadline`` passes."""
    jobs: dict[str, dict] = {}
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as client:
        while time.monotonic() < deadline and len([j for j in jobs.values() if j["state"] in TERMINAL]) < len(ids):
            for job_id in ids:
                if jobs.get(job_id, {}).get("state") not in TERMINAL:
                    try:
                        response = client.get(f"/v1/jobs/{job_id}")
                    except httpx.TransportError:
                        continue
                    if response.status_code == 200:
                        jobs[job_id] = response.json()
            time.sleep(1)
    return jobs


def _circuit_counts(neo, ids: list[str]) -> dict[str, int]:  # noqa: ANN001 - Neo4jLocal
    from neo4j import GraphDatabase

    with GraphDatabase.driver(neo.uri(), auth=("neo4j", SOAK_PASSWORD)) as driver:
        records, _, _ = driver.execute_query(
            "MATCH (c:Circuit) WHERE c.id IN $ids RETURN c.id AS id, count(*) AS n", ids=ids)
    return {r["id"]: r["n"] for r in records}


def soak(n: int, pace_s: float, redis_pause_s: float, neo4j_pause_s: float) -> None:
    """Run the soak on scratch servers and print its two tables."""
    from api.ops.neo4j_local import Neo4jLocal
    from api.ops.redis_local import RedisLocal
    from tests.conftest import free_port

    with tempfile.TemporaryDirectory(prefix="atlas-soak-") as tmp:
        home = Path(tmp)
        rds = RedisLocal(home=home / "redis", port=free_port())
        neo = Neo4jLocal(home=home / "neo4j", password=SOAK_PASSWORD, port=free_port(), heap="256m",
                         pagecache="32m")
        rds.up()
        neo.up()
        env = {"ATLAS_REDIS_URL": rds.url(), "ATLAS_NEO4J_URI": neo.uri(), "ATLAS_NEO4J_PASSWORD": SOAK_PASSWORD,
               "ATLAS_MAX_QUEUED_PER_KEY": str(n), "ATLAS_JOB_STALE_S": "5", "OMP_NUM_THREADS": "1"}
        api = ApiServer(home, env)
        worker = spawn([sys.executable, "-m", "api.cli", "worker"], home / "worker.log", env=env, cwd=ROOT)
        try:
            time.sleep(8)  # the worker boots
            t0 = time.monotonic()
            ids, refused, restarts = [], [], Restarts(t0)
            submitter = threading.Thread(target=_soak_submit, args=(api.url, n, pace_s, ids, refused))
            submitter.start()
            while len(ids) < n // 3 and submitter.is_alive():
                time.sleep(0.2)
            restarts.restart("redis", rds, redis_pause_s)  # longer than the stale period (5 s)
            while len(ids) < 2 * n // 3 and submitter.is_alive():
                time.sleep(0.2)
            restarts.restart("neo4j", neo, neo4j_pause_s)
            submitter.join()
            jobs = _soak_collect(api.url, ids, time.monotonic() + 600)
            wall = time.monotonic() - t0
            counts = _circuit_counts(neo, ids)
            log = (home / "worker.log").read_text(errors="replace")
        finally:
            stop_group(worker)
            api.stop()
            neo.down()
            rds.down()
    _soak_report(n, ids, refused, jobs, counts, restarts, wall, log)


def _soak_report(n, ids, refused, jobs, counts, restarts, wall, log) -> None:  # noqa: ANN001
    done = [j for j in jobs.values() if j["state"] in TERMINAL]
    ok = [j for j in done if j["state"] == "succeeded"]
    duplicated = [j["id"] for j in done if j["attempts"] > 1 or counts.get(j["id"], 0) > 1]
    lost = [i for i in ids if jobs.get(i, {}).get("state") not in TERMINAL]
    missing = [j["id"] for j in ok if counts.get(j["id"], 0) != 1]
    print("| jobs submitted | accepted | 503s retried | finished | succeeded | failed | duplicated | lost | "
          "succeeded without its circuit | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {n} | {len(ids)} | {len(refused)} | {len(done)} | {len(ok)} | {len(done) - len(ok)} | "
          f"{len(duplicated)} | {len(lost)} | {len(missing)} | {wall:.1f} |")
    print()
    print("| restart | at s | down s |")
    print("| --- | --- | --- |")
    for name, at, down in restarts.rows:
        print(f"| {name} | {at:.1f} | {down:.1f} |")
    print()
    print(f"worker log: {log.count('Redis unreachable; heartbeat retrying')} heartbeat outages survived, "
          f"{log.count('Neo4j unreachable')} store retries, {log.count('re-queued job')} re-queued, "
          f"{log.count('re-sent job')} re-sent")
    for job_id in duplicated + lost + missing:
        print("problem:", jobs.get(job_id, {"id": job_id}))


# -- a study with 1 and with 2 worker processes --------------------------------------------------
STUDY = {"model": "multitask", "tasks": "all", "methods": ["acdc", "eap", "eap-ig"]}


def _ready(logs: list[Path], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(log.exists() and "ready" in log.read_text() for log in logs):
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers not ready after {timeout_s:g} s; see {logs}")
        time.sleep(0.2)


def _time_study(n_workers: int, n_prompts: int, tmp: Path) -> dict:
    """Wall time of one study on ``n_workers`` fresh worker processes (booted first, not timed)."""
    url = get_settings().redis_url.rsplit("/", 1)[0] + "/13"
    redis.Redis.from_url(url).flushdb()
    env = {"ATLAS_REDIS_URL": url, "OMP_NUM_THREADS": "1"}
    api = ApiServer(tmp, env)
    logs = [tmp / f"study-w{n_workers}-{i}.log" for i in range(n_workers)]
    workers = [spawn([sys.executable, "-m", "api.cli", "worker", "--queues", "cpu"], log, env=env, cwd=ROOT)
               for log in logs]
    try:
        _ready(logs)
        with httpx.Client(base_url=api.url, headers=HEADERS, timeout=30) as client:
            start = time.perf_counter()
            study_id = client.post("/v1/studies", json={**STUDY, "n_prompts": n_prompts}).raise_for_status().json()["id"]
            while (study := client.get(f"/v1/studies/{study_id}").json())["state"] not in TERMINAL:
                time.sleep(0.2)
            wall = time.perf_counter() - start
            client.delete(f"/v1/studies/{study_id}")  # the bench leaves nothing stored
    finally:
        for w in workers:
            stop_group(w)
        api.stop()
    per_worker = {}
    for piece in study["pieces"]:
        per_worker[piece.get("worker")] = per_worker.get(piece.get("worker"), 0) + 1
    return {"workers": n_workers, "state": study["state"], "pieces": len(study["pieces"]), "wall": wall,
            "split": "/".join(str(n) for n in sorted(per_worker.values(), reverse=True))}


def study_bench(n_prompts: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [_time_study(n, n_prompts, Path(tmp)) for n in (1, 2)]
    print(f"study: multitask, 5 tasks x 3 methods (acdc, eap, eap-ig), {n_prompts} prompt pairs, "
          "MIB curve per piece")
    print("| workers | state | pieces | pieces per worker | wall s | speed-up |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['workers']} | {row['state']} | {row['pieces']} | {row['split']} | {row['wall']:.1f} | "
              f"{rows[0]['wall'] / row['wall']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--soak", action="store_true",
                        help="scratch Redis and Neo4j, each restarted once while the jobs run")
    parser.add_argument("--pace", type=float, default=0.5, help="soak: seconds between submissions")
    parser.add_argument("--redis-pause", type=float, default=6.0, help="soak: seconds Redis stays down")
    parser.add_argument("--neo4j-pause", type=float, default=5.0, help="soak: seconds Neo4j stays down")
    parser.add_argument("--study", action="store_true",
                        help="one 5-task x 3-method study with 1 and with 2 worker processes: wall time, speed-up")
    parser.add_argument("--n-prompts", type=int, default=50, help="study: prompt pairs per piece")
    args = parser.parse_args()
    if args.study:
        study_bench(args.n_prompts)
        return
    if args.soak:
        soak(args.jobs, args.pace, args.redis_pause, args.neo4j_pause)
        return
    url = get_settings().redis_url.rsplit("/", 1)[0] + "/6"
    redis.Redis.from_url(url).flushdb()
    env = {"ATLAS_REDIS_URL": url, "ATLAS_MAX_QUEUED_PER_KEY": str(args.jobs)}
    with tempfile.TemporaryDirectory() as tmp:
        api = ApiServer(Path(tmp), env)
        workers = [spawn([sys.executable, "-m", "api.cli", "worker"], Path(tmp) / f"w{i}.log", env=env, cwd=ROOT)
                   for i in range(args.workers)]
        try:
            time.sleep(8)  # let the workers boot, so the wall time is the jobs'
            start = time.perf_counter()
            ids, latency = submit_all(api.url, args.jobs)
            accepted = [i for i in ids if i]
            states = {}
            with httpx.Client(base_url=api.url, headers=HEADERS, timeout=30) as client:
                while len(states) < len(accepted):
                    for job_id in accepted:
                        if job_id not in states:
                            state = client.get(f"/v1/jobs/{job_id}").json()["state"]
                            if state in ("succeeded", "failed", "cancelled"):
                                states[job_id] = state
                    time.sleep(0.5)
            wall = time.perf_counter() - start
        finally:
            for w in workers:
                stop_group(w)
            api.stop()
    ms = sorted(x * 1000 for x in latency)
    ok = sum(s == "succeeded" for s in states.values())
    print("| jobs | workers | accepted | succeeded | submit p50 ms | submit p95 ms | all done s | jobs/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {args.jobs} | {args.workers} | {len(accepted)} | {ok} | {statistics.median(ms):.0f} | "
          f"{ms[int(0.95 * (len(ms) - 1))]:.0f} | {wall:.1f} | {ok / wall:.2f} |")


if __name__ == "__main__":
    main()
