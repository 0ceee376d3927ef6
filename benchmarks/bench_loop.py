"""The whole loop on 10M rows x 20 columns: each stage's wall time and peak RSS.

    .local/venv/bin/python benchmarks/bench_loop.py                        # 10M rows, 10 days
    .local/venv/bin/python benchmarks/bench_loop.py --quick                # 200,000 rows, 3 days
    .local/venv/bin/python benchmarks/bench_loop.py --rows 1000000 --keep-data .local/bench/loop-1m

Data: ``bench_quality.batch`` (the credit-default sample's 16 columns plus 4 extra numeric
columns), ``--days`` daily batches of ``rows / days`` rows landed as Parquet, with
``bench_ingest.write_config``'s config (schema + profile suite from a 50,000-row
reference). ``--keep-data DIR`` keeps the landed files in DIR and reuses them when the
rows and days match; every run ingests into a fresh storage root (landed files hard-linked).

Stages, each in its own fresh Python process (this script with ``--stage``), so its peak
RSS (VmHWM, plus the largest of its own child processes) is its own:

- ingest: ``core.ingest.ingest_batch`` for every day;
- gate: ``core.quality.validate_snapshot`` for every day (which records each passed
  snapshot in the validated index, ``core.training_set.record_validated``), chunked: the
  stages use the package's default ``quality.chunk_rows``, below the batch size;
- assemble: ``core.training_set.assemble_training_set`` over all the days (window = the
  days, holdout = the last day);
- train_mlp, train_hgb: ``training.train.run_training`` in-process against a local MLflow
  server started here (not counted: it is the tracking server, not a loop stage); the MLP
  with 2 epochs of 2,048-row batches, HistGradientBoosting with ``max_iter`` 50 (on its
  ``training.max_rows_in_memory`` sample), so the loop fits its 15 minutes;
- evaluate: ``training.evaluate.run_evaluation``, the HGB version as challenger against
  the MLP version set as champion;
- drift: ``training.monitor.run_monitor`` of the champion on the validated snapshots of
  the drift window (``drift.window_days`` up to the last day), as dags/drift.py runs it.

Targets (issue 15): no stage above 4 GiB peak RSS; the whole loop (stages, not data
generation) within 15 minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from report import run_line, status_kib, table, write_report

RSS_TARGET_MIB = 4 * 1024
TOTAL_TARGET_S = 15 * 60
FIRST_DS = date(2026, 3, 1)
MODEL_NAME = "bench_loop_model"
MLP_EPOCHS = 2
MLP_BATCH_SIZE = 2048
HGB_MAX_ITER = 50
STAGES = ("ingest", "gate", "assemble", "train_mlp", "train_hgb", "evaluate", "drift")


def days_list(days: int) -> list[str]:
    return [(FIRST_DS + timedelta(days=i)).isoformat() for i in range(days)]


# --------------------------------------------------------------------------- child side


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def load_stage_config(state: dict[str, Any]) -> Any:
    """The benchmark config with the package's default memory settings (bench_config sets
    ``quality.chunk_rows`` to 1M, which would gate the 1M-row batches whole)."""
    from mlops_loop.core.config import QualitySettings, load_config

    days = len(state["days"])
    return load_config(
        state["config_path"],
        overrides={
            "storage": {"root": state["root"]},
            "source": {"uri": "{root}/raw/ds={ds}/", "format": "parquet"},
            "quality": {"chunk_rows": QualitySettings.model_fields["chunk_rows"].default},
            "training": {"window": {"window_days": days, "holdout_days": 1}},
        },
    )


def stage_generate(state: dict[str, Any]) -> dict[str, Any]:
    from bench_quality import batch

    from mlops_loop_devtools.sample_data import land_batch

    per_day = state["rows"] // len(state["days"])
    for ds in state["days"]:
        land_batch(batch(ds, per_day), state["raw_root"], ds, fmt="parquet")
    return {"rows": per_day * len(state["days"])}


def stage_ingest(state: dict[str, Any]) -> dict[str, Any]:
    from mlops_loop.core.ingest import ingest_batch

    config = load_stage_config(state)
    snapshots, rows = {}, 0
    for ds in state["days"]:
        snap = ingest_batch(config, ds)
        snapshots[ds] = snap.snapshot_uri
        rows += snap.rows
    return {"rows": rows, "snapshots": snapshots}


def stage_gate(state: dict[str, Any]) -> dict[str, Any]:
    from mlops_loop.core.quality import validate_snapshot

    config = load_stage_config(state)
    failed = []
    for ds, uri in state["snapshots"].items():
        result = validate_snapshot(config, uri, ds=ds, raise_on_failure=False)
        if not result.success:
            failed.append(ds)
    if failed:
        raise RuntimeError(f"the gate failed for {failed}")
    return {"rows": state["rows"]}


def stage_assemble(state: dict[str, Any]) -> dict[str, Any]:
    from mlops_loop.core.training_set import assemble_training_set

    config = load_stage_config(state)
    ts = assemble_training_set(config, until_ds=state["days"][-1])
    return {"rows": sum(ts.rows.values()), "training_set": ts.to_xcom()}


def _train(state: dict[str, Any], hyperparameters: dict[str, Any]) -> dict[str, Any]:
    from mlops_loop.core.trainer_protocol import TrainRequest, config_payload
    from mlops_loop.training.train import run_training

    config = load_stage_config(state)
    ts = state["training_set"]
    result = run_training(
        TrainRequest(
            config=config_payload(config),
            train_snapshot_uri=ts["train_uri"],
            valid_snapshot_uri=ts["valid_uri"],
            registered_model_name=MODEL_NAME,
            hyperparameters=hyperparameters,
            retrain=True,
        ),
        tracking_uri=state["tracking_uri"],
        log=lambda line: None,
    )
    metrics = {k: v for k, v in result["metrics"].items() if k.endswith("roc_auc")}
    return {
        "rows": ts["rows"]["train"] + ts["rows"]["valid"],
        "version": result["model_version"],
        "note": ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if v is not None),
    }


def stage_train_mlp(state: dict[str, Any]) -> dict[str, Any]:
    out = _train(
        state, {"model_type": "mlp", "max_epochs": MLP_EPOCHS, "batch_size": MLP_BATCH_SIZE}
    )
    return {**out, "mlp_version": out["version"]}


def stage_train_hgb(state: dict[str, Any]) -> dict[str, Any]:
    out = _train(state, {"model_type": "hist_gradient_boosting", "max_iter": HGB_MAX_ITER})
    return {**out, "hgb_version": out["version"]}


def stage_evaluate(state: dict[str, Any]) -> dict[str, Any]:
    from mlops_loop.core.trainer_protocol import EvaluateRequest, config_payload
    from mlops_loop.training.evaluate import run_evaluation

    config = load_stage_config(state)
    result = run_evaluation(
        EvaluateRequest(
            config=config_payload(config),
            holdout_snapshot_uri=state["training_set"]["holdout_uri"],
            model_name=MODEL_NAME,
            challenger_version=state["hgb_version"],
            expected_champion_version=state["mlp_version"],
        ),
        tracking_uri=state["tracking_uri"],
        log=lambda line: None,
    )
    return {"rows": state["training_set"]["rows"]["holdout"], "note": f"outcome {result['outcome']}"}


def stage_drift(state: dict[str, Any]) -> dict[str, Any]:
    from mlops_loop.core.retrain import drift_reports_root, drift_window
    from mlops_loop.core.trainer_protocol import MonitorRequest, config_payload
    from mlops_loop.core.training_set import validated_snapshots
    from mlops_loop.training.monitor import run_monitor

    config = load_stage_config(state)
    since, until = drift_window(state["days"][-1], config.drift.window_days)
    snapshots = validated_snapshots(config, since_ds=since, until_ds=until)
    result = run_monitor(
        MonitorRequest(
            config=config_payload(config),
            model_name=MODEL_NAME,
            champion_version=state["mlp_version"],
            snapshot_uris=[s.snapshot_uri for s in snapshots],
            ds=until,
            since_ds=since,
            until_ds=until,
            reports_root=drift_reports_root(config),
        ),
        tracking_uri=state["tracking_uri"],
        log=lambda line: None,
    )
    return {
        "rows": sum(s.rows for s in snapshots),
        "note": f"{len(snapshots)} days {since}..{until}, verdict {result['verdict']}",
    }


def child(stage: str, state_path: Path) -> int:
    logging.disable(logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    state = json.loads(state_path.read_text())
    started, cpu = time.perf_counter(), _cpu_seconds()
    out = globals()[f"stage_{stage}"](state)
    out["seconds"] = time.perf_counter() - started
    out["cpu_s"] = _cpu_seconds() - cpu
    out["peak_kib"] = status_kib("VmHWM")
    out["children_peak_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print("STAGE-RESULT " + json.dumps(out))
    return 0


# --------------------------------------------------------------------------- parent side


def run_stage(stage: str, state: dict[str, Any], work: Path) -> dict[str, Any]:
    state_path = work / "state.json"
    state_path.write_text(json.dumps(state))
    print(f"-- {stage} ...", flush=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--stage", stage, "--state", str(state_path)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("STAGE-RESULT ")][-1]
    out: dict[str, Any] = json.loads(line.removeprefix("STAGE-RESULT "))
    peak = max(out["peak_kib"], out["children_peak_kib"]) / 1024
    print(f"   {stage}: {out['seconds']:.1f} s, peak RSS {peak:,.0f} MiB", flush=True)
    return out


def prepare_raw(args: argparse.Namespace, work: Path, config_path: Path) -> tuple[Path, float | None]:
    """Landed files for (rows, days): reused from --keep-data when they match; returns the
    raw root and the generation time (None: reused)."""
    keep = Path(args.keep_data).resolve() if args.keep_data else None
    raw_root = (keep or work) / "landed"
    stamp = raw_root / "landed.json"
    wanted = {"rows": args.rows, "days": args.days}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return raw_root, None
    shutil.rmtree(raw_root, ignore_errors=True)
    raw_root.mkdir(parents=True)
    state = {"rows": args.rows, "days": days_list(args.days), "raw_root": str(raw_root)}
    out = run_stage("generate", state, work)
    stamp.write_text(json.dumps(wanted))
    return raw_root, float(out["seconds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, help="total rows (default 10,000,000; quick 200,000)")
    parser.add_argument("--days", type=int, help="daily batches (default 10; quick 3)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report", help="write the section's Markdown here")
    parser.add_argument("--keep-data", help="keep the landed batches here and reuse them")
    parser.add_argument("--stage", choices=("generate", *STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        return child(args.stage, Path(args.state))
    args.rows = args.rows or (200_000 if args.quick else 10_000_000)
    args.days = args.days or (3 if args.quick else 10)
    if args.days < 2:
        parser.error("--days must be at least 2 (the last day is the holdout)")

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_ingest import clone_raw, write_config

    from mlops_loop_devtools.devstack import start_mlflow_server

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        work = Path(tmp)
        config_path = write_config(work)
        raw_root, generate_s = prepare_raw(args, work, config_path)
        root = work / "root"
        clone_raw(raw_root, root)
        state: dict[str, Any] = {
            "rows": args.rows,
            "days": days_list(args.days),
            "root": str(root),
            "config_path": str(config_path),
        }
        results: list[tuple[str, dict[str, Any]]] = []
        with start_mlflow_server(work / "mlflow") as server:
            state["tracking_uri"] = server.url
            for stage in STAGES:
                if stage == "evaluate":
                    _set_champion(server.url, state["mlp_version"])
                out = run_stage(stage, state, work)
                results.append((stage, out))
                state.update({k: v for k, v in out.items() if k not in ("seconds", "rows", "note")})
                if stage == "ingest":
                    state["rows"] = out["rows"]

    rows = []
    total_s, total_cpu, worst = 0.0, 0.0, 0.0
    for stage, out in results:
        peak = max(out["peak_kib"], out["children_peak_kib"]) / 1024
        total_s += out["seconds"]
        total_cpu += out["cpu_s"]
        worst = max(worst, peak)
        verdict = "met" if peak <= RSS_TARGET_MIB else "MISSED"
        rows.append([
            stage, int(out["rows"]), f"{out['seconds']:.1f}", f"{out['cpu_s']:.1f}", round(peak),
            f"{peak / RSS_TARGET_MIB:.2f}x of 4 GiB: {verdict}", out.get("note", ""),
        ])
    total_verdict = "met" if total_s <= TOTAL_TARGET_S else "MISSED"
    rows.append([
        "**whole loop**", int(state["rows"]), f"{total_s:.1f}", f"{total_cpu:.1f}", round(worst),
        f"{total_s / TOTAL_TARGET_S:.2f}x of 15 min: {total_verdict}", "",
    ])
    command = "benchmarks/bench_loop.py" + (" --quick" if args.quick else f" --rows {args.rows} --days {args.days}")
    generated = (
        f"generated and landed in {generate_s:.0f} s (not counted)" if generate_s is not None
        else "reused from --keep-data"
    )
    markdown = "\n".join([
        run_line(command, quick=args.quick),
        "",
        f"{args.rows:,} rows x 20 columns as {args.days} daily Parquet batches of "
        f"{args.rows // args.days:,} rows ({generated}); each stage in a fresh process, peak "
        f"RSS = its VmHWM (or its largest child's); MLP {MLP_EPOCHS} epochs, HGB max_iter "
        f"{HGB_MAX_ITER}; the MLflow server is not counted. CPU s (user + system, all threads) "
        "moves less with the machine's load than wall time; the targets are on wall time.",
        "",
        right_aligned(
            table(["stage", "rows", "wall s", "CPU s", "peak RSS MiB", "ratio to target", "note"], rows), 4
        ),
    ])
    write_report(args.report, markdown)
    return 0


def right_aligned(markdown: str, columns: int) -> str:
    """The table with its first ``columns`` after the first right-aligned (numbers
    formatted as text are left-aligned by report.table)."""
    lines = markdown.splitlines()
    cells = lines[1].strip("|").split("|")
    lines[1] = "|" + "|".join(["---", *["---:"] * columns, *cells[columns + 1:]]) + "|"
    return "\n".join(lines)


def _set_champion(tracking_uri: str, version: str) -> None:
    """The MLP version becomes the champion the HGB challenger is evaluated against."""
    from mlflow.tracking import MlflowClient

    from mlops_loop.core.registry import CHAMPION_ALIAS

    MlflowClient(tracking_uri).set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, version)


if __name__ == "__main__":
    sys.exit(main())
