"""A circuit discovered with one k/v input per key-value group (``--kv-inputs group``) on the
Llama-architecture ``multitask-llama`` stored in the real Neo4j and read back unchanged: its
``a{L}.kv{G}`` components (label ``KeyValueGroup``) and the graph's ``kv_groups``."""

from __future__ import annotations

import dataclasses

import networkx as nx
import torch

from discovery.discover import DiscoveryRequest, discover
from discovery.export import to_networkx
from graphstore.nxgraph import circuit_graph
from graphstore.store import read_circuit, write_circuit


def test_grouped_circuit_round_trips_through_neo4j(store, db, scratch_model):
    torch.set_num_threads(1)
    found = discover(DiscoveryRequest(model="multitask-llama", task="induction", n_prompts=8,
                                      device="cpu", threshold=0.02, kv_inputs="group"))
    circuit = dataclasses.replace(found, id=f"{scratch_model}-kv",
                                  provenance=dataclasses.replace(found.provenance, model=scratch_model))
    assert any(n.kind == "kv_group" for n in circuit.nodes)
    write_circuit(store, circuit, database=db)
    back = read_circuit(store, circuit.id, database=db)
    assert back == circuit and back.graph.kv_groups == 2
    assert nx.utils.graphs_equal(circuit_graph(store, circuit.id, database=db), to_networkx(circuit))
    records, _, _ = store.execute_query(
        "MATCH (:Circuit {id: $id})-[:INCLUDES]->(n:KeyValueGroup) RETURN count(n) AS n",
        id=circuit.id, database_=db)
    assert records[0]["n"] == sum(n.kind == "kv_group" for n in circuit.nodes)
