"""circuit-atlas workers: Celery glue from a job spec to :mod:`discovery` and :mod:`graphstore`.

Importing this package (or :mod:`workers.app`) loads no torch: the API builds a Celery client from
:func:`workers.app.create_celery` and sends tasks by name; only worker processes import
:mod:`workers.tasks`.
"""
