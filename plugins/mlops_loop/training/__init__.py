"""Code that runs inside the trainer container (or as a local process): reads snapshots,
fits a PyTorch MLP or a scikit-learn model, logs to MLflow and registers a version.

Entry point: ``python -m mlops_loop.training train --request-env --result-stdout`` in a
container, ``--request request.json --result result.json`` as a local process (see
``__main__``). Heavy libraries (torch, sklearn, mlflow) load when a command runs.
"""
