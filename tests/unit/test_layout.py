"""The architecture holds: imports flow one way, discovery stays free of services, the API process
starts without torch, and the distribution exposes the `circuits` console script."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("discovery", "graphstore", "workers", "api")

# What each package may import from the project (imports flow api -> workers -> graphstore -> discovery).
# The graph store knows the shared, torch-free data types only: circuits and experiments.
ALLOWED = {
    "discovery": {"discovery"},
    "graphstore": {"graphstore", "discovery.circuit", "discovery.experiments.result"},
    "workers": {"workers", "discovery", "graphstore"},
    "api": {"api", "workers", "graphstore", "discovery"},
}


def _project_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in PACKAGES}


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_flow_one_way(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _project_imports(path):
            if not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED[package]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "imports against the grain:\n" + "\n".join(bad)


def _modules_loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return set(out.stdout.split())


def test_discovery_imports_no_service_library():
    loaded = _modules_loaded_after("import discovery, discovery.circuit")
    assert not loaded & {"celery", "neo4j", "fastapi", "redis", "kombu", "uvicorn"}


def test_api_process_starts_without_torch():
    loaded = _modules_loaded_after(
        "import api.main, api.cli\napp = api.main.create_app()\n"
        "from workers.app import create_celery\nfrom workers.settings import get_settings\n"
        "create_celery(get_settings()).send_task  # the API sends tasks by name"
    )
    assert "fastapi" in loaded and "celery" in loaded  # the probe really imported the API
    assert "torch" not in loaded and "transformer_lens" not in loaded


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "circuits"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for command in ("services", "worker", "api", "demo"):
        assert command in done.stdout
