"""A local Neo4j Community 5.26 LTS server on loopback, without Docker or a tarball.

The server's jars are resolved from Maven Central by Maven (``services/neo4j/pom.xml``, pinned to one
5.26.x release) into the local Maven repository; we keep only the resulting class path, so a second
``up`` (and a fresh clone on the same machine) resolves offline in seconds. The JVM is launched
directly on ``org.neo4j.server.CommunityEntryPoint`` with the flags Neo4j's own launcher would pass.

Layout under ``<local_dir>/neo4j``: ``conf/neo4j.conf`` (rewritten from settings at every start),
``data/``, ``logs/`` (neo4j.log, debug.log, console.log), ``run/neo4j.pid``, ``classpath.txt``.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from neo4j import GraphDatabase
from neo4j.exceptions import AuthError, Neo4jError, ServiceUnavailable

from api.ops.install import ensure_java, ensure_program
from api.ops.process import ManagedProcess, ServiceError, port_open, tail

POM = Path(__file__).resolve().parents[2] / "services" / "neo4j" / "pom.xml"
ENTRY_POINT = "org.neo4j.server.CommunityEntryPoint"
ADMIN_TOOL = "org.neo4j.cli.AdminTool"

# What Neo4j's own launcher passes to the JVM (its netty, off-heap and file-channel code reflects
# into these packages); without them the server fails at start on Java 17.
JVM_FLAGS = [
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+UnlockExperimentalVMOptions",
    "-XX:+TrustFinalNonStaticFields",
    "-XX:+DisableExplicitGC",
    # No -XX:+ExitOnOutOfMemoryError (Neo4j's own launcher does not pass it either): a user's read
    # that builds a huge value outside the memory pools (a list comprehension over a huge range)
    # must fail as Neo.TransientError.General.OutOfMemoryError, not take the server down.
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Djdk.tls.ephemeralDHKeySize=2048",
    "-Djdk.tls.rejectClientInitiatedRenegotiation=true",
    "-Dfile.encoding=UTF-8",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
]


def mebibytes(size: str) -> int:
    """A JVM-style size (``512m``, ``1g``, ``2048k``, bytes) in MiB."""
    text = size.strip().lower()
    scale = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}.get(text[-1:])
    try:
        return int(float(text[:-1]) * scale) if scale else int(text) // 2**20
    except ValueError:
        raise ServiceError(f"Neo4j heap size {size!r} is not a size such as 512m or 2g "
                           "(ATLAS_NEO4J_HEAP)") from None


def transaction_memory(heap: str) -> tuple[int, int]:
    """(per transaction, all transactions) memory limits in MiB for a heap of ``heap``.

    Per transaction: a quarter of the heap, but at least 256 MiB (capped at half the heap): the
    largest write we make, rewriting a GPT-2-small circuit of 32,491 edges in one transaction,
    peaks at ~155 MiB of tracked memory. All transactions together: 70% of the heap, leaving the
    rest to the server itself. A query past either limit fails with
    ``MemoryPoolOutOfMemoryError``; the server stays up."""
    heap_mib = mebibytes(heap)
    return min(heap_mib // 2, max(256, heap_mib // 4)), heap_mib * 7 // 10


@dataclass(frozen=True)
class Neo4jLocal:
    """Where and how the local Neo4j runs. ``password`` is only ever passed, never printed."""

    home: Path
    password: str
    user: str = "neo4j"
    host: str = "127.0.0.1"
    port: int = 7687
    heap: str = "1g"
    pagecache: str = "128m"
    start_timeout_s: float = 300.0

    @property
    def process(self) -> ManagedProcess:
        # The home dir in the command line tells our server from any other Neo4j on the machine.
        return ManagedProcess(
            "neo4j", self.home / "run" / "neo4j.pid", (f"--home-dir={self.home.resolve()}",)
        )

    @property
    def log(self) -> Path:
        return self.home / "logs" / "neo4j.log"

    def uri(self) -> str:
        return f"bolt://{self.host}:{self.port}"

    # -- preparation ---------------------------------------------------------------------------
    def classpath(self) -> str:
        """The server's class path, resolved by Maven once and cached in ``classpath.txt``."""
        cached = self.home / "classpath.txt"
        if cached.exists() and cached.stat().st_mtime >= POM.stat().st_mtime:
            return cached.read_text().strip()
        mvn = ensure_program("mvn", package="maven", why="Neo4j's jars come from Maven Central")
        cached.parent.mkdir(parents=True, exist_ok=True)
        base = [mvn, "-B", "-q", "-f", str(POM), "dependency:build-classpath",
                f"-Dmdep.outputFile={cached.resolve()}"]
        # Offline first: once the jars are in ~/.m2 no network is needed.
        for argv in (base + ["-o"], base):
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode == 0 and cached.exists():
                return cached.read_text().strip()
        raise ServiceError(
            "Maven could not resolve org.neo4j:neo4j from Maven Central:\n"
            f"{(done.stdout + done.stderr)[-2000:]}"
        )

    def write_config(self) -> Path:
        """``conf/neo4j.conf`` from these settings. Memory of queries is bounded by Neo4j itself
        (:func:`transaction_memory`), so one read cannot exhaust the heap through the memory
        pools; ``db.transaction.timeout`` (the 5.x name) bounds transactions that set none."""
        per_tx, total = transaction_memory(self.heap)
        conf = self.home / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        for sub in ("data", "logs", "run", "plugins", "import"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        (conf / "neo4j.conf").write_text(
            "# Written by `circuits services up` from ATLAS_* settings; edits are overwritten.\n"
            f"server.default_listen_address={self.host}\n"
            f"server.bolt.listen_address={self.host}:{self.port}\n"
            "server.http.enabled=false\n"
            "server.https.enabled=false\n"
            "dbms.security.auth_enabled=true\n"
            "dbms.usage_report.enabled=false\n"
            f"server.memory.heap.initial_size={self.heap}\n"
            f"server.memory.heap.max_size={self.heap}\n"
            f"server.memory.pagecache.size={self.pagecache}\n"
            "db.tx_log.rotation.retention_policy=2 files\n"
            "db.transaction.timeout=120s\n"
            f"db.memory.transaction.max={per_tx}m\n"
            f"dbms.memory.transaction.total.max={total}m\n"
        )
        return conf

    def _env(self) -> dict[str, str]:
        return {"NEO4J_HOME": str(self.home.resolve()), "NEO4J_CONF": str((self.home / "conf").resolve())}

    def _set_initial_password(self, java: str, classpath: str) -> None:
        """Auth is on as in production; the password must be set before the very first start."""
        if (self.home / "data" / "databases" / "system").exists():
            return  # initialised earlier: the password lives in the system database now
        done = subprocess.run(
            [java, "-cp", classpath, ADMIN_TOOL, "dbms", "set-initial-password", self.password],
            capture_output=True, text=True, env={**os.environ, **self._env()},
        )
        if done.returncode != 0:
            raise ServiceError(f"neo4j-admin set-initial-password failed:\n{done.stderr[-1500:]}")

    # -- lifecycle -----------------------------------------------------------------------------
    def up(self) -> str:
        """Start Neo4j unless ours already runs, and wait until Bolt accepts our credentials."""
        pid = self.process.pid()
        if pid is not None:
            self.wait_until_ready(pid)
            return f"neo4j already running (pid {pid}) on {self.uri()}"
        if port_open(self.host, self.port):
            if self.reachable():
                return f"neo4j: using the existing server on {self.uri()} (not started by circuits)"
            raise ServiceError(
                f"port {self.host}:{self.port} is taken by a process circuit-atlas did not start, "
                "and it does not accept the configured credentials as Neo4j. If it is your Neo4j, "
                "set ATLAS_NEO4J_USER and ATLAS_NEO4J_PASSWORD; otherwise choose another port with "
                "ATLAS_NEO4J_URI=bolt://127.0.0.1:PORT"
            )
        java = ensure_java()
        classpath = self.classpath()
        conf = self.write_config()
        self._set_initial_password(java, classpath)
        argv = [java, f"-Xms{self.heap}", f"-Xmx{self.heap}", *JVM_FLAGS, "-cp", classpath,
                ENTRY_POINT, f"--home-dir={self.home.resolve()}", f"--config-dir={conf.resolve()}"]
        pid = self.process.start(argv, log=self.home / "logs" / "console.log", env=self._env())
        started = time.monotonic()
        self.wait_until_ready(pid)
        return f"neo4j started (pid {pid}) on {self.uri()} in {time.monotonic() - started:.1f}s, log {self.log}"

    def wait_until_ready(self, pid: int) -> None:
        """Block until ``verify_connectivity()`` succeeds; fail fast if the process dies."""
        deadline = time.monotonic() + self.start_timeout_s
        with GraphDatabase.driver(self.uri(), auth=(self.user, self.password),
                                  connection_timeout=2.0) as driver:
            while True:
                try:
                    driver.verify_connectivity()
                    return
                except AuthError as exc:
                    raise ServiceError(
                        f"neo4j at {self.uri()} refused the configured password ({exc.message}). "
                        f"The store under {self.home} was initialised with another one: set "
                        "ATLAS_NEO4J_PASSWORD to it, or `circuits services down --purge` to start over"
                    ) from None
                except (ServiceUnavailable, Neo4jError, OSError):
                    pass
                if self.process.pid() != pid:
                    raise ServiceError(f"neo4j exited during start; its logs say:\n{self._logs()}")
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"neo4j did not answer on {self.uri()} within {self.start_timeout_s:.0f}s "
                        f"(raise ATLAS_NEO4J_START_TIMEOUT_S); logs:\n{self._logs()}"
                    )
                time.sleep(0.5)

    def _logs(self) -> str:
        return tail(self.home / "logs" / "console.log") + "\n" + tail(self.log)

    def down(self) -> str:
        return "neo4j stopped" if self.process.stop(timeout=90) else "neo4j was not running"

    def reachable(self) -> bool:
        try:
            with GraphDatabase.driver(self.uri(), auth=(self.user, self.password),
                                      connection_timeout=2.0) as driver:
                driver.verify_connectivity()
            return True
        except Exception:  # noqa: BLE001 - any failure means "not reachable" for a status line
            return False

    def status(self) -> dict[str, object]:
        return {
            "service": "neo4j",
            "pid": self.process.pid(),
            "address": f"{self.host}:{self.port}",
            "reachable": self.reachable(),
            "log": str(self.log),
        }
