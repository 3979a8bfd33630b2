"""The Cypher of circuits: schema, writing, reading, deleting and comparing them. Values always
travel as ``$params``; the only text ever built is a node label, and it comes from the fixed table
below, never from user input. The schema these statements assume is written down in
``graphstore/SCHEMA.md``; import it as :mod:`graphstore.queries` (which re-exports every name).

Edges of a circuit are ``FEEDS`` relationships between shared components, told apart by their
``circuit`` property; "the edges of circuit X" is always an index seek on ``FEEDS.circuit``.
An edge's *weight* is ``abs(score)``, 1.0 when unscored; ``Circuit.score_mass`` is the sum of its
edges' weights, written with the edges in the same transaction.
"""

from __future__ import annotations

#: Neo4j label of each node kind of :mod:`discovery.circuit`.
KIND_LABELS: dict[str, str] = {
    "embed": "Embedding",
    "attention": "AttentionHead",
    "kv_group": "KeyValueGroup",  # a{L}.kv{G}: shared k/v input of a key-value group (grouped graphs)
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
    "CREATE INDEX component_model_layer IF NOT EXISTS FOR (c:Component) ON (c.model, c.layer)",
    "CREATE INDEX circuit_method IF NOT EXISTS FOR (c:Circuit) ON (c.method)",
    "CREATE INDEX circuit_faithfulness IF NOT EXISTS FOR (c:Circuit) ON (c.faithfulness)",
    "CREATE INDEX circuit_faithfulness_search IF NOT EXISTS FOR (c:Circuit) ON (c.faithfulness_search)",
    "CREATE INDEX circuit_created IF NOT EXISTS FOR (c:Circuit) ON (c.created_at)",
    "CREATE INDEX feeds_circuit IF NOT EXISTS FOR ()-[f:FEEDS]-() ON (f.circuit)",
)

PING = "RETURN 1 AS ok"

# --- writing one circuit (each statement runs inside the circuit's single write transaction) ---

#: First statement of a write: takes the circuit's lock (a property that really changes, so a
#: concurrent write of the same id waits here until this one commits), clears the links an
#: earlier write of this id left and returns what they pointed at, for pruning at the end.
#: ``MERGE_CIRCUIT`` later replaces every property, the lock's included.
LOCK_CIRCUIT = """
MERGE (c:Circuit {id: $circuit_id})
SET c.lock = randomUUID()
WITH c, [(c)-[:INCLUDES]->(n:Neuron) | n.uid] AS neurons,
     [(c)-[:INCLUDES]->(n:Component) WHERE NOT n:Neuron | n.uid]
       + [(c)-[:INCLUDES]->(:Neuron)-[:IN]->(mlp:MLP) | mlp.uid] AS others,
     [(c)-[:OF_MODEL]->(m:Model) | m.id] AS models, [(c)-[:FOR_TASK]->(t:Task) | t.id] AS tasks
CALL (c) {
  MATCH (c)-[r:INCLUDES|OF_MODEL|FOR_TASK]->()
  DELETE r
}
RETURN neurons, others, models, tasks
"""

CLEAR_EDGES = """
MATCH ()-[f:FEEDS {circuit: $circuit_id}]->()
DELETE f
RETURN count(f) AS deleted
"""

#: The earlier write's edges: how many, whether their orders are exactly 0..n-1, and at how many
#: of the new version's ``$sample`` rows ``[order, source uid, receiver uid, input]`` (orders
#: ``$positions``) they hold the same edge. The writer updates them in place (``UPDATE_EDGES``)
#: when all do, else clears them first: replacing most edges row by row is slower than that.
EDGE_LAYOUT = """
MATCH (a)-[f:FEEDS {circuit: $circuit_id}]->(b)
WITH f, CASE WHEN f.order IN $positions THEN [f.order, a.uid, b.uid, f.input] END AS probe
RETURN count(f) AS n, count(DISTINCT f.order) AS orders, min(f.order) AS low, max(f.order) AS high,
       count(CASE WHEN probe IN $sample THEN 1 END) AS same
"""

