"""Cypher of circuit-formation timelines (issue 14): a training run, its checkpoint models, and
the timeline that discovered circuits at every checkpoint (``graphstore/SCHEMA.md``, section
"Timelines"). Values travel as ``$params``; lists as ``UNWIND`` rows.

Graph: ``(:Model)-[:CHECKPOINT_OF {step}]->(:Run)``, ``(:Timeline)-[:OF_RUN]->(:Run)``,
``(:Timeline)-[:AT {step, task}]->(:Circuit)``; circuits hang off their checkpoint's Model through
``OF_MODEL`` exactly as every stored circuit does.
"""

from __future__ import annotations

TIMELINE_SCHEMA: tuple[str, ...] = (
    "CREATE CONSTRAINT run_id IF NOT EXISTS FOR (r:Run) REQUIRE r.id IS UNIQUE",
    "CREATE CONSTRAINT timeline_id IF NOT EXISTS FOR (t:Timeline) REQUIRE t.id IS UNIQUE",
)

#: Lock (create) the timeline's node and drop the links an earlier write left; returns the run
#: the earlier version belonged to (None on a first write) so that it can be pruned.
LOCK_TIMELINE = """
MERGE (tl:Timeline {id: $timeline_id})
SET tl.lock = randomUUID()
WITH tl, [(tl)-[:OF_RUN]->(r:Run) | r.id] AS runs
CALL (tl) {
  MATCH (tl)-[r:AT|OF_RUN]->()
  DELETE r
}
RETURN runs
"""

#: The run node (properties replaced) and its checkpoints: ``$checkpoints`` rows ``{model, step}``,
#: each Model already MERGEd by its circuits. Earlier CHECKPOINT_OF links of the run are replaced.
MERGE_RUN = """
MERGE (r:Run {id: $run.id})
SET r = $run
WITH r
CALL (r) {
  MATCH (:Model)-[old:CHECKPOINT_OF]->(r)
  DELETE old
}
WITH r
UNWIND $checkpoints AS row
MERGE (m:Model {id: row.model})
CREATE (m)-[:CHECKPOINT_OF {step: row.step}]->(r)
RETURN count(*) AS written
"""

#: The timeline's properties, its run, and one AT per ``$rows`` entry ``{circuit, step, task}``.
MERGE_TIMELINE = """
MATCH (tl:Timeline {id: $timeline_id}), (r:Run {id: $run_id})
SET tl = $timeline
CREATE (tl)-[:OF_RUN]->(r)
WITH tl
UNWIND $rows AS row
MATCH (c:Circuit {id: row.circuit})
CREATE (tl)-[:AT {step: row.step, task: row.task}]->(c)
RETURN count(*) AS written
"""

#: Runs (of ``$runs``) no timeline uses any more: their checkpoint links and the node go, and
#: checkpoint Models left with no relationship at all (their circuits were deleted before).
PRUNE_RUNS = """
UNWIND $runs AS id
MATCH (r:Run {id: id}) WHERE NOT (r)<-[:OF_RUN]-(:Timeline)
OPTIONAL MATCH (m:Model)-[:CHECKPOINT_OF]->(r)
WITH r, collect(m) AS models
DETACH DELETE r
WITH models
UNWIND models AS m
WITH DISTINCT m
WHERE NOT (m)--()
DELETE m
"""

READ_TIMELINE = "MATCH (tl:Timeline {id: $timeline_id}) RETURN tl.json AS json"

LIST_TIMELINES = """
MATCH (tl:Timeline)
WHERE $run IS NULL OR tl.run = $run
RETURN tl.id AS id, tl.run AS run, tl.tasks AS tasks, tl.steps AS steps, tl.method AS method
ORDER BY id
"""

TIMELINE_CIRCUITS = "MATCH (:Timeline {id: $timeline_id})-[:AT]->(c:Circuit) RETURN DISTINCT c.id AS id"

#: Removes the timeline and its links; returns the run it belonged to (no row: no such timeline).
DELETE_TIMELINE = """
MATCH (tl:Timeline {id: $timeline_id})
WITH tl, [(tl)-[:OF_RUN]->(r:Run) | r.id] AS runs
DETACH DELETE tl
RETURN runs
"""

# --- cookbook -------------------------------------------------------------------------------

#: (1) The first step at which component ``$component`` (e.g. ``a1.h0``) is in task ``$task``'s
#: circuit of run ``$run`` (``$timeline_id``: one timeline of it, or null for any). ``step`` is
#: null when it never is.
FIRST_STEP_IN_CIRCUIT = """
MATCH (:Run {id: $run})<-[:OF_RUN]-(tl:Timeline)
WHERE $timeline_id IS NULL OR tl.id = $timeline_id
MATCH (tl)-[at:AT {task: $task}]->(:Circuit)-[:INCLUDES]->(:Component {name: $component})
RETURN min(at.step) AS step
"""

#: (2) Components that moved from task ``$first``'s circuit to ``$second``'s: in ``$first``'s and
#: not ``$second``'s at some step (``first_at``: the first such), and from a later step
#: (``moved_at``: the earliest) to the end of the run in ``$second``'s and not ``$first``'s (the same
#: definition as ``discovery.timeline.analysis.moved_components``; embed, logits and neurons are
#: left out as there). Components are matched by name: each checkpoint is its own Model, so
#: ``a0.h1`` of step 0 and of step 100 are different Component nodes.
MOVED_COMPONENTS = """
MATCH (:Run {id: $run})<-[:OF_RUN]-(tl:Timeline)
WHERE $timeline_id IS NULL OR tl.id = $timeline_id
MATCH (tl)-[at:AT]->(:Circuit)-[:INCLUDES]->(n:Component)
WHERE at.task IN [$first, $second] AND NOT n:Neuron AND NOT n.kind IN ['embed', 'logits']
WITH tl, n.name AS component,
     collect(DISTINCT CASE WHEN at.task = $first THEN at.step END) AS in_first,
     collect(DISTINCT CASE WHEN at.task = $second THEN at.step END) AS in_second
WITH tl, component,
     [s IN tl.steps WHERE s IN in_first AND NOT s IN in_second] AS only_first,
     [s IN tl.steps WHERE s IN in_second AND NOT s IN in_first] AS only_second
WHERE size(only_first) > 0
WITH tl, component, only_first[0] AS first_at,
     [s IN tl.steps WHERE s > only_first[0]
      AND all(t IN tl.steps WHERE t < s OR t IN only_second)] AS settled
WHERE size(settled) > 0
RETURN tl.id AS timeline, component, first_at, settled[0] AS moved_at
ORDER BY timeline, component
"""

#: (3) Circuit size per (task, step) of run ``$run``: nodes and edges of each timeline circuit.
CIRCUIT_SIZES = """
MATCH (:Run {id: $run})<-[:OF_RUN]-(tl:Timeline)
WHERE $timeline_id IS NULL OR tl.id = $timeline_id
MATCH (tl)-[at:AT]->(c:Circuit)
RETURN tl.id AS timeline, at.task AS task, at.step AS step, c.id AS circuit,
       c.n_nodes AS n_nodes, c.n_edges AS n_edges
ORDER BY timeline, task, step
"""
