"""The ``evaluate`` command of the trainer image: champion vs challenger on one holdout.

One call, :func:`run_evaluation`, takes an ``EvaluateRequest`` (core.trainer_protocol) and:

1. validates the dataset config and reads the holdout snapshot (all rows; its sha256
   names the holdout in the decision id); a holdout without the target column is an
   error naming the column, not a decision; a holdout whose estimated memory
   (core.compare.holdout_memory_mb, from its manifest's rows and columns) exceeds
   ``evaluation.max_holdout_memory_mb`` is refused before it is read (EvaluationError:
   exit code 3, the task fails at once);
2. loads the challenger version and the champion the operator saw just before the
   container started (``expected_champion_version``) with ``mlflow.pyfunc`` in this one
   process, and scores both on the SAME rows (classification: probability of the positive
   class, the output contract of ``training/models.py``). A champion version that was
   deleted is treated as no champion (the comparison is against the baseline) and the
   reasons say so;
3. measures the challenger's scoring latency (ms per 1k rows, one warm-up call first) and
   model size (MB of its artifacts) for the budget;
4. calls ``core.compare.decide`` with the config's ``evaluation`` settings, writes the
   decision record (``core.decision_report``: JSON + HTML under
   ``{storage root}/reports/decisions/<decision_id>/`` and as artifacts of the
   challenger's MLflow run) and tags the challenger version (``core.registry.mark_validation``).

The result (the operator's XCom) is the decision dict plus ``decision_uri``, ``html_uri``,
``model_name``, ``challenger_version``, ``expected_champion_version`` (the champion that
was actually compared against: what the promotion's compare-and-set expects) and
``measurements``, and where the MLflow copy of the record is (``artifact_run_id``,
``artifact_experiment_id``, ``html_artifact_path``: the "Decision report" link of the
Airflow plugin). ``insufficient_data`` (holdout too small, one class only) is a normal
outcome, never a promotion.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mlops_loop.core.trainer_protocol import (
    EvaluateRequest,
    s3_credentials_from_env,
    trainer_tracking_uri,
)
from mlops_loop.exceptions import (
    EvaluationError,
    MlopsLoopError,
    TrackingServerError,
    TrainingError,
)
from mlops_loop.training.train import Log, print_flushed

WARMUP_ROWS = 100


def _client(tracking_uri: str) -> Any:
    """An MLflow client, after one call that proves the server answers."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        client.search_registered_models(max_results=1)
    except Exception as exc:
        raise TrackingServerError(
            f"MLflow tracking server at {tracking_uri} did not answer: {type(exc).__name__}: {exc}"[
                :600
            ],
            tracking_uri=tracking_uri,
        ) from exc
    return client


def directory_size_mb(path: str | Path) -> float:
    """Total size of the files under ``path`` in MB (10^6 bytes)."""
    root = Path(path)
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def record_artifact_location(
    client: Any, run_id: str | None, artifact_path: str | None
) -> dict[str, Any]:
    """Where the MLflow copy of the decision record is (the challenger's run, its
    experiment, the HTML's artifact path), for a link that a browser can open; empty
    values when the record was not logged to MLflow."""
    if not run_id or not artifact_path:
        return {"artifact_run_id": None, "artifact_experiment_id": None, "html_artifact_path": None}
    return {
        "artifact_run_id": run_id,
        "artifact_experiment_id": str(client.get_run(run_id).info.experiment_id),
        "html_artifact_path": f"{artifact_path}/report.html",
    }


def load_version(client: Any, name: str, version: str, into: Path) -> tuple[Any, float, str | None]:
    """Download ``models:/<name>/<version>`` once; returns (pyfunc model, size in MB,
    the version's run id)."""
    import mlflow.artifacts
    import mlflow.pyfunc

    mv = client.get_model_version(name, version)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{name}/{version}", dst_path=str(into / f"v{version}")
    )
    return mlflow.pyfunc.load_model(local), directory_size_mb(local), getattr(mv, "run_id", None)


