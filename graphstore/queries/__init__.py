"""Every Cypher statement of circuit-atlas, in one place: :mod:`.circuits` (circuits: schema,
writing, reading, comparing), :mod:`.compare_models` (profiles of circuits compared across models)
and :mod:`.experiments` (competition experiments), :mod:`.timelines` (runs, checkpoints, timelines). Values always travel as ``$params``; the only
text ever built is a node label from the fixed table ``KIND_LABELS``. Import it as
``from graphstore import queries`` and use ``queries.X``: every name of these modules is here,
and ``SCHEMA`` holds the constraints and indexes of circuits and experiments.
"""

from __future__ import annotations

from graphstore.queries.circuits import (
    CIRCUIT_INFO,
    CLEAR_EDGES,
    CREATE_EDGES,
    DELETE_CIRCUIT,
    DROP_EDGES_FROM,
    EDGE_LAYOUT,
    EDGE_OVERLAP,
    HUBS,
    KIND_LABELS,
    LINK_NEURONS,
    LIST_SORTS,
    LOCK_CIRCUIT,
    MATRIX_CIRCUITS,
    MERGE_CIRCUIT,
    NODE_OVERLAP_BY_LAYER,
    PAIR_SHARED_EDGES,
    PAIR_SHARED_NODES,
    PING,
    PRUNE_COMPONENTS,
    PRUNE_OWNERS,
    READ_CIRCUIT,
    SHARED_COMPONENTS,
    UNIQUE_COMPONENTS,
    UPDATE_EDGES,
    list_circuits,
    merge_components,
)
from graphstore.queries.circuits import SCHEMA as CIRCUIT_SCHEMA
from graphstore.queries.compare_models import CIRCUIT_PROFILES
from graphstore.queries.experiments import (
    CIRCUIT_MODELS,
    CLEAR_PAIRS,
    COUNT_EXPERIMENTS,
    CREATE_PAIRS,
    DELETE_EXPERIMENT,
    EXPERIMENT_EXISTS,
    EXPERIMENT_SCHEMA,
    LIST_EXPERIMENTS,
    LOCK_EXPERIMENT,
    MERGE_EXPERIMENT,
    READ_EXPERIMENT,
    merge_measured,
)
from graphstore.queries.timelines import (
    CIRCUIT_SIZES,
    DELETE_TIMELINE,
    FIRST_STEP_IN_CIRCUIT,
    LIST_TIMELINES,
    LOCK_TIMELINE,
    MERGE_RUN,
    MERGE_TIMELINE,
    MOVED_COMPONENTS,
    PRUNE_RUNS,
    READ_TIMELINE,
    TIMELINE_CIRCUITS,
    TIMELINE_SCHEMA,
)

#: Constraints and indexes of circuits, experiments and timelines (``store.ensure_schema`` runs them all).
SCHEMA: tuple[str, ...] = CIRCUIT_SCHEMA + EXPERIMENT_SCHEMA + TIMELINE_SCHEMA

__all__ = [
    "CIRCUIT_INFO", "CIRCUIT_MODELS", "CIRCUIT_PROFILES", "CIRCUIT_SCHEMA", "CLEAR_EDGES",
    "CLEAR_PAIRS",
    "COUNT_EXPERIMENTS", "CREATE_EDGES", "CREATE_PAIRS", "DELETE_CIRCUIT", "DELETE_EXPERIMENT",
    "DROP_EDGES_FROM", "EDGE_LAYOUT", "EDGE_OVERLAP", "EXPERIMENT_EXISTS", "EXPERIMENT_SCHEMA",
    "HUBS", "KIND_LABELS", "LINK_NEURONS",
    "LIST_EXPERIMENTS", "LIST_SORTS", "LOCK_CIRCUIT", "LOCK_EXPERIMENT", "MATRIX_CIRCUITS",
    "MERGE_CIRCUIT", "MERGE_EXPERIMENT", "NODE_OVERLAP_BY_LAYER", "PAIR_SHARED_EDGES",
    "PAIR_SHARED_NODES", "PING", "PRUNE_COMPONENTS", "PRUNE_OWNERS", "READ_CIRCUIT",
    "READ_EXPERIMENT", "SCHEMA", "SHARED_COMPONENTS", "UNIQUE_COMPONENTS", "UPDATE_EDGES",
    "list_circuits",
    "merge_components", "merge_measured",
    # timelines
    "CIRCUIT_SIZES", "DELETE_TIMELINE", "FIRST_STEP_IN_CIRCUIT", "LIST_TIMELINES", "LOCK_TIMELINE",
    "MERGE_RUN", "MERGE_TIMELINE", "MOVED_COMPONENTS", "PRUNE_RUNS", "READ_TIMELINE",
    "TIMELINE_CIRCUITS", "TIMELINE_SCHEMA",
]
