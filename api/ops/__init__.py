"""Local services for machines without Docker: Redis and Neo4j run as plain processes on
loopback, with data, logs and pid files under ``Settings.local_dir`` (``.local/`` by default).

``circuits services up|down|status`` drives these modules; tests use them with a temporary
directory and free ports to check the lifecycle itself.
"""