#: The earlier write's edges past the new version's last (``order >= $n``), after ``UPDATE_EDGES``.
DROP_EDGES_FROM = """
MATCH ()-[f:FEEDS {circuit: $circuit_id}]->()
WHERE f.order >= $n
DELETE f
"""

MERGE_CIRCUIT = """
MERGE (m:Model {id: $model.id}) SET m += $model
MERGE (t:Task {id: $task.id}) SET t += $task
WITH m, t
MATCH (c:Circuit {id: $circuit_id})
SET c = $circuit
CREATE (c)-[:OF_MODEL]->(m)
CREATE (c)-[:FOR_TASK]->(t)
"""


def merge_components(label: str) -> str:
    """Components of one kind, merged by uid and included in the circuit (safe to run twice)."""
    if label not in KIND_LABELS.values():
        raise ValueError(f"unknown component label {label!r}")
    return f"""
MATCH (c:Circuit {{id: $circuit_id}})
UNWIND $rows AS row
MERGE (n:Component {{uid: row.uid}})
  ON CREATE SET n.name = row.name, n.model = row.model, n.kind = row.kind,
                n.layer = row.layer, n.head = row.head, n.neuron = row.neuron
SET n:{label}
CREATE (c)-[:INCLUDES {{score: row.score, order: row.order}}]->(n)
RETURN count(*) AS written
"""


LINK_NEURONS = """
UNWIND $rows AS row
MATCH (n:Component {uid: row.uid})
MERGE (mlp:Component {uid: row.mlp_uid})
  ON CREATE SET mlp.name = row.mlp_name, mlp.model = row.model, mlp.kind = 'mlp',
                mlp.layer = row.layer
SET mlp:MLP
MERGE (n)-[:IN]->(mlp)
"""

#: The circuit's components ``$uids`` as one list ``ends``, in order (no row when one is missing).
_ENDS = """
UNWIND range(0, size($uids) - 1) AS i
MATCH (n:Component {uid: $uids[i]})
WITH i, n ORDER BY i
WITH collect(n) AS ends
WHERE size(ends) = size($uids)
"""

#: Edges as parallel lists (the driver packs each value in Python, so few values per edge):
#: ``$keys[i]`` = ``(source index * size($uids) + receiver index) * size($inputs) + input
#: index``, indices into ``$uids`` (the circuit's components, a few hundred index seeks per
#: statement instead of two per edge) and ``$inputs``; ``$scores[i]``; ``$core[i]`` (``$core``
#: null when unmeasured: ``null[i]`` is null, so no property); ``order`` is ``$offset + i``. When
#: a uid does not match, no row is written and the writer's count check aborts the transaction.
CREATE_EDGES = _ENDS + """UNWIND range(0, size($keys) - 1) AS i
WITH ends, i, $keys[i] / size($inputs) AS pair
WITH ends[pair / size(ends)] AS a, ends[pair % size(ends)] AS b,
     $inputs[$keys[i] % size($inputs)] AS input, i
CREATE (a)-[:FEEDS {circuit: $circuit_id, input: input, score: $scores[i], order: $offset + i,
                    core: $core[i]}]->(b)
RETURN count(*) AS written
"""

#: ``CREATE_EDGES`` over an earlier write of the circuit whose orders are exactly 0..n-1 (see
#: ``EDGE_LAYOUT``): the earlier FEEDS at the same order, between the same components with the
#: same input, is kept and given the new score and core (setting an equal value writes nothing,
#: so rewriting an unchanged circuit commits almost nothing: deleting and recreating 32k FEEDS
#: cost a second); any other earlier FEEDS at that order is deleted and the edge created anew.
UPDATE_EDGES = _ENDS + """CALL () {
  MATCH ()-[f:FEEDS {circuit: $circuit_id}]->()
  WHERE $offset <= f.order < $offset + size($keys)
  WITH f ORDER BY f.order
  RETURN collect(f) AS earlier
}
UNWIND range(0, size($keys) - 1) AS i
WITH ends, i, $keys[i] / size($inputs) AS pair, earlier[i] AS f
WITH ends[pair / size(ends)] AS a, ends[pair % size(ends)] AS b,
     $inputs[$keys[i] % size($inputs)] AS input, i, f
WITH a, b, input, i, f, f IS NOT NULL AND startNode(f) = a AND endNode(f) = b AND f.input = input AS same
FOREACH (x IN CASE WHEN same THEN [f] ELSE [] END | SET x.score = $scores[i], x.core = $core[i])
FOREACH (x IN CASE WHEN same OR f IS NULL THEN [] ELSE [f] END | DELETE x)
FOREACH (x IN CASE WHEN same THEN [] ELSE [1] END |
  CREATE (a)-[:FEEDS {circuit: $circuit_id, input: input, score: $scores[i], order: $offset + i,
                      core: $core[i]}]->(b))
RETURN count(*) AS written
"""

