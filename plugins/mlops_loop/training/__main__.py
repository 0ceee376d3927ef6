"""Command line of the trainer image (and of the local-process fallback):

    python -m mlops_loop.training train --request-env --result-stdout      (container)
    python -m mlops_loop.training train --request request.json --result result.json

The request (typed in ``mlops_loop.core.trainer_protocol``) comes from
``$MLOPS_LOOP_TRAINER_REQUEST`` (``--request-env``: how a container gets it through the
Docker API, with no folder shared with the worker) or from a file; the result goes to
stdout as the last line, ``MLOPS_LOOP_RESULT/1 <signature> <json>``
(``--result-stdout``: the worker reads it from the container's log), or to a file written
atomically. Either way it is written in every outcome the process survives:

- success: ``{"status": "ok", "run_id", "model_uri", "model_name", "model_version",
  "metrics", "device", "params", "tags", "timing"}``, exit code 0;
- failure: ``{"status": "error", "error", "error_type", "stage", "run_id",
  "exit_code"}``, and a non-zero exit code saying what kind of failure it was
  (trainer_protocol.ExitCode).

The request's ``token`` proves the answer is this request's: a result file carries it as
``token``; the stdout line carries an HMAC of its JSON under it (the token itself is
never printed). The worker refuses a result without it.

Progress (per-epoch lines) goes to stdout, line by line, so a container log streams it.
Environment: the variables named in trainer_protocol (MLflow server and credentials, S3
endpoint, region and keys).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from mlops_loop.core.metrics import json_safe
from mlops_loop.core.trainer_protocol import (
    EXIT_CODE_MEANINGS,
    REQUEST_ENV,
    ErrorResult,
    ExitCode,
    parse_request,
    result_line,
)
from mlops_loop.exceptions import (
    ConfigError,
    DriftError,
    EvaluationError,
    MlopsLoopError,
    RegistryError,
    TargetError,
    TrackingServerError,
    TrainingError,
)


class Terminated(TrainingError):
    """The process received SIGTERM; raised inside the run so it ends as FAILED."""


def _train(request: Any) -> dict[str, Any]:
    from mlops_loop.training.train import run_training

    return run_training(request)


def _evaluate(request: Any) -> dict[str, Any]:
    from mlops_loop.training.evaluate import run_evaluation

    return run_evaluation(request)


def _monitor(request: Any) -> dict[str, Any]:
    from mlops_loop.training.monitor import run_monitor

    return run_monitor(request)


# The request and result models of each command are in core.trainer_protocol.COMMANDS.
RUNNERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "train": _train,
    "evaluate": _evaluate,
    "monitor": _monitor,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlops_loop.training", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in RUNNERS:
        cmd = sub.add_parser(name)
        request = cmd.add_mutually_exclusive_group(required=True)
        request.add_argument("--request", type=Path, help="request JSON file")
        request.add_argument(
            "--request-env", action="store_true", help=f"request JSON in ${REQUEST_ENV}"
        )
        result = cmd.add_mutually_exclusive_group(required=True)
        result.add_argument("--result", type=Path, help="where to write the result JSON")
        result.add_argument(
            "--result-stdout",
            action="store_true",
            help="print the result as the last stdout line, signed with the request's token",
        )
    return parser


def read_request(args: argparse.Namespace) -> dict[str, Any]:
    """The request document from its file or from $MLOPS_LOOP_TRAINER_REQUEST (removed
    from the environment once read: processes the run starts do not inherit the token)."""
    where = f"${REQUEST_ENV}" if args.request_env else str(args.request)
    try:
        if args.request_env:
            text = os.environ.pop(REQUEST_ENV, None)
            if text is None:
                raise ConfigError(f"no request: ${REQUEST_ENV} is not set")
        else:
            text = args.request.read_text(encoding="utf-8")
        doc = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read request {where}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"request {where} must hold a JSON object")
    return doc


def emit_result(args: argparse.Namespace, payload: dict[str, Any], token: str | None) -> None:
    """The result to its file (with the token) or as the signed last line on stdout."""
    if args.result_stdout:
        clean = {key: value for key, value in payload.items() if key != "token"}
        # One write call: no other thread's output can land inside the line.
        sys.stdout.write(result_line(json_safe(clean), token) + "\n")
        sys.stdout.flush()
    else:
        write_result(args.result, {**payload, "token": token})


def exit_code_for(exc: BaseException) -> ExitCode:
    if isinstance(exc, Terminated):
        return ExitCode.TERMINATED
    if isinstance(exc, (ConfigError, RegistryError)):
        return ExitCode.BAD_REQUEST
    if isinstance(exc, TrackingServerError):
        return ExitCode.TRACKING
    if isinstance(exc, TrainingError):
        return ExitCode.DATA if exc.stage in ("snapshots", "data") else ExitCode.FAILED
    if isinstance(exc, (EvaluationError, DriftError, TargetError)):
        return ExitCode.DATA
    if isinstance(exc, MlopsLoopError):  # a failure the code names, not a bug
        return ExitCode.FAILED
    return ExitCode.UNEXPECTED


def write_result(path: Path, payload: dict[str, Any]) -> None:
    """Atomic write (temp file + rename) of the result document."""
    from mlops_loop.core.storage import LocalStorage

    text = json.dumps(json_safe(payload), indent=2, sort_keys=True, default=str) + "\n"
    LocalStorage().write_text(str(path), text)


# After SIGTERM the run gets this long to end itself (mark the MLflow run FAILED, write
# result.json) before the process exits anyway: the Terminated exception can be swallowed
# by library code that catches Exception (optional imports, retries). Docker's stop
# timeout and the local runner's grace are longer.
TERMINATE_GRACE_SECONDS = 8.0
_terminating = False


def _exit_terminated() -> None:
    print(
        f"still running {TERMINATE_GRACE_SECONDS:.0f} s after SIGTERM: exiting",
        file=sys.stderr,
        flush=True,
    )
    os._exit(ExitCode.TERMINATED)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _terminating
    if not _terminating:
        _terminating = True
        watchdog = threading.Timer(TERMINATE_GRACE_SECONDS, _exit_terminated)
        watchdog.daemon = True
        watchdog.start()
    raise Terminated("received SIGTERM: the container or task was stopped", stage="interrupted")


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (core.trainer_protocol.ExitCode)."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(line_buffering=True)
    args = _parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    token: str | None = None  # the request's, echoed in every result written below
    try:
        request_doc = read_request(args)
        if isinstance(request_doc.get("token"), str):
            token = request_doc["token"]  # so an invalid request's error is still answered
        request = parse_request(args.command, request_doc)
        token = request.token
        result = RUNNERS[args.command](request)
        emit_result(args, result, token)
        return ExitCode.OK
    except BaseException as exc:
        if isinstance(exc, (SystemExit, KeyboardInterrupt)) and not isinstance(exc, MlopsLoopError):
            code = (
                exc.code
                if isinstance(exc, SystemExit) and isinstance(exc.code, int)
                else ExitCode.TERMINATED
            )
        else:
            code = exit_code_for(exc)
        message = str(exc) if isinstance(exc, MlopsLoopError) else f"{type(exc).__name__}: {exc}"
        meaning = EXIT_CODE_MEANINGS.get(code, "error")
        print(f"{args.command} failed ({meaning}): {message}", file=sys.stderr, flush=True)
        try:
            error = ErrorResult(
                status="error",
                error=message,
                error_type=type(exc).__name__,
                stage=getattr(exc, "stage", None),
                run_id=getattr(exc, "run_id", None),
                exit_code=int(code),
            )
            emit_result(args, error.model_dump(exclude={"token"}), token)
        except Exception as write_exc:  # best effort: the exit code still tells
            print(f"could not write the result: {write_exc}", file=sys.stderr, flush=True)
        if code == ExitCode.UNEXPECTED:
            import traceback

            traceback.print_exc(file=sys.stderr)
        return code
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
