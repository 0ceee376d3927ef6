"""The decision record of a champion/challenger evaluation: a JSON document and a
self-contained HTML page (inline CSS, plots as inline base64 PNG, no external resources).

Stored under ``{root}/reports/decisions/<decision_id>/`` as ``report.html`` then
``decision.json``; the JSON is written last and marks the record as complete. Each file
replaces its previous version atomically (on local disk: a synced temp file renamed into
place), so a write that fails, a full disk included, leaves that file as it was. The
decision id is deterministic (challenger version, champion version, holdout hash), so a
re-run of the same evaluation rewrites the same record instead of adding another.
Optionally both files are logged as MLflow artifacts of the challenger's run.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mlops_loop.core.storage import Storage, dump_json, join_uri, read_json

RECORD_VERSION = 1
MAX_CURVE_POINTS = 1000
MAX_SCATTER_POINTS = 3000
ARTIFACT_DIR = "decision"


@dataclass(frozen=True)
class CurveData:
    """What the plots need: holdout labels and both models' scores on the same rows.

    ``reference`` is the champion's scores, or the baseline's when there is no champion.
    """

    task: str
    y: ArrayLike
    challenger: ArrayLike
    reference: ArrayLike | None = None
    challenger_label: str = "challenger"
    reference_label: str = "champion"


def decisions_root(root_uri: str) -> str:
    """``<root>/reports/decisions``: every decision record of a dataset."""
    return join_uri(root_uri, "reports", "decisions")


def decision_dir(root_uri: str, decision_id: str) -> str:
    return join_uri(decisions_root(root_uri), decision_id)


# ------------------------------------------------------------------------------ plots


def _thin(*arrays: NDArray[Any], limit: int = MAX_CURVE_POINTS) -> list[NDArray[Any]]:
    n = arrays[0].shape[0]
    if n <= limit:
        return list(arrays)
    keep = np.unique(np.linspace(0, n - 1, limit).astype(int))
    return [a[keep] for a in arrays]


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _two_panels(
    curves: CurveData,
) -> tuple[NDArray[Any], Any, Any, list[tuple[str, ArrayLike, str]]]:
    """The labels, a two-panel figure, and (label, scores, colour) of each model to draw."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2))
    series = [(curves.challenger_label, curves.challenger, "#1f77b4")]
    if curves.reference is not None:
        series.append((curves.reference_label, curves.reference, "#d62728"))
    return np.asarray(curves.y, dtype=float), fig, fig.subplots(1, 2), series