# --- deleting ---

#: The circuit's node and its links go; returns what they pointed at, for pruning (neurons
#: first: an MLP stays while a neuron of it remains).
DELETE_CIRCUIT = """
MATCH (c:Circuit {id: $circuit_id})
WITH c, [(c)-[:INCLUDES]->(n:Neuron) | n.uid] AS neurons,
     [(c)-[:INCLUDES]->(n:Component) WHERE NOT n:Neuron | n.uid]
       + [(c)-[:INCLUDES]->(:Neuron)-[:IN]->(mlp:MLP) | mlp.uid] AS others,
     [(c)-[:OF_MODEL]->(m:Model) | m.id] AS models, [(c)-[:FOR_TASK]->(t:Task) | t.id] AS tasks
DETACH DELETE c
RETURN neurons, others, models, tasks
"""

#: Components among ``$uids`` that no circuit includes, no neuron sits in and no experiment
#: measured (an experiment's results outlive the circuits it tested).
PRUNE_COMPONENTS = """
UNWIND $uids AS uid
MATCH (n:Component {uid: uid})
WHERE NOT (n)<-[:INCLUDES]-() AND NOT (n)<-[:IN]-() AND NOT (n)<-[:MEASURED]-()
DETACH DELETE n
RETURN count(n) AS pruned
"""

#: Models and tasks among ``$models`` / ``$tasks`` that no circuit (nor experiment) refers to.
PRUNE_OWNERS = """
CALL () {
  UNWIND $models AS id
  MATCH (m:Model {id: id}) WHERE NOT (m)<-[:OF_MODEL]-() AND NOT (m)-[:CHECKPOINT_OF]->()
  DELETE m
}
CALL () {
  UNWIND $tasks AS id
  MATCH (t:Task {id: id}) WHERE NOT (t)<-[:FOR_TASK]-()
  DELETE t
}
"""

# --- reading ---

READ_CIRCUIT = """
MATCH (c:Circuit {id: $circuit_id})
CALL (c) {
  OPTIONAL MATCH (c)-[r:INCLUDES]->(n:Component)
  RETURN collect({name: n.name, kind: n.kind, layer: n.layer, head: n.head, neuron: n.neuron,
                  score: r.score, order: r.order}) AS nodes
}
CALL (c) {
  OPTIONAL MATCH (a:Component)-[f:FEEDS {circuit: c.id}]->(b:Component)
  RETURN collect({src: a.name, dst: b.name, input: f.input, score: f.score, order: f.order}) AS edges
}
RETURN c {.*} AS circuit, nodes, edges
"""

#: ``ORDER BY`` of each sort :func:`list_circuits` accepts: faithfulness best first, circuits
#: without the value last (Cypher sorts null above every number), then newest first.
LIST_SORTS: dict[str, str] = {
    "created_at": "c.created_at DESC, c.id",
    "faithfulness_task": "c.faithfulness IS NULL, c.faithfulness DESC, c.created_at DESC, c.id",
    "faithfulness_search": "c.faithfulness_search IS NULL, c.faithfulness_search DESC, "
                           "c.created_at DESC, c.id",
}


