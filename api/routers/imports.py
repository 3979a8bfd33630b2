"""``POST /v1/circuits``: store a circuit found by another tool (EAP-IG / MIB graph JSON, an
auto-circuit edge list, or our own JSON; :mod:`discovery.interop`) with its provenance, so it can
be compared with ours in ``/v1/compare`` and in Cypher.

The whole file travels in the body (``ATLAS_MAX_BODY_BYTES``, 8 MB by default: an EAP-IG file of
GPT-2 small is about 2.4 MB). A file that does not parse, names edges outside the model's graph, or
lacks the model, task or method it does not carry itself is a 422 naming the field, and nothing is
stored. Importing one file twice stores one circuit (its id hashes what it is)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from api.deps import ResourcesDep
from api.security import WriteCaller
from discovery.catalog import model_graph_shape, shipped_models
from discovery.circuit import Circuit, GraphShape
from discovery.interop import FORMATS, parse_circuit
from graphstore.store import write_circuit

router = APIRouter(prefix="/v1/circuits", tags=["circuits"])


class GraphPublic(BaseModel):
    """A model's graph, for files that carry none (auto-circuit lists) of a model not shipped here."""

    model_config = ConfigDict(extra="forbid", strict=True)  # 0 is no bool, "4" no int
    n_layers: int = Field(ge=1, le=1000)
    n_heads: int = Field(ge=1, le=1000)
    mlp: bool = True
    parallel: bool = False


class ImportSpec(BaseModel):
    """A circuit file and what it does not say itself."""

    model_config = ConfigDict(extra="forbid", strict=True)

    circuit: dict[str, Any] | list[Any] = Field(description="the file's JSON, as the tool wrote it")
    format: Literal["ours", "eap-ig", "auto-circuit"] | None = Field(
        None, description=f"one of {', '.join(FORMATS)}; default: detected")
    model: str | None = Field(None, min_length=1, max_length=200,
                              description="the model it was found on (required unless our own JSON)")
    task: str | None = Field(None, min_length=1, max_length=200)
    method: str | None = Field(None, min_length=1, max_length=80,
                               description="the method that found it, e.g. eap-ig-inputs")
    top_n: int | None = Field(None, ge=1, le=10_000_000,
                              description="auto-circuit scores alone: keep the n edges of largest |score|")
    graph: GraphPublic | None = Field(None, description="the model's graph (default: a shipped model's)")
    source: str = Field("", max_length=200, description="where the file came from (kept in provenance)")

    _parsed: Circuit | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _parses(self) -> ImportSpec:
        shape = GraphShape(**self.graph.model_dump()) if self.graph else None
        if shape is None and self.model in shipped_models():
            shape = model_graph_shape(self.model)
        self._parsed = parse_circuit(self.circuit, fmt=self.format, model=self.model, task=self.task,
                                     method=self.method, shape=shape, top_n=self.top_n, source=self.source)
        return self

    @property
    def parsed(self) -> Circuit:
        assert self._parsed is not None
        return self._parsed


class ImportedPublic(BaseModel):
    id: str
    model: str
    task: str
    method: str
    format: str
    n_nodes: int
    n_edges: int
    n_scored: int


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ImportedPublic, responses={
    422: {"description": "The file does not parse, names edges outside the model's graph, or lacks "
                         "the model, task or method (the message names which); nothing is stored"},
})
def import_circuit(spec: ImportSpec, res: ResourcesDep, caller: WriteCaller) -> ImportedPublic:
    """Store another tool's circuit (needs a write key); GET /v1/circuits/{id} reads it back."""
    circuit = spec.parsed
    write_circuit(res.neo4j, circuit, database=res.settings.neo4j_database)
    p = circuit.provenance
    return ImportedPublic(id=circuit.id, model=p.model, task=p.task, method=p.method,
                          format=p.params["imported"]["format"], n_nodes=len(circuit.nodes),
                          n_edges=len(circuit.edges), n_scored=len(circuit.edge_scores))
