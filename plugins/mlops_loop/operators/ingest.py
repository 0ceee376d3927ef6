"""IngestSnapshotOperator: a landed batch -> a content-addressed Parquet snapshot.

Thin adapter over :func:`mlops_loop.core.ingest.ingest_batch`; all logic lives there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class IngestSnapshotOperator(BaseOperator):
    """Read the batch landed for the logical date and write an immutable snapshot.

    Re-running for the same date finds the existing snapshot (same hash) and writes
    nothing. Bad files fail the task with an error naming the file and the problem; values
    that do not match their declared type are kept and recorded in the manifest for the
    quality gate. When no batch has landed, ``source.on_missing`` in the config decides:
    ``fail`` fails the task, ``skip`` skips it (and, by default trigger rules, downstream);
    in the ingest DAG, WaitForBatchSensor has waited for the batch before this runs.
    Storage and Arrow libraries log at WARNING inside the task.

    :param config_path: path of the dataset config YAML. (templated)
    :param ds: date ``YYYY-MM-DD`` of the batch to ingest; None or empty: the run's
        logical date, else the day it runs for (``run_after``). (templated)
    :return: ``SnapshotResult.to_xcom()``: snapshot_uri, sha256, rows, ds, dataset,
        created, source_uri, manifest_uri.
    """

    template_fields: Sequence[str] = ("config_path", "ds")
    ui_color = "#d7ecf7"

    def __init__(self, *, config_path: str, ds: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_path = config_path
        self.ds = ds

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops_loop.core.config import load_config, run_ds
        from mlops_loop.core.ingest import ingest_batch
        from mlops_loop.exceptions import NoBatchError
        from mlops_loop.hooks.s3 import dataset_s3_credentials
        from mlops_loop.operators.library_logs import library_logs_at_warning

        config = load_config(self.config_path)
        try:
            with library_logs_at_warning():
                result = ingest_batch(
                    config, run_ds(context, self.ds), credentials=dataset_s3_credentials(config)
                )
        except NoBatchError as exc:
            if config.source.on_missing == "skip":
                raise AirflowSkipException(f"{exc} (source.on_missing: skip)") from exc
            raise
        self.log.info(
            "%s snapshot %s for %s ds=%s: %d rows%s",
            "wrote" if result.created else "found existing",
            result.snapshot_uri,
            result.dataset,
            result.ds,
            result.rows,
            f"; for the quality gate: {'; '.join(result.issues)}" if result.issues else "",
        )
        return result.to_xcom()