def list_circuits(sort: str = "created_at") -> str:
    """Stored circuits matching every filter given, in the order ``sort`` names (a key of
    :data:`LIST_SORTS`: the only text built into it comes from that table). ``c.faithfulness`` is
    the task-metric faithfulness (its historical name; ``faithfulness_task`` holds the same)."""
    if sort not in LIST_SORTS:
        raise ValueError(f"unknown sort {sort!r}; use one of {', '.join(LIST_SORTS)}")
    return f"""
MATCH (m:Model)<-[:OF_MODEL]-(c:Circuit)-[:FOR_TASK]->(t:Task)
WHERE ($model IS NULL OR m.id = $model) AND ($task IS NULL OR t.id = $task)
  AND ($method IS NULL OR c.method = $method)
  AND ($min_faithfulness IS NULL OR c.faithfulness >= $min_faithfulness)
  AND ($max_faithfulness IS NULL OR c.faithfulness <= $max_faithfulness)
  AND ($min_search IS NULL OR c.faithfulness_search >= $min_search)
  AND ($max_search IS NULL OR c.faithfulness_search <= $max_search)
  AND ($ids IS NULL OR c.id IN $ids)
RETURN c.id AS id, m.id AS model, t.id AS task, c.method AS method, c.threshold AS threshold,
       c.metric AS metric, c.faithfulness AS faithfulness, c.faithfulness AS faithfulness_task,
       c.search_metric AS search_metric, c.faithfulness_search AS faithfulness_search,
       c.n_nodes AS n_nodes, c.n_edges AS n_edges, c.created_at AS created_at
ORDER BY {LIST_SORTS[sort]}
SKIP $offset
LIMIT $limit
"""


#: Model and score mass of each of ``$ids`` that exists (the caller reports the missing ones).
CIRCUIT_INFO = """
MATCH (c:Circuit)-[:OF_MODEL]->(m:Model)
WHERE c.id IN $ids
RETURN c.id AS id, m.id AS model, c.score_mass AS score_mass
"""

# --- comparing circuits ---

#: Components included by every one of ``$ids`` (``$k`` distinct ids), with each circuit's
#: membership score, in the order of ``$ids``.
SHARED_COMPONENTS = """
MATCH (c:Circuit)-[r:INCLUDES]->(n:Component)
WHERE c.id IN $ids
WITH n, collect({circuit: c.id, score: r.score}) AS members
WHERE size(members) = $k
RETURN n.name AS name, n.kind AS kind, n.layer AS layer, n.head AS head, n.neuron AS neuron,
       [id IN $ids | head([x IN members WHERE x.circuit = id | x.score])] AS scores
ORDER BY n.layer, n.name
"""

#: Per layer (null for embed and logits): components in any (union) and in all (shared) of
#: ``$ids``, and per circuit (in the order of ``$ids``) how many it has and how many only it has.
NODE_OVERLAP_BY_LAYER = """
MATCH (c:Circuit)-[:INCLUDES]->(n:Component)
WHERE c.id IN $ids
WITH n, collect(c.id) AS members
WITH n.layer AS layer, count(n) AS union, count(CASE WHEN size(members) = $k THEN 1 END) AS shared,
     collect(members) AS memberships
RETURN layer, union, shared,
       [id IN $ids | size([ms IN memberships WHERE id IN ms])] AS present,
       [id IN $ids | size([ms IN memberships WHERE ms = [id]])] AS unique
ORDER BY layer
"""

#: Names of the components only one of ``$ids`` includes, per circuit.
UNIQUE_COMPONENTS = """
MATCH (c:Circuit)-[:INCLUDES]->(n:Component)
WHERE c.id IN $ids
WITH n, collect(c.id) AS members
WHERE size(members) = 1
RETURN members[0] AS circuit, collect(n.name) AS names
"""

