"""Paired bootstrap on a large holdout: the vectorised implementation in
mlops_loop.core.compare against a straightforward per-resample loop.

    .local/venv/bin/python benchmarks/bench_compare.py                 # 1M rows x 1,000 resamples
    .local/venv/bin/python benchmarks/bench_compare.py --rows 100000   # quicker
    .local/venv/bin/python benchmarks/bench_compare.py --quick --report PATH   # make bench

The loop draws row indices, takes the resampled rows and calls scikit-learn's metric for
each model, once per resample. It is timed on ``--loop-resamples`` resamples and
extrapolated linearly to ``--resamples`` (each resample costs the same); the table says so.
Prints a Markdown table; ``--quick``: 100,000 rows x 200 resamples, loop timed on 5.
"""

from __future__ import annotations

import argparse
import platform
import time
import tracemalloc

import numpy as np
from report import run_line, write_report
from sklearn import metrics as skm

from mlops_loop.core.compare import DEFAULT_BLOCK_BYTES, block_resamples, paired_bootstrap

SKLEARN = {
    "roc_auc": skm.roc_auc_score,
    "pr_auc": skm.average_precision_score,
    "log_loss": skm.log_loss,
}


def make_holdout(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.2).astype(np.int8)
    shared = rng.normal(size=rows)

    def model(signal: float) -> np.ndarray:
        z = signal * (2 * y - 1) + shared + 0.5 * rng.normal(size=rows)
        return 1 / (1 + np.exp(-z))

    return y, model(1.0), model(0.9)


def loop_bootstrap(y, a, b, metric: str, resamples: int, seed: int = 0) -> np.ndarray:
    fn = SKLEARN[metric]
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for i in range(resamples):
        idx = rng.integers(0, y.size, y.size)
        yy = y[idx]
        out[i] = fn(yy, a[idx]) - fn(yy, b[idx])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, help="default 1,000,000 (quick 100,000)")
    parser.add_argument("--resamples", type=int, help="default 1,000 (quick 200)")
    parser.add_argument("--loop-resamples", type=int, help="default 20 (quick 5)")
    parser.add_argument("--metrics", default="roc_auc,log_loss")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report", help="write the section's Markdown here")
    args = parser.parse_args()
    args.rows = args.rows or (100_000 if args.quick else 1_000_000)
    args.resamples = args.resamples or (200 if args.quick else 1000)
    args.loop_resamples = args.loop_resamples or (5 if args.quick else 20)

    y, a, b = make_holdout(args.rows)
    command = "benchmarks/bench_compare.py" + (
        " --quick" if args.quick else f" --rows {args.rows} --resamples {args.resamples}"
    )
    lines = [
        f"Paired bootstrap, {args.rows:,} rows x {args.resamples:,} resamples "
        f"(block of {block_resamples(args.rows)} resamples, {DEFAULT_BLOCK_BYTES // 2**20} MiB per block array); "
        f"{platform.processor() or platform.machine()}, NumPy {np.__version__}",
        "",
        "| metric | vectorised (s) | peak memory (MiB) | loop, measured | loop, est. for all resamples (s) | ratio to the loop (speed-up) | CI (vectorised) |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for metric in args.metrics.split(","):
        tracemalloc.start()
        t0 = time.perf_counter()
        res = paired_bootstrap(y, a, b, metric, n=args.resamples, seed=0)
        vec = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()

        k = min(args.loop_resamples, args.resamples)
        t0 = time.perf_counter()
        loop_diffs = loop_bootstrap(y, a, b, metric, k)
        loop = time.perf_counter() - t0
        loop_all = loop / k * args.resamples
        extrapolated = "" if k == args.resamples else " (extrapolated)"
        # Sanity: both bootstraps estimate the same sampling distribution.
        assert abs(np.mean(loop_diffs) - res.diff) < 5 * max(np.std(loop_diffs), 1e-6) + 1e-9
        lines.append(
            f"| {metric} | {vec:.1f} | {peak:.0f} | {k} resamples in {loop:.1f} s | "
            f"{loop_all:.0f}{extrapolated} | {loop_all / vec:.0f}x | "
            f"diff {res.diff:+.4f} [{res.ci_low:+.4f}, {res.ci_high:+.4f}] |"
        )
    write_report(args.report, "\n".join([run_line(command, quick=args.quick), "", *lines]))


if __name__ == "__main__":
    main()
