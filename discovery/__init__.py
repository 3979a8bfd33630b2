"""circuit-atlas discovery: a pure library for finding circuits in transformer_lens models.

Usable from a notebook. It imports no Celery, Neo4j or FastAPI, and importing the package itself
loads nothing heavy: submodules that need torch import it themselves.
"""
