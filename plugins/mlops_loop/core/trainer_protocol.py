"""The contract between the Airflow worker and the trainer process, in one place.

The worker (operators/trainer.py) builds a typed request and starts ``python -m
mlops_loop.training <command>``, in one of two ways:

- in the trainer image, through the Docker API only (the Docker host may be another
  machine that sees none of the worker's folders): the request travels in the
  container's environment (``$MLOPS_LOOP_TRAINER_REQUEST``, ``--request-env``) and the
  result comes back as one marked line on the container's stdout (``--result-stdout``,
  result_line), which the worker reads from the container's log;
- as a local process of the worker: ``request.json`` / ``result.json`` in a private
  folder (``--request PATH --result PATH``).

Both sides import this module: the request and result models of each command, the exit
codes, the result line's format and the names of the environment variables.

Every request carries a random ``token``: the trainer echoes it in result.json, and signs
the stdout result line with it (HMAC-SHA256, so the token itself is never printed). The
worker trusts nothing in a result that does not carry this task's token.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlops_loop.core.config import DatasetConfig, validation_problems
from mlops_loop.core.storage import S3Credentials
from mlops_loop.exceptions import ConfigError, TrainingError

# --- transport -------------------------------------------------------------------------

# The local runner's request/result files, in its private per-task folder.
REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"
# The container's request: its JSON in this variable (the trainer removes it from its own
# environment once read, so nothing it starts inherits the token).
REQUEST_ENV = "MLOPS_LOOP_TRAINER_REQUEST"
# One variable must fit in a single execve() string (Linux: 128 KiB); requests are a few KiB.
MAX_REQUEST_BYTES = 96 * 1024
# The container's result: ``<marker> <signature> <json>`` on one stdout line.
RESULT_MARKER = "MLOPS_LOOP_RESULT/1"
UNSIGNED = "-"  # the signature of a result whose request could not be read (no token)

# --- environment -----------------------------------------------------------------------

# Read by the trainer process.
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
TRACKING_USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
TRACKING_PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
TRACKING_TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"
S3_ENDPOINT_ENV = "MLOPS_LOOP_S3_ENDPOINT_URL"  # boto3 has no standard variable for it
AWS_REGION_ENV = "AWS_DEFAULT_REGION"
AWS_KEY_ENVS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# MLflow's HTTP client retries a dead server with exponential backoff; its defaults (7
# retries, factor 2, 120 s timeout) take minutes to give up. These settle in ~15 s unless
# the environment sets its own.
MLFLOW_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}

# --- credentials in URIs ---------------------------------------------------------------

# userinfo (``user:password@``) right after a URI's scheme: never printed or rendered.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#@\s]+)@")
REDACTED = "***"


def redact_credentials(text: str) -> str:
    """``text`` with the userinfo of every URI in it (``https://user:pass@host``)
    replaced by ``***`` (``https://***@host``). The one redaction applied wherever a
    tracking URI, or a message that may quote one, is printed or rendered."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)


def split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """(the URI without its userinfo, the MLflow credential variables it held):
    ``https://alice:pw@host`` -> ``https://host`` and MLFLOW_TRACKING_USERNAME=alice,
    MLFLOW_TRACKING_PASSWORD=pw (percent-decoded). A URI without userinfo, or text that is
    not a URI, comes back unchanged with no credentials."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri, {}
    if not parts.scheme or "@" not in parts.netloc:
        return uri, {}
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    found: dict[str, str] = {}
    if user:
        found[TRACKING_USERNAME_ENV] = unquote(user)
    if sep and password:
        found[TRACKING_PASSWORD_ENV] = unquote(password)
    return urlunsplit(parts._replace(netloc=hostport)), found


# Read by the worker when the matching operator argument is left out (at run time, never
# at parse time).
RUNNER_ENV = "MLOPS_LOOP_TRAINER_RUNNER"  # docker | local | auto
TRAINER_PYTHON_ENV = "MLOPS_LOOP_TRAINER_PYTHON"  # the local runner's interpreter
IO_ROOT_ENV = "MLOPS_LOOP_TRAINER_IO_ROOT"  # host folder for request/result folders
NETWORK_ENV = "MLOPS_LOOP_TRAINER_NETWORK"  # container network (default bridge)

# --- exit codes ------------------------------------------------------------------------


class ExitCode(IntEnum):
    """The trainer's exit codes: what kind of failure, so the worker can explain it."""

    OK = 0
    UNEXPECTED = 1  # a bug: the traceback is in the log
    BAD_REQUEST = 2  # request, config, hyperparameters or a model version it names
    DATA = 3  # snapshot missing or unreadable, labels unusable, data unfit to evaluate or monitor
    TRACKING = 4  # MLflow tracking server unreachable
    FAILED = 5  # fitting, logging or registering failed
    TERMINATED = 143  # SIGTERM (container stopped / task killed)


EXIT_CODE_MEANINGS: dict[int, str] = {
    ExitCode.OK: "success",
    ExitCode.UNEXPECTED: "unexpected error in the trainer (see the traceback in the log tail)",
    ExitCode.BAD_REQUEST: "the trainer rejected its request, dataset config, hyperparameters, "
    "command line or a model version it names (not in the registry, not READY)",
    ExitCode.DATA: "snapshot data problem: a snapshot is missing or unreadable, or its labels "
    "or columns are unusable",
    ExitCode.TRACKING: "the MLflow tracking server was unreachable from the trainer",
    ExitCode.FAILED: "fitting, logging or registering the model failed",
    ExitCode.TERMINATED: "terminated (SIGTERM): the container was stopped or the task killed",
}

# --- requests --------------------------------------------------------------------------


def new_request_token() -> str:
    """A fresh random token (256 bits) naming one request."""
    return secrets.token_urlsafe(32)


class TrainerRequest(BaseModel):
    """What every command receives: the dataset config, the tags to record and the
    request's token."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(
        description="DatasetConfig.model_dump(mode='json') plus config_dir (config_payload)."
    )
    tags: dict[str, str] = Field(default_factory=dict)
    token: str = Field(
        default_factory=new_request_token,
        min_length=16,
        repr=False,
        description="Random per request; the trainer signs its stdout result line with it "
        "(or echoes it in result.json) and the worker accepts only a result that answers it "
        "(a result from another task, or written by anyone else, is refused). Never logged, "
        "never a tag.",
    )

    def dataset_config(self) -> DatasetConfig:
        """The config rebuilt on the trainer side; ConfigError naming the key."""
        try:
            return DatasetConfig.model_validate(self.config)
        except ValidationError as exc:
            lines = [f"invalid dataset config in the {type(self).__name__}:"]
            lines += [f"  {problem}" for problem in validation_problems(exc)]
            raise ConfigError("\n".join(lines)) from exc


class TrainRequest(TrainerRequest):
    """``train``: fit a model on two snapshots, log it and register a version."""

    train_snapshot_uri: str = Field(min_length=1)
    valid_snapshot_uri: str = Field(min_length=1)
    registered_model_name: str | None = None
    experiment_name: str | None = None
    seed: int | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    retrain: bool = Field(
        default=False,
        description="Train a new version even when one exists for the identical training input.",
    )


class EvaluateRequest(TrainerRequest):
    """``evaluate``: score challenger and champion on one holdout and decide."""

    holdout_snapshot_uri: str = Field(min_length=1)
    model_name: str = Field(min_length=1)
    challenger_version: str = Field(min_length=1)
    expected_champion_version: str | None = None


class MonitorRequest(TrainerRequest):
    """``monitor``: drift and decay of the champion on recent validated snapshots."""

    model_name: str = Field(min_length=1)
    champion_version: str | None = Field(
        description="The champion's version, resolved right before the trainer starts; "
        "None: no champion."
    )
    snapshot_uris: list[str] = Field(description="Validated snapshots of the window, oldest first.")
    ds: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    since_ds: str | None = None
    until_ds: str | None = None
    reports_root: str = Field(min_length=1, description="Usually <root>/reports/drift.")
    experiment_name: str | None = Field(default=None, description="Default: <dataset>_monitoring.")


# --- results ---------------------------------------------------------------------------


def result_signature(text: str, token: str) -> str:
    """HMAC-SHA256 of a result line's JSON under the request's token: proves the line was
    written by the holder of the token (this task's trainer) without printing the token."""
    import hashlib
    import hmac

    return hmac.new(token.encode(), text.encode(), hashlib.sha256).hexdigest()


def result_line(payload: Mapping[str, Any], token: str | None) -> str:
    """The result as the container prints it: ``RESULT_MARKER signature json`` on one
    line (compact, ASCII-only JSON: no newline can split it). ``payload`` holds no token."""
    import json

    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return f"{RESULT_MARKER} {result_signature(text, token) if token else UNSIGNED} {text}"


class TrainerResult(BaseModel):
    """What every successful command writes; the rest of the document is the command's.
    ``token`` echoes the request's in result.json (the stdout line is signed with it
    instead); the worker checks it (containers.read_result, read_result_output) and
    leaves it out of the result it returns."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ok"]
    token: str | None = Field(default=None, repr=False)


class TrainResult(TrainerResult):
    run_id: str
    model_uri: str
    model_name: str
    model_version: str
    metrics: dict[str, float | None]  # the trainer writes non-finite values as null
    device: Literal["cpu", "cuda"]


class EvaluateResult(TrainerResult):
    outcome: Literal["promote", "reject", "insufficient_data"]
    reasons: list[str]
    decision_id: str
    decision_uri: str
    html_uri: str
    model_name: str
    challenger_version: str
    expected_champion_version: str | None = None
    # The MLflow copy of the decision record (None when it was not logged).
    artifact_run_id: str | None = None
    artifact_experiment_id: str | None = None
    html_artifact_path: str | None = None


class MonitorResult(TrainerResult):
    verdict: str
    model_name: str
    champion_version: str | None
    ds: str
    reasons: list[str] = Field(default_factory=list)
    drifted_features: list[str] = Field(default_factory=list)
    warned_features: list[str] = Field(default_factory=list)
    decay_verdict: str | None = None
    # The MLflow run holding the report (absent without a champion).
    monitoring_run_id: str | None = None
    monitoring_experiment_id: str | None = None
    html_artifact_path: str | None = None


NO_CHAMPION = "no_champion"


def no_champion_result(
    dataset: str, model_name: str, ds: str, since_ds: str | None, until_ds: str | None
) -> dict[str, Any]:
    """The monitor result when there is no champion to monitor (not an error)."""
    return {
        "status": "ok",
        "dataset": dataset,
        "model_name": model_name,
        "champion_version": None,
        "ds": ds,
        "since_ds": since_ds,
        "until_ds": until_ds,
        "verdict": NO_CHAMPION,
        "reasons": [f"{model_name} has no champion yet: nothing to monitor"],
        "drifted_features": [],
        "warned_features": [],
        "decay_verdict": None,
    }


class ErrorResult(BaseModel):
    """What the trainer writes when a command fails (besides its exit code). ``token``
    answers the request's as in TrainerResult (None only when the request could not be
    read at all); the worker shows ``error`` only when it answers this task's request."""

    model_config = ConfigDict(extra="allow")

    status: Literal["error"]
    error: str
    error_type: str
    stage: str | None = None
    run_id: str | None = None
    exit_code: int
    token: str | None = Field(default=None, repr=False)


# Each command with its request and result model.
COMMANDS: dict[str, tuple[type[TrainerRequest], type[TrainerResult]]] = {
    "train": (TrainRequest, TrainResult),
    "evaluate": (EvaluateRequest, EvaluateResult),
    "monitor": (MonitorRequest, MonitorResult),
}


def check_command(command: str) -> str:
    if command not in COMMANDS:
        raise ValueError(f"trainer command must be one of {', '.join(COMMANDS)}, got {command!r}")
    return command


def parse_request(command: str, doc: Mapping[str, Any]) -> TrainerRequest:
    """The typed request of ``command``; ConfigError naming each bad field."""
    model = COMMANDS[check_command(command)][0]
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid {command} request: {'; '.join(validation_problems(exc))}"
        ) from exc


def config_payload(config: DatasetConfig) -> dict[str, Any]:
    """The config as the trainer receives it: its JSON dump plus ``config_dir`` (which
    the dump leaves out), so ``DatasetConfig.model_validate`` rebuilds it unchanged."""
    return {**config.model_dump(mode="json"), "config_dir": config.config_dir}


def s3_credentials_from_env(environ: Mapping[str, str] | None = None) -> S3Credentials:
    """The trainer's S3 settings from the variables the worker set (unset ones fall back
    to boto3's chain)."""
    env = os.environ if environ is None else environ
    key, secret, token = (env.get(name) or None for name in AWS_KEY_ENVS)
    return S3Credentials(
        endpoint_url=env.get(S3_ENDPOINT_ENV) or None,
        region_name=env.get(AWS_REGION_ENV) or env.get("AWS_REGION") or None,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
    )


def s3_environment(credentials: S3Credentials | None) -> tuple[dict[str, str], dict[str, str]]:
    """(environment, secrets) that give the trainer ``credentials``; the secrets go where
    nothing logs or renders them (DockerOperator's ``private_environment``)."""
    env: dict[str, str] = {}
    secrets: dict[str, str] = {}
    if credentials is None:
        return env, secrets
    if credentials.endpoint_url:
        env[S3_ENDPOINT_ENV] = credentials.endpoint_url
    if credentials.region_name:
        env[AWS_REGION_ENV] = credentials.region_name
    values = (
        credentials.aws_access_key_id,
        credentials.aws_secret_access_key,
        credentials.aws_session_token,
    )
    secrets.update({name: value for name, value in zip(AWS_KEY_ENVS, values, strict=True) if value})
    return env, secrets


# --- the trainer side ------------------------------------------------------------------


def trainer_tracking_uri(explicit: str | None = None) -> str:
    """The MLflow server the trainer logs to (``explicit`` or ``$MLFLOW_TRACKING_URI``),
    with the client timeouts set unless the environment sets its own. Credentials written
    into the URI become MLflow's credential variables (where those are unset) and the URI
    without them is returned, so it never shows them."""
    uri = explicit or os.environ.get(TRACKING_URI_ENV)
    if not uri:
        raise TrainingError(f"no MLflow tracking server: set {TRACKING_URI_ENV}", stage="tracking")
    for key, value in MLFLOW_CLIENT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    uri, found = split_credentials(uri)
    for key, value in found.items():
        os.environ.setdefault(key, value)
    return uri


def is_connection_error(exc: BaseException) -> bool:
    """The tracking server did not answer (as opposed to answering with an error)."""
    text = f"{type(exc).__name__}: {exc}"
    markers = (
        "Max retries exceeded",
        "Connection refused",
        "ConnectionError",
        "Failed to establish",
    )
    return any(m in text for m in markers)
