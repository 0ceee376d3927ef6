"""Airflow Assets that connect the DAGs: one per dataset and event kind.

``validated``: a snapshot passed its quality gate (extra: dataset, ds, snapshot_uri, sha256,
result_uri). ``retrain_requested``: drift or decay is over policy (extra: reason). The
training DAG is scheduled on either.
"""

from __future__ import annotations

from airflow.sdk import Asset


def validated_asset(dataset: str) -> Asset:
    return Asset(
        name=f"mlops_loop.{dataset}.validated",
        uri=f"mlops-loop://{dataset}/validated",
        group="mlops_loop",
    )


def retrain_requested_asset(dataset: str) -> Asset:
    return Asset(
        name=f"mlops_loop.{dataset}.retrain_requested",
        uri=f"mlops-loop://{dataset}/retrain_requested",
        group="mlops_loop",
    )
