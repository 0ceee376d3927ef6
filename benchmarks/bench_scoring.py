"""Scoring both model kinds (MLP and HistGradientBoosting, as logged pyfunc models) on a
large holdout: what the ``evaluate`` command spends per model.

    .local/venv/bin/python benchmarks/bench_scoring.py                  # 1M rows
    .local/venv/bin/python benchmarks/bench_scoring.py --rows 100000    # quicker

Trains one small model of each kind in this process against a throw-away local MLflow
server (``mlops_loop_devtools.devstack``), registers them, then loads each with
``mlflow.pyfunc.load_model`` and times ``predict`` on the whole holdout (one warm-up call on
100 rows first, as ``training/evaluate.py`` does), plus the paired decision
(``core.compare.decide``, 1,000 bootstrap resamples) on the two score vectors.
Prints a Markdown table (``--report PATH`` writes it; ``--quick``: 100,000 rows, 5,000
training rows). Times are wall-clock on this machine (see the load average).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from report import run_line, table, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, help="holdout rows (default 1,000,000; quick 100,000)")
    parser.add_argument("--train-rows", type=int, help="default 20,000 (quick 5,000)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report", help="write the section's Markdown here")
    args = parser.parse_args()
    args.rows = args.rows or (100_000 if args.quick else 1_000_000)
    args.train_rows = args.train_rows or (5_000 if args.quick else 20_000)

    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        os.environ["MLOPS_LOOP_STORAGE_ROOT"] = str(Path(tmp) / "data")
        import mlflow
        import numpy as np

        from mlops_loop.core.compare import decide
        from mlops_loop.core.config import load_config
        from mlops_loop.core.ingest import ingest_batch
        from mlops_loop.core.trainer_protocol import TrainRequest, config_payload
        from mlops_loop.training.evaluate import score
        from mlops_loop.training.train import run_training
        from mlops_loop_devtools.devstack import start_mlflow_server
        from mlops_loop_devtools.sample_data import generate_batch, land_batch

        config = load_config(
            Path(__file__).resolve().parents[1] / "include/config/credit_default.yaml"
        )
        snaps = []
        for ds, rows in (("2026-01-01", args.train_rows), ("2026-01-02", args.train_rows // 4)):
            land_batch(generate_batch(ds, rows=rows), config.root, ds)
            snaps.append(ingest_batch(config, ds).snapshot_uri)
        started = time.perf_counter()
        holdout = generate_batch("2026-01-03", rows=args.rows)
        gen_seconds = time.perf_counter() - started
        features = holdout[list(config.feature_columns)]
        y = holdout[config.target].to_numpy(dtype="float64")

        rows_out = []
        scores = {}
        with start_mlflow_server(Path(tmp) / "mlflow") as server:
            mlflow.set_tracking_uri(server.url)
            for kind, hp in (
                ("mlp", {"model_type": "mlp", "max_epochs": 3}),
                (
                    "hist_gradient_boosting",
                    {"model_type": "hist_gradient_boosting", "max_iter": 100},
                ),
            ):
                result = run_training(
                    TrainRequest(
                        config=config_payload(config),
                        train_snapshot_uri=snaps[0],
                        valid_snapshot_uri=snaps[1],
                        registered_model_name=f"bench_{kind}",
                        hyperparameters=hp,
                    ),
                    tracking_uri=server.url,
                    log=lambda line: None,
                )
                t0 = time.perf_counter()
                model = mlflow.pyfunc.load_model(result["model_uri"])
                load_seconds = time.perf_counter() - t0
                values, ms_per_1k = score(model, features)
                seconds = ms_per_1k * args.rows / 1e6
                scores[kind] = values
                rows_out.append((kind, load_seconds, seconds, args.rows / seconds, ms_per_1k))

        started = time.perf_counter()
        decision = decide(y, scores["hist_gradient_boosting"], scores["mlp"], config.evaluation)
        decide_seconds = time.perf_counter() - started

    anchor = rows_out[0][2]  # the MLP's predict time
    total = sum(r[2] for r in rows_out)
    body = [
        [kind, round(load_s, 2), round(secs, 2), int(rate), round(ms, 2), f"{secs / anchor:.2f}x"]
        for kind, load_s, secs, rate, ms in rows_out
    ]
    body.append(["both models", "", round(total, 2), int(2 * args.rows / total), "", f"{total / anchor:.2f}x"])
    command = "benchmarks/bench_scoring.py" + (" --quick" if args.quick else f" --rows {args.rows}")
    markdown = "\n".join([
        run_line(command, quick=args.quick),
        "",
        f"{args.rows:,} holdout rows x {len(config.feature_columns)} features (generated in "
        f"{gen_seconds:.1f} s), models trained on {args.train_rows:,} rows; predict time "
        "ratio to the MLP's.",
        "",
        table(["model (pyfunc)", "load s", "predict s", "rows/s", "ms per 1k rows", "ratio to mlp"], body),
        "",
        f"decide() (HGB vs MLP, {config.evaluation.n_bootstrap} paired bootstrap resamples of "
        f"{config.evaluation.primary_metric}): {decide_seconds:.2f} s -> {decision.outcome} "
        f"(improvement {np.round(decision.improvement or 0, 4)})",
    ])
    write_report(args.report, markdown)


if __name__ == "__main__":
    main()
