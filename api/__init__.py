"""circuit-atlas API: the FastAPI app, its routers, and the `circuits` command line.

Depends on workers (settings, Celery client) and graphstore; nothing depends on it. The API
process never imports torch: it sends Celery tasks by name.
"""
