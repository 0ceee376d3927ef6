"""The demo loop (README: `make demo`), run by scripts/demo.sh inside the project venv.

Lands seeded sample batches for several days (one of them corrupted), runs the real
ingest DAG for each logical date with ``dag.test()`` on the project-local Airflow home,
and prints what happened: snapshots written, batches passed and quarantined, where the
reports are, and how to open the Airflow UI on the same data. Airflow's own task logs go
to .local/demo/logs/ so the terminal shows only the story.
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


def land_batches(root: Path, days: list[date], rows: int, corrupt_day: date) -> None:
    from mlops_loop.sample_data import generate_batch, land_batch

    for day in days:
        ds = day.isoformat()
        kind = "unknown_category" if day == corrupt_day else "none"
        land_batch(generate_batch(ds, rows=rows, corrupt=kind), root, ds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=5, help="number of daily batches")
    parser.add_argument("--rows", type=int, default=5_000, help="rows per batch")
    parser.add_argument("--start", default="2026-03-01", help="first logical date")
    parser.add_argument("--keep", action="store_true", help="keep data from earlier demo runs")
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
    outcomes = {}
    for day in days:
        states = run_dag(ingest, day, logs / f"ingest-{day}.log")
        gate = states.get("quality_gate", "?")
        outcomes[day] = gate
        mark = "passed" if gate == "success" else ("QUARANTINED" if gate == "failed" else gate)
        say(f"   {day}  ingest={states.get('ingest_snapshot')}  quality_gate={gate}  -> {mark}")

    snapshots = sorted((dataset_root / "snapshots").glob("*/manifest.json"))
    quarantined = sorted((dataset_root / "quarantine").glob("ds=*"))
    passed = [d for d, g in outcomes.items() if g == "success"]
    say()
    say("Summary")
    say(f"  snapshots written   : {len(snapshots)}  ({dataset_root / 'snapshots'})")
    say(f"  batches passed      : {len(passed)}")
    say(f"  batches quarantined : {len(quarantined)}  ({dataset_root / 'quarantine'})")
    for folder in quarantined:
        summary = next(folder.rglob("summary.txt"), None)
        if summary:
            say(f"    {folder.name}: " + summary.read_text().strip().splitlines()[0])
            for line in summary.read_text().strip().splitlines()[1:6]:
                say(f"      {line}")
    docs = sorted((dataset_root / "reports" / "quality").rglob("index.html"))
    if docs:
        say(f"  quality reports     : {dataset_root / 'reports' / 'quality'}")
        say(f"    Data Docs, e.g.   : file://{docs[0]}")
    if snapshots:
        manifest = json.loads(snapshots[0].read_text())
        say(f"  a snapshot manifest : {snapshots[0]} ({manifest.get('rows')} rows)")
    say()
    say("Open the Airflow UI on this data (user/password are printed by standalone):")
    say(f"  MLOPS_LOOP_STORAGE_ROOT={data_root} ./scripts/airflow.sh standalone")
    say("  then browse http://127.0.0.1:8080 -> Dags -> mlops_ingest__credit_default")
    expected_failures = {corrupt_day}
    ok = all((g == "success") != (d in expected_failures) for d, g in outcomes.items())
    if not ok:
        say("\nUNEXPECTED: a good batch failed or the corrupted one passed; see the task logs above.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
