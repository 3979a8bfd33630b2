"""Finding, and where possible installing, the system programs the local services need.

On Debian-like machines where we are root, a missing program is installed with apt-get; anywhere
else the error says exactly which package to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from api.ops.process import ServiceError

_apt_updated = False


def _can_apt() -> bool:
    return shutil.which("apt-get") is not None and os.geteuid() == 0


def _apt_install(package: str) -> None:
    global _apt_updated  # one `apt-get update` per process is enough
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
        _apt_updated = True
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ServiceError(f"apt-get install {package} failed:\n{done.stderr[-2000:]}")


def ensure_program(program: str, *, package: str, why: str) -> str:
    """Path of ``program``; installs Debian ``package`` when missing and possible."""
    path = shutil.which(program)
    if path:
        return path
    if not _can_apt():
        raise ServiceError(
            f"`{program}` is not installed ({why}). Install the `{package}` package "
            f"(Debian/Ubuntu: sudo apt-get install {package}) or point circuit-atlas at an "
            "existing service with ATLAS_NEO4J_URI / ATLAS_REDIS_URL."
        )
    print(f"installing {package} with apt-get ({why}) ...", flush=True)
    _apt_install(package)
    path = shutil.which(program)
    if not path:
        raise ServiceError(f"installed {package} but `{program}` is still not on PATH")
    return path


def java_major_version(java: str) -> int:
    """Major version of the JVM at ``java`` (``java -version`` prints to stderr)."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise ServiceError(f"cannot read the Java version from `{java} -version`: {out[:200]!r}")
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 else major


def ensure_java(minimum: int = 17) -> str:
    """A JVM of at least ``minimum`` (Neo4j 5.26 runs on Java 17 and 21)."""
    java = ensure_program("java", package="openjdk-17-jre-headless", why="Neo4j runs on Java 17")
    major = java_major_version(java)
    if major < minimum:
        raise ServiceError(
            f"Neo4j 5.26 needs Java {minimum} or 21, found Java {major} at {java}; "
            "install openjdk-17-jre-headless and put it first on PATH"
        )
    return java
