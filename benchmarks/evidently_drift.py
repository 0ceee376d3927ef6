"""Evidently's DataDriftPreset (default tests) on the benchmark's Parquet files.

Runs in its own virtual environment (Evidently 0.7.23 does not import next to pandas 3):
benchmarks/bench_drift.py creates ``.local/bench-evidently-venv`` and calls this script
there. Prints one JSON line: seconds, peak RSS, drifted columns as Evidently sees them.

    .local/bench-evidently-venv/bin/python benchmarks/evidently_drift.py \
        --reference ref.parquet --current cur.parquet --numeric a,b --categorical c,d
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def peak_rss_mb() -> float:
    """Resident-memory high-water mark of this process (VmHWM)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", required=True)
    parser.add_argument("--current", required=True)
    parser.add_argument("--numeric", required=True, help="comma-separated numeric columns")
    parser.add_argument("--categorical", required=True, help="comma-separated categorical columns")
    args = parser.parse_args()

    import evidently
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    numeric = args.numeric.split(",")
    categorical = args.categorical.split(",")
    columns = numeric + categorical
    reference = pd.read_parquet(args.reference, columns=columns)
    current = pd.read_parquet(args.current, columns=columns)
    for frame in (reference, current):  # booleans as categories, as our side treats them
        for name in categorical:
            frame[name] = frame[name].astype(str).where(frame[name].notna())
    baseline = peak_rss_mb()

    start = time.perf_counter()
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
    )
    result = snapshot.dict()
    seconds = time.perf_counter() - start

    # Each per-column ValueDrift metric holds its method (Evidently's default choice per
    # column type and size) and threshold; the distances it picks by default drift at or
    # above the threshold, p-value tests below it.
    drifted, methods = [], set()
    for metric in result.get("metrics", []):
        config = metric.get("config", {})
        value, column, threshold = (
            metric.get("value"),
            config.get("column"),
            config.get("threshold"),
        )
        if not column or not isinstance(value, (int, float)) or threshold is None:
            continue
        method = str(config.get("method", ""))
        methods.add(method)
        is_p_value = "p_value" in method.lower() or "test" in method.lower()
        if (value < threshold) if is_p_value else (value >= threshold):
            drifted.append(column)
    print(
        json.dumps(
            {
                "tool": f"evidently {evidently.__version__} DataDriftPreset (default tests)",
                "seconds": seconds,
                "peak_rss_mb": peak_rss_mb(),
                "rss_before_mb": baseline,
                "rows": [len(reference), len(current)],
                "drifted": sorted(set(drifted)),
                "methods": sorted(methods),
            }
        )
    )


if __name__ == "__main__":
    main()
