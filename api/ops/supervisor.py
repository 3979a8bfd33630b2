"""The services supervisor: a background process that ``circuits services up`` starts next to the
local Redis and Neo4j, and that restarts either when it dies.

Why: a server that exits (Neo4j's JVM stops on an out-of-memory error, the OOM killer, a crash)
otherwise stays down, and every later job fails at storing. Every ``ATLAS_SUPERVISOR_INTERVAL_S``
seconds the supervisor checks each service *it may restart*: one whose pid file circuit-atlas
wrote (a server that ``up`` found already running, or one stopped by ``down``, has none, and is
left alone). A service whose process is gone is restarted at once; one whose process lives but
does not answer for ``ATLAS_SUPERVISOR_FAIL_CHECKS`` checks in a row is stopped and restarted.

What it leaves behind, under ``Settings.local_dir``:

- ``supervisor.log``: one line per event (which service, when, why, how long the restart took);
- ``supervisor.json``: restart counts, last restart time, reason and duration per service, and when
  it last checked; ``GET /health`` shows it to key holders, ``circuits services status`` to all;
- ``supervisor.pid``: its pid, so ``down`` stops it (first, so that it restarts nothing ``down``
  is stopping).

A failed restart is logged and retried with a growing pause (up to five minutes).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from api.ops.process import ManagedProcess, ServiceError, port_open, tail

MAX_BACKOFF_S = 300.0


class Supervised(Protocol):
    """What the supervisor needs of a local service (RedisLocal and Neo4jLocal have it)."""

    host: str
    port: int

    @property
    def process(self) -> ManagedProcess: ...
    def up(self) -> str: ...
    def down(self) -> str: ...
    def reachable(self) -> bool: ...


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ServiceRecord:
    """What the status file says of one service."""

    restarts: int = 0
    failed_restarts: int = 0
    last_restart: str | None = None
    last_reason: str | None = None
    last_duration_s: float | None = None


@dataclass
class _Watch:
    """The supervisor's running view of one service (not written out)."""

    failed_checks: int = 0
    attempts: int = 0  # failed restarts in a row, for the backoff
    reason: str | None = None  # why it is down, while a restart is due
    failing_since: float = 0.0  # monotonic time of the first failed check in a row
    next_try: float = 0.0
    record: ServiceRecord = field(default_factory=ServiceRecord)


def read_status(home: Path) -> dict | None:
    """The supervisor's status file under ``home`` (the local dir), or None when there is none."""
    try:
        return json.loads((home / "supervisor.json").read_text())
    except (OSError, ValueError):
        return None


class Supervisor:
    """Checks ``services`` every ``interval_s`` and restarts the dead ones; logs under ``home``."""

    def __init__(self, services: Mapping[str, Supervised], home: Path, *, interval_s: float = 5.0,
                 fail_checks: int = 3, stop_timeout_s: float = 30.0) -> None:
        self.services = dict(services)
        self.home = home
        self.interval_s = interval_s
        self.fail_checks = fail_checks
        self.stop_timeout_s = stop_timeout_s  # a hung server gets this long after SIGTERM, then SIGKILL
        self.watches = {name: _Watch() for name in self.services}
        for name, record in (read_status(home) or {}).get("services", {}).items():
            if name in self.watches:  # counts survive a restart of the supervisor itself
                known = {k: v for k, v in record.items() if k in ServiceRecord.__dataclass_fields__}
                self.watches[name].record = ServiceRecord(**known)

    @property
    def log_path(self) -> Path:
        return self.home / "supervisor.log"

    def log(self, message: str) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as out:
            out.write(f"{_now()} {message}\n")

    # -- one round -------------------------------------------------------------------------------
    def check_once(self) -> None:
        """Check every service once, restart what died, write the status file."""
        for name, service in self.services.items():
            self._check(name, service)
        self.write_status()

    def _check(self, name: str, service: Supervised) -> None:
        watch = self.watches[name]
        pidfile = service.process.pidfile
        if not pidfile.exists() and watch.reason is None:  # not started here, or stopped by `down`
            watch.failed_checks = 0
            return  # (a failed restart removes the pid file too: that one is tried again)
        if time.monotonic() < watch.next_try:
            return
        pid = service.process.pid()
        if pid is None:
            old = _pid_in(pidfile)
            _reap(old)
            reason = watch.reason or f"process exited (pid {old} gone)"
        elif service.reachable():  # (also after a "failed" restart whose server came up late)
            watch.failed_checks = watch.attempts = 0
            watch.reason = None
            return
        else:
            watch.failed_checks += 1
            if watch.failed_checks == 1:
                watch.failing_since = time.monotonic()
            if watch.failed_checks < self.fail_checks:
                return
            reason = (f"pid {pid} alive but not answering for {watch.failed_checks} checks "
                      f"({time.monotonic() - watch.failing_since:.1f}s)")
        self._restart(name, service, watch, reason, hung=pid is not None)

    def _restart(self, name: str, service: Supervised, watch: _Watch, reason: str, *, hung: bool) -> None:
        """Stop a hung server, start it again; on failure, keep the reason and try again later."""
        first = watch.reason is None
        watch.reason = reason
        self.log(f"{name} down: {reason}; restarting" if first else
                 f"{name} still down ({reason}); restart try {watch.attempts + 1}")
        self.write_status(restarting=name)
        started = time.monotonic()
        try:
            if hung:
                service.process.stop(timeout=self.stop_timeout_s)
            _wait_port_free(service)
            service.up()
        except Exception as exc:  # noqa: BLE001 - any failure is logged and tried again later
            self._failed(name, watch, exc, time.monotonic() - started)
            return
        took = time.monotonic() - started
        watch.failed_checks = watch.attempts = 0
        watch.next_try, watch.reason = 0.0, None
        record = watch.record
        record.restarts += 1
        record.last_restart, record.last_reason, record.last_duration_s = _now(), reason, round(took, 1)
        self.log(f"{name} restarted in {took:.1f}s (pid {service.process.pid()}, "
                 f"restart #{record.restarts}); reason: {reason}")

    def _failed(self, name: str, watch: _Watch, exc: Exception, took: float) -> None:
        watch.attempts += 1
        pause = min(self.interval_s * 2 ** watch.attempts, MAX_BACKOFF_S)
        watch.next_try = time.monotonic() + pause
        watch.record.failed_restarts += 1
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self.log(f"{name} restart failed after {took:.1f}s: {first_line}; next try in {pause:g}s")

    def write_status(self, *, running: bool = True, restarting: str | None = None) -> None:
        """Replace the status file in one rename, so a reader never sees half of it."""
        body = {
            "pid": os.getpid(),
            "running": running,
            "checked_at": _now(),
            "interval_s": self.interval_s,
            "restarting": restarting,
            "services": {name: asdict(w.record) for name, w in self.watches.items()},
        }
        self.home.mkdir(parents=True, exist_ok=True)
        partial = self.home / f"supervisor.json.{os.getpid()}"
        partial.write_text(json.dumps(body, indent=2))
        partial.replace(self.home / "supervisor.json")

    # -- the loop --------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Check every ``interval_s`` until ``stop`` is set."""
        names = ", ".join(self.services) or "nothing"
        self.log(f"supervisor started (pid {os.getpid()}): every {self.interval_s:g}s, restarts any of "
                 f"{names} that circuit-atlas started here and that died")
        try:
            while not stop.is_set():
                self.check_once()
                stop.wait(self.interval_s)
        finally:
            self.write_status(running=False)
            self.log(f"supervisor stopped (pid {os.getpid()})")


