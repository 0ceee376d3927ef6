"""Drift monitoring and the retraining request that closes the loop.

``DriftMonitorOperator`` runs the trainer's ``monitor`` command in the trainer image (it
loads the champion, so it runs where the model's libraries are; the worker stays light).
``RequestRetrainingOperator`` decides with ``core.drift.should_retrain`` whether drift or
decay is over policy and outside the cool-down; when it is, it records the request in
``<root>/reports/drift/retrain_requests.json`` and emits an event on the
``retrain_requested`` Asset (the training DAG is scheduled on it); otherwise it skips.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from mlops_loop.operators.docker_train import TrainerContainerOperator

if TYPE_CHECKING:
    from airflow.sdk import Context
    from pydantic import BaseModel

    from mlops_loop.core.config import DatasetConfig
    from mlops_loop.core.storage import S3Credentials, Storage

RETRAIN_RECORD_NAME = "retrain_requests.json"
# Keys of the retrain_requested Asset event extra (what the training DAG can read).
ASSET_EXTRA_KEYS = ("dataset", "reason", "ds", "verdict", "decay_verdict", "report_uri")


def drift_reports_root(config: DatasetConfig) -> str:
    """``<root>/reports/drift``: reports, reference profiles and the retrain record."""
    from mlops_loop.core.storage import join_uri

    return join_uri(config.root, "reports", "drift")


def drift_window(ds: str, window_days: int, since_ds: str | None = None) -> tuple[str, str]:
    """(since, until): ``[ds - window_days + 1, ds]`` unless ``since_ds`` is given."""
    from mlops_loop.core.config import check_ds

    def day(text: str) -> date:
        try:
            return date.fromisoformat(check_ds(text))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a date YYYY-MM-DD: {exc}") from exc

    until = day(ds)
    since = day(since_ds) if since_ds else until - timedelta(days=window_days - 1)
    if since > until:
        raise ValueError(f"window start {since} is after its end {until}")
    return since.isoformat(), until.isoformat()


class DriftMonitorOperator(TrainerContainerOperator):
    """Measure drift and decay of the dataset's champion on its recent validated data.

    Right before the container starts, the operator resolves the champion (the
    ``champion`` alias of the registered model) and lists the validated snapshots of the
    window. Without a champion it returns verdict ``no_champion`` and starts nothing. The
    container (``monitor`` command) builds the champion's reference profile on first use,
    writes ``report.json`` / ``report.html`` under ``<root>/reports/drift/ds=<ds>/`` and
    logs them to the MLflow experiment ``<dataset>_monitoring``.

    :param config_path: Dataset config YAML. (templated)
    :param ds: Report date ``YYYY-MM-DD``; the window ends here. (templated)
    :param since_ds: Window start; empty: ``ds - drift.window_days + 1``. (templated)
    :param model_name: Registered model; default the config's training
        ``registered_model_name`` (else ``<dataset>_model``). (templated)
    :param kwargs: TrainerContainerOperator arguments (image, mlflow_tracking_uri,
        mem_limit, cpus, docker_url, network_mode, ...).
    :return: the monitor result: verdict, prediction_verdict, drifted_features,
        warned_features, rows, decay_verdict, decay_reason, reasons, report_uri,
        report_json_uri, profile_uri, champion_version, ds.
    """

    template_fields: Sequence[str] = (
        "config_path",
        "ds",
        "since_ds",
        "model_name",
        *(
            f
            for f in TrainerContainerOperator.template_fields
            if f not in ("trainer_command", "request")
        ),
    )
    ui_color = "#fbe9e7"

    def __init__(
        self,
        *,
        config_path: str,
        ds: str = "{{ ds }}",
        since_ds: str | None = None,
        model_name: str | None = None,
        gpu: str = "none",
        **kwargs: Any,
    ) -> None:
        if "trainer_command" in kwargs or "request" in kwargs:
            raise ValueError("DriftMonitorOperator builds its own trainer_command and request")
        super().__init__(trainer_command="monitor", gpu=gpu, **kwargs)
        self.config_path = config_path
        self.ds = ds
        self.since_ds = since_ds
        self.model_name = model_name

    def execute(self, context: Context) -> dict[str, Any]:  # type: ignore[override]
        from mlops_loop.core.config import load_config, training_settings

        config = load_config(self.config_path)
        self._config = config
        name = self.model_name or str(training_settings(config, {}).registered_model_name)
        self._model_name = name
        self._champion = self._resolve_champion(name)
        if self._champion is None:
            since, until = drift_window(self.ds, config.drift.window_days, self.since_ds or None)
            skipped: dict[str, Any] = {
                "status": "ok",
                "dataset": config.name,
                "model_name": name,
                "champion_version": None,
                "ds": until,
                "since_ds": since,
                "until_ds": until,
                "verdict": "no_champion",
                "reasons": [f"{name} has no champion yet: nothing to monitor"],
                "drifted_features": [],
                "warned_features": [],
                "decay_verdict": None,
            }
            self.log.warning("No drift run: %s", skipped["reasons"][0])
            return skipped
        result: dict[str, Any] = super().execute(context)
        self._log_summary(result)
        return result

    def _resolve_champion(self, name: str) -> str | None:
        import mlflow

        from mlops_loop.core.containers import check_tracking_uri
        from mlops_loop.core.registry import get_champion

        # The worker's own registry call: any tracking store is fine here.
        tracking_uri = check_tracking_uri(
            self.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"), local=True
        )
        return get_champion(mlflow.MlflowClient(tracking_uri=tracking_uri), name)

    def build_request(self, context: Context) -> dict[str, Any]:
        from mlops_loop.core.containers import dataset_config_payload
        from mlops_loop.core.training_set import validated_snapshots
        from mlops_loop.training.monitor import MonitorRequest

        config = self._config
        since, until = drift_window(self.ds, config.drift.window_days, self.since_ds or None)
        snapshots = validated_snapshots(
            config, credentials=self.s3_credentials(), since_ds=since, until_ds=until
        )
        reports_root = drift_reports_root(config)
        self.log.info(
            "Champion %s version %s; window %s..%s: %d validated snapshots",
            self._model_name, self._champion, since, until, len(snapshots),
        )  # fmt: skip
        request = MonitorRequest(
            config=dataset_config_payload(config),
            model_name=self._model_name,
            champion_version=self._champion,
            snapshot_uris=[s.snapshot_uri for s in snapshots],
            ds=until,
            since_ds=since,
            until_ds=until,
            reports_root=reports_root,
            tags=self._tags(context),
        )
        return request.model_dump(mode="json")

    def prepare_container(self, request: BaseModel | dict[str, Any]) -> None:
        """The container writes reports and profiles: mount the local reports folder
        read-write and run as the worker's user, so the files belong to it."""
        from pathlib import Path

        from docker.types import Mount

        from mlops_loop.core.storage import is_s3

        reports_root = drift_reports_root(self._config)
        if is_s3(reports_root):
            return
        path = os.path.abspath(reports_root)
        Path(path).mkdir(parents=True, exist_ok=True)
        self.mounts = [
            *(m for m in self.mounts if (m.get("Target") or m.get("target")) != path),
            Mount(target=path, source=path, type="bind", read_only=False),
        ]
        if not self.user:
            self.user = f"{os.getuid()}:{os.getgid()}"
            # The image's home belongs to its own user; another uid needs a writable one.
            self.environment = {"HOME": "/tmp", **(self.environment or {})}

    def container_read_only_paths(self, request: BaseModel | dict[str, Any]) -> list[str]:
        return [*self.read_only_paths, self._config.root]

    def s3_credentials(self) -> S3Credentials | None:
        """The dataset's S3 settings unless the operator's own S3 arguments are given."""
        from mlops_loop.hooks.s3 import dataset_s3_credentials

        if self.aws_conn_id or self.s3_endpoint_url or self.s3_region:
            return super().s3_credentials()
        return dataset_s3_credentials(self._config)

    def _tags(self, context: Context) -> dict[str, str]:
        ti = context.get("ti") if context else None
        if ti is None:
            return {}
        return {
            "airflow_dag_id": str(ti.dag_id),
            "airflow_run_id": str(ti.run_id),
            "airflow_task_id": str(ti.task_id),
        }

    def _log_summary(self, result: dict[str, Any]) -> None:
        lines = [
            f"drift verdict: {result.get('verdict')} (prediction: {result.get('prediction_verdict')}, "
            f"decay: {result.get('decay_verdict')}); champion {result.get('model_name')} "
            f"version {result.get('champion_version')}; {result.get('rows')} recent rows",
            *(f"  - {r}" for r in result.get("reasons", [])),
            f"report: {result.get('report_uri')}",
        ]
        self.log.info("%s", "\n".join(lines))


