"""Decision record: JSON + self-contained HTML written under reports/decisions/<id>/."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from mlops_loop.core import compare
from mlops_loop.core.config import EvaluationSettings
from mlops_loop.core.decision_report import (
    CurveData,
    as_decision,
    decision_dir,
    decisions_root,
    render_html,
    summarize,
    write_decision_record,
)
from mlops_loop.core.storage import LocalStorage
from tests.fixtures.decisions import decision_dict

SETTINGS = EvaluationSettings(
    n_bootstrap=200,
    min_holdout_rows=100,
    guardrails=[{"metric": "brier", "max_regression": 0.01}],
    slice_columns=["region"],
    slice_min_rows=50,
    floors={"roc_auc": 0.6},
)


def _holdout(n: int = 1500, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    shared = rng.normal(size=n)
    good = 1 / (1 + np.exp(-(1.4 * (2 * y - 1) + shared)))
    weak = 1 / (1 + np.exp(-(0.5 * (2 * y - 1) + shared)))
    region = rng.choice(["north", "south", "tiny"], size=n, p=[0.55, 0.43, 0.02])
    return y, good, weak, region


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]


def test_classification_record_is_written_with_plots_and_tables(tmp_path):
    y, good, weak, region = _holdout()
    decision = compare.decide(
        y, good, weak, SETTINGS, slices={"region": region},
        challenger_version="5", champion_version="4", holdout_sha256="ab" * 32,
        notes=["note with <b>markup</b>"],
    )  # fmt: skip
    storage = LocalStorage()
    root = str(tmp_path / "credit_default")
    out = write_decision_record(
        storage, root, decision,
        CurveData("classification", y, good, weak, "challenger v5", "champion v4"),
        context={"airflow_run": "train/manual__2026-11-23", "model": "credit_default"},
    )  # fmt: skip

    folder = decision_dir(root, decision.decision_id)
    assert out["json_uri"] == f"{folder}/decision.json" and out["html_uri"] == f"{folder}/report.html"
    record = json.loads((tmp_path / "credit_default" / "reports" / "decisions" / decision.decision_id / "decision.json").read_text())
    assert record["outcome"] == "promote" and record["decision_id"] == decision.decision_id
    assert record["compared_against"] == "champion:4"
    assert record["context"]["airflow_run"] == "train/manual__2026-11-23"
    assert {s["value"] for s in record["slices"]} == {"north", "south", "tiny"}

    page = storage.read_text(out["html_uri"])
    assert "PROMOTE" in page and "challenger 5 vs champion:4" in page
    assert "&lt;b&gt;markup&lt;/b&gt;" in page and "<b>markup</b>" not in page  # escaped
    assert "<td>north</td>" in page and "<td>brier</td>" in page and "airflow_run" in page
    assert "http://" not in page and "https://" not in page  # self-contained
    (png,) = _images(page)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    (tmp_path / "plot.png").write_bytes(png)


def test_rerun_rewrites_the_same_record(tmp_path):
    y, good, weak, region = _holdout()
    kwargs = dict(challenger_version="5", champion_version="4", holdout_sha256="cd" * 32)
    first = compare.decide(y, good, weak, SETTINGS, slices={"region": region}, **kwargs)
    second = compare.decide(y, good, weak, SETTINGS, slices={"region": region}, **kwargs)
    root = str(tmp_path)
    a = write_decision_record(LocalStorage(), root, first)
    text = (tmp_path / "reports" / "decisions" / first.decision_id / "decision.json").read_text()
    b = write_decision_record(LocalStorage(), root, second)
    assert a == b
    assert (tmp_path / "reports" / "decisions" / first.decision_id / "decision.json").read_text() == text
    assert len(list((tmp_path / "reports" / "decisions").iterdir())) == 1


def test_regression_record_has_residual_plot(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.normal(size=800) * 2
    challenger, champion = y + rng.normal(size=800) * 0.5, y + rng.normal(size=800)
    decision = compare.decide(
        y, challenger, champion, EvaluationSettings(primary_metric="rmse", n_bootstrap=200, min_holdout_rows=100),
        challenger_version="2", champion_version="1",
    )  # fmt: skip
    out = write_decision_record(LocalStorage(), str(tmp_path), decision, CurveData("regression", y, challenger, champion))
    page = LocalStorage().read_text(out["html_uri"])
    assert "rmse" in page and len(_images(page)) == 1


def test_insufficient_data_record_has_no_plot_and_says_why(tmp_path):
    y, good, weak, _ = _holdout(60)
    decision = compare.decide(y, good, weak, SETTINGS, challenger_version="3")
    out = write_decision_record(LocalStorage(), str(tmp_path), decision, CurveData("classification", y, good, weak))
    page = LocalStorage().read_text(out["html_uri"])
    assert "INSUFFICIENT DATA" in page and "min_holdout_rows=100" in page
    assert _images(page) == []


def test_a_full_disk_leaves_no_record_and_the_previous_one_intact(tmp_path, monkeypatch):
    """Fault injection at the disk: writing the page fails (ENOSPC), so no decision.json
    may appear; a record written earlier in the same folder stays byte-identical."""
    import errno

    from mlops_loop.core import storage as storage_module

    y, good, weak, region = _holdout()
    decision = compare.decide(y, good, weak, SETTINGS, slices={"region": region}, challenger_version="9")
    storage = LocalStorage()
    out = write_decision_record(storage, str(tmp_path), decision)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    real = storage_module._write_durably

    def full_disk(path, data, uri):
        if uri.endswith("report.html"):
            raise storage_module._write_error(uri, OSError(errno.ENOSPC, "No space left on device"))
        real(path, data, uri)

    monkeypatch.setattr(storage_module, "_write_durably", full_disk)
    with pytest.raises(Exception, match="no space left on device"):
        write_decision_record(storage, str(tmp_path), decision, context={"attempt": 2})
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert out["json_uri"].endswith("decision.json")

    fresh = tmp_path / "fresh"
    with pytest.raises(Exception, match="no space left on device"):
        write_decision_record(storage, str(fresh), decision)
    assert not list(fresh.rglob("decision.json"))


def test_render_html_escapes_reasons():
    page = render_html({"outcome": "reject", "reasons": ["<script>alert(1)</script>"], "decision_id": "x"})
    assert "<script>alert" not in page and "&lt;script&gt;" in page


def test_read_decision_record_round_trip(tmp_path):
    from mlops_loop.core.decision_report import read_decision_record

    y, good, weak, region = _holdout()
    decision = compare.decide(y, good, weak, SETTINGS, slices={"region": region}, challenger_version="5")
    out = write_decision_record(LocalStorage(), str(tmp_path), decision)
    record = read_decision_record(LocalStorage(), out["json_uri"])
    assert record["outcome"] == decision.outcome and record["html_uri"] == out["html_uri"]
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not a decision record"):
        read_decision_record(LocalStorage(), str(tmp_path / "other.json"))


def test_record_lands_under_the_decisions_root(tmp_path):
    y, good, weak, region = _holdout()
    decision = compare.decide(y, good, weak, SETTINGS, slices={"region": region}, challenger_version="5")
    root = str(tmp_path / "credit_default")

    out = write_decision_record(LocalStorage(), root, decision)

    folder = decision_dir(root, decision.decision_id)
    assert folder.startswith(decisions_root(root) + "/")
    assert out["json_uri"] == f"{folder}/decision.json"
    record = json.loads(LocalStorage().read_text(out["json_uri"]))
    assert record["html_uri"] == out["html_uri"] == f"{folder}/report.html"


# --- reading a decision back, and its one-line summary --------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"outcome": "reject"}, {"outcome": "reject"}, id="dict"),
        pytest.param('{"outcome": "promote"}', {"outcome": "promote"}, id="json-text"),
        pytest.param(
            "{'outcome': 'promote', 'x': None}", {"outcome": "promote", "x": None}, id="python-repr"
        ),
        pytest.param("", None, id="empty-string"),
        pytest.param(None, None, id="none"),
    ],
)
def test_as_decision(value, expected):
    assert as_decision(value) == expected


def test_as_decision_rejects_a_list():
    with pytest.raises(ValueError, match="must be a dict"):
        as_decision("[1, 2]")


@pytest.mark.parametrize(
    ("promotion", "expected"),
    [
        pytest.param({"outcome": "promoted"}, "m: promoted v2 over v1: roc_auc", id="promoted"),
        pytest.param({"outcome": "noop"}, "already is champion", id="noop"),
        pytest.param(
            {"outcome": "stale", "why": "champion is now 3"},
            "NOT promoted v2: champion is now 3",
            id="stale",
        ),
        pytest.param(
            {"outcome": "rejected"}, "m: promote v2: roc_auc", id="rejected-shows-decision"
        ),
    ],
)
def test_summarize(promotion, expected):
    line = summarize(decision_dict(), promotion)
    assert expected in line
    assert "report.html" in line


def test_summarize_first_model_names_the_baseline():
    line = summarize(decision_dict(expected_champion_version=None), {"outcome": "promoted"})
    assert "over the baseline" in line
