"""PromotionApprovalOperator without a deployment: when it does not wait, what it asks,
and the arguments it refuses. The waiting path (answers through the REST API, a timeout,
an answer given twice) runs on a real Airflow deployment in tests/stack/."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops_loop.core.config import load_config
from mlops_loop.core.decision_report import approval_request
from mlops_loop.exceptions import ConfigError
from mlops_loop.operators.approval import PromotionApprovalOperator
from tests.fixtures.decisions import decision_dict

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "include" / "config" / "credit_default.yaml"


def config_with(tmp_path: Path, **evaluation: object) -> str:
    raw = yaml.safe_load(CONFIG.read_text())
    raw.setdefault("evaluation", {}).update(evaluation)
    raw["storage"]["root"] = str(tmp_path / "data")
    raw.setdefault("quality", {}).pop("suite", None)
    path = tmp_path / "credit_default.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def approval_op(config_path: str, decision: dict) -> PromotionApprovalOperator:
    return PromotionApprovalOperator(
        task_id="approve_promotion", config_path=config_path, decision=decision
    )


@pytest.mark.parametrize(
    ("approval", "outcome", "expected"),
    [
        pytest.param("none", "promote", "not_required", id="approval-off"),
        pytest.param("required", "reject", "not_needed", id="rejected-decision"),
        pytest.param("required", "insufficient_data", "not_needed", id="insufficient-data"),
    ],
)
def test_returns_at_once_without_waiting(tmp_path, approval, outcome, expected):
    op = approval_op(config_with(tmp_path, approval=approval), decision_dict(outcome))
    result = op.execute({})  # the waiting path would need a task instance in the context
    assert result == {"approval": expected, "by": None, "at": None, "decision_id": "abc"}


def test_default_config_needs_no_approval():
    assert load_config(CONFIG).evaluation.approval == "none"


@pytest.mark.parametrize(
    ("evaluation", "match"),
    [
        pytest.param({"approval": "maybe"}, r"evaluation\.approval", id="unknown-mode"),
        pytest.param({"approval_timeout_hours": 0}, r"evaluation\.approval_timeout_hours", id="zero-timeout"),
    ],
)
def test_bad_approval_settings_fail_at_load(tmp_path, evaluation, match):
    with pytest.raises(ConfigError, match=match):
        load_config(config_with(tmp_path, **evaluation))


@pytest.mark.parametrize("argument", ["defaults", "response_timeout"])
def test_timeout_and_defaults_come_from_the_config(argument):
    with pytest.raises(ValueError, match=f"{argument} is not an argument here"):
        PromotionApprovalOperator(
            task_id="a", config_path=str(CONFIG), decision={}, **{argument: None}
        )


def test_request_says_what_changes_and_where_the_report_is():
    subject, body = approval_request(decision_dict())
    assert subject == "Promote m version 2 to champion?"
    assert "version 2 would replace version 1" in body
    assert "- roc_auc 0.80 vs 0.70" in body.splitlines()
    assert "/data/reports/decisions/abc/report.html" in body
    first_model = approval_request(decision_dict(expected_champion_version=None))[1]
    assert "would replace no champion (first model)" in first_model