def score(model: Any, features: Any) -> tuple[Any, float]:
    """Scores as a float array and the milliseconds per 1,000 rows of the timed call
    (after a warm-up on the first rows, so lazy initialisation is not counted)."""
    import numpy as np

    model.predict(features.iloc[:WARMUP_ROWS])
    started = time.perf_counter()
    raw = model.predict(features)
    seconds = time.perf_counter() - started
    values = np.asarray(getattr(raw, "to_numpy", lambda: raw)(), dtype=np.float64).reshape(
        len(features), -1
    )
    if values.shape[1] != 1:
        raise EvaluationError(
            f"the model returned {values.shape[1]} columns per row; the scoring contract is one score "
            "(probability of the positive class, or the prediction)",
            rows=len(features),
        )
    return values[:, 0], seconds * 1e6 / max(len(features), 1)


def _live_champion(client: Any, name: str, expected: str | None, notes: list[str]) -> str | None:
    """The champion to compare against: ``expected`` (what the worker saw) if that version
    still exists, else None, with a note on why (deleted champion)."""
    from mlops_loop.core.registry import champion_status, live_version

    if expected is None:
        status = champion_status(client, name)
        if status.state == "deleted":
            notes.append(f"no valid champion: {status.detail}; compared against the baseline")
        return None
    if live_version(client, name, expected) is None:
        notes.append(
            f"the champion seen before evaluation, version {expected} of {name!r}, was deleted: "
            "treated as no champion; compared against the baseline"
        )
        return None
    return expected


