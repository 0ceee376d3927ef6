"""mlops_loop: landed data to a promoted, monitored champion model, as Airflow 3 DAGs.

Importing this package is cheap; the operators live in ``mlops_loop.operators`` and the
Airflow-free logic in ``mlops_loop.core``.
"""

__version__ = "0.1.0"

# A Celery queue name, what `airflow celery worker --queues` takes: checked by the config
# (core.config) and at DAG parse time (dag_configs), which may not load pydantic.
QUEUE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
