"""``/v1/circuits``: read stored circuits from Neo4j."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status

from api.deps import ResourcesDep
from graphstore.store import read_circuit

router = APIRouter(prefix="/v1/circuits", tags=["circuits"])


@router.get("/{circuit_id}")
def get(circuit_id: str, res: ResourcesDep) -> dict[str, Any]:
    """The circuit as JSON (the :class:`discovery.circuit.Circuit` layout)."""
    circuit = read_circuit(res.neo4j, circuit_id, database=res.settings.neo4j_database)
    if circuit is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no circuit with id {circuit_id!r}")
    return circuit.to_dict()
