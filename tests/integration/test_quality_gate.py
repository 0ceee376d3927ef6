"""The quality gate with real Great Expectations on real snapshots.

Batches come from the sample generator, are landed as files and ingested by
``ingest_batch``; the gate then runs GE on the snapshot and writes to a local root (and,
in one test each way, an S3-compatible server on 127.0.0.1). Data is small so the whole
module stays quick; GE is imported once per process.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mlops_loop.core.config import DatasetConfig, load_config
from mlops_loop.core.ingest import ingest_batch
from mlops_loop.core.quality import (
    QualityResult,
    check_suite,
    load_suite,
    main,
    read_suite_file,
    run_suite,
    validate_snapshot,
)
from mlops_loop.core.snapshots import load_manifest, read_snapshot
from mlops_loop.core.storage import S3Credentials, S3Storage, sha256_file
from mlops_loop.core.training_set import validated_snapshots
from mlops_loop.exceptions import QualityGateFailed, QualitySuiteError
from mlops_loop_devtools.sample_data import generate_batch, land_batch

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CREDIT = REPO / "include" / "config" / "credit_default.yaml"
SHIPPED_SUITE = REPO / "include" / "expectations" / "credit_default.json"
ROWS = 800


def credit_config(
    root: Path | str, *, shipped_suite: bool = True, s3: dict[str, str] | None = None
) -> DatasetConfig:
    storage: dict[str, object] = {"root": str(root)}
    if s3 is not None:
        storage["s3"] = s3
    config = load_config(CREDIT, overrides={"storage": storage})
    if not shipped_suite:
        quality = config.quality.model_copy(update={"suite": None})
        config = config.model_copy(update={"quality": quality})
    return config


def land_and_ingest(config: DatasetConfig, root: Path, ds: str, **batch) -> tuple[str, list[Path]]:
    rows = batch.pop("rows", ROWS)
    df = generate_batch(ds, rows=rows, **batch)
    files = land_batch(df, root, ds)
    return ingest_batch(config, ds).snapshot_uri, files


def checksums(paths: list[Path]) -> dict[Path, str]:
    return {p: sha256_file(p) for p in paths}


# --------------------------------------------------------------------------- pass


@pytest.fixture(scope="module")
def passed(tmp_path_factory) -> tuple[DatasetConfig, Path, QualityResult]:
    root = tmp_path_factory.mktemp("pass")
    config = credit_config(root, shipped_suite=False)
    snapshot, _ = land_and_ingest(config, root, "2024-06-01")
    return config, root, validate_snapshot(config, snapshot)


def test_good_snapshot_passes_and_stores_result_and_data_docs(passed):
    config, root, result = passed
    sha = load_manifest(result.snapshot_uri)["sha256"]
    folder = root / "reports" / "quality" / "ds=2024-06-01" / sha[:16]
    assert result.success and result.quarantine_uri is None
    assert result.result_uri == str(folder / "result.json")
    assert result.docs_uri == str(folder / "data_docs" / "index.html")
    assert result.stats["rows"] == ROWS
    assert result.stats["unsuccessful"] == 0
    assert result.stats["evaluated"] == len(load_suite(config)["expectations"])
    stored = json.loads((folder / "result.json").read_text())
    assert stored["success"] is True
    assert stored["meta"]["mlops_loop"]["snapshot_uri"] == result.snapshot_uri
    assert result.summary.startswith("Quality gate PASSED for credit_default ds=2024-06-01")
    assert not (root / "quarantine").exists()
    # The snapshot joined the validated index that training sets are built from.
    (entry,) = validated_snapshots(config)
    assert (entry.ds, entry.sha256, entry.result_uri) == ("2024-06-01", sha, result.result_uri)


def test_data_docs_index_links_to_pages_that_exist(passed):
    _, _, result = passed
    index = Path(result.docs_uri)
    html = index.read_text()
    assert "<html" in html.lower()
    pages = set(re.findall(r"(?:expectations|validations)/[\w./-]+?\.html", html))
    assert any(p.startswith("validations/") for p in pages), pages
    assert any(p.startswith("expectations/") for p in pages), pages
    for page in pages:
        assert (index.parent / page).is_file(), page


def test_revalidating_the_same_snapshot_rewrites_the_same_place(passed):
    config, root, result = passed
    again = validate_snapshot(config, result.snapshot_uri, ds="2024-06-01")
    assert (again.result_uri, again.success) == (result.result_uri, True)
    assert len(list((root / "reports" / "quality").rglob("result.json"))) == 1


def test_ds_that_disagrees_with_the_snapshot_is_refused(passed):
    config, _, result = passed
    with pytest.raises(ValueError, match=r"ds=2024-06-01.*ds=2024-06-02"):
        validate_snapshot(config, result.snapshot_uri, ds="2024-06-02")


# --------------------------------------------------------------------------- fail


BAD_INPUTS = [
    pytest.param(
        {"corrupt": "missing_column"},
        "interest_rate",
        r"missing columns \['interest_rate'\]",
        id="missing-column",
    ),
    pytest.param(
        {"corrupt": "extra_column"},
        "(table)",
        r"unexpected columns \['internal_note'\]",
        id="extra-column",
    ),
    pytest.param(
        {"corrupt": "text_in_numeric"},
        "loan_amount",
        r"e\.g\. 'twelve thousand'",
        id="text-in-numeric",
    ),
    pytest.param(
        {"corrupt": "nulls_in_required"},
        "loan_amount",
        r"16 of 800 rows are null",
        id="nulls-in-required",
    ),
    pytest.param(
        {"corrupt": "out_of_range"},
        "age",
        r"between 18 and 100; 16 of 800 .*e\.g\. 1\d\d",
        id="out-of-range",
    ),
    pytest.param(
        {"corrupt": "unknown_category"},
        "home_ownership",
        r"e\.g\. 'SPACESHIP'",
        id="unknown-category",
    ),
    pytest.param(
        {"corrupt": "duplicate_ids"},
        "application_id",
        r"duplicated value .*e\.g\. '\d{8}-0000000'",
        id="duplicate-ids",
    ),
    pytest.param({"rows": 0}, "(table)", r"observed 0 rows, expected 500 to", id="zero-rows"),
    pytest.param(
        {"rows": 120}, "(table)", r"observed 120 rows, expected 500 to", id="too-few-rows"
    ),
]


@pytest.mark.parametrize(("batch", "column", "pattern"), BAD_INPUTS)
def test_bad_batch_is_quarantined_with_a_readable_summary(tmp_path, batch, column, pattern):
    config = credit_config(tmp_path)  # the shipped, reviewed suite
    ds = "2024-06-03"
    snapshot, raw_files = land_and_ingest(config, tmp_path, ds, **batch)
    before = checksums(raw_files)

    with pytest.raises(QualityGateFailed) as err:
        validate_snapshot(config, snapshot)

    exc = err.value
    sha = load_manifest(snapshot)["sha256"]
    quarantine = tmp_path / "quarantine" / f"ds={ds}" / sha[:16]
    assert exc.quarantine_uri == str(quarantine)
    assert exc.result_uri == str(quarantine / "result.json")
    assert exc.stats["unsuccessful"] >= 1
    # The summary: one readable line naming the column, with the evidence.
    assert str(exc) == exc.summary
    assert exc.summary.startswith(f"Quality gate FAILED for credit_default ds={ds}")
    lines = [line for line in exc.summary.splitlines() if line.startswith(f"- {column}")]
    assert lines, exc.summary
    assert any(re.search(pattern, line) for line in exc.summary.splitlines()[1:]), exc.summary
    # Quarantine holds a byte-identical copy of the landed batch, the result and the docs.
    copies = sorted((quarantine / "batch").iterdir())
    assert [p.name for p in copies] == [p.name for p in raw_files]
    assert [sha256_file(p) for p in copies] == [before[p] for p in raw_files]
    assert json.loads((quarantine / "result.json").read_text())["success"] is False
    assert (quarantine / "summary.txt").read_text().strip() == exc.summary
    assert (quarantine / "data_docs" / "index.html").is_file()
    assert validated_snapshots(credit_config(tmp_path)) == []
    # Landed data is untouched and still in place; nothing was reported as passed.
    assert checksums(raw_files) == before
    assert not (tmp_path / "reports" / "quality").exists()


def test_failed_result_can_be_returned_instead_of_raised(tmp_path):
    config = credit_config(tmp_path, shipped_suite=False)
    snapshot, _ = land_and_ingest(config, tmp_path, "2024-06-04", corrupt="out_of_range")
    result = validate_snapshot(config, snapshot, raise_on_failure=False)
    assert not result.success
    assert result.quarantine_uri and Path(result.result_uri).is_file()
    assert result.docs_uri.startswith(result.quarantine_uri)


# --------------------------------------------------------------------------- shipped suite


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> tuple[DatasetConfig, Path, dict]:
    root = tmp_path_factory.mktemp("shipped")
    config = credit_config(root)
    return config, root, load_suite(config)


def gate_passes(config: DatasetConfig, root: Path, suite: dict, ds: str, **batch) -> dict:
    snapshot, _ = land_and_ingest(config, root, ds, **batch)
    return run_suite(suite, read_snapshot(snapshot))


def test_config_points_at_the_shipped_suite(shipped):
    config, _, suite = shipped
    assert config.resolve_path(config.quality.suite) == str(SHIPPED_SUITE)
    assert suite == json.loads(SHIPPED_SUITE.read_text())
    sources = {e["meta"]["source"] for e in suite["expectations"]}
    assert sources == {"schema", "profile"}


@pytest.mark.parametrize(
    "ds", ["2024-07-01", "2024-08-15", "2024-09-30", "2025-01-01", "2025-02-28"]
)
def test_shipped_suite_passes_good_batches(shipped, ds):
    result = gate_passes(*shipped, ds, rows=2000)
    failed = [r["expectation_config"]["type"] for r in result["results"] if not r["success"]]
    assert result["success"], failed


def test_shipped_suite_passes_a_drifted_but_valid_batch(shipped):
    assert gate_passes(*shipped, "2024-10-10", rows=2000, drift=1.0)["success"]


def test_shipped_suite_catches_a_units_change(shipped):
    config, root, suite = shipped
    ds = "2024-10-11"
    df = generate_batch(ds, rows=1000)
    df["annual_income"] = df["annual_income"] * 1000
    land_batch(df, root, ds)
    result = run_suite(suite, read_snapshot(ingest_batch(config, ds).snapshot_uri))
    failed = {
        r["expectation_config"]["type"]
        for r in result["results"]
        if not r["success"] and r["expectation_config"]["kwargs"].get("column") == "annual_income"
    }
    assert "expect_column_mean_to_be_between" in failed


# --------------------------------------------------------------------------- suite files


@pytest.mark.parametrize(
    ("expectation", "message"),
    [
        pytest.param(
            {"type": "expect_column_values_to_be_purple", "kwargs": {"column": "age"}},
            r"bad\.json, expectation #1: unknown expectation type 'expect_column_values_to_be_purple'",
            id="unknown-type",
        ),
        pytest.param(
            {"type": "expect_column_values_to_be_between", "kwargs": {"min_value": 1}},
            r"bad\.json, expectation #1 \(expect_column_values_to_be_between\) has invalid kwargs",
            id="bad-kwargs",
        ),
        pytest.param(
            {"kwargs": {"column": "age"}}, r"bad\.json, expectation #1 has no 'type'", id="no-type"
        ),
    ],
)
def test_invalid_suite_file_names_file_and_expectation(tmp_path, expectation, message):
    good = {"type": "expect_column_to_exist", "kwargs": {"column": "age"}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "s", "expectations": [good, expectation]}))
    with pytest.raises(QualitySuiteError, match=message) as err:
        read_suite_file(path)
    assert err.value.suite_path == str(path)
    assert err.value.expectation == expectation.get("type")
    # The same error through the config that names the file.
    config = credit_config(tmp_path).model_copy(
        update={"quality": credit_config(tmp_path).quality.model_copy(update={"suite": str(path)})}
    )
    with pytest.raises(QualitySuiteError, match=message):
        load_suite(config)


def test_suggest_command_writes_a_valid_starter_suite(tmp_path):
    config_path = tmp_path / "credit.yaml"
    raw = CREDIT.read_text().replace("root: ../../.local/data/credit_default", f"root: {tmp_path}")
    config_path.write_text(raw)
    config = load_config(config_path)
    snapshots = [land_and_ingest(config, tmp_path, ds)[0] for ds in ("2024-05-01", "2024-05-02")]
    out = tmp_path / "suite.json"
    args = ["suggest", "--config", str(config_path), "--out", str(out)]
    for uri in snapshots:
        args += ["--snapshot", uri]
    assert main(args) == 0
    suite = check_suite(json.loads(out.read_text()), origin=str(out))
    profile = [e for e in suite["expectations"] if e["meta"]["source"] == "profile"]
    assert {e["type"] for e in profile} >= {
        "expect_column_mean_to_be_between",
        "expect_column_median_to_be_between",
    }
    assert suite["meta"]["mlops_loop"]["reference_rows"] == 2 * ROWS


# --------------------------------------------------------------------------- S3


def s3_config(bucket: str, s3_credentials: S3Credentials) -> DatasetConfig:
    s3 = {"endpoint_url": str(s3_credentials.endpoint_url), "region_name": "us-east-1"}
    return credit_config(f"{bucket}/credit_default", shipped_suite=False, s3=s3)


def land_on_s3(storage: S3Storage, bucket: str, tmp_path: Path, ds: str, **batch) -> list[str]:
    uris = []
    rows = batch.pop("rows", ROWS)
    for path in land_batch(generate_batch(ds, rows=rows, **batch), tmp_path, ds):
        uri = f"{bucket}/credit_default/raw/ds={ds}/{path.name}"
        storage.upload(path, uri)
        uris.append(uri)
    return uris


def test_gate_on_s3_pass_and_quarantine(tmp_path, s3_bucket, s3_credentials):
    storage = S3Storage(s3_credentials)
    config = s3_config(s3_bucket, s3_credentials)
    good, bad = "2024-06-10", "2024-06-11"
    land_on_s3(storage, s3_bucket, tmp_path / "good", good)
    raw = land_on_s3(storage, s3_bucket, tmp_path / "bad", bad, corrupt="unknown_category")
    raw_before = {u: storage.read_bytes(u) for u in raw}

    ok = validate_snapshot(
        config,
        ingest_batch(config, good, credentials=s3_credentials).snapshot_uri,
        credentials=s3_credentials,
    )
    assert ok.success and ok.result_uri.startswith(f"{s3_bucket}/credit_default/reports/quality/")
    assert json.loads(storage.read_text(ok.result_uri))["success"] is True
    assert storage.exists(ok.docs_uri)

    snapshot = ingest_batch(config, bad, credentials=s3_credentials).snapshot_uri
    with pytest.raises(QualityGateFailed, match="SPACESHIP") as err:
        validate_snapshot(config, snapshot, credentials=s3_credentials)
    quarantine = err.value.quarantine_uri
    assert quarantine.startswith(f"{s3_bucket}/credit_default/quarantine/ds={bad}/")
    for uri, data in raw_before.items():
        name = uri.rsplit("/", 1)[-1]
        assert storage.read_bytes(f"{quarantine}/batch/{name}") == data
        assert storage.read_bytes(uri) == data  # copied, not moved
    assert storage.exists(f"{quarantine}/result.json")


def test_chunked_gate_on_s3_pass_and_fail(tmp_path, s3_bucket, s3_credentials):
    """A batch above quality.chunk_rows on S3: its parts are fetched from the endpoint and
    validated chunked; a bad category is still caught and shown with its value."""
    storage = S3Storage(s3_credentials)
    base = s3_config(s3_bucket, s3_credentials)
    config = base.model_copy(
        update={
            "quality": base.quality.model_copy(update={"chunk_rows": 10_000}),
        }
    )
    good, bad = "2024-06-12", "2024-06-13"
    land_on_s3(storage, s3_bucket, tmp_path / "good", good, rows=25_000)
    land_on_s3(storage, s3_bucket, tmp_path / "bad", bad, rows=25_000, corrupt="unknown_category")

    ok = validate_snapshot(
        config,
        ingest_batch(config, good, credentials=s3_credentials).snapshot_uri,
        credentials=s3_credentials,
    )
    assert ok.success and ok.stats["chunked"] and ok.stats["rows"] == 25_000
    assert storage.exists(ok.docs_uri)

    snapshot = ingest_batch(config, bad, credentials=s3_credentials).snapshot_uri
    with pytest.raises(QualityGateFailed, match="SPACESHIP") as err:
        validate_snapshot(config, snapshot, credentials=s3_credentials)
    stored = json.loads(storage.read_text(f"{err.value.quarantine_uri}/result.json"))
    assert stored["meta"]["mlops_loop"]["stats"]["chunked"] is True


# --------------------------------------------------------------------------- operator


class TaskInstanceXComRecorder:
    """Stands in for the runtime task instance: records what the operator pushes."""

    def __init__(self, try_number: int = 1) -> None:
        self.pushed: dict[str, object] = {}
        self.try_number = try_number

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


def operator_context(try_number: int = 1) -> dict:
    from airflow.sdk.execution_time.context import OutletEventAccessors

    return {"ti": TaskInstanceXComRecorder(try_number), "outlet_events": OutletEventAccessors()}


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "credit.yaml"
    text = CREDIT.read_text().replace("root: ../../.local/data/credit_default", f"root: {tmp_path}")
    path.write_text(
        text.replace("suite: ../expectations/credit_default.json", f"suite: {SHIPPED_SUITE}")
    )
    return path


def test_operator_pass_returns_result_and_annotates_the_asset(tmp_path):
    from airflow.sdk import Asset

    from mlops_loop.operators import DataQualityOperator

    config_path = write_config(tmp_path)
    config = load_config(config_path)
    snapshot, _ = land_and_ingest(config, tmp_path, "2024-06-20")
    asset = Asset(
        name="mlops_loop.credit_default.validated", uri="mlops-loop://credit_default/validated"
    )
    op = DataQualityOperator(
        task_id="quality_gate",
        config_path=str(config_path),
        snapshot_uri=snapshot,
        ds="2024-06-20",
        outlets=[asset],
    )
    context = operator_context()
    payload = op.execute(context)
    assert payload["success"] is True
    assert json.loads(json.dumps(payload)) == payload
    assert context["outlet_events"][asset].extra == {
        "dataset": "credit_default",
        "ds": "2024-06-20",
        "snapshot_uri": snapshot,
        "sha256": load_manifest(snapshot)["sha256"],
        "result_uri": payload["result_uri"],
    }
    assert context["ti"].pushed == {}


def test_operator_without_a_date_checks_the_run_date(tmp_path):
    from datetime import datetime, timezone

    from mlops_loop.operators import DataQualityOperator

    config_path = write_config(tmp_path)
    snapshot, _ = land_and_ingest(load_config(config_path), tmp_path, "2024-06-22")
    op = DataQualityOperator(task_id="quality_gate", config_path=str(config_path), snapshot_uri=snapshot)
    context = operator_context()
    context["logical_date"] = datetime(2024, 6, 22, tzinfo=timezone.utc)
    assert op.execute(context)["ds"] == "2024-06-22"


def test_operator_fail_pushes_result_and_raises_the_summary(tmp_path):
    from mlops_loop.operators import DataQualityOperator

    config_path = write_config(tmp_path)
    snapshot, _ = land_and_ingest(
        load_config(config_path), tmp_path, "2024-06-21", corrupt="duplicate_ids"
    )
    op = DataQualityOperator(
        task_id="quality_gate", config_path=str(config_path), snapshot_uri=snapshot, ds="2024-06-21"
    )
    context = operator_context()
    with pytest.raises(QualityGateFailed, match="application_id") as err:
        op.execute(context)
    pushed = context["ti"].pushed["quality_result"]
    assert pushed["success"] is False
    assert pushed["quarantine_uri"] == err.value.quarantine_uri
    assert pushed["summary"] == str(err.value)


def test_operator_template_fields_match_constructor():
    import inspect

    from mlops_loop.operators import DataQualityOperator

    params = inspect.signature(DataQualityOperator.__init__).parameters
    assert DataQualityOperator.template_fields == ("config_path", "snapshot_uri", "ds")
    for name in DataQualityOperator.template_fields:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    op = DataQualityOperator(
        task_id="q", config_path="{{ params.c }}", snapshot_uri="{{ params.s }}", ds="{{ ds }}"
    )
    op.render_template_fields({"ds": "2024-01-01", "params": {"c": "/c.yaml", "s": "/snap"}})
    assert (op.config_path, op.snapshot_uri, op.ds) == ("/c.yaml", "/snap", "2024-01-01")


# --------------------------------------------------------------------------- idempotent events


def gate(config_path: Path, snapshot: str, ds: str):
    from airflow.sdk import Asset

    from mlops_loop.operators import DataQualityOperator

    asset = Asset(name="mlops_loop.credit_default.validated", uri="mlops-loop://credit_default/validated")
    op = DataQualityOperator(
        task_id="quality_gate", config_path=str(config_path), snapshot_uri=snapshot, ds=ds, outlets=[asset]
    )
    return op, asset


def test_operator_skips_a_snapshot_already_validated_for_the_date(tmp_path, capfd):
    from airflow.sdk.exceptions import AirflowSkipException

    config_path = write_config(tmp_path)
    config = load_config(config_path)
    ds = "2024-06-23"
    snapshot, _ = land_and_ingest(config, tmp_path, ds)
    op, asset = gate(config_path, snapshot, ds)
    first = op.execute(operator_context())
    assert first["success"] is True

    # The same landed files again (a re-run of the date): skipped, so no Asset event.
    context = operator_context()
    capfd.readouterr()
    with pytest.raises(AirflowSkipException, match="already validated") as skip:
        op.execute(context)
    assert f"of credit_default ds={ds}" in str(skip.value) and str(skip.value).endswith("no new event")
    assert str(skip.value) in capfd.readouterr().out  # the task log says so
    assert not context["outlet_events"][asset].extra
    stored = context["ti"].pushed["quality_result"]
    assert (stored["success"], stored["result_uri"], stored["sha256"]) == (True, first["result_uri"], first["sha256"])
    assert stored["summary"].startswith("Quality gate PASSED for credit_default ds=2024-06-23")

    # A retry of the same task instance validates again and emits (its first try may have
    # recorded the pass and died before the event went out).
    retry = operator_context(try_number=2)
    assert op.execute(retry)["success"] is True
    assert retry["outlet_events"][asset].extra["sha256"] == first["sha256"]


def test_a_changed_batch_passes_emits_and_supersedes_the_old_snapshot(tmp_path):
    import shutil

    config_path = write_config(tmp_path)
    config = load_config(config_path)
    ds = "2024-06-24"
    old_snapshot, _ = land_and_ingest(config, tmp_path, ds)
    op, _ = gate(config_path, old_snapshot, ds)
    old = op.execute(operator_context())

    # The source re-lands the date with different rows.
    shutil.rmtree(tmp_path / "raw" / f"ds={ds}")
    new_snapshot, _ = land_and_ingest(config, tmp_path, ds, rows=500)
    assert new_snapshot != old_snapshot
    op, asset = gate(config_path, new_snapshot, ds)
    context = operator_context()
    new = op.execute(context)
    assert context["outlet_events"][asset].extra["sha256"] == new["sha256"] != old["sha256"]
    (current,) = validated_snapshots(config, since_ds=ds, until_ds=ds)
    assert (current.sha256, current.rows) == (new["sha256"], 500)

    # The old files land again: that snapshot is no longer the date's, so it passes,
    # emits, and supersedes the second one.
    op, asset = gate(config_path, old_snapshot, ds)
    context = operator_context()
    assert op.execute(context)["sha256"] == old["sha256"]
    assert context["outlet_events"][asset].extra["sha256"] == old["sha256"]
    assert [e.sha256 for e in validated_snapshots(config)] == [old["sha256"]]


# --------------------------------------------------------------------------- readable logs


def test_gate_log_has_no_library_noise_and_ends_with_the_summary(tmp_path):
    import logging
    import subprocess
    import sys

    # Great Expectations logs most of its noise while it is imported: run in a fresh
    # interpreter so the import happens inside the task, as on a worker.
    config_path = write_config(tmp_path)
    snapshot, _ = land_and_ingest(load_config(config_path), tmp_path, "2024-06-25", corrupt="duplicate_ids")
    code = f"""
