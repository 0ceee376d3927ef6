"""mlops_loop: landed data to a promoted, monitored champion model, as Airflow 3 DAGs.

Importing this package is cheap; the operators live in ``mlops_loop.operators`` and the
Airflow-free logic in ``mlops_loop.core``.
"""

__version__ = "0.1.0"
