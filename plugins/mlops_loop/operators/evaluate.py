"""Score a challenger against the current champion in the trainer image.

Anything that loads a model runs inside the trainer image (the models need torch and
scikit-learn; the Airflow worker stays light): this operator only reads the current
champion from the MLflow registry, builds the ``evaluate`` request and, for a local
storage root, publishes the decision record the container wrote to a staging folder.
The comparison itself is ``mlops_loop.training.evaluate`` (container side) and
``mlops_loop.core.compare.decide``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_loop.operators.docker_train import IO_ROOT_ENV, TrainerContainerOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlops_loop.core.config import DatasetConfig
    from mlops_loop.core.storage import S3Credentials


class EvaluateChallengerOperator(TrainerContainerOperator):
    """Evaluate a registered challenger version against the champion on one holdout.

    Just before the container starts, the operator reads the ``champion`` alias of the
    registered model: that version is what the container scores beside the challenger
    and what a later PromoteModelOperator expects to find (compare-and-set). No champion
    (or a deleted one): the challenger is compared with the trivial baseline. The
    container scores both models on the same holdout rows, decides (config
    ``evaluation`` section), writes the decision record (JSON + HTML under
    ``{storage root}/reports/decisions/<decision_id>/`` and as MLflow artifacts of the
    challenger's run) and tags the challenger version with its validation status.

    Returns the decision: ``outcome`` (promote | reject | insufficient_data), ``reasons``,
    ``decision_id``, ``decision_uri``, ``html_uri``, ``model_name``,
    ``challenger_version``, ``expected_champion_version``, metric values, CI, guardrails,
    ``measurements`` (latency per 1k rows, model size). A holdout without the target
    column fails the task with the trainer's error.

    :param config_path: Dataset config YAML. (templated)
    :param holdout_snapshot_uri: Holdout snapshot (the training set's ``holdout``). (templated)
    :param challenger_version: Registered version to evaluate. (templated)
    :param model_name: Registered model; default the config's
        ``training.registered_model_name``. (templated)
    :param kwargs: TrainerContainerOperator arguments (image, mlflow_tracking_uri,
        mem_limit, cpus, docker_url, network_mode, ...); ``gpu`` defaults to ``none``.
    """

    template_fields: Sequence[str] = (
        "config_path",
        "holdout_snapshot_uri",
        "challenger_version",
        "model_name",
        *(
            f
            for f in TrainerContainerOperator.template_fields
            if f not in ("trainer_command", "request")
        ),
    )
    ui_color = "#e3d7f4"

    def __init__(
        self,
        *,
        config_path: str,
        holdout_snapshot_uri: str,
        challenger_version: str | int,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if "trainer_command" in kwargs or "request" in kwargs:
            raise ValueError(
                "EvaluateChallengerOperator builds its own trainer_command and request"
            )
        kwargs.setdefault("gpu", "none")
        super().__init__(trainer_command="evaluate", **kwargs)
        self.config_path = config_path
        self.holdout_snapshot_uri = holdout_snapshot_uri
        self.challenger_version = challenger_version
        self.model_name = model_name
        self._staging: Path | None = None

    def build_request(self, context: Context) -> dict[str, Any]:
        from docker.types import Mount
        from mlflow import MlflowClient

        from mlops_loop.core.config import load_config, training_settings
        from mlops_loop.core.containers import (
            check_tracking_uri,
            dataset_config_payload,
            make_io_dir,
        )
        from mlops_loop.core.registry import champion_status
        from mlops_loop.core.storage import is_s3

        config = load_config(self.config_path)
        self._config = config
        name = self.model_name or str(training_settings(config).registered_model_name)
        if str(self.challenger_version).strip() in ("", "None"):
            raise ValueError(
                "challenger_version is empty: which registered version should be evaluated?"
            )
        tracking_uri = check_tracking_uri(  # the worker's own registry call
            self.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"), local=True
        )
        status = champion_status(MlflowClient(tracking_uri=tracking_uri), name)
        self.log.info("Champion of %s before evaluation: %s", name, status.detail)
        decisions_root = None
        if not is_s3(config.root):
            # The data root is mounted read-only; the record is written to a staging
            # folder and published under the root by this operator afterwards.
            self._staging = make_io_dir(self.io_dir_root or os.environ.get(IO_ROOT_ENV))
            decisions_root = str(self._staging)
            self.mounts = [
                *(m for m in self.mounts if (m.get("Target") or m.get("target")) != decisions_root),
                Mount(target=decisions_root, source=decisions_root, type="bind"),
            ]
        return {
            "config": dataset_config_payload(config),
            "holdout_snapshot_uri": self.holdout_snapshot_uri,
            "model_name": name,
            "challenger_version": str(self.challenger_version),
            "expected_champion_version": status.version,
            "decisions_root": decisions_root,
            "tags": self._tags(context),
        }

    def container_read_only_paths(self, request: Any) -> list[str]:
        config: DatasetConfig = self._config
        return [*self.read_only_paths, config.root, self.holdout_snapshot_uri]

    def s3_credentials(self) -> S3Credentials | None:
        from mlops_loop.hooks.s3 import dataset_s3_credentials

        if self.aws_conn_id or self.s3_endpoint_url or self.s3_region:
            return super().s3_credentials()
        return dataset_s3_credentials(self._config)

    def execute(self, context: Context) -> dict[str, Any]:
        self._staging = None
        try:
            result = super().execute(context)
            if self._staging is not None:
                result = publish_decision_record(result, self._config.root)
            self.log.info(
                "Decision %s for %s v%s (against %s): %s; record %s",
                result.get("decision_id"),
                result.get("model_name"),
                result.get("challenger_version"),
                result.get("compared_against"),
                result.get("outcome"),
                result.get("html_uri"),
            )
            return result
        finally:
            if self._staging is not None:
                shutil.rmtree(self._staging, ignore_errors=True)
                self._staging = None

    def _tags(self, context: Context) -> dict[str, str]:
        ti = context.get("ti") if context else None
        if ti is None:
            return {}
        return {
            "airflow_dag_id": str(ti.dag_id),
            "airflow_run_id": str(ti.run_id),
            "airflow_task_id": str(ti.task_id),
        }


def publish_decision_record(result: dict[str, Any], root: str) -> dict[str, Any]:
    """Copy a decision record from the staging folder named by ``result`` to
    ``{root}/reports/decisions/<id>/`` (HTML first, JSON last) and point the result at the
    published files (the record and the version's decision_uri tag already name them)."""
    from mlops_loop.core.decision_report import decision_dir
    from mlops_loop.core.storage import join_uri, open_storage, read_json, write_json

    staged_json, staged_html = str(result["decision_uri"]), str(result["html_uri"])
    folder = decision_dir(root, str(result["decision_id"]))
    json_uri, html_uri = join_uri(folder, "decision.json"), join_uri(folder, "report.html")
    staging = open_storage(staged_json)
    target = open_storage(root)
    target.write_text(html_uri, Path(staged_html).read_text(encoding="utf-8"))
    record = read_json(staging, staged_json)
    write_json(target, json_uri, {**record, "html_uri": html_uri})
    return {**result, "decision_uri": json_uri, "html_uri": html_uri}
