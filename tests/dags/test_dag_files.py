"""Every DAG file parses without errors and without heavy imports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
HEAVY = ["pandas", "numpy", "pyarrow", "mlflow", "great_expectations", "sklearn", "torch", "scipy", "boto3"]
# Tasks that must not retry; each DAG's doc says why.
NO_RETRY = {("mlops_rollback__credit_default", "rollback_champion")}
# A template only looks values up; defaults and fallbacks are the operators' business.
# The one filter allowed is ``as_text`` (dag_configs.form_text): it keeps free text text.
JINJA_LOGIC = re.compile(r"\b(or|and|if|else|not|is)\b|dict\(|\|")
AS_TEXT = re.compile(r"\s*\|\s*as_text\s*$")


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags


def test_dagbag_has_no_import_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    assert "mlops_ingest__credit_default" in bag.dag_ids
    for dag_id in bag.dag_ids:
        dag = bag.get_dag(dag_id)
        assert dag.doc_md, f"{dag_id} has no doc_md"
        assert "mlops_loop" in dag.tags


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_imports_nothing_heavy(dag_file):
    code = (
        "import json, runpy, sys\n"
        f"runpy.run_path({str(dag_file)!r})\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"{dag_file.name} imports {loaded} at parse time"


def test_core_imports_no_airflow():
    code = (
        "import importlib, pkgutil, sys\n"
        "import mlops_loop.core as core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'mlops_loop.core.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(k for k in sys.modules if k == 'airflow' or k.startswith('airflow.')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_tasks_retry_with_backoff_unless_a_retry_is_unsafe(dags):
    for dag_id, dag in dags.items():
        assert "retr" in dag.doc_md.lower(), f"{dag_id}'s doc does not say how its tasks retry"
        for task in dag.tasks:
            where = f"{dag_id}.{task.task_id}"
            if (dag_id, task.task_id) in NO_RETRY:
                assert task.retries == 0, where
                continue
            assert task.retries == 2, where
            assert task.retry_exponential_backoff == 2.0, where
            assert task.retry_delay.total_seconds() == 60, where
            assert task.max_retry_delay.total_seconds() == 600, where
            assert task.retry_policy is not None, f"{where}: data errors would be retried"


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def test_templates_hold_lookups_not_logic(dags):
    for dag_id, dag in dags.items():
        for task in dag.tasks:
            for field in task.template_fields:
                for text in _strings(getattr(task, field, None)):
                    for expression in re.findall(r"{{(.*?)}}", text):
                        expression = AS_TEXT.sub(" ", expression)
                        assert not JINJA_LOGIC.search(expression), (
                            f"{dag_id}.{task.task_id}.{field} has logic in Jinja: {expression!r}"
                        )


def test_an_empty_form_field_reaches_the_operator_as_none(dags):
    # Native rendering: the operator sees None (and uses its default), not the text "None".
    checked = 0
    for dag_id, dag in dags.items():
        params = dag.params.dump()
        for task in dag.tasks:
            for field in task.template_fields:
                value = getattr(task, field, None)
                lookup = (
                    re.fullmatch(r"{{ params\.(\w+)(?: \| as_text)? }}", value)
                    if isinstance(value, str)
                    else None
                )
                if lookup and params[lookup.group(1)] is None:
                    rendered = task.render_template(value, {"params": params}, dag.get_template_env())
                    assert rendered is None, f"{dag_id}.{task.task_id}.{field} renders {rendered!r}"
                    checked += 1
    assert checked >= 9  # each optional field of every DAG (one per dataset config)


def test_trigger_forms_offer_no_null_option_and_defaults_fit_their_fields(dags):
    # The form shows a None enum entry as a literal "null" option; a default that fails
    # its own schema makes the untouched form (or a trigger without conf) invalid.
    from airflow.sdk.definitions._internal.types import is_arg_set
    from jsonschema import FormatChecker, validate

    checked = 0
    for dag_id, dag in dags.items():
        for name, param in dag.params.items():
            where = f"{dag_id} param {name}"
            schema = param.schema
            enum = schema.get("enum")
            if enum is not None:
                assert None not in enum, f"{where}: None in its enum shows as a 'null' option"
                labels = schema.get("values_display") or {}
                for value in enum:
                    label = labels.get(value, value)
                    assert str(label).strip() not in ("", "null", "None"), f"{where}: option {value!r} reads {label!r}"
            if is_arg_set(param.value):
                validate(param.value, schema, format_checker=FormatChecker())
            else:
                # A field without a default is required: only manual DAGs may have one.
                assert dag.timetable.can_be_scheduled is False, f"{where} has no default on a scheduled DAG"
            checked += 1
    assert checked >= 10


def test_an_optional_choice_reads_naturally():
    from jsonschema import ValidationError, validate

    from mlops_loop.dag_configs import choice_param

    param = choice_param(["mlp", "hist_gradient_boosting"], default_label="As configured", title="T", description="D")
    assert param.value == ""
    assert param.schema["enum"] == ["", "mlp", "hist_gradient_boosting"]
    assert param.schema["values_display"][""] == "As configured"
    for value in ("", "mlp"):
        validate(value, param.schema)
    with pytest.raises(ValidationError, match="'xgboost' is not one of"):
        validate("xgboost", param.schema)
    with pytest.raises(ValueError, match="non-empty values"):
        choice_param(["", "mlp"], default_label="x", title="T", description="D")
