"""The Cypher of comparing circuits ACROSS models: one profile per stored circuit, computed from its
stored graph, whose numbers mean the same thing whatever the model (``graphstore.profiles`` reads
them; the definitions are in ``graphstore/SCHEMA.md``, "Profiles across models").

Components of different models are different components (``a1.h2`` of one model is not ``a1.h2``
of another), so nothing here matches components between circuits: every number is a count or a
fraction within one circuit, normalised by that circuit's own graph (``graph_n_layers``,
``graph_n_heads``, ``graph_parallel``, falling back to the model's ``n_layers`` / ``n_heads``).
Values always travel as ``$params``; reads run with READ routing.
"""

from __future__ import annotations

#: One row per id of ``$ids`` that names a stored circuit (ids naming none give no row):
#: its model, task and summary; heads kept per layer (a list of ``n_layers`` counts); kept MLPs;
#: edges by receiver input; head -> head edges by the receiving head's input (composition);
#: K-composition edges out of layer-0 heads; edges with an MLP at either end; heads per layer with
#: an edge into ``logits``; MLPs with an edge into ``logits``; the longest embed -> logits path
#: (in edges) over the circuit's own ``FEEDS``; and the longest path the model's graph allows.
CIRCUIT_PROFILES = """
UNWIND range(0, size($ids) - 1) AS i
MATCH (c:Circuit {id: $ids[i]})-[:OF_MODEL]->(m:Model)
OPTIONAL MATCH (c)-[:FOR_TASK]->(t:Task)
WITH i, c, m, t, coalesce(c.graph_n_layers, m.n_layers) AS n_layers,
     coalesce(c.graph_n_heads, m.n_heads) AS n_heads,
     coalesce(c.graph_mlp, m.mlp, true) AS has_mlp, coalesce(c.graph_parallel, false) AS parallel
CALL (c, n_layers) {
  UNWIND range(0, n_layers - 1) AS layer
  OPTIONAL MATCH (c)-[:INCLUDES]->(h:AttentionHead {layer: layer})
  WITH layer, count(h) AS kept,
       count(CASE WHEN EXISTS { (h)-[:FEEDS {circuit: c.id}]->(:Logits) } THEN 1 END) AS writers
  ORDER BY layer
  RETURN collect(kept) AS heads_per_layer, collect(writers) AS logit_heads_per_layer
}
CALL (c) {
  OPTIONAL MATCH (c)-[:INCLUDES]->(x:MLP)
  RETURN count(x) AS mlps,
         count(CASE WHEN EXISTS { (x)-[:FEEDS {circuit: c.id}]->(:Logits) } THEN 1 END) AS logit_mlps
}
CALL (c) {
  OPTIONAL MATCH (a:Component)-[f:FEEDS {circuit: c.id}]->(b:Component)
  RETURN count(f) AS edges,
         count(CASE WHEN f.input = 'q' THEN 1 END) AS input_q,
         count(CASE WHEN f.input = 'k' THEN 1 END) AS input_k,
         count(CASE WHEN f.input = 'v' THEN 1 END) AS input_v,
         count(CASE WHEN f.input = 'mlp' THEN 1 END) AS input_mlp,
         count(CASE WHEN f.input = 'logits' THEN 1 END) AS input_logits,
         count(CASE WHEN a.kind IN ['mlp', 'neuron'] OR b.kind IN ['mlp', 'neuron'] THEN 1 END) AS mlp_edges,
         count(CASE WHEN a.kind = 'attention' AND b.kind = 'attention' AND f.input = 'q' THEN 1 END) AS comp_q,
         count(CASE WHEN a.kind = 'attention' AND b.kind = 'attention' AND f.input = 'k' THEN 1 END) AS comp_k,
         count(CASE WHEN a.kind = 'attention' AND b.kind = 'attention' AND f.input = 'v' THEN 1 END) AS comp_v,
         count(CASE WHEN a.kind = 'attention' AND a.layer = 0 AND b.kind = 'attention'
                         AND f.input = 'k' THEN 1 END) AS comp_k_from_layer0
}
CALL (c) {
  OPTIONAL MATCH (c)-[:INCLUDES]->(e:Embedding)
  OPTIONAL MATCH (c)-[:INCLUDES]->(l:Logits)
  OPTIONAL MATCH p = (e) (()-[f:FEEDS]->() WHERE f.circuit = c.id)+ (l)
  RETURN max(length(p)) AS longest_path
}
RETURN c.id AS id, m.id AS model, t.id AS task, c.method AS method, c.architecture AS architecture,
       n_layers, n_heads, has_mlp, parallel, c.n_nodes AS n_nodes, edges,
       c.metric AS metric, c.faithfulness AS faithfulness_task,
       c.search_metric AS search_metric, c.faithfulness_search AS faithfulness_search,
       heads_per_layer, logit_heads_per_layer, mlps, logit_mlps,
       input_q, input_k, input_v, input_mlp, input_logits, mlp_edges,
       comp_q, comp_k, comp_v, comp_k_from_layer0,
       coalesce(longest_path, 0) AS longest_path,
       CASE WHEN has_mlp AND NOT parallel THEN 2 * n_layers + 1 ELSE n_layers + 1 END AS max_path
ORDER BY i
"""
