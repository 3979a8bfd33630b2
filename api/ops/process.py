"""One managed background process: started in its own session, tracked by a pid file, stopped by
that pid (never by process name).

A pid file alone is not proof: pids are reused. A process counts as ours only when it is alive and
its command line contains a marker unique to this service and this data directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class ServiceError(RuntimeError):
    """A local service could not be installed, started or stopped; the message says what to do."""


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


@dataclass(frozen=True)
class ManagedProcess:
    """A background process identified by ``pidfile`` and command-line ``markers`` (any one of
    them matches: some servers rewrite their process title after start)."""

    name: str
    pidfile: Path
    markers: tuple[str, ...]

    def matches(self, pid: int) -> bool:
        """True when ``pid`` is alive and its command line carries one of our markers."""
        cmdline = _cmdline(pid)
        return _alive(pid) and any(marker in cmdline for marker in self.markers)

    def all_pids(self) -> list[int]:
        """Every live process that looks like ours, pid file or not (to prove none is stray)."""
        return sorted(
            int(entry.name) for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and self.matches(int(entry.name))
        )

    def pid(self) -> int | None:
        """The pid of our running process, or None. Read-only: a stale pid file stays until the
        next start or stop replaces or removes it."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self.matches(pid) else None

    def start(self, argv: list[str], *, log: Path, env: dict[str, str] | None = None) -> int:
        """Start ``argv`` detached (own session, stdin closed, output appended to ``log``)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - argv is built by us, never from user text
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        self.pidfile.write_text(f"{proc.pid}\n")
        # Right after exec, /proc/<pid>/cmdline can read empty for a moment; wait until the new
        # process is recognisable so that callers polling pid() do not take it for dead.
        deadline = time.monotonic() + 10
        while not self.matches(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return proc.pid

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM our process, wait up to ``timeout`` s, then SIGKILL. False if none was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                _reap(pid)
                time.sleep(0.1)
        self.pidfile.unlink(missing_ok=True)
        return True


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child (started in this process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def spawn(argv: list[str], log: Path, *, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen:
    """Start a child process in its own process group (so it can be stopped with its children),
    stdin closed, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - argv is built by us
            argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )


def stop_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM a child's process group, SIGKILL it if it outlives ``timeout``; reaps the child."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
