"""core/drift_report.py: JSON shape, and an HTML page that is self-contained, well formed,
escapes data and shows what a reader needs (verdicts, table, charts, decay)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.config import DatasetConfig, DriftSettings
from mlops_loop.core.decay import measure_decay
from mlops_loop.core.drift import measure_drift
from mlops_loop.core.drift_report import COLOURS, bar_chart, cdf_chart, render_html, report_json
from mlops_loop.core.profile import build_profile

VOID = {"meta", "br", "img", "input", "link", "hr", "line", "rect", "polyline", "path", "circle"}


@pytest.fixture(scope="module")
def config() -> DatasetConfig:
    return DatasetConfig(
        name="toy",
        storage={"root": "/tmp/unused"},
        columns=[
            {"name": "x", "type": "float"},
            {"name": "n", "type": "integer"},
            {"name": "shop", "type": "category"},
            {"name": "y", "type": "integer"},
        ],
        target="y",
    )


def frame(n: int, seed: int, shift: float = 0.0, weird: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    shops = ["a", "b", "c"] + (["<script>alert(1)</script>"] if weird else [])
    return pd.DataFrame(
        {
            "x": rng.normal(shift, 1, n),
            "n": rng.poisson(3, n),
            "shop": rng.choice(shops, n),
            "y": (rng.random(n) < 0.3).astype(int),
        }
    )


@pytest.fixture(scope="module")
def drifted(config: DatasetConfig):
    rng = np.random.default_rng(0)
    profile = build_profile(frame(3000, 1), config, scores=rng.beta(2, 5, 2000))
    result = measure_drift(
        profile,
        frame(1500, 2, shift=0.8, weird=True),
        config,
        DriftSettings(min_rows=100),
        recent_scores=rng.beta(3, 4, 1500),
    )
    y = (rng.random(800) < 0.3).astype(int)
    decay = measure_decay(y, rng.random(800), {"roc_auc": 0.8}, DriftSettings(), "classification")
    return profile, result, decay


class TagChecker(HTMLParser):
    """Collects tags and checks that every non-void element is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def parse(page: str) -> TagChecker:
    checker = TagChecker()
    checker.feed(page)
    checker.close()
    return checker


def test_html_is_self_contained_and_well_formed(drifted) -> None:
    profile, result, decay = drifted
    page = render_html(result, decay, profile, meta={"ds": "2026-03-01", "champion": "v7"})
    checker = parse(page)
    assert checker.errors == [] and checker.stack == []
    tags = [t for t, _ in checker.tags]
    assert "script" not in tags and "link" not in tags and "img" not in tags
    for _, attrs in checker.tags:
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            assert not value or value.startswith("#"), (key, value)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_html_shows_verdicts_table_charts_and_decay(drifted) -> None:
    profile, result, decay = drifted
    page = render_html(result, decay, profile, meta={"ds": "2026-03-01"})
    assert result.verdict == "drift" and "x" in result.drifted_features
    assert COLOURS["drift"] in page and "2026-03-01" in page and "toy" in page
    # One section per feature plus the prediction scores, each with its bar chart;
    # numeric ones also with their CDF chart.
    for name in ("x", "n", "shop", "prediction"):
        assert f'id="f-{name}"' in page or (name == "prediction" and 'id="prediction"' in page)
    assert page.count("<svg") == 4 + 3  # bars for x, n, shop, prediction; CDFs for x, n, prediction
    assert "Live performance (decay)" in page and "roc_auc" in page and decay["verdict"] == "decay"
    # Worst first in the summary table.
    table = page.split("<h2>Features</h2>", 1)[1].split("</table>", 1)[0]
    assert table.index('href="#f-x"') < table.index('href="#f-n"')


def test_html_without_decay_prediction_or_enough_rows(config: DatasetConfig) -> None:
    profile = build_profile(frame(600, 3), config)
    result = measure_drift(profile, frame(50, 4), config, DriftSettings(min_rows=100))
    page = render_html(result, None, profile)
    assert parse(page).errors == []
    assert "insufficient data" in page and "Not measured" in page
    body = report_json(result, None, meta={"ds": "2026-03-02"})
    assert body["verdict"] == "insufficient_data" and body["decay_verdict"] is None
    json.dumps(body)


def test_report_json(drifted) -> None:
    _, result, decay = drifted
    body = report_json(result, decay, meta={"ds": "2026-03-01"})
    text = json.dumps(body, allow_nan=False)  # strict JSON: no NaN / Infinity
    assert json.loads(text)["drifted_features"] == result.drifted_features
    assert body["verdict"] == "drift" and body["decay_verdict"] == "decay"
    assert body["prediction_verdict"] == result.prediction_verdict
    assert any(r.startswith("decay:") for r in body["reasons"])
    assert {f["name"] for f in body["drift"]["features"]} == {"x", "n", "shop"}


def test_charts_scale_to_the_data() -> None:
    svg = bar_chart(["a", "b"], [0.5, 0.5], [0.25, 0.75], width=200, height=150)
    heights = [float(h) for h in re.findall(r'height="([\d.]+)" fill', svg)]
    assert heights[3] == pytest.approx(3 * heights[1], abs=0.2)  # current: 0.75 vs 0.25
    assert heights[0] == pytest.approx(heights[2])  # reference: 0.5 and 0.5
    line = cdf_chart([0.0, 1.0, 2.0], [0.2, 0.6, 1.0], [0.1, 0.5, 1.0])
    assert line.count("<polyline") == 2 and parse(line).errors == []


def test_write_reports_manifest_last_and_rerun_safe(drifted, tmp_path) -> None:
    from mlops_loop.core.drift_report import write_reports
    from mlops_loop.core.storage import LocalStorage

    profile, result, decay = drifted
    storage = LocalStorage()
    prefix = str(tmp_path / "reports" / "drift" / "ds=2026-03-01")
    uris = write_reports(storage, prefix, result, decay, profile, meta={"ds": "2026-03-01"})
    assert sorted(p.name for p in (tmp_path / "reports" / "drift" / "ds=2026-03-01").iterdir()) == [
        "manifest.json",
        "report.html",
        "report.json",
    ]
    manifest = json.loads(storage.read_text(uris["manifest"]))
    assert manifest["verdict"] == "drift" and manifest["files"] == ["report.json", "report.html"]
    first = storage.read_text(uris["json"])
    assert write_reports(storage, prefix, result, decay, profile, meta={"ds": "2026-03-01"}) == uris
    assert storage.read_text(uris["json"]) == first
    assert storage.read_text(uris["html"]).startswith("<!DOCTYPE html>")
