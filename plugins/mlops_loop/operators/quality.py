"""DataQualityOperator: the Great Expectations quality gate on a snapshot.

Thin adapter over :func:`mlops_loop.core.quality.validate_snapshot`; all logic lives there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

# Keys of the outlet asset event extra (what the training DAG reads).
ASSET_EXTRA_KEYS = ("dataset", "ds", "snapshot_uri", "sha256", "result_uri")


class DataQualityOperator(BaseOperator):
    """Run the dataset's Great Expectations suite on a snapshot.

    The suite is ``quality.suite`` from the config (reviewable JSON), or one derived from
    the config's schema when that is not set.

    * pass: the validation result and Data Docs are stored under
      ``reports/quality/ds=<ds>/<sha256[:16]>/``; every Asset in ``outlets`` gets an event
      whose extra carries dataset, ds, snapshot_uri, sha256 and result_uri.
    * fail: the landed batch and the result are copied to ``quarantine/ds=<ds>/...``, the
      result is pushed to XCom under ``quality_result``, and the task fails with
      QualityGateFailed, whose message is the readable summary (failed expectations,
      counts, example bad values). Nothing downstream runs.
    * already validated: when the snapshot already is the date's validated snapshot (a
      re-run of the same landed files), the stored result is pushed under
      ``quality_result`` and the task is skipped, so no second Asset event starts another
      training run. A retry of the same task instance validates again and emits: its
      first try may have recorded the pass and then died before the event was sent.

    Great Expectations and other chatty libraries log at WARNING inside the task, so the
    readable summary is the last thing the gate logs.

    :param config_path: path of the dataset config YAML. (templated)
    :param snapshot_uri: URI of the snapshot to check, usually the ingest task's
        ``output["snapshot_uri"]``. (templated)
    :param ds: date ``YYYY-MM-DD`` of the batch; None or empty: the run's logical date,
        else the day it runs for (``run_after``). (templated)
    :return: ``QualityResult.to_xcom()``: success, dataset, ds, snapshot_uri, sha256,
        result_uri, docs_uri, stats, summary, quarantine_uri.
    """

    template_fields: Sequence[str] = ("config_path", "snapshot_uri", "ds")
    ui_color = "#e3f2d9"

    def __init__(
        self, *, config_path: str, snapshot_uri: str, ds: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.config_path = config_path
        self.snapshot_uri = snapshot_uri
        self.ds = ds

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops_loop.core.config import load_config, run_ds
        from mlops_loop.core.quality import validate_snapshot, validated_result
        from mlops_loop.hooks.s3 import dataset_s3_credentials
        from mlops_loop.operators.library_logs import library_logs_at_warning

        config = load_config(self.config_path)
        credentials = dataset_s3_credentials(config)
        ds = run_ds(context, self.ds)
        if context["ti"].try_number <= 1:
            existing = validated_result(config, self.snapshot_uri, credentials=credentials, ds=ds)
            if existing is not None:
                context["ti"].xcom_push(key="quality_result", value=existing.to_xcom())
                message = (
                    f"already validated: snapshot {existing.sha256[:16]} is the validated "
                    f"snapshot of {config.name} ds={ds} (result {existing.result_uri}); "
                    "no new event"
                )
                self.log.info("%s", message)
                raise AirflowSkipException(message)
        with library_logs_at_warning():
            result = validate_snapshot(
                config,
                self.snapshot_uri,
                credentials=credentials,
                ds=ds,
                raise_on_failure=False,
            )
        payload = result.to_xcom()
        if not result.success:
            context["ti"].xcom_push(key="quality_result", value=payload)
            raise result.to_exception()
        self.log.info("%s\nData Docs: %s", result.summary, result.docs_uri)
        extra = {key: payload[key] for key in ASSET_EXTRA_KEYS}
        self._annotate_outlets(context, extra)
        return payload

    def _annotate_outlets(self, context: Context, extra: dict[str, Any]) -> None:
        from airflow.sdk import Asset

        for outlet in self.outlets or []:
            if isinstance(outlet, Asset):
                context["outlet_events"][outlet].extra = dict(extra)
