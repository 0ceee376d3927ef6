"""IngestSnapshotOperator and the S3 credentials hook, without an Airflow DB: the operator's
``execute`` is called directly, connections come from ``AIRFLOW_CONN_*`` variables."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from airflow.sdk.exceptions import AirflowSkipException

from mlops_loop.core.config import S3Settings, load_config
from mlops_loop.core.storage import S3Credentials
from mlops_loop.exceptions import ConfigError, NoBatchError, SourceFileError
from mlops_loop.hooks.s3 import dataset_s3_credentials, s3_credentials_for
from mlops_loop.operators import IngestSnapshotOperator
from mlops_loop_devtools.sample_data import generate_batch, land_batch

REPO = Path(__file__).resolve().parents[3]
CREDIT_CONFIG = REPO / "include" / "config" / "credit_default.yaml"
DS = "2024-04-01"


def dataset_config(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load(CREDIT_CONFIG.read_text())
    raw["storage"] = {"root": str(tmp_path / "data")}
    raw["quality"].pop("suite", None)
    for key, value in changes.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "credit.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_template_fields_are_constructor_arguments():
    import inspect

    params = inspect.signature(IngestSnapshotOperator.__init__).parameters
    assert IngestSnapshotOperator.template_fields == ("config_path", "ds")
    for name in IngestSnapshotOperator.template_fields:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_constructor_only_stores_values(tmp_path):
    op = IngestSnapshotOperator(task_id="ingest", config_path=str(tmp_path / "not-there.yaml"))
    assert op.config_path == str(tmp_path / "not-there.yaml")
    assert op.ds is None  # resolved in execute: the run's logical date, else run_after
    with pytest.raises(TypeError):
        IngestSnapshotOperator("ingest", "x.yaml")  # type: ignore[misc]


def test_templates_render(tmp_path):
    op = IngestSnapshotOperator(
        task_id="ingest", config_path="{{ params.cfg }}", ds="{{ params.ds }}"
    )
    op.render_template_fields({"params": {"cfg": "/configs/credit.yaml", "ds": DS}})
    assert (op.config_path, op.ds) == ("/configs/credit.yaml", DS)


def _at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("ds", "context"),
    [
        pytest.param(DS, {"logical_date": _at("2024-05-05")}, id="form-date-wins"),
        pytest.param(None, {"logical_date": _at(DS)}, id="empty-form-logical-date"),
        pytest.param("", {"logical_date": _at(DS)}, id="empty-text-logical-date"),
        pytest.param("None", {"logical_date": _at(DS)}, id="none-rendered-as-text"),
        pytest.param(
            None,
            {"logical_date": None, "dag_run": SimpleNamespace(run_after=_at(DS))},
            id="manual-run-without-logical-date",
        ),
    ],
)
def test_the_batch_date_comes_from_the_form_else_the_run(tmp_path, ds, context):
    config_path = dataset_config(tmp_path)
    land_batch(generate_batch(DS, 20), tmp_path / "data", DS)
    op = IngestSnapshotOperator(task_id="ingest", config_path=str(config_path), ds=ds)
    assert op.execute(context=context)["ds"] == DS


def test_execute_writes_a_snapshot_and_returns_small_json(tmp_path):
    config_path = dataset_config(tmp_path)
    land_batch(generate_batch(DS, 120), tmp_path / "data", DS)
    op = IngestSnapshotOperator(task_id="ingest", config_path=str(config_path), ds=DS)

    out = op.execute(context={})

    assert out["rows"] == 120 and out["created"] is True and out["ds"] == DS
    assert Path(out["manifest_uri"]).exists()
    assert len(json.dumps(out)) < 1_000
    again = op.execute(context={})
    assert (again["sha256"], again["created"]) == (out["sha256"], False)


@pytest.mark.parametrize(
    ("on_missing", "raises", "message"),
    [
        pytest.param("fail", NoBatchError, "no batch for ds=2024-04-01", id="fail"),
        pytest.param(
            "skip",
            AirflowSkipException,
            r"no batch for ds=2024-04-01.*\(source\.on_missing: skip\)",
            id="skip",
        ),
    ],
)
def test_no_batch_fails_or_skips_per_config(tmp_path, on_missing, raises, message):
    config_path = dataset_config(tmp_path, source={"on_missing": on_missing})
    op = IngestSnapshotOperator(task_id="ingest", config_path=str(config_path), ds=DS)
    with pytest.raises(raises, match=message):
        op.execute(context={})


def test_bad_file_fails_the_task_with_the_file_named(tmp_path):
    config_path = dataset_config(tmp_path)
    land_batch(generate_batch(DS, 20), tmp_path / "data", DS)
    bad = tmp_path / "data" / "raw" / f"ds={DS}" / "part-000.csv"
    generate_batch(DS, 20).to_csv(bad, sep="|", index=False)
    op = IngestSnapshotOperator(task_id="ingest", config_path=str(config_path), ds=DS)
    with pytest.raises(SourceFileError, match=r"part-000\.csv: header parses as a single column"):
        op.execute(context={})


def test_wrong_config_fails_the_task_naming_the_key(tmp_path):
    config_path = dataset_config(tmp_path, target="nope")
    op = IngestSnapshotOperator(task_id="ingest", config_path=str(config_path), ds=DS)
    with pytest.raises(ConfigError, match="target: 'nope' is not one of the columns"):
        op.execute(context={})


# --------------------------------------------------------------------------- credentials


def set_connection(monkeypatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "aws", **fields})
    )


@pytest.mark.parametrize(
    ("connection", "settings", "expected"),
    [
        pytest.param(
            {
                "login": "AKIAEXAMPLE",
                "password": "secret-key",
                "extra": {"endpoint_url": "http://conn:9000", "region_name": "eu-west-1"},
            },
            {"endpoint_url": "http://config:9000", "region_name": "us-east-2"},
            ("http://conn:9000", "eu-west-1", "AKIAEXAMPLE", "secret-key"),
            id="connection-extra-wins",
        ),
        pytest.param(
            {"login": "AKIAEXAMPLE", "password": "secret-key"},
            {"endpoint_url": "http://config:9000", "region_name": "us-east-2"},
            ("http://config:9000", "us-east-2", "AKIAEXAMPLE", "secret-key"),
            id="config-endpoint-fallback",
        ),
        pytest.param(
            {"extra": {"endpoint_url": "http://conn:9000"}},
            {},
            ("http://conn:9000", None, None, None),
            id="keys-from-default-chain",
        ),
    ],
)
def test_credentials_from_an_airflow_connection(monkeypatch, connection, settings, expected):
    set_connection(monkeypatch, "mlops_s3_test", **connection)
    creds = s3_credentials_for(S3Settings(aws_conn_id="mlops_s3_test", **settings))
    assert isinstance(creds, S3Credentials)
    got = (
        creds.endpoint_url,
        creds.region_name,
        creds.aws_access_key_id,
        creds.aws_secret_access_key,
    )
    assert got == expected


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param({}, None, id="nothing-configured"),
        pytest.param(
            {"endpoint_url": "http://127.0.0.1:9000"},
            S3Credentials(endpoint_url="http://127.0.0.1:9000"),
            id="endpoint-only",
        ),
        pytest.param(
            {"region_name": "eu-west-1", "max_attempts": 3},
            S3Credentials(region_name="eu-west-1", max_attempts=3),
            id="region-and-retries",
        ),
    ],
)
def test_credentials_without_a_connection(settings, expected):
    assert s3_credentials_for(S3Settings(**settings)) == expected


def test_missing_connection_names_the_config_key(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_NOT_DEFINED_ANYWHERE", raising=False)
    with pytest.raises(
        ConfigError, match=r"storage\.s3\.aws_conn_id: Airflow connection 'not_defined_anywhere'"
    ):
        s3_credentials_for(S3Settings(aws_conn_id="not_defined_anywhere"))


def test_local_dataset_needs_no_connection(tmp_path):
    # The connection does not exist: a local-only dataset must not look it up.
    path = dataset_config(
        tmp_path,
        storage={"root": str(tmp_path / "data"), "s3": {"aws_conn_id": "not_defined_anywhere"}},
    )
    assert dataset_s3_credentials(load_config(path)) is None


def test_s3_dataset_looks_up_its_connection(tmp_path, monkeypatch):
    set_connection(monkeypatch, "mlops_s3_test", login="AKIAEXAMPLE", password="secret-key")
    path = dataset_config(
        tmp_path, storage={"root": "s3://bucket/credit", "s3": {"aws_conn_id": "mlops_s3_test"}}
    )
    creds = dataset_s3_credentials(load_config(path))
    assert creds is not None and creds.aws_access_key_id == "AKIAEXAMPLE"


# --------------------------------------------------------------------------- lazy imports


def test_operator_package_imports_lazily():
    code = (
        "import sys\n"
        "import mlops_loop.operators as ops\n"
        "assert 'mlops_loop.operators.ingest' not in sys.modules\n"
        "assert 'airflow' not in sys.modules\n"
        "assert 'IngestSnapshotOperator' in dir(ops)\n"
        "try:\n"
        "    ops.NoSuchOperator\n"
        "except AttributeError as exc:\n"
        "    assert 'NoSuchOperator' in str(exc)\n"
        "else:\n"
        "    raise SystemExit('expected AttributeError')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_operator_module_has_no_heavy_top_level_imports():
    import ast

    import mlops_loop.operators.ingest as module

    tree = ast.parse(Path(module.__file__).read_text())
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.add(node.module.split(".")[0])
    assert top_level <= {"__future__", "collections", "typing", "airflow"}, top_level


# --------------------------------------------------------------------------- WaitForBatchSensor
# Only what a single call decides; waiting (rescheduling until the timeout, a batch that
# lands meanwhile) runs through dag.test() in tests/dags/test_ingest_dag.py.


def test_sensor_constructor_only_stores_values_and_reschedules_by_default(tmp_path):
    import inspect

    from mlops_loop.operators import WaitForBatchSensor

    params = inspect.signature(WaitForBatchSensor.__init__).parameters
    assert WaitForBatchSensor.template_fields == ("config_path", "ds")
    for name in WaitForBatchSensor.template_fields:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    op = WaitForBatchSensor(task_id="wait", config_path=str(tmp_path / "not-there.yaml"))
    assert (op.config_path, op.ds, op.mode) == (str(tmp_path / "not-there.yaml"), None, "reschedule")
    assert op.poke_interval_from_config and op.timeout_from_config
    explicit = WaitForBatchSensor(task_id="w", config_path="c.yaml", poke_interval=5, timeout=30, mode="poke")
    assert (explicit.poke_interval, explicit.timeout, explicit.mode) == (5, 30, "poke")
    assert not (explicit.poke_interval_from_config or explicit.timeout_from_config)


@pytest.mark.parametrize(
    ("on_missing", "ds", "raises", "message"),
    [
        pytest.param(
            "skip", None, AirflowSkipException, r"after waiting 0 minutes: .*\(source\.on_missing: skip\)", id="skip"
        ),
        pytest.param(
            "fail", None, "AirflowFailException", r"after waiting 0 minutes: .*\(source\.on_missing: fail\)", id="fail"
        ),
        pytest.param(
            "skip", DS, "AirflowFailException", "The date was given explicitly, so the run did not wait", id="explicit-date"
        ),
    ],
)
def test_sensor_with_no_batch_and_no_time_to_wait(tmp_path, on_missing, ds, raises, message):
    from airflow.sdk.exceptions import AirflowFailException

    from mlops_loop.operators import WaitForBatchSensor

    config_path = dataset_config(tmp_path, source={"on_missing": on_missing, "wait_timeout_minutes": 0})
    op = WaitForBatchSensor(task_id="wait", config_path=str(config_path), ds=ds, mode="poke")
    context = {"logical_date": datetime(2024, 4, 1, tzinfo=timezone.utc)}
    expected = AirflowFailException if raises == "AirflowFailException" else raises
    with pytest.raises(expected, match=message) as info:
        op.execute(context)
    looked_for = f"*.csv, *.csv.gz, *.csv.bz2 under {tmp_path / 'data' / 'raw' / f'ds={DS}'}"
    assert looked_for in str(info.value)


def test_sensor_passes_a_landed_batch_and_returns_its_files(tmp_path):
    from mlops_loop.operators import WaitForBatchSensor

    config_path = dataset_config(tmp_path)
    land_batch(generate_batch(DS, 20), tmp_path / "data", DS)
    op = WaitForBatchSensor(task_id="wait", config_path=str(config_path), ds=DS)
    out = op.execute({})
    assert (out["ds"], out["files"]) == (DS, ["part-000.csv"])
    # The config's wait settings are what the sensor used.
    assert (op.poke_interval, op.timeout) == (300, 360 * 60)