#: Edges keyed by (source, receiver, input): union, shared by all ``$k`` circuits, unique per
#: circuit, and the score-weighted overlap: the sum over shared edges of the smallest of the
#: circuits' normalised weights ``abs(score) / score_mass``.
EDGE_OVERLAP = """
MATCH (c:Circuit)
WHERE c.id IN $ids
MATCH (a:Component)-[f:FEEDS {circuit: c.id}]->(b:Component)
WITH a, b, f.input AS input,
     collect({circuit: c.id, p: CASE WHEN c.score_mass > 0
                                     THEN abs(coalesce(f.score, 1.0)) / c.score_mass END}) AS members
WITH members, size(members) = $k AS shared
WITH count(*) AS union, count(CASE WHEN shared THEN 1 END) AS shared,
     sum(CASE WHEN shared
              THEN reduce(low = 1.0e308, x IN members | CASE WHEN x.p < low THEN x.p ELSE low END)
              ELSE 0.0 END) AS weighted,
     collect(CASE WHEN size(members) = 1 THEN members[0].circuit END) AS owners
RETURN union, shared, weighted, [id IN $ids | size([o IN owners WHERE o = id])] AS unique
"""

#: One circuit per task of ``$model`` (the newest matching ``$method``, if given; only
#: ``$tasks``, if given): the rows of the task x task overlap matrix.
MATRIX_CIRCUITS = """
MATCH (:Model {id: $model})<-[:OF_MODEL]-(c:Circuit)-[:FOR_TASK]->(t:Task)
WHERE ($method IS NULL OR c.method = $method) AND ($tasks IS NULL OR t.id IN $tasks)
WITH t, c ORDER BY c.created_at DESC, c.id
WITH t, head(collect(c)) AS c
RETURN t.id AS task, c.id AS circuit, c.n_nodes AS n_nodes, c.n_edges AS n_edges,
       c.score_mass AS score_mass
ORDER BY task
"""

#: For every pair of ``$ids`` sharing a component: how many components they share.
PAIR_SHARED_NODES = """
MATCH (c:Circuit)-[:INCLUDES]->(n:Component)
WHERE c.id IN $ids
WITH n, collect(c.id) AS members
UNWIND members AS x
UNWIND members AS y
WITH x, y WHERE x < y
RETURN x AS a, y AS b, count(*) AS shared
"""

#: For every pair of ``$ids`` sharing an edge: shared edges and score-weighted overlap.
PAIR_SHARED_EDGES = """
MATCH (c:Circuit)
WHERE c.id IN $ids
MATCH (s:Component)-[f:FEEDS {circuit: c.id}]->(d:Component)
WITH s, d, f.input AS input,
     collect({circuit: c.id, p: CASE WHEN c.score_mass > 0
                                     THEN abs(coalesce(f.score, 1.0)) / c.score_mass END}) AS members
UNWIND members AS x
UNWIND members AS y
WITH x, y WHERE x.circuit < y.circuit
RETURN x.circuit AS a, y.circuit AS b, count(*) AS shared,
       sum(CASE WHEN x.p < y.p THEN x.p ELSE y.p END) AS weighted
"""

#: Components of ``$model`` in the circuits of the most tasks (``$kinds`` only), and for each
#: circuit through them its membership score and the share of its score mass on edges touching
#: them (0 for neurons: edges end at their MLP).
HUBS = """
MATCH (:Model {id: $model})<-[:OF_MODEL]-(c:Circuit)-[r:INCLUDES]->(n:Component)
WHERE n.kind IN $kinds
MATCH (c)-[:FOR_TASK]->(t:Task)
WITH n, count(DISTINCT t) AS tasks, collect({circuit: c, task: t.id, score: r.score}) AS uses
ORDER BY tasks DESC, size(uses) DESC, n.layer, n.name
LIMIT $limit
UNWIND uses AS use
WITH n, tasks, use.circuit AS c, use.task AS task, use.score AS score
CALL (n, c) {
  MATCH (n)-[f:FEEDS {circuit: c.id}]-()
  RETURN sum(abs(coalesce(f.score, 1.0))) AS mass
}
WITH n, tasks, c, task, score,
     CASE WHEN c.score_mass > 0 THEN mass / c.score_mass END AS share
ORDER BY task, c.id
RETURN n.name AS name, n.kind AS kind, n.layer AS layer, tasks,
       collect({task: task, circuit: c.id, score: score, share: share}) AS circuits
ORDER BY tasks DESC, size(circuits) DESC, layer, name
"""
