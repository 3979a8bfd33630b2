"""A task sent by name through the real Redis broker runs in a real worker process."""

from __future__ import annotations

from pathlib import Path

from workers.app import PING_TASK


def _process_tree(root: int) -> set[int]:
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for child in Path(f"/proc/{parent}/task").glob("*/children"):
            kids = {int(pid) for pid in child.read_text().split()}
            frontier.extend(kids - tree)
            tree |= kids
    return tree


def test_task_runs_in_worker_process(celery_client, worker_process):
    result = celery_client.send_task(PING_TASK, args=[{"x": 1}], queue="cpu").get(timeout=60)
    assert result["payload"] == {"x": 1}
    assert result["pid"] in _process_tree(worker_process.pid)  # ran in the fixture's worker
