"""Job service under concurrent submissions: an API and one worker on a private Redis database,
N small discovery jobs (EAP, 8 prompts, top 20 edges) submitted at once from N threads. Prints how
many were accepted and finished, submission latency, and throughput. Needs the local services
(`circuits services up`).

    python bench/service.py [--jobs 50] [--workers 1]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
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
