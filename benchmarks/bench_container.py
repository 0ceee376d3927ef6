"""Container overhead: the same training run in the trainer image vs directly on the host.

Both sides train the same model on the same snapshots, log to the same local MLflow server
and register a version, in one run, alternating (host, container, host, container...):
- host: ``python -m mlops_loop.training train`` as a subprocess of the host venv;
- container: DockerTrainOperator.execute (image check, container create/start, streamed
  log, result.json, container removal): what a task pays.
The table reports median wall-clock seconds and the ratio (target <= 1.15x), plus the
trainer's own fit time from result.json when it reports one.

Optionally the image build: ``--build warm`` (re-run with an existing tag: the skip path,
then ``--force``: dependency layer from cache, package layer rebuilt, as after a code
change) and ``--build cold`` (base image, wheelhouse and image from scratch under separate
bench tags, removed afterwards: minutes).

Run: .local/venv/bin/python benchmarks/bench_container.py [--rows 40000] [--repeat 2]
     [--build none|warm|cold]
Needs a Docker engine (scripts/install_docker.sh) and a trainer image; without either the
section says why it was skipped (exit 0). ``--quick``: 10,000 rows, 2 epochs, 1 run per
side; ``--report PATH`` writes the section (benchmarks/report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from report import run_line, write_report

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "include" / "config" / "credit_default.yaml")
BUILD = ["bash", str(REPO / "include" / "docker" / "build_trainer_image.sh")]


def _build(*extra: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(
        [*BUILD, *extra], capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )
    if proc.returncode != 0:
        sys.exit(f"image build failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started, proc.stdout.strip().splitlines()[-1]


def bench_build(mode: str) -> list[tuple[str, float]]:
    """Build times. "cold" builds under separate bench tags (base image debootstrapped
    again, wheelhouse downloaded again, no layer cache) and removes them afterwards, so
    the images other work uses are left alone."""
    rows: list[tuple[str, float]] = []
    if mode == "cold":
        bench_env = {"BASE_IMAGE": "mlops-loop/base:bench-cold", "TRAINER_IMAGE": "mlops-loop/trainer-bench"}
        started = time.perf_counter()
        subprocess.run(
            ["bash", str(REPO / "include" / "docker" / "build_base_image.sh"), "--force"],
            env={**os.environ, **bench_env}, capture_output=True, check=True,
        )
        rows.append(("cold: base image (debootstrap + docker import)", time.perf_counter() - started))
        print(f"{rows[-1][0]}: {rows[-1][1]:.1f}s", file=sys.stderr)
        shutil.rmtree(REPO / ".local" / "wheelhouse", ignore_errors=True)
        secs, tag = _build("--no-cache", env=bench_env)
        rows.append(("cold: wheelhouse download + image build without layer cache", secs))
        print(f"{rows[-1][0]}: {rows[-1][1]:.1f}s", file=sys.stderr)
        subprocess.run(["docker", "rmi", "-f", tag, "mlops-loop/trainer-bench:latest", bench_env["BASE_IMAGE"]],
                       capture_output=True, check=False)
    _build()  # the current sources' image exists from here on
    secs, _ = _build()
    rows.append(("warm, unchanged sources (tag exists: skipped)", secs))
    secs, _ = _build("--force")
    rows.append(("warm, package layer rebuilt (as after a code change)", secs))
    for label, secs in rows[-2:]:
        print(f"{label}: {secs:.1f}s", file=sys.stderr)
    return rows


def _prepare(root: Path, rows: int) -> tuple[str, str]:
    from mlops_loop.core.config import STORAGE_ROOT_ENV, load_config
    from mlops_loop.core.ingest import ingest_batch
    from mlops_loop_devtools.sample_data import generate_batch, land_batch

    os.environ[STORAGE_ROOT_ENV] = str(root)
    config = load_config(CONFIG)
    land_batch(generate_batch("2026-04-01", rows, seed=5), config.root, "2026-04-01")
    land_batch(generate_batch("2026-04-02", max(rows // 4, 500), seed=5), config.root, "2026-04-02")
    return ingest_batch(config, "2026-04-01").snapshot_uri, ingest_batch(config, "2026-04-02").snapshot_uri


def _request(train_uri: str, valid_uri: str, hyper: dict[str, Any], name: str) -> dict[str, Any]:
    from mlops_loop.core.config import load_config
    from mlops_loop.core.trainer_protocol import config_payload

    return {
        "config": config_payload(load_config(CONFIG)),
        "train_snapshot_uri": train_uri,
        "valid_snapshot_uri": valid_uri,
        "registered_model_name": name,
        "seed": 1,
        "hyperparameters": hyper,
        "tags": {"bench": "host"},
        "retrain": True,
    }


def run_host(work: Path, request: dict[str, Any], tracking_uri: str) -> tuple[float, dict[str, Any]]:
    req, res = work / "request.json", work / "result.json"
    req.write_text(json.dumps(request))
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mlops_loop.training", "train", "--request", str(req), "--result", str(res)],
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - started, json.loads(res.read_text())


def run_container(
    image: str, train_uri: str, valid_uri: str, hyper: dict[str, Any], name: str, tracking_uri: str
) -> tuple[float, dict[str, Any]]:
    from mlops_loop.operators.docker_train import DockerTrainOperator

    op = DockerTrainOperator(
        task_id="bench",
        config_path=CONFIG,
        train_snapshot_uri=train_uri,
        valid_snapshot_uri=valid_uri,
        registered_model_name=name,
        seed=1,
        hyperparameters=hyper,
        retrain=True,  # the trainer would reuse a version trained from identical input
        image=image,
        gpu="none",
        mlflow_tracking_uri=tracking_uri,
        network_mode="host",  # the benchmark's MLflow server listens on 127.0.0.1 only
    )
    started = time.perf_counter()
    result = op.execute({"ti": SimpleNamespace(dag_id="bench", run_id="bench", task_id="bench")})
    return time.perf_counter() - started, result


def _fit_seconds(result: dict[str, Any]) -> float | None:
    timing = result.get("timing") or {}
    for key in ("fit_seconds", "fit", "train_seconds"):
        if isinstance(timing.get(key), (int, float)):
            return float(timing[key])
    return None


def missing_docker(image: str = "mlops-loop/trainer:latest") -> str | None:
    """Why the container side cannot run here (None: it can)."""
    if shutil.which("docker") is None:
        return "no docker command (scripts/install_docker.sh)"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "the Docker engine does not answer (`docker info` failed)"
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False).returncode != 0:
        return f"no trainer image {image} (include/docker/build_trainer_image.sh)"
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, help="training rows (default 40,000; quick 10,000)")
    parser.add_argument("--epochs", type=int, help="default 8 (quick 2)")
    parser.add_argument("--repeat", type=int, help="runs per side (default 2, quick 1)")
    parser.add_argument("--build", choices=("none", "warm", "cold"), default="none")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report", help="write the section's Markdown here")
    args = parser.parse_args()
    args.rows = args.rows or (10_000 if args.quick else 40_000)
    args.epochs = args.epochs or (2 if args.quick else 8)
    args.repeat = args.repeat or (1 if args.quick else 2)
    command = "benchmarks/bench_container.py" + (
        " --quick" if args.quick else f" --rows {args.rows} --epochs {args.epochs} --repeat {args.repeat}"
    ) + (f" --build {args.build}" if args.build != "none" else "")
    why = missing_docker()
    if why:
        write_report(args.report, f"{run_line(command, quick=args.quick)}\n\nskipped: {why}.")
        return

    from mlops_loop_devtools.devstack import start_mlflow_server

    build_rows = bench_build(args.build) if args.build != "none" else []
    _, image = _build()  # the image for the current sources (skipped when up to date)
    hyper = {"model_type": "mlp", "max_epochs": args.epochs, "patience": args.epochs, "hidden_sizes": [64, 32]}

    with tempfile.TemporaryDirectory(prefix="bench-container-") as tmp:
        work = Path(tmp)
        (work / "storage").mkdir(mode=0o755)
        work.chmod(0o755)  # the container's user reads the snapshots
        train_uri, valid_uri = _prepare(work / "storage", args.rows)
        with start_mlflow_server(work / "mlflow") as server:
            host: list[tuple[float, dict[str, Any]]] = []
            box: list[tuple[float, dict[str, Any]]] = []
            for i in range(args.repeat):
                host.append(run_host(work, _request(train_uri, valid_uri, hyper, f"bench_host_{i}"), server.url))
                box.append(run_container(image, train_uri, valid_uri, hyper, f"bench_container_{i}", server.url))
                print(f"round {i + 1}: host {host[-1][0]:.1f}s, container {box[-1][0]:.1f}s", file=sys.stderr)

    h = statistics.median(s for s, _ in host)
    c = statistics.median(s for s, _ in box)
    lines = [
        run_line(command, quick=args.quick),
        "",
        f"{args.rows:,} training rows, MLP {args.epochs} epochs, median of {args.repeat} "
        "alternating runs; ratio to the host process (target <= 1.15x).",
        "",
        "| run | wall s | trainer fit s | ratio to host |",
        "|---|---:|---:|---:|",
    ]
    for label, secs, runs in (("host process", h, host), ("trainer container (DockerTrainOperator)", c, box)):
        fits = [f for f in (_fit_seconds(r) for _, r in runs) if f is not None]
        fit = f"{statistics.median(fits):.1f}" if fits else "n/a"
        lines.append(f"| {label} | {secs:.1f} | {fit} | {secs / h:.2f}x |")
    lines += ["", f"Ratio {c / h:.2f}x (target <= 1.15x): {'met' if c / h <= 1.15 else 'NOT met'}."]
    if build_rows:
        lines += ["", "| trainer image build | s |", "|---|---:|"]
        lines += [f"| {label} | {secs:.1f} |" for label, secs in build_rows]
    write_report(args.report, "\n".join(lines))


if __name__ == "__main__":
    main()
