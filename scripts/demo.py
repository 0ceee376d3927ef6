"""The demo loop (README: `make demo`), run by scripts/demo.sh inside the project venv.

The whole loop on seeded sample data, each stage a real Airflow DAG run (``dag.test()``
on the project-local Airflow home):

1. land daily batches (one corrupted) and run the ingest DAG for each date: snapshots,
   Great Expectations gate, quarantine;
2. start a local MLflow server and run the training DAG: train in the trainer container
   (or, with no Docker engine, the same entrypoint as a local process), evaluate against
   the baseline, promote the first champion;
3. land drifted batches, run the nightly drift DAG: drift report, retraining requested;
4. run the training DAG again, as the retrain Asset would: challenger vs champion,
   promoted or rejected with a decision record.

Airflow's own task logs go to .local/demo/logs/ so the terminal shows only the story.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / ".local"
DEMO = LOCAL / "demo"
DATASET = "credit_default"


def say(msg: str = "") -> None:
    print(msg, flush=True)


@contextlib.contextmanager
def quiet(log_path: Path):
    """Send everything Airflow prints during a DAG run to a log file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as fh:
        saved_out, saved_err = os.dup(1), os.dup(2)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)


def migrate_airflow_db() -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"airflow db migrate failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def load_dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    return bag.get_dag(dag_id)


def run_dag(dag, logical_day: date, log_path: Path) -> dict[str, str]:
    """dag.test() for one logical date; returns {task_id: state}."""
    from datetime import datetime, timezone

    when = datetime(logical_day.year, logical_day.month, logical_day.day, tzinfo=timezone.utc)
    with quiet(log_path):
        dag_run = dag.test(logical_date=when)
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def land_batches(root: Path, days: list[date], rows: int, corrupt_day: date | None = None, drift: float = 0.0) -> None:
    from mlops_loop_devtools.sample_data import generate_batch, land_batch

    for day in days:
        ds = day.isoformat()
        kind = "unknown_category" if day == corrupt_day else "none"
        land_batch(generate_batch(ds, rows=rows, corrupt=kind, drift=drift), root, ds)


# Gate states of a date whose batch is validated: passed now, or already before.
PASSED = ("success", "skipped")


def ingest_days(dag, days: list[date], logs: Path) -> dict[date, str]:
    outcomes = {}
    for day in days:
        states = run_dag(dag, day, logs / f"ingest-{day}.log")
        gate = states.get("quality_gate", "?")
        outcomes[day] = gate
        # skipped: this snapshot already is the date's validated one (a --keep re-run), so
        # the gate emits no second `validated` event.
        marks = {"success": "passed", "failed": "QUARANTINED", "skipped": "already validated, no new event"}
        mark = marks.get(gate, gate)
        say(f"   {day}  ingest={states.get('ingest_snapshot')}  quality_gate={gate}  -> {mark}")
    return outcomes


def xcom(dag_run, task_id: str):
    ti = next((t for t in dag_run.get_task_instances() if t.task_id == task_id), None)
    return ti.xcom_pull(task_ids=task_id) if ti is not None and str(ti.state) == "success" else None


def run_training(dag, day: date, log_path: Path, conf: dict) -> tuple[dict[str, str], object]:
    from datetime import datetime, timezone

    when = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    with quiet(log_path):
        dag_run = dag.test(logical_date=when, run_conf=conf)
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    return states, dag_run


