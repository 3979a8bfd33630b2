"""Cypher of studies (issue 15): methods x tasks of one model, each piece's circuits stored as any
circuit is, and a ``(:Study {id, model, spec, summary, created_at})`` node holding the spec and
the summary as JSON, linked ``-[:HAS_CIRCUIT {task, method, threshold, chosen}]->`` each circuit.
Values travel as ``$params``; lists as ``UNWIND`` rows."""

from __future__ import annotations

STUDY_SCHEMA: tuple[str, ...] = (
    "CREATE CONSTRAINT study_id IF NOT EXISTS FOR (s:Study) REQUIRE s.id IS UNIQUE",
)

#: The study's node (created, or locked and its properties replaced; ``created_at`` kept from the
#: first write) with its earlier HAS_CIRCUIT links dropped, then one link per ``$rows`` entry
#: ``{circuit, task, method, threshold, chosen}``; ``written`` counts the links made.
MERGE_STUDY = """
MERGE (s:Study {id: $study.id})
ON CREATE SET s.created_at = datetime().epochMillis / 1000.0
SET s.model = $study.model, s.spec = $study.spec, s.summary = $study.summary, s.lock = randomUUID()
WITH s
CALL (s) {
  MATCH (s)-[old:HAS_CIRCUIT]->()
  DELETE old
}
WITH s
UNWIND $rows AS row
MATCH (c:Circuit {id: row.circuit})
CREATE (s)-[:HAS_CIRCUIT {task: row.task, method: row.method, threshold: row.threshold,
                          chosen: row.chosen}]->(c)
RETURN count(*) AS written
"""

READ_STUDY = """
MATCH (s:Study {id: $study_id})
RETURN s.id AS id, s.model AS model, s.spec AS spec, s.summary AS summary, s.created_at AS created_at,
       [(s)-[h:HAS_CIRCUIT]->(c:Circuit) | {id: c.id, task: h.task, method: h.method,
                                           threshold: h.threshold, chosen: h.chosen}] AS circuits
"""

LIST_STUDIES = """
MATCH (s:Study)
WHERE $model IS NULL OR s.model = $model
RETURN s.id AS id, s.model AS model, s.spec AS spec, s.created_at AS created_at,
       COUNT { (s)-[:HAS_CIRCUIT]->() } AS n_circuits
ORDER BY created_at DESC, id
SKIP $offset LIMIT $limit
"""

COUNT_STUDIES = "MATCH (s:Study) WHERE $model IS NULL OR s.model = $model RETURN count(s) AS n"

#: The ids of the study's circuits, and of ``$also`` (circuits a cancelled study stored before its
#: node), that exist.
STUDY_CIRCUITS = """
OPTIONAL MATCH (:Study {id: $study_id})-[:HAS_CIRCUIT]->(c:Circuit)
WITH collect(c.id) AS linked
UNWIND linked + $also AS id
MATCH (c:Circuit {id: id})
RETURN DISTINCT c.id AS id
"""

#: Removes the study node and its links; no row when there was no such study.
DELETE_STUDY = """
MATCH (s:Study {id: $study_id})
DETACH DELETE s
RETURN 1 AS deleted
"""
