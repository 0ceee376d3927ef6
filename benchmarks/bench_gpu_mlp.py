"""MLP training throughput: CUDA (mixed precision) against the CPU, side by side in one run.

    PYTHONPATH=plugins python benchmarks/bench_gpu_mlp.py                 # 1M rows x 20
    PYTHONPATH=plugins python benchmarks/bench_gpu_mlp.py --rows 200000   # quicker
    PYTHONPATH=plugins python benchmarks/bench_gpu_mlp.py --rows 200000 --stream-cap 50000

Fits ``training.models.fit_mlp`` (what the trainer runs) on the same preprocessed matrix on
each device: the CPU with one thread (the demo's ``cpu_threads: 1``), the CPU with every
core, and CUDA when torch sees one. ``--stream-cap N`` adds, per device, the streamed fit
(``fit_mlp_stream``, what a split above ``training.max_rows_in_memory=N`` uses) fed chunks of
N/4 rows through its N/2-row shuffle buffer (the training loop's cost only: no Parquet
reading or preprocessing). Reports training rows/s (``MlpFit.rows_per_second``:
rows seen over the epochs' wall time, validation excluded), the validation ROC AUC of the
best epoch and the ratio to the one-thread CPU run. Needs torch, numpy, pandas and
scikit-learn only. Prints a Markdown table.

For ``make bench`` (benchmarks/report.py): ``--quick`` runs 100,000 rows, 2 epochs, batch
256, streamed with a 20,000-row cap; ``--report PATH`` writes the table. Without a CUDA
device the script exits with SKIPPED (75) and writes no report, so the section keeps its
last GPU run; ``--cpu-only`` measures the CPU rows anyway.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from types import SimpleNamespace

import numpy as np
from report import run_line, write_report

SKIPPED = 75  # EX_TEMPFAIL: run_all.py keeps the section as it was


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-sizes", default="256,4096")
    parser.add_argument("--stream-cap", type=int, default=0, help="also fit streamed")
    parser.add_argument("--quick", action="store_true", help="CI-sized: 100k rows, 2 epochs")
    parser.add_argument("--report", default=None, help="write the Markdown table here")
    parser.add_argument("--cpu-only", action="store_true", help="run without a CUDA device")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.epochs, args.batch_sizes = 100_000, 2, "256"
        args.stream_cap = args.stream_cap or 20_000

    import torch

    if not torch.cuda.is_available() and not args.cpu_only:
        print("skipped: no CUDA device (the section keeps its last GPU run; --cpu-only runs the CPU rows)")
        sys.exit(SKIPPED)

    from mlops_loop.training import models

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows, args.features)).astype(np.float32)
    y = (x @ np.linspace(1, -1, args.features) + rng.normal(size=args.rows) > 0).astype(np.float32)
    split = int(args.rows * 0.9)
    devices = [("cpu", 1), ("cpu", os.cpu_count() or 1)]
    if torch.cuda.is_available():
        devices.append(("cuda", None))
    lines = [
        f"{args.rows:,} rows x {args.features} features, {args.epochs} epochs, hidden [64, 32]; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")
        + "\n",
        "| device | data | threads | batch | train rows/s | vs CPU 1 thread | best valid roc_auc "
        "| wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines))
    sources = ["memory", "streamed"] if args.stream_cap else ["memory"]
    chunk = max(1, args.stream_cap // 4)

    def chunks(epoch: int):  # row groups in a seeded order per epoch, as the trainer reads them
        starts = np.arange(0, split, chunk)
        for start in np.random.default_rng([0, epoch]).permutation(starts):
            yield x[start : min(start + chunk, split)], y[start : min(start + chunk, split)]

    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        anchor = None
        for (device, threads), source in [(d, src) for d in devices for src in sources]:
            if threads is not None:
                torch.set_num_threads(threads)
            hp = SimpleNamespace(
                hidden_sizes=[64, 32], dropout=0.1, lr=1e-3, weight_decay=1e-4,
                batch_size=batch, max_epochs=args.epochs, patience=args.epochs,
            )  # fmt: skip
            started = time.perf_counter()
            if source == "memory":
                fit = models.fit_mlp(
                    x[:split], y[:split], x[split:], y[split:],
                    hp=hp, task="classification", class_weight="none", seed=0, device=device,
                )  # fmt: skip
            else:
                fit = models.fit_mlp_stream(
                    chunks, x[split:], y[split:], n_inputs=args.features, rows=split,
                    positives=float(y[:split].sum()), buffer_rows=args.stream_cap // 2, hp=hp,
                    task="classification", class_weight="none", seed=0, device=device,
                )  # fmt: skip
            wall = time.perf_counter() - started
            rate = fit.rows_per_second
            anchor = anchor or rate
            auc = fit.history[fit.best_epoch - 1].metrics["valid_roc_auc"]
            shown_threads = threads if threads is not None else "-"
            lines.append(
                f"| {device} | {source} | {shown_threads} | {batch} | {rate:,.0f} "
                f"| {rate / anchor:.1f}x | {auc:.4f} | {wall:.1f} |"
            )
            print(lines[-1], flush=True)
    command = "python benchmarks/bench_gpu_mlp.py " + " ".join(sys.argv[1:])
    write_report(args.report, run_line(command.strip(), quick=args.quick) + "\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