def choose_trainer_runner() -> str:
    """``docker`` when a Docker engine answers and the trainer image builds (building it if
    needed); otherwise ``local``, said plainly: the trainer entrypoint then runs as a local
    process of this venv, with the same request/result files and MLflow logging."""
    fallback = ("   Training, evaluation and drift run the trainer entrypoint as a LOCAL PROCESS instead\n"
                "   (MLOPS_LOOP_TRAINER_RUNNER=local: same request/result contract, no container isolation).")
    if not (shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0):
        say("   NO Docker engine reachable (`docker info` fails).")
        say(fallback)
        say("   For container training start an engine (`sudo ./scripts/install_docker.sh`) and run make demo again.")
        return "local"
    build = REPO / "include" / "docker" / "build_trainer_image.sh"
    say("   Docker engine found: building the trainer image if needed (first time: a few minutes)")
    log = DEMO / "logs" / "trainer-image.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        proc = subprocess.run([str(build)], stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        say(f"   The trainer image did not build; see {log}.")
        say(fallback)
        return "local"
    return "docker"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=5, help="number of daily batches before the first model")
    parser.add_argument("--rows", type=int, default=5_000, help="rows per batch")
    parser.add_argument("--start", default="2026-03-01", help="first logical date")
    parser.add_argument("--keep", action="store_true", help="keep data from earlier demo runs")
    parser.add_argument("--drift-days", type=int, default=3, help="drifted days after the first model")
    parser.add_argument("--model-type", default="hist_gradient_boosting", choices=["mlp", "hist_gradient_boosting"])
    parser.add_argument("--ingest-only", action="store_true", help="stop after ingestion")
    args = parser.parse_args()

    if not args.keep and DEMO.exists():
        shutil.rmtree(DEMO)
    data_root = DEMO / "data"
    logs = DEMO / "logs"
    os.environ["MLOPS_LOOP_STORAGE_ROOT"] = str(data_root)
    dataset_root = data_root / DATASET

    say("mlops_loop demo")
    say(f"  storage root : {dataset_root}")
    say(f"  airflow home : {os.environ['AIRFLOW_HOME']}")
    say(f"  task logs    : {logs}")
    say()
    migrate_airflow_db()
    logging.getLogger().setLevel(logging.WARNING)

    first = date.fromisoformat(args.start)
    days = [first + timedelta(days=i) for i in range(args.days)]
    corrupt_day = days[min(2, len(days) - 1)]
    land_batches(dataset_root, days, args.rows, corrupt_day)
    say(f"1. Landed {len(days)} daily batches of {args.rows} loan applications under raw/ "
        f"({corrupt_day} carries an unknown home_ownership category)")

    say("2. Ingest + Great Expectations quality gate, one DAG run per logical date:")
    with quiet(logs / "dagbag.log"):
        ingest = load_dag(f"mlops_ingest__{DATASET}")
        train = load_dag(f"mlops_train__{DATASET}")
        drift = load_dag(f"mlops_drift__{DATASET}")
    outcomes = ingest_days(ingest, days, logs)
    expected_failures = {corrupt_day}
    ok = all((g in PASSED) != (d in expected_failures) for d, g in outcomes.items())
    print_ingest_summary(dataset_root, outcomes)
    if args.ingest_only:
        return 0 if ok else 1

    from mlops_loop_devtools.devstack import start_mlflow_server

    say()
    say("3. Train the first model (training DAG: assemble -> train -> evaluate -> approve (not required here) -> promote)")
    say("   starting a local MLflow server (SQLite + local artifacts) ...")
    with start_mlflow_server(DEMO / "mlflow") as mlflow_server:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_server.url
        runner = choose_trainer_runner()
        os.environ["MLOPS_LOOP_TRAINER_RUNNER"] = runner
        # The demo's MLflow server listens on this host's 127.0.0.1 only: trainer containers
        # need the host's network here (their default is bridge; docs/security.md).
        os.environ.setdefault("MLOPS_LOOP_TRAINER_NETWORK", "host")
        say(f"   MLflow: {mlflow_server.url}; trainer runs in: "
            + ("the trainer image (Docker)" if runner == "docker" else "a local process"))
        conf = {"model_type": args.model_type, "hyperparameters": {}, "reason": "demo: first model"}
        states, run = run_training(train, days[-1], logs / "train-1.log", conf)
        say(f"   tasks: {states}")
        say(f"   {xcom(run, 'summary') or 'no summary: see ' + str(logs / 'train-1.log')}")
        ok = ok and states.get("promote_or_reject") == "success"

        say()
        say(f"4. {args.drift_days} more days land, drifted (younger applicants, lower scores, more small-business loans)")
        drift_days = [days[-1] + timedelta(days=i + 1) for i in range(args.drift_days)]
        land_batches(dataset_root, drift_days, args.rows, drift=1.0)
        outcomes.update(ingest_days(ingest, drift_days, logs))
        say("   nightly drift DAG on the last day:")
        drift_states = run_dag(drift, drift_days[-1], logs / "drift.log")
        say(f"   tasks: {drift_states}")
        report = next(iter(sorted((dataset_root / "reports" / "drift").glob("ds=*/report.html"))), None)
        report_json = report.with_name("report.json") if report else None
        if report_json and report_json.exists():
            payload = json.loads(report_json.read_text())
            verdict = payload.get("verdict") or payload.get("drift", {}).get("verdict")
            say(f"   drift verdict: {verdict}; report: file://{report}")
        retrain = drift_states.get("request_retraining") == "success"
        say("   retraining requested (Asset mlops_loop.credit_default.retrain_requested)" if retrain
            else "   no retraining requested")

        if retrain:
            say()
            say("5. The retrain Asset starts the training DAG (run here directly): challenger vs champion")
            conf = {"model_type": args.model_type, "hyperparameters": {}, "reason": "demo: drift-triggered retraining"}
            states, run = run_training(train, drift_days[-1], logs / "train-2.log", conf)
            say(f"   tasks: {states}")
            say(f"   {xcom(run, 'summary') or 'no summary: see ' + str(logs / 'train-2.log')}")
        decisions = sorted((dataset_root / "reports" / "decisions").rglob("report.html"))
        say()
        say("Where to look")
        for path in decisions:
            say(f"  decision record : file://{path}")
        say(f"  drift reports   : {dataset_root / 'reports' / 'drift'}")
        say(f"  MLflow UI       : .local/venv/bin/mlflow ui --backend-store-uri sqlite:///{DEMO / 'mlflow' / 'mlflow.db'}")
    say("  Airflow UI      : MLOPS_LOOP_STORAGE_ROOT=" + str(data_root) + " ./scripts/airflow.sh standalone")
    say("                    then http://127.0.0.1:8080 -> Dags (user/password printed by standalone)")
    if not ok:
        say("\nUNEXPECTED: a stage did not end as it should; see the task logs in " + str(logs))
    return 0 if ok else 1


def print_ingest_summary(dataset_root: Path, outcomes: dict[date, str]) -> None:
    snapshots = sorted((dataset_root / "snapshots").glob("*/manifest.json"))
    quarantined = sorted((dataset_root / "quarantine").glob("ds=*"))
    say(f"   snapshots written: {len(snapshots)}; passed: {sum(g in PASSED for g in outcomes.values())}; "
        f"quarantined: {len(quarantined)} ({dataset_root / 'quarantine'})")
    for folder in quarantined:
        summary = next(folder.rglob("summary.txt"), None)
        if summary:
            lines = summary.read_text().strip().splitlines()
            say(f"     {folder.name}: {lines[0]}")
            for line in lines[1:4]:
                say(f"       {line}")
    docs = sorted((dataset_root / "reports" / "quality").rglob("index.html"))
    if docs:
        say(f"   Great Expectations Data Docs, e.g. file://{docs[0]}")


if __name__ == "__main__":
    sys.exit(main())