def _classification_figure(curves: CurveData) -> str:
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    y, fig, (ax_roc, ax_pr), series = _two_panels(curves)
    for label, scores, color in series:
        s = np.asarray(scores, dtype=float)
        fpr, tpr, _ = roc_curve(y, s)
        fpr, tpr = _thin(fpr, tpr)
        ax_roc.plot(fpr, tpr, color=color, label=f"{label} (AUC {roc_auc_score(y, s):.3f})")
        precision, recall, _ = precision_recall_curve(y, s)
        recall, precision = _thin(recall, precision)
        ax_pr.step(
            recall,
            precision,
            where="post",
            color=color,
            label=f"{label} (AP {average_precision_score(y, s):.3f})",
        )
    ax_roc.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1)
    ax_roc.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title="ROC curve",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax_pr.axhline(y.mean(), color="#999999", linestyle=":", linewidth=1)
    ax_pr.set(
        xlabel="recall",
        ylabel="precision",
        title="Precision-recall curve",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    for ax in (ax_roc, ax_pr):
        ax.legend(loc="lower right" if ax is ax_roc else "upper right", fontsize=8)
        ax.grid(alpha=0.3)
    return _png(fig)


def _regression_figure(curves: CurveData) -> str:

    y, fig, (ax_hist, ax_scatter), series = _two_panels(curves)
    residuals = [y - np.asarray(s, dtype=float) for _, s, _ in series]
    lo, hi = np.percentile(np.concatenate(residuals), [0.5, 99.5])
    bins = np.linspace(lo, hi, 60) if hi > lo else 30
    rng = np.random.default_rng(0)
    pick = rng.choice(y.size, size=min(y.size, MAX_SCATTER_POINTS), replace=False)
    for (label, scores, color), res in zip(series, residuals, strict=True):
        rmse = float(np.sqrt(np.mean(res**2)))
        ax_hist.hist(
            res, bins=bins, histtype="step", color=color, label=f"{label} (RMSE {rmse:.3g})"
        )
        ax_scatter.scatter(
            y[pick], np.asarray(scores, dtype=float)[pick], s=4, alpha=0.4, color=color, label=label
        )
    ax_hist.axvline(0, color="#999999", linestyle=":")
    ax_hist.set(xlabel="residual (actual - predicted)", ylabel="rows", title="Residuals")
    lims = [float(np.min(y)), float(np.max(y))]
    ax_scatter.plot(lims, lims, color="#999999", linestyle=":")
    ax_scatter.set(
        xlabel="actual", ylabel="predicted", title=f"Predicted vs actual ({pick.size} rows)"
    )
    for ax in (ax_hist, ax_scatter):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _png(fig)


def render_plot(curves: CurveData) -> str:
    """Base64 PNG: ROC + PR curves (classification) or residuals (regression)."""
    if curves.task == "classification":
        return _classification_figure(curves)
    return _regression_figure(curves)


# ------------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
.badge{display:inline-block;padding:.25rem .7rem;border-radius:1rem;color:#fff;font-weight:600}
.promote{background:#2e7d32}.reject{background:#c62828}.insufficient_data{background:#ef6c00}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.3rem .6rem;text-align:left}th{background:#f5f5f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.passed{color:#2e7d32;font-weight:600}.failed{color:#c62828;font-weight:600}.skipped{color:#777}
.muted{color:#666;font-size:.85rem}img{max-width:100%}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return "n/a"
        return f"{value:.4f}" if isinstance(value, float) else str(value)
    return _e(value)


def _status(passed: Any) -> str:
    if passed is True or passed == "passed":
        return '<span class="passed">pass</span>'
    if passed is False or passed == "failed":
        return '<span class="failed">FAIL</span>'
    return f'<span class="skipped">{_e(passed)}</span>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return '<p class="muted">none configured</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(rows_cell for rows_cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(value: Any, numeric: bool = False) -> str:
    return f'<td class="num">{_num(value)}</td>' if numeric else f"<td>{_e(value)}</td>"


def render_html(
    decision: Mapping[str, Any],
    plot_png: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> str:
    """The readable page for a decision record (``Decision.to_dict()``)."""
    d = decision
    outcome = str(d.get("outcome", "unknown"))
    metric = d.get("primary_metric", "")
    direction = "higher is better" if d.get("higher_is_better") else "lower is better"
    title = f"Decision {d.get('decision_id', '')}: challenger {d.get('challenger_version') or '?'} vs {d.get('compared_against', '')}"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p><span class='badge {_e(outcome)}'>{_e(outcome.replace('_', ' ').upper())}</span> "
        f"<span class='muted'>{_e(d.get('n_rows'))} holdout rows · holdout sha256 {_e(d.get('holdout_sha256') or 'n/a')}</span></p>",
        "<h2>Reasons</h2><ul>"
        + "".join(f"<li>{_e(r)}</li>" for r in d.get("reasons", []))
        + "</ul>",
    ]
    if d.get("notes"):
        parts.append(
            "<ul class='muted'>" + "".join(f"<li>{_e(n)}</li>" for n in d["notes"]) + "</ul>"
        )
    test = d.get("test") or {}
    ci = f"[{_num(d.get('ci_low'))}, {_num(d.get('ci_high'))}]"
    conf = f"{float(d['confidence']):.0%}" if d.get("confidence") is not None else ""
    p_label = "p-value" if d.get("p_value") is not None else "P(challenger better)"
    parts.append(f"<h2>Primary metric: {_e(metric)} ({direction})</h2>")
    parts.append(
        _table(
            ["challenger", "reference", "improvement", f"{conf} CI", "margin", "test", p_label],
            [
                [
                    _td(d.get("challenger_value"), True),
                    _td(d.get("reference_value"), True),
                    _td(d.get("improvement"), True),
                    _td(ci),
                    _td(d.get("min_improvement"), True),
                    _td(test.get("name", d.get("method"))),
                    _td(
                        d.get("p_value") if d.get("p_value") is not None else d.get("p_better"),
                        True,
                    ),
                ]
            ],
        )
    )
    if test.get("name") == "paired_bootstrap":
        parts.append(
            f"<p class='muted'>{_e(test.get('n_resamples'))} paired resamples, "
            f"{_e(test.get('n_degenerate'))} degenerate; p = share of resamples where the challenger is better.</p>"
        )
    elif test.get("name") in ("delong", "paired_mean", "paired_root_mean"):
        parts.append(
            f"<p class='muted'>closed-form paired test ({_e(test.get('name'))}), standard error "
            f"{_num(test.get('se'))}; p = normal probability that the challenger is better.</p>"
        )
    if plot_png:
        parts.append("<h2>Challenger vs reference</h2>")
        parts.append(f"<img alt='comparison plots' src='data:image/png;base64,{plot_png}'>")
    parts.append("<h2>Guardrails</h2>")
    parts.append(
        _table(
            [
                "metric",
                "challenger",
                "reference",
                "regression (+ = worse)",
                "max regression",
                "result",
            ],
            [
                [
                    _td(g.get("name")),
                    _td(g.get("challenger"), True),
                    _td(g.get("reference"), True),
                    _td(g.get("regression"), True),
                    _td(g.get("max_regression"), True),
                    f"<td>{_status(g.get('passed'))}</td>",
                ]
                for g in d.get("guardrails", [])
            ],
        )
    )
    parts.append("<h2>Floors</h2>")
    parts.append(
        _table(
            ["metric", "challenger", "limit", "result"],
            [
                [
                    _td(f.get("metric")),
                    _td(f.get("challenger"), True),
                    _td(("min " + _num(f["min"])) if "min" in f else ("max " + _num(f.get("max")))),
                    f"<td>{_status(f.get('passed'))}</td>",
                ]
                for f in d.get("floors", [])
            ],
        )
    )
    parts.append("<h2>Slices</h2>")
    parts.append(
        _table(
            [
                "column",
                "value",
                "rows",
                f"challenger {metric}",
                f"reference {metric}",
                "regression (+ = worse)",
                "result",
            ],
            [
                [
                    _td(s.get("column")),
                    _td(s.get("value")),
                    _td(s.get("rows"), True),
                    _td(s.get("challenger"), True),
                    _td(s.get("reference"), True),
                    _td(s.get("regression"), True),
                    f"<td>{_status(s.get('status'))} <span class='muted'>{_e(s.get('note', ''))}</span></td>",
                ]
                for s in d.get("slices", [])
            ],
        )
    )
    parts.append("<h2>Budget</h2>")
    parts.append(
        _table(
            ["measure", "observed", "limit", "result"],
            [
                [
                    _td(b.get("name")),
                    _td(b.get("observed"), True),
                    _td(b.get("limit"), True),
                    f"<td>{_status(b.get('passed'))} <span class='muted'>{_e(b.get('note', ''))}</span></td>",
                ]
                for b in d.get("budget", [])
            ],
        )
    )
    if context:
        parts.append("<h2>Context</h2>")
        parts.append(
            _table(["key", "value"], [[_td(k), _td(v)] for k, v in sorted(context.items())])
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------- writing


def write_decision_record(
    storage: Storage,
    root_uri: str,
    decision: Any,
    curves_data: CurveData | None = None,
    *,
    context: Mapping[str, Any] | None = None,
    mlflow_client: Any | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Write ``report.html`` then ``decision.json`` (last: its presence marks a complete
    record) under ``{root_uri}/reports/decisions/<decision_id>/``; with ``mlflow_client``
    and ``run_id`` also log both as artifacts of that run under ``decision/``.

    ``decision`` is a compare.Decision or its ``to_dict()``; ``context`` is extra JSON
    (dataset, Airflow run, model name...) stored beside the decision. Returns
    ``{decision_id, json_uri, html_uri, artifact_path}``.
    """
    d: dict[str, Any] = decision.to_dict() if hasattr(decision, "to_dict") else dict(decision)
    decision_id = str(d.get("decision_id") or "")
    if not decision_id:
        raise ValueError("the decision has no decision_id")
    folder = decision_dir(root_uri, decision_id)
    json_uri, html_uri = join_uri(folder, "decision.json"), join_uri(folder, "report.html")
    plot = (
        render_plot(curves_data)
        if curves_data is not None and d.get("outcome") != "insufficient_data"
        else None
    )
    page = render_html(d, plot, context)
    record = {
        **d,
        "record_version": RECORD_VERSION,
        "context": dict(context or {}),
        "html_uri": html_uri,
    }
    # One write for the pair, the record last: a failed write (a full disk) leaves the
    # previous page and record as they were, never a new page beside an old record.
    storage.write_files([(html_uri, page.encode("utf-8")), (json_uri, dump_json(record))])
    artifact_path = None
    if mlflow_client is not None and run_id:
        artifact_path = f"{ARTIFACT_DIR}/{decision_id}"
        with tempfile.TemporaryDirectory(prefix="mlops-loop-decision-") as tmp:
            (Path(tmp) / "report.html").write_text(page, encoding="utf-8")
            (Path(tmp) / "decision.json").write_text(
                json.dumps(record, indent=2, sort_keys=True, default=str)
            )
            mlflow_client.log_artifacts(run_id, tmp, artifact_path=artifact_path)
    return {
        "decision_id": decision_id,
        "json_uri": json_uri,
        "html_uri": html_uri,
        "artifact_path": artifact_path,
    }


def read_decision_record(storage: Storage, json_uri: str) -> dict[str, Any]:
    """A stored decision record (what a promotion step reads back by URI)."""
    record: dict[str, Any] = read_json(storage, json_uri)
    if "outcome" not in record or "decision_id" not in record:
        raise ValueError(f"{json_uri} is not a decision record (no outcome/decision_id)")
    return record


# ---------------------------------------------------------------------------- reading


def as_decision(value: Any) -> dict[str, Any] | None:
    """A decision dict from what templating produced: a dict, its JSON text or its
    Python repr (a DAG without ``render_template_as_native_obj``); None when empty."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            import ast

            parsed = ast.literal_eval(value)
        if isinstance(parsed, dict):
            return parsed
    raise ValueError(
        f"decision must be a dict (the evaluate task's XCom), got {type(value).__name__}"
    )


def summarize(decision: Mapping[str, Any], promotion: Mapping[str, Any] | None) -> str:
    """One line for the log and the run's summary: what happened and where the record is."""
    name = decision.get("model_name", "model")
    challenger = decision.get("challenger_version")
    against = decision.get("expected_champion_version")
    reasons = "; ".join(map(str, decision.get("reasons") or [])) or "no reasons recorded"
    record = decision.get("html_uri") or decision.get("decision_uri") or "no record"
    outcome = (promotion or {}).get("outcome")
    if outcome == "promoted":
        head = f"{name}: promoted v{challenger} over {'v' + str(against) if against else 'the baseline (no champion)'}"
    elif outcome == "noop":
        head = f"{name}: v{challenger} already is champion; nothing changed"
    elif outcome == "stale":
        head = f"{name}: NOT promoted v{challenger}: {promotion.get('why') if promotion else ''}"
    else:
        head = f"{name}: {decision.get('outcome', 'rejected')} v{challenger}: {reasons}"
        return f"{head} (decision report {record})"
    return f"{head}: {reasons} (decision report {record})"


def approval_request(decision: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, Markdown body) asking a person to approve a ``promote`` decision: what
    would change, why the evaluation says so, and where the report is."""
    name = decision.get("model_name", "model")
    challenger = decision.get("challenger_version")
    against = decision.get("expected_champion_version")
    replaces = f"version {against}" if against else "no champion (first model)"
    subject = f"Promote {name} version {challenger} to champion?"
    reasons = "\n".join(f"- {r}" for r in decision.get("reasons") or []) or "- no reasons recorded"
    report = decision.get("html_uri") or decision.get("decision_uri") or "not written"
    body = (
        f"The evaluation decided **promote**: version {challenger} would replace {replaces}.\n\n"
        f"{reasons}\n\nDecision `{decision.get('decision_id')}`; report: `{report}`.\n\n"
        "Approve moves the champion only if it is still the version evaluated against "
        "(compare-and-set). Reject, or no answer before the timeout, changes nothing."
    )
    return subject, body
