"""The API process never imports torch: building the app, its OpenAPI document, and every export
format a route renders, in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
import sys
from api.main import create_app
from api.routers.circuits import MEDIA_TYPES, render
from discovery.circuit import Circuit, Edge, GraphShape, Metrics, Node, Provenance

app = create_app()
assert "/v1/circuits" in app.openapi()["paths"]
edges = tuple(Edge.parse(n, 0.5) for n in ("embed->a0.h1<q>", "a0.h1->m1", "m1->logits"))
circuit = Circuit(id="c", nodes=tuple(Node.parse(n) for n in ("embed", "a0.h1", "m1", "logits")),
                  edges=edges, metrics=Metrics(2.0, 0.5, 1.7, "logit_diff"),
                  provenance=Provenance(model="m", task="ioi", method="acdc"),
                  graph=GraphShape(2, 2, mlp=True))
for fmt in MEDIA_TYPES:
    if fmt != "json":
        assert render(circuit, fmt), fmt
print(sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
"""


def test_the_api_imports_and_renders_without_torch():
    done = subprocess.run([sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]", f"torch modules imported by the API: {done.stdout[:500]}"
