"""Drift monitoring and the retraining request that closes the loop.

``DriftMonitorOperator`` runs the trainer's ``monitor`` command in the trainer image (it
loads the champion, so it runs where the model's libraries are; the worker stays light).
``RequestRetrainingOperator`` asks ``core.retrain.request_retraining`` whether drift or
decay is over policy and outside the cool-down; when it is, the request is recorded in
``<root>/reports/drift/retrain_requests.json`` and the operator emits an event on the
``retrain_requested`` Asset (the training DAG is scheduled on it); otherwise it skips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import BaseOperator

from mlops_loop.operators.trainer import TrainerContainerOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlops_loop.core.config import DatasetConfig
    from mlops_loop.core.trainer_protocol import MonitorRequest, TrainerRequest


class DriftMonitorOperator(TrainerContainerOperator):
    """Measure drift and decay of the dataset's champion on its recent validated data.

    Right before the trainer starts, the operator resolves the champion (the
    ``champion`` alias of the registered model) and lists the validated snapshots of the
    window. Without a champion it returns verdict ``no_champion`` and starts nothing. The
    trainer (``monitor`` command) builds the champion's reference profile on first use,
    writes ``report.json`` / ``report.html`` under ``<root>/reports/drift/ds=<ds>/`` and
    logs them to the MLflow experiment ``<dataset>_monitoring``.

    MLflow down: the champion lookup fails the task with TrackingServerUnavailable,
    naming the server, before the trainer starts, within ``hooks.mlflow.probe_bound_s()``
    (27 s with the defaults); no report is written (docs/security.md, "MLflow down").

    :param config_path: Dataset config YAML. (templated)
    :param ds: Report date ``YYYY-MM-DD``; empty: the run's logical date, else the day it
        runs for. (templated)
    :param window_end: Last date of recent data; it is also the report date and wins over
        ``ds``. Empty: ``ds``. (templated)
    :param since_ds: Window start; empty: ``window_end - drift.window_days + 1``. (templated)
    :param model_name: Registered model; default the config's training
        ``registered_model_name`` (else ``<dataset>_model``). (templated)
    :param kwargs: TrainerContainerOperator arguments (image, mlflow_conn_id, mem_limit,
        cpus, docker_url, network_mode, runner, ...); ``gpu`` defaults to ``none``.
    :return: the monitor result: verdict, prediction_verdict, drifted_features,
        warned_features, rows, decay_verdict, decay_reason, reasons, report_uri,
        report_json_uri, profile_uri, champion_version, ds.
    """

    trainer_command = "monitor"
    template_fields: Sequence[str] = (
        "ds",
        "window_end",
        "since_ds",
        "model_name",
        *TrainerContainerOperator.template_fields,
    )
    ui_color = "#fbe9e7"
    default_gpu = "none"  # scoring is cheap on the CPU; gpu="auto" opts in

    def __init__(
        self,
        *,
        ds: str | None = None,
        window_end: str | None = None,
        since_ds: str | None = None,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ds = ds
        self.window_end = window_end
        self.since_ds = since_ds
        self.model_name = model_name

    def _window(self, context: Context, config: DatasetConfig) -> tuple[str, str]:
        from mlops_loop.core.config import given, run_ds
        from mlops_loop.core.retrain import drift_window

        until = run_ds(context, self.window_end if given(self.window_end) else self.ds)
        since = str(self.since_ds).strip() if given(self.since_ds) else None
        return drift_window(until, config.drift.window_days, since)

    def result_without_trainer(
        self, context: Context, config: DatasetConfig, request: TrainerRequest
    ) -> dict[str, Any] | None:
        """No champion: nothing to monitor, the verdict ``no_champion`` without a trainer."""
        from mlops_loop.core.trainer_protocol import no_champion_result

        monitor = cast("MonitorRequest", request)  # build_request above made it
        if monitor.champion_version is not None:
            return None
        return no_champion_result(
            config.name, monitor.model_name, monitor.ds, monitor.since_ds, monitor.until_ds
        )

    def build_request(self, context: Context, config: DatasetConfig) -> MonitorRequest:
        from mlops_loop.core.retrain import drift_reports_root
        from mlops_loop.core.trainer_protocol import MonitorRequest, config_payload
        from mlops_loop.core.training_set import validated_snapshots

        name = self.resolve_model_name(config, self.model_name)
        since, until = self._window(context, config)
        snapshots = validated_snapshots(
            config, credentials=self.s3_credentials(config), since_ds=since, until_ds=until
        )
        self.log.info("Window %s..%s: %d validated snapshots", since, until, len(snapshots))
        return MonitorRequest(
            config=config_payload(config),
            model_name=name,
            champion_version=self.champion(name).version,
            snapshot_uris=[s.snapshot_uri for s in snapshots],
            ds=until,
            since_ds=since,
            until_ds=until,
            reports_root=drift_reports_root(config),
        )

    def output_paths(self, config: DatasetConfig) -> list[str]:
        from mlops_loop.core.retrain import drift_reports_root

        return [drift_reports_root(config)]

    def log_result(self, result: dict[str, Any]) -> None:
        from mlops_loop.core.drift import drift_summary_lines

        self.log.info("%s", "\n".join(drift_summary_lines(result)))


class RequestRetrainingOperator(BaseOperator):
    """Request retraining when drift or decay is over policy, at most once per cool-down.

    One call to ``core.retrain.request_retraining``: it decides with ``should_retrain``
    (the config's ``drift.retrain_on`` and ``drift.cool_down_hours``), using the run's
    time as ``now`` (``core.config.run_time``: data interval end, else logical date, else
    run_after) and the last request recorded in
    ``<root>/reports/drift/retrain_requests.json``. When it fires the request is appended
    to that record (atomic rewrite) and the operator succeeds, so every Asset in ``outlets`` (the
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

        from mlops_loop.core.config import load_config, run_time
        from mlops_loop.core.retrain import request_retraining
        from mlops_loop.hooks.s3 import dataset_s3_credentials

        result = self._result()
        config = load_config(self.config_path)
        ti = context.get("ti")
        decision = request_retraining(
            config,
            result,
            run_time(context),
            run_id=str(ti.run_id) if ti is not None else None,
            credentials=dataset_s3_credentials(config),
        )
        if not decision.fire or decision.entry is None:
            self.log.info("No retraining: %s", decision.reason)
            raise AirflowSkipException(decision.reason)
        self.log.info(
            "Retraining requested: %s (recorded in %s)", decision.reason, decision.record_uri
        )
        self._annotate_outlets(context, decision.asset_extra)
        return decision.entry

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