def _require_challenger(client: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    from mlops_loop.exceptions import RegistryError

    try:
        mv = client.get_model_version(name, version)
    except MlflowException as exc:
        raise RegistryError(
            f"challenger version {version} of {name!r} is not in the registry: {exc.message}"[:600],
            model_name=name,
            version=version,
        ) from exc
    if str(getattr(mv, "status", "READY")) != "READY":
        raise RegistryError(
            f"challenger version {version} of {name!r} is {mv.status}, not READY",
            model_name=name,
            version=version,
        )
    return mv


def _training_target_mean(version: Any) -> float | None:
    """The challenger's training positive rate / mean (None for versions from before the tag)."""
    from mlops_loop.core.targets import TRAIN_TARGET_MEAN_TAG

    try:
        value = float(dict(getattr(version, "tags", {}) or {}).get(TRAIN_TARGET_MEAN_TAG, "nan"))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def run_evaluation(
    request: EvaluateRequest,
    *,
    tracking_uri: str | None = None,
    log: Log = print_flushed,
) -> dict[str, Any]:
    """Score, decide, record; returns the result document (see module doc). Raises
    ConfigError (request/config), TrainingError stage ``data`` (holdout unreadable or
    without the target column), EvaluationError (a holdout too big for
    ``evaluation.max_holdout_memory_mb``, refused from its manifest before it is read:
    core.compare.holdout_memory_mb), TrackingServerError, RegistryError (challenger
    unknown)."""
    from mlops_loop.core import registry
    from mlops_loop.core.compare import check_holdout_memory, decide, holdout_arrays
    from mlops_loop.core.decision_report import CurveData, write_decision_record
    from mlops_loop.core.snapshots import load_manifest, read_snapshot
    from mlops_loop.core.storage import open_storage

    config = request.dataset_config()
    settings = config.evaluation
    tracking_uri = trainer_tracking_uri(tracking_uri)
    credentials = s3_credentials_from_env()
    name, challenger = request.model_name, str(request.challenger_version)

    holdout_uri = request.holdout_snapshot_uri
    try:
        manifest = load_manifest(holdout_uri, credentials=credentials)
    except MlopsLoopError as exc:
        raise TrainingError(f"cannot read holdout {holdout_uri}: {exc}", stage="data") from exc
    estimate = check_holdout_memory(
        int(manifest.get("rows") or 0),
        len(manifest.get("columns") or ()),
        settings.max_holdout_memory_mb,
        where=f"holdout {holdout_uri}",
    )
    try:
        frame = read_snapshot(holdout_uri, credentials=credentials)
    except MlopsLoopError as exc:
        raise TrainingError(f"cannot read holdout {holdout_uri}: {exc}", stage="data") from exc
    try:
        y, slices = holdout_arrays(frame, config)
    except EvaluationError as exc:
        raise TrainingError(f"holdout {holdout_uri}: {exc}", stage="data") from exc
    missing = [c for c in config.feature_columns if c not in frame.columns]
    if missing:
        raise TrainingError(f"holdout {holdout_uri} lacks feature columns {missing}", stage="data")
    features = frame[list(config.feature_columns)]
    log(
        f"holdout {holdout_uri}: {len(frame)} rows, sha256 {str(manifest.get('sha256', ''))[:16]}, "
        f"estimated {estimate:,.0f} MB of evaluation.max_holdout_memory_mb "
        f"{settings.max_holdout_memory_mb:,.0f}"
    )

    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    client = _client(tracking_uri)
    notes: list[str] = []
    champion = _live_champion(client, name, request.expected_champion_version, notes)
    baseline_value = _training_target_mean(_require_challenger(client, name, challenger))
    if champion is None and baseline_value is not None:
        what = "positive rate" if config.task == "classification" else "mean"
        notes.append(f"baseline: predicts the training {what} {baseline_value:.4g} for every row")
    for note in notes:
        log(note)

    workdir = Path(tempfile.mkdtemp(prefix="mlops-loop-evaluate-"))
    try:
        chal_model, size_mb, run_id = load_version(client, name, challenger, workdir)
        chal_scores, latency = score(chal_model, features)
        log(f"challenger v{challenger}: {latency:.1f} ms per 1k rows, {size_mb:.2f} MB")
        champ_scores = None
        measurements: dict[str, Any] = {
            "challenger_latency_ms_per_1k_rows": latency,
            "challenger_model_size_mb": size_mb,
            "rows": len(frame),
        }
        if champion is not None:
            champ_model, champ_size, _ = load_version(client, name, champion, workdir)
            champ_scores, champ_latency = score(champ_model, features)
            measurements.update(
                champion_latency_ms_per_1k_rows=champ_latency, champion_model_size_mb=champ_size
            )
            log(f"champion v{champion}: {champ_latency:.1f} ms per 1k rows, {champ_size:.2f} MB")
    except MlopsLoopError:
        raise
    except Exception as exc:
        raise TrainingError(
            f"loading or scoring a model failed: {type(exc).__name__}: {exc}"[:800], stage="score"
        ) from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    decision = decide(
        y,
        chal_scores,
        champ_scores,
        settings,
        slices=slices or None,
        budget_observed={"latency_ms_per_1k_rows": latency, "model_size_mb": size_mb},
        challenger_version=challenger,
        champion_version=champion,
        holdout_sha256=str(manifest.get("sha256") or "") or None,
        baseline_value=baseline_value,
        notes=notes,
    )
    decision.reasons.extend(notes)
    log(decision.summary())

    root = config.root
    context = {
        "dataset": config.name,
        "model_name": name,
        "holdout_snapshot_uri": holdout_uri,
        "expected_champion_version": champion,
        "requested_champion_version": request.expected_champion_version,
        "measurements": measurements,
        **{f"tag.{k}": v for k, v in request.tags.items()},
    }
    reference = champ_scores
    if reference is None:
        from mlops_loop.core.compare import baseline_scores

        reference = baseline_scores(y, decision.task, baseline_value=baseline_value)
    curves = CurveData(
        task=decision.task,
        y=y,
        challenger=chal_scores,
        reference=reference,
        challenger_label=f"challenger v{challenger}",
        reference_label=f"champion v{champion}" if champion else "baseline",
    )
    record = write_decision_record(
        open_storage(root, credentials),
        root,
        decision,
        curves,
        context=context,
        mlflow_client=client,
        run_id=run_id,
    )
    registry.mark_validation(client, name, challenger, decision, decision_uri=record["json_uri"])
    log(f"decision record {record['json_uri']} ({record['html_uri']})")
    return {
        **decision.to_dict(),
        "status": "ok",
        "model_name": name,
        "challenger_version": challenger,
        "expected_champion_version": champion,
        "decision_uri": record["json_uri"],
        "html_uri": record["html_uri"],
        "artifact_path": record["artifact_path"],
        **record_artifact_location(client, run_id, record["artifact_path"]),
        "measurements": measurements,
        "device": "cpu",
    }
