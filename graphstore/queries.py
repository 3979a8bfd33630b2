"""Every Cypher statement of circuit-atlas, in one place. Values always travel as ``$params``;
the only text ever built is a node label, and it comes from the fixed table below, never from
user input."""

from __future__ import annotations

#: Neo4j label of each node kind of :mod:`discovery.circuit`.
KIND_LABELS: dict[str, str] = {
    "embed": "Embedding",
    "attention": "AttentionHead",
    "mlp": "MLP",
    "neuron": "Neuron",
    "logits": "Logits",
}

SCHEMA: tuple[str, ...] = (
    "CREATE CONSTRAINT model_id IF NOT EXISTS FOR (m:Model) REQUIRE m.id IS UNIQUE",
    "CREATE CONSTRAINT task_id IF NOT EXISTS FOR (t:Task) REQUIRE t.id IS UNIQUE",
    "CREATE CONSTRAINT circuit_id IF NOT EXISTS FOR (c:Circuit) REQUIRE c.id IS UNIQUE",
    "CREATE CONSTRAINT component_uid IF NOT EXISTS FOR (c:Component) REQUIRE c.uid IS UNIQUE",
    "CREATE INDEX component_name IF NOT EXISTS FOR (c:Component) ON (c.name)",
    "CREATE INDEX circuit_method IF NOT EXISTS FOR (c:Circuit) ON (c.method)",
    "CREATE INDEX feeds_circuit IF NOT EXISTS FOR ()-[f:FEEDS]-() ON (f.circuit)",
)

MERGE_CIRCUIT = """
MERGE (m:Model {id: $model.id}) SET m += $model
MERGE (t:Task {id: $task.id}) SET t += $task
MERGE (c:Circuit {id: $circuit.id}) SET c += $circuit
MERGE (c)-[:OF_MODEL]->(m)
MERGE (c)-[:FOR_TASK]->(t)
"""


def merge_components(label: str) -> str:
    """Components of one kind, merged by uid and included in the circuit (safe to run twice)."""
    if label not in KIND_LABELS.values():
        raise ValueError(f"unknown component label {label!r}")
    return f"""
UNWIND $rows AS row
MERGE (n:Component {{uid: row.uid}})
  ON CREATE SET n.name = row.name, n.model = row.model, n.kind = row.kind,
                n.layer = row.layer, n.head = row.head, n.neuron = row.neuron
SET n:{label}
WITH n, row
MATCH (c:Circuit {{id: $circuit_id}})
MERGE (c)-[r:INCLUDES]->(n) SET r.score = row.score
"""


LINK_NEURONS = """
UNWIND $rows AS row
MATCH (n:Neuron {uid: row.uid})
MERGE (mlp:Component {uid: row.mlp_uid})
  ON CREATE SET mlp.name = row.mlp_name, mlp.model = row.model, mlp.kind = 'mlp',
                mlp.layer = row.layer
SET mlp:MLP
MERGE (n)-[:IN]->(mlp)
"""

MERGE_EDGES = """
UNWIND $rows AS row
MATCH (a:Component {uid: row.src}), (b:Component {uid: row.dst})
MERGE (a)-[f:FEEDS {circuit: $circuit_id, input: row.input}]->(b)
SET f.score = row.score
"""

READ_CIRCUIT = """
MATCH (c:Circuit {id: $circuit_id})-[:OF_MODEL]->(m:Model)
MATCH (c)-[:FOR_TASK]->(t:Task)
OPTIONAL MATCH (c)-[r:INCLUDES]->(n:Component)
WITH c, m, t, collect({name: n.name, kind: n.kind, layer: n.layer, head: n.head,
                       neuron: n.neuron, score: r.score}) AS nodes
OPTIONAL MATCH (a:Component)-[f:FEEDS {circuit: $circuit_id}]->(b:Component)
RETURN c {.*} AS circuit, m.id AS model, t.id AS task, nodes,
       collect({src: a.name, dst: b.name, input: f.input, score: f.score}) AS edges
"""

PING = "RETURN 1 AS ok"
