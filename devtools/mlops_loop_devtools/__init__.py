"""Development helpers for this repository: local servers and seeded sample data.

Used by the demo (scripts/demo.py), the tests and the benchmarks; never by the pipeline.
Deliberately outside ``plugins/mlops_loop``: the installed distribution (and so the
trainer image) contains only ``mlops_loop``. Importable once ``devtools/`` is on
``sys.path``: pytest adds it (``pythonpath`` in pyproject.toml), the scripts add it
themselves.
"""
