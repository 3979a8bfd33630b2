"""circuit-atlas graph store: circuits in Neo4j, components shared across circuits of one model.

Knows Neo4j and :mod:`discovery.circuit`, nothing of torch. Every function takes the driver as an
argument; all Cypher lives in :mod:`graphstore.queries`.
"""