# --- the retrain request record -----------------------------------------------------------


def read_retrain_requests(storage: Storage, uri: str) -> list[dict[str, Any]]:
    """The recorded drift-triggered retrain requests, oldest first ([] when none yet)."""
    from mlops_loop.core.storage import read_json
    from mlops_loop.exceptions import RetrainRecordError

    if not storage.exists(uri):
        return []
    try:
        doc = read_json(storage, uri)
    except ValueError as exc:
        raise RetrainRecordError(
            f"retrain request record {uri} is not JSON: {exc}", uri=uri
        ) from exc
    requests = doc.get("requests") if isinstance(doc, dict) else None
    if not isinstance(requests, list) or not all(
        isinstance(r, dict) and isinstance(r.get("time"), str) for r in requests
    ):
        raise RetrainRecordError(
            f"retrain request record {uri} has no list of requests with a 'time' each", uri=uri
        )
    return requests


def last_retrain_time(requests: list[dict[str, Any]]) -> datetime | None:
    """The latest request time (timezone-aware ISO strings in the record)."""
    times = [datetime.fromisoformat(r["time"]) for r in requests]
    return max(times) if times else None


def record_retrain_request(
    storage: Storage, uri: str, entry: dict[str, Any]
) -> list[dict[str, Any]]:
    """Append ``entry`` (must carry ``time``) and rewrite the record atomically."""
    from mlops_loop.core.storage import write_json

    requests = [*read_retrain_requests(storage, uri), dict(entry)]
    write_json(storage, uri, {"format": 1, "requests": requests})
    return requests


