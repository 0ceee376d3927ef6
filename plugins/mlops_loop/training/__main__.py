"""Command line of the trainer image (and of the local-process fallback):

    python -m mlops_loop.training train --request request.json --result result.json

``request.json`` is a :class:`mlops_loop.training.train.TrainingRequest`. The result file
is written atomically in every outcome the process survives:

- success: ``{"status": "ok", "run_id", "model_uri", "model_name", "model_version",
  "metrics", "device", "params", "tags", "timing"}``, exit code 0;
- failure: ``{"status": "error", "error", "error_type", "stage", "run_id"}``, and a
  non-zero exit code saying what kind of failure it was (EXIT_CODES below).

Progress (per-epoch lines) goes to stdout, line by line, so a container log streams it.
Environment: ``MLFLOW_TRACKING_URI``; for S3 snapshots ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``MLOPS_LOOP_S3_ENDPOINT_URL``.
New commands (``evaluate``, ``score``) are added to COMMANDS.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from mlops_loop.exceptions import (
    ConfigError,
    DriftError,
    EvaluationError,
    MlopsLoopError,
    RegistryError,
    TrackingServerError,
    TrainingError,
)

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_REQUEST = 2  # unreadable request, invalid config or hyperparameters, unusable model version
EXIT_DATA = 3  # snapshot missing or unreadable, labels unusable, data unfit to evaluate or monitor
EXIT_TRACKING = 4  # MLflow tracking server unreachable
EXIT_FAILED = 5  # fitting, logging or registering failed
EXIT_TERMINATED = 143  # SIGTERM (container stopped / task killed)
EXIT_CODES = {
    EXIT_OK: "ok",
    EXIT_UNEXPECTED: "unexpected error",
    EXIT_BAD_REQUEST: "invalid request or config",
    EXIT_DATA: "snapshot data problem",
    EXIT_TRACKING: "MLflow tracking server unreachable",
    EXIT_FAILED: "training, logging or registration failed",
    EXIT_TERMINATED: "terminated by SIGTERM",
}


class Terminated(TrainingError):
    """The process received SIGTERM; raised inside the run so it ends as FAILED."""


def _train(request_doc: dict[str, Any]) -> dict[str, Any]:
    from pydantic import ValidationError

    from mlops_loop.training.train import TrainingRequest, run_training

    try:
        request = TrainingRequest.model_validate(request_doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid training request: {problems}") from exc
    return run_training(request)


def _evaluate(request_doc: dict[str, Any]) -> dict[str, Any]:
    from mlops_loop.training.evaluate import parse_request, run_evaluation

    return run_evaluation(parse_request(request_doc))


def _monitor(request_doc: dict[str, Any]) -> dict[str, Any]:
    from mlops_loop.training.monitor import parse_request, run_monitor

    return run_monitor(parse_request(request_doc))


COMMANDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "train": _train,
    "evaluate": _evaluate,
    "monitor": _monitor,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlops_loop.training", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        cmd = sub.add_parser(name)
        cmd.add_argument("--request", required=True, type=Path, help="request JSON file")
        cmd.add_argument("--result", required=True, type=Path, help="where to write the result JSON")
    return parser


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, Terminated):
        return EXIT_TERMINATED
    if isinstance(exc, (ConfigError, RegistryError)):
        return EXIT_BAD_REQUEST
    if isinstance(exc, TrackingServerError):
        return EXIT_TRACKING
    if isinstance(exc, TrainingError):
        return EXIT_DATA if exc.stage in ("snapshots", "data") else EXIT_FAILED
    if isinstance(exc, (EvaluationError, DriftError)):
        return EXIT_DATA
    if isinstance(exc, MlopsLoopError):  # a failure the code names, not a bug
        return EXIT_FAILED
    return EXIT_UNEXPECTED


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_result(path: Path, payload: dict[str, Any]) -> None:
    """Atomic write (temp file + rename) of the result document."""
    from mlops_loop.core.storage import LocalStorage

    text = json.dumps(_json_safe(payload), indent=2, sort_keys=True, default=str) + "\n"
    LocalStorage().write_text(str(path), text)


# After SIGTERM the run gets this long to end itself (mark the MLflow run FAILED, write
# result.json) before the process exits anyway: the Terminated exception can be swallowed
# by library code that catches Exception (optional imports, retries). Docker's stop
# timeout and the local runner's grace are longer.
TERMINATE_GRACE_SECONDS = 8.0
_terminating = False


def _exit_terminated() -> None:
    print(f"still running {TERMINATE_GRACE_SECONDS:.0f} s after SIGTERM: exiting", file=sys.stderr, flush=True)
    os._exit(EXIT_TERMINATED)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _terminating
    if not _terminating:
        _terminating = True
        watchdog = threading.Timer(TERMINATE_GRACE_SECONDS, _exit_terminated)
        watchdog.daemon = True
        watchdog.start()
    raise Terminated("received SIGTERM: the container or task was stopped", stage="interrupted")


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (see EXIT_CODES)."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(line_buffering=True)
    args = _parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        try:
            request_doc = json.loads(args.request.read_text(encoding="utf-8"))
            if not isinstance(request_doc, dict):
                raise ConfigError(f"request {args.request} must hold a JSON object")
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read request {args.request}: {exc}") from exc
        result = COMMANDS[args.command](request_doc)
        write_result(args.result, result)
        return EXIT_OK
    except BaseException as exc:
        if isinstance(exc, (SystemExit, KeyboardInterrupt)) and not isinstance(exc, MlopsLoopError):
            code = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else EXIT_TERMINATED
        else:
            code = exit_code_for(exc)
        message = str(exc) if isinstance(exc, MlopsLoopError) else f"{type(exc).__name__}: {exc}"
        print(f"{args.command} failed ({EXIT_CODES.get(code, 'error')}): {message}", file=sys.stderr, flush=True)
        try:
            write_result(
                args.result,
                {
                    "status": "error",
                    "error": message,
                    "error_type": type(exc).__name__,
                    "stage": getattr(exc, "stage", None),
                    "run_id": getattr(exc, "run_id", None),
                    "exit_code": code,
                },
            )
        except Exception as write_exc:  # best effort: the exit code still tells
            print(f"could not write {args.result}: {write_exc}", file=sys.stderr, flush=True)
        if code == EXIT_UNEXPECTED:
            import traceback

            traceback.print_exc(file=sys.stderr)
        return code
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
