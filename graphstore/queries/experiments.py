"""The Cypher of competition experiments (:mod:`graphstore.experiments`). An experiment is an
``Experiment`` node beside the circuits it tested: ``OF_MODEL`` its model, ``TESTS {task}`` each
circuit, ``MEASURED`` each component it labelled (one relationship per pair and component), and
per pair of circuits one ``COMPETES_WITH`` and one ``COOPERATES_WITH`` carrying the experiment's id
and the verdict's state. Values travel as ``$params``; the only text built is a component label
from :data:`graphstore.queries.circuits.KIND_LABELS`. Described in ``graphstore/SCHEMA.md``.
"""

from __future__ import annotations

from graphstore.queries.circuits import KIND_LABELS

EXPERIMENT_SCHEMA: tuple[str, ...] = (
    "CREATE CONSTRAINT experiment_id IF NOT EXISTS FOR (e:Experiment) REQUIRE e.id IS UNIQUE",
    "CREATE INDEX experiment_model IF NOT EXISTS FOR (e:Experiment) ON (e.model)",
    "CREATE INDEX experiment_created IF NOT EXISTS FOR (e:Experiment) ON (e.created_at)",
    "CREATE INDEX competes_experiment IF NOT EXISTS FOR ()-[r:COMPETES_WITH]-() ON (r.experiment)",
    "CREATE INDEX cooperates_experiment IF NOT EXISTS FOR ()-[r:COOPERATES_WITH]-() ON (r.experiment)",
)

#: Each of ``$ids`` with the model of the circuit of that id, or null when there is none.
CIRCUIT_MODELS = """
UNWIND $ids AS id
OPTIONAL MATCH (c:Circuit {id: id})-[:OF_MODEL]->(m:Model)
RETURN id, m.id AS model
"""

EXPERIMENT_EXISTS = "MATCH (e:Experiment {id: $experiment_id}) RETURN count(e) > 0 AS found"

#: First statement of a write: takes the experiment's lock (a concurrent write of the same id
#: waits here until this one commits), deletes its own links, and returns the components and
#: models they pointed at so that what only the earlier version used can be pruned at the end.
LOCK_EXPERIMENT = """
MERGE (e:Experiment {id: $experiment_id})
SET e.lock = randomUUID()
WITH e, [(e)-[:MEASURED]->(n:Neuron) | n.uid] AS neurons,
     [(e)-[:MEASURED]->(n:Component) WHERE NOT n:Neuron | n.uid]
       + [(e)-[:MEASURED]->(:Neuron)-[:IN]->(mlp:MLP) | mlp.uid] AS others,
     [(e)-[:OF_MODEL]->(m:Model) | m.id] AS models
CALL (e) {
  MATCH (e)-[r:MEASURED|TESTS|OF_MODEL]->()
  DELETE r
}
RETURN neurons, others, models
"""

#: The circuit-to-circuit summaries an experiment wrote (an index seek per type).
CLEAR_PAIRS = """
CALL () {
  MATCH ()-[r:COMPETES_WITH {experiment: $experiment_id}]->()
  DELETE r
}
CALL () {
  MATCH ()-[r:COOPERATES_WITH {experiment: $experiment_id}]->()
  DELETE r
}
"""

#: The experiment's properties (replacing all, the lock's included) and its links to its model
#: and circuits (``$tests``: rows ``{task, circuit}``); returns how many circuits it linked.
MERGE_EXPERIMENT = """
MATCH (e:Experiment {id: $experiment_id})
MATCH (m:Model {id: $experiment.model})
SET e = $experiment
CREATE (e)-[:OF_MODEL]->(m)
WITH e
UNWIND $tests AS test
MATCH (c:Circuit {id: test.circuit})
CREATE (e)-[:TESTS {task: test.task}]->(c)
RETURN count(*) AS written
"""


def merge_measured(label: str) -> str:
    """Components of one kind merged by uid (they exist when a circuit has them) and one
    ``MEASURED`` per row ``{uid, name, model, kind, layer, head, neuron, props}``."""
    if label not in KIND_LABELS.values():
        raise ValueError(f"unknown component label {label!r}")
    return f"""
MATCH (e:Experiment {{id: $experiment_id}})
UNWIND $rows AS row
MERGE (n:Component {{uid: row.uid}})
  ON CREATE SET n.name = row.name, n.model = row.model, n.kind = row.kind,
                n.layer = row.layer, n.head = row.head, n.neuron = row.neuron
SET n:{label}
CREATE (e)-[r:MEASURED]->(n)
SET r = row.props
RETURN count(*) AS written
"""


#: One ``COMPETES_WITH`` and one ``COOPERATES_WITH`` per row ``{a, b, competes, cooperates}``
#: (circuit ids, property maps), from circuit a to circuit b of the pair.
CREATE_PAIRS = """
UNWIND $rows AS row
MATCH (a:Circuit {id: row.a})
MATCH (b:Circuit {id: row.b})
CREATE (a)-[s:COMPETES_WITH]->(b)
SET s = row.competes
CREATE (a)-[o:COOPERATES_WITH]->(b)
SET o = row.cooperates
RETURN count(*) AS written
"""

READ_EXPERIMENT = "MATCH (e:Experiment {id: $experiment_id}) RETURN e.json AS json"

#: The experiment and its own links go; returns what they pointed at, for pruning.
DELETE_EXPERIMENT = """
MATCH (e:Experiment {id: $experiment_id})
WITH e, [(e)-[:MEASURED]->(n:Neuron) | n.uid] AS neurons,
     [(e)-[:MEASURED]->(n:Component) WHERE NOT n:Neuron | n.uid]
       + [(e)-[:MEASURED]->(:Neuron)-[:IN]->(mlp:MLP) | mlp.uid] AS others,
     [(e)-[:OF_MODEL]->(m:Model) | m.id] AS models
DETACH DELETE e
RETURN neurons, others, models
"""

#: Filters of :func:`graphstore.experiments.list_experiments`; the circuit filter reads the
#: experiment's own list of circuit ids, so it still finds experiments whose circuit was deleted.
_LIST_WHERE = """
MATCH (e:Experiment)
WHERE ($model IS NULL OR e.model = $model) AND ($task IS NULL OR $task IN e.tasks)
  AND ($circuit IS NULL OR $circuit IN e.circuit_ids)
"""

COUNT_EXPERIMENTS = _LIST_WHERE + "RETURN count(e) AS total"

#: Newest first (experiments without a date last), then by id: a stable order for paging.
LIST_EXPERIMENTS = _LIST_WHERE + """
RETURN e.id AS id, e.model AS model, e.tasks AS tasks, e.circuit_tasks AS circuit_tasks,
       e.circuit_ids AS circuit_ids, e.ablation AS ablation, e.seed AS seed,
       e.n_controls AS n_controls, e.created_at AS created_at, e.pairs AS pairs
ORDER BY e.created_at IS NULL, e.created_at DESC, e.id
SKIP $offset
LIMIT $limit
"""