def run_time(context: Context) -> datetime:
    """The run's logical time: data interval end, else logical date, else run_after."""
    for key in ("data_interval_end", "logical_date"):
        value = context.get(key)
        if isinstance(value, datetime):
            return value
    dag_run = context.get("dag_run")
    value = getattr(dag_run, "run_after", None) if dag_run is not None else None
    if not isinstance(value, datetime):
        raise ValueError("the run has no data interval, logical date or run_after")
    return value


class RequestRetrainingOperator(BaseOperator):
    """Request retraining when drift or decay is over policy, at most once per cool-down.

    Decides with ``core.drift.should_retrain`` (the config's ``drift.retrain_on`` and
    ``drift.cool_down_hours``), using the run's logical time as ``now`` (data interval
    end, else logical date) and the last request recorded in
    ``<root>/reports/drift/retrain_requests.json``. When it fires it appends the request
    to that record (atomic rewrite) and succeeds, so every Asset in ``outlets`` (the
    dataset's ``retrain_requested`` Asset) gets an event whose extra carries dataset,
    reason, ds, verdict, decay_verdict and report_uri. Otherwise it raises
    AirflowSkipException with the reason: no event.

    :param config_path: Dataset config YAML. (templated)
    :param drift_result: The DriftMonitorOperator result, usually
        ``"{{ ti.xcom_pull(task_ids='drift_monitor') }}"`` in a DAG with
        ``render_template_as_native_obj=True``. (templated)
    :return: the recorded request.
    """

    template_fields: Sequence[str] = ("config_path", "drift_result")
    template_fields_renderers = {"drift_result": "json"}
    ui_color = "#ffccbc"

    def __init__(
        self, *, config_path: str, drift_result: dict[str, Any] | str, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.config_path = config_path
        self.drift_result = drift_result

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops_loop.core.config import load_config
        from mlops_loop.core.drift import should_retrain
        from mlops_loop.core.storage import join_uri, open_storage
        from mlops_loop.hooks.s3 import dataset_s3_credentials

        result = self._result()
        config = load_config(self.config_path)
        if result.get("verdict") == "no_champion":
            raise AirflowSkipException("no champion: nothing to retrain from drift")
        uri = join_uri(drift_reports_root(config), RETRAIN_RECORD_NAME)
        storage = open_storage(uri, dataset_s3_credentials(config))
        now = run_time(context)
        decay = {"verdict": result.get("decay_verdict"), "reason": result.get("decay_reason") or ""}
        fire, reason = should_retrain(
            result, decay, last_retrain_time(read_retrain_requests(storage, uri)), now, config.drift
        )
        if not fire:
            self.log.info("No retraining: %s", reason)
            raise AirflowSkipException(reason)
        ti = context.get("ti")
        entry = {
            "time": now.isoformat(),
            "dataset": config.name,
            "reason": reason,
            "ds": result.get("ds"),
            "verdict": result.get("verdict"),
            "decay_verdict": result.get("decay_verdict"),
            "report_uri": result.get("report_uri"),
            "champion_version": result.get("champion_version"),
            "airflow_run_id": str(ti.run_id) if ti is not None else None,
        }
        record_retrain_request(storage, uri, entry)
        self.log.info("Retraining requested: %s (recorded in %s)", reason, uri)
        self._annotate_outlets(context, {k: entry[k] for k in ASSET_EXTRA_KEYS})
        return entry

    def _result(self) -> dict[str, Any]:
        import json

        value = self.drift_result
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError(f"drift_result is not a result dict: {value[:200]!r}") from None
        if not isinstance(value, dict) or "verdict" not in value:
            raise ValueError(
                f"drift_result must be the drift monitor's result (a dict with a verdict), got {value!r}"
            )
        return value

    def _annotate_outlets(self, context: Context, extra: dict[str, Any]) -> None:
        from airflow.sdk import Asset

        for outlet in self.outlets or []:
            if isinstance(outlet, Asset):
                context["outlet_events"][outlet].extra = dict(extra)