def _pid_in(pidfile: Path) -> str:
    try:
        return pidfile.read_text().strip() or "?"
    except OSError:
        return "?"


def _wait_port_free(service: Supervised, timeout: float = 10.0) -> None:
    """Wait until a dead server's port is closed: the kernel may hold it for a moment after the
    main thread is gone (the other threads are still exiting), and ``up`` would take that for a
    stranger on the port."""
    deadline = time.monotonic() + timeout
    while port_open(service.host, service.port, timeout=0.2) and time.monotonic() < deadline:
        time.sleep(0.1)


def _reap(pid: str) -> None:
    """Collect a dead server's exit status when this process started it (an earlier restart), so
    no zombie is left; any other pid is none of ours to wait for."""
    try:
        os.waitpid(int(pid), os.WNOHANG)
    except (ChildProcessError, ValueError, OSError):
        pass


def run_forever(supervisor: Supervisor) -> None:
    """Run ``supervisor`` in this process until SIGTERM or SIGINT (what ``down`` sends)."""
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()
        raise SystemExit(0)  # also interrupts a restart in progress; `down` stops what it started

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        supervisor.run(stop)
    except SystemExit:
        pass


@dataclass(frozen=True)
class SupervisorLocal:
    """The supervisor as a managed background process, like the services themselves.

    ``argv`` is the command that runs it in the foreground (``circuits services supervise``)."""

    home: Path
    start_timeout_s: float = 20.0

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess("supervisor", self.home / "supervisor.pid",
                              (f"supervise --local-dir={self.home.resolve()}",))

    @property
    def log(self) -> Path:
        return self.home / "supervisor.log"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "api.cli", "services", "supervise",
                f"--local-dir={self.home.resolve()}"]

    def up(self) -> str:
        """Start the supervisor unless it runs; wait for its first round of checks."""
        pid = self.process.pid()
        if pid is not None:
            return f"supervisor already running (pid {pid}), log {self.log}"
        console = self.home / "supervisor.console.log"
        pid = self.process.start(self.argv(), log=console)
        deadline = time.monotonic() + self.start_timeout_s
        while (read_status(self.home) or {}).get("pid") != pid:
            if self.process.pid() is None:
                raise ServiceError(f"the supervisor exited at start; its output:\n{tail(console)}")
            if time.monotonic() > deadline:
                raise ServiceError(f"the supervisor did not check in within {self.start_timeout_s:.0f}s; "
                                   f"its output:\n{tail(console)}")
            time.sleep(0.05)
        return f"supervisor started (pid {pid}), log {self.log}"

    def down(self) -> str:
        return "supervisor stopped" if self.process.stop(timeout=30) else "supervisor was not running"

    def status(self) -> dict[str, object]:
        pid = self.process.pid()
        services = (read_status(self.home) or {}).get("services", {})
        return {
            "service": "supervisor",
            "pid": pid,
            "address": "-",
            "reachable": pid is not None,
            "log": str(self.log),
            "restarts": {name: record.get("restarts", 0) for name, record in services.items()},
        }
