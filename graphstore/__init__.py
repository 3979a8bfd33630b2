"""circuit-atlas graph store: circuits in Neo4j, components shared across circuits of one model.

Knows Neo4j and :mod:`discovery.circuit`, nothing of torch. Every function takes the driver as an
argument; all Cypher lives in :mod:`graphstore.queries` and the schema is described in
``graphstore/SCHEMA.md``.

- :mod:`graphstore.store`: write (one transaction per circuit), read, list, delete; the write
  itself is :mod:`graphstore.writer`;
- :mod:`graphstore.experiments`: competition experiments beside their circuits (one transaction
  each, replace-on-write), read back exactly, listed, deleted;
- :mod:`graphstore.timelines`: circuit-formation timelines (a run, its checkpoint models, a
  circuit per step and task) in one transaction each, replace-on-write, and their cookbook;
- :mod:`graphstore.overlap`: shared components, overlap of circuits, task x task matrix, hubs;
- :mod:`graphstore.profiles`: circuits of different models compared by what is comparable
  (depth profile, edge shares, composition, logit writers, longest path);
- :mod:`graphstore.readonly`: users' own Cypher, read-only, with a timeout and a row cap;
- :mod:`graphstore.sandbox`: the same in a child process (:mod:`graphstore.sandbox_child`), as
  the query user of :mod:`graphstore.reader`, with a hard deadline and a byte cap;
- :mod:`graphstore.nxgraph`: a stored circuit as a networkx graph.
"""
