"""Scoring both model kinds (MLP and HistGradientBoosting, as logged pyfunc models) on a
large holdout: what the ``evaluate`` command spends per model.

    .local/venv/bin/python benchmarks/bench_scoring.py                  # 1M rows
    .local/venv/bin/python benchmarks/bench_scoring.py --rows 100000    # quicker

Trains one small model of each kind in this process against a throw-away local MLflow
server (``mlops_loop_devtools.devstack``), registers them, then loads each with
``mlflow.pyfunc.load_model`` and times ``predict`` on the whole holdout (one warm-up call on
100 rows first, as ``training/evaluate.py`` does), plus the paired decision
(``core.compare.decide``, 1,000 bootstrap resamples) on the two score vectors.
Prints a Markdown table. Times are wall-clock on this machine (see the load average).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--train-rows", type=int, default=20_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        os.environ["MLOPS_LOOP_STORAGE_ROOT"] = str(Path(tmp) / "data")
        import mlflow
        import numpy as np

        from mlops_loop.core.compare import decide
        from mlops_loop.core.config import load_config
        from mlops_loop.core.ingest import ingest_batch
        from mlops_loop.core.trainer_protocol import config_payload
        from mlops_loop.training.evaluate import score
        from mlops_loop.training.train import TrainingRequest, run_training
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
                    TrainingRequest(
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

    print(
        f"Scoring on {args.rows:,} holdout rows x {len(config.feature_columns)} features "
        f"({platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}); "
        f"holdout generated in {gen_seconds:.1f} s\n"
    )
    print("| model (pyfunc) | load s | predict s | rows/s | ms per 1k rows |")
    print("|---|---:|---:|---:|---:|")
    for kind, load_s, secs, rate, ms in rows_out:
        print(f"| {kind} | {load_s:.2f} | {secs:.2f} | {rate:,.0f} | {ms:.2f} |")
    total = sum(r[2] for r in rows_out)
    print(f"| both models | | {total:.2f} | {2 * args.rows / total:,.0f} | |")
    print(
        f"\ndecide() (HGB vs MLP, {config.evaluation.n_bootstrap} paired bootstrap resamples of "
        f"{config.evaluation.primary_metric}): {decide_seconds:.2f} s -> {decision.outcome} "
        f"(improvement {np.round(decision.improvement or 0, 4)})"
    )


if __name__ == "__main__":
    main()