import json, logging, sys
from airflow.sdk.execution_time.context import OutletEventAccessors
from mlops_loop.exceptions import QualityGateFailed
from mlops_loop.operators import DataQualityOperator
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append([record.name, record.levelname, record.getMessage()])
logging.getLogger().addHandler(Keep())
logging.getLogger().setLevel(logging.INFO)
class TI:
    try_number = 1
    def xcom_push(self, key, value):
        pass
op = DataQualityOperator(task_id="quality_gate", config_path={str(config_path)!r},
                         snapshot_uri={snapshot!r}, ds="2024-06-25")
try:
    op.execute({{"ti": TI(), "outlet_events": OutletEventAccessors()}})
except QualityGateFailed as exc:
    summary = str(exc)
print(json.dumps({{"records": records, "summary": summary,
                  "levels": [logging.getLogger(n).level for n in ("great_expectations", "botocore")]}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    records, summary = out["records"], out["summary"]
    noisy = [r for r in records if r[0].startswith("great_expectations") and r[1] in ("DEBUG", "INFO")]
    assert noisy == [], noisy[:5]
    assert summary.startswith("Quality gate FAILED for credit_default ds=2024-06-25")
    assert "application_id" in summary
    # The last thing logged is the readable summary (then the task fails with it).
    assert records[-1][2] == summary, records[-3:]
    # The levels are put back after the task.
    assert out["levels"] == [logging.NOTSET, logging.NOTSET]
