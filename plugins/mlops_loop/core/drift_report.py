"""Drift report: JSON for machines, one self-contained HTML page for people.

The HTML has no external resources (inline CSS, inline SVG charts, no scripts), so it can
be opened from S3, attached to an MLflow run or mailed as is. Top to bottom: verdicts and
reasons, the summary table (worst first), prediction scores, decay, then one section per
feature with reference vs current bin shares (the PSI bins) and, for numeric features, the
two CDFs (what KS compares).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlops_loop.core.drift import DriftResult, FeatureDrift

if TYPE_CHECKING:
    from mlops_loop.core.storage import Storage

REPORT_FORMAT = 1
COLOURS = {
    "none": "#2e7d32",
    "warn": "#b26a00",
    "drift": "#c62828",
    "decay": "#c62828",
    "insufficient_data": "#616161",
    "not measured": "#9e9e9e",
}
REFERENCE_COLOUR = "#90a4ae"
CURRENT_COLOUR = "#1565c0"
_RANK = {"drift": 0, "warn": 1, "insufficient_data": 2, "none": 3}


def report_json(
    result: DriftResult, decay: dict[str, Any] | None, *, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The whole report as JSON-ready data (what the HTML shows, and more)."""
    drift = result.to_dict()
    return {
        "format": REPORT_FORMAT,
        "meta": dict(meta or {}),
        "verdict": result.verdict,
        "decay_verdict": decay.get("verdict") if decay else None,
        "prediction_verdict": result.prediction_verdict,
        "drifted_features": list(result.drifted_features),
        "warned_features": list(result.warned_features),
        "reasons": list(result.reasons)
        + ([f"decay: {decay['reason']}"] if decay and decay.get("reason") else []),
        "drift": drift,
        "decay": json.loads(json.dumps(decay, default=float)) if decay else None,
    }


# --------------------------------------------------------------------------- formatting


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "&ndash;"
    x = float(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e6):
        return f"{x:.2e}"
    return f"{x:.{digits}f}"


def _pct(x: Any) -> str:
    return "&ndash;" if x is None else f"{100 * float(x):.1f}%"


def _pill(verdict: str | None) -> str:
    label = verdict or "not measured"
    colour = COLOURS.get(label, "#616161")
    return f'<span class="pill" style="background:{colour}">{_e(label.replace("_", " "))}</span>'


# --------------------------------------------------------------------------- charts (SVG)


def bar_chart(
    labels: Sequence[str],
    reference: Sequence[float],
    current: Sequence[float],
    *,
    width: int = 640,
    height: int = 210,
) -> str:
    """Grouped bars of reference vs current shares per bin, as an inline SVG."""
    n = max(len(labels), 1)
    left, right, top, bottom = 44, 10, 12, 58
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([*reference, *current, 1e-9])
    scale = plot_h / peak
    slot = plot_w / n
    bar = max(min(slot * 0.38, 28.0), 1.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="#999"/>',
    ]
    for frac in (0.5, 1.0):
        y = top + plot_h - frac * peak * scale
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#eee"/>'
        )
        parts.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" class="tick">{100 * frac * peak:.0f}%</text>'
        )
    for i, label in enumerate(labels):
        x0 = left + i * slot + slot / 2 - bar
        for j, (values, colour) in enumerate(
            ((reference, REFERENCE_COLOUR), (current, CURRENT_COLOUR))
        ):
            v = float(values[i]) if i < len(values) else 0.0
            h = v * scale
            who = "reference" if j == 0 else "current"
            parts.append(
                f'<rect x="{x0 + j * bar:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{_e(label)}: {who} {100 * v:.2f}%</title></rect>"
            )
        cx, cy = left + i * slot + slot / 2, top + plot_h + 10
        short = label if len(label) <= 18 else label[:17] + "\u2026"
        parts.append(
            f'<text x="{cx:.1f}" y="{cy:.1f}" transform="rotate(35 {cx:.1f} {cy:.1f})" class="tick">{_e(short)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def cdf_chart(
    x: Sequence[float],
    reference: Sequence[float],
    current: Sequence[float],
    *,
    width: int = 320,
    height: int = 210,
) -> str:
    """Reference vs current cumulative distribution (step lines), as an inline SVG."""
    left, right, top, bottom = 36, 10, 12, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    lo, hi = (min(x), max(x)) if x else (0.0, 1.0)
    span = (hi - lo) or 1.0

    def px(v: float) -> float:
        return left + (v - lo) / span * plot_w

    def py(f: float) -> float:
        return top + plot_h - f * plot_h

    def steps(ys: Sequence[float]) -> str:
        pts = [f"{px(x[0]):.1f},{py(0):.1f}"] if x else []
        prev = 0.0
        for xi, yi in zip(x, ys, strict=True):
            pts.append(f"{px(xi):.1f},{py(prev):.1f}")
            pts.append(f"{px(xi):.1f},{py(yi):.1f}")
            prev = yi
        return " ".join(pts)

    return "".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
            f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ddd"/>',
            f'<polyline points="{steps(reference)}" fill="none" stroke="{REFERENCE_COLOUR}" stroke-width="2"/>',
            f'<polyline points="{steps(current)}" fill="none" stroke="{CURRENT_COLOUR}" stroke-width="2"/>',
            f'<text x="{left}" y="{height - 8}" class="tick">{_e(f"{lo:.4g}")}</text>',
            f'<text x="{width - right}" y="{height - 8}" text-anchor="end" class="tick">{_e(f"{hi:.4g}")}</text>',
            f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" class="tick">1</text>',
            f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" class="tick">0</text>',
            "</svg>",
        ]
    )


# --------------------------------------------------------------------------- sections

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#212121;margin:24px auto;max-width:1280px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e0e0e0;padding-bottom:4px}
.meta{color:#616161;margin-bottom:14px}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{border:1px solid #e0e0e0;border-radius:8px;padding:10px 14px;min-width:180px}.card b{display:block;color:#616161;font-weight:500;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.pill{display:inline-block;color:#fff;border-radius:10px;padding:1px 9px;font-size:12px;font-weight:600;text-transform:uppercase;letter-spacing:.03em}
.card .pill{font-size:15px;padding:3px 12px;margin-top:4px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:4px 7px;border-bottom:1px solid #eee;text-align:right;vertical-align:top}
.wide{overflow-x:auto}td.n{white-space:nowrap}
th{background:#fafafa;font-weight:600}td.l,th.l{text-align:left}td{white-space:nowrap}td.reason{white-space:normal;text-align:left;color:#424242;min-width:200px;font-size:12px}
details{border:1px solid #e0e0e0;border-radius:8px;margin:8px 0;padding:6px 12px}summary{cursor:pointer;font-weight:600}
.charts{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start;margin-top:8px}.tick{font-size:10px;fill:#616161}
.legend span{display:inline-block;width:11px;height:11px;margin:0 4px -1px 10px;border-radius:2px}
ul.reasons{margin:6px 0 0 0;padding-left:20px}.small{font-size:12px;color:#616161}
"""


def _legend() -> str:
    return (
        f'<div class="legend small"><span style="background:{REFERENCE_COLOUR}"></span>reference'
        f'<span style="background:{CURRENT_COLOUR}"></span>current</div>'
    )


def _summary_table(features: list[FeatureDrift]) -> str:
    rows = []
    for f in sorted(features, key=lambda f: (_RANK.get(f.verdict, 9), -(f.psi or 0.0))):
        rows.append(
            "<tr>"
            f'<td class="l"><a href="#f-{_e(f.name)}">{_e(f.name)}</a></td><td class="l">{_e(f.kind)}</td>'
            f"<td>{_pill(f.verdict)}</td><td>{_num(f.psi)}</td><td class='l'>{_e(f.test)}</td>"
            f"<td>{_num(f.statistic)}</td><td>{_num(f.p_value)}</td><td>{_num(f.p_adjusted)}</td>"
            f"<td>{_num(f.js_distance)}</td><td class='n'>{_pct(f.missing_reference)} &rarr; {_pct(f.missing_current)}</td>"
            f"<td>{f.n:,}</td><td class='reason'>{_e(f.reason)}</td></tr>"
        )
    head = (
        "<tr><th class='l'>feature</th><th class='l'>kind</th><th>verdict</th><th>PSI</th><th class='l'>test</th>"
        "<th>statistic</th><th>p</th><th>BH-adjusted p</th><th>JS distance</th><th>missing ref &rarr; cur</th>"
        "<th>rows</th><th class='l'>why</th></tr>"
    )
    return f"<div class='wide'><table>{head}{''.join(rows)}</table></div>"


def _stats_line(f: FeatureDrift) -> str:
    r, c = f.reference_stats, f.current_stats
    if f.kind == "numeric":
        return (
            f"<p class='small'>reference mean {_num(r.get('mean'))}, std {_num(r.get('std'))}, "
            f"range [{_num(r.get('min'))}, {_num(r.get('max'))}] &middot; current mean {_num(c.get('mean'))}, "
            f"std {_num(c.get('std'))}, range [{_num(c.get('min'))}, {_num(c.get('max'))}]</p>"
        )
    unseen = ", ".join(f"{_e(k)} ({v:,})" for k, v in f.unseen.items())
    return (
        f"<p class='small'>reference categories {r.get('categories')} &middot; current categories "
        f"{c.get('categories')}{' &middot; unseen: ' + unseen if unseen else ''}</p>"
    )


def _feature_section(f: FeatureDrift, *, anchor: str | None = None) -> str:
    charts = [bar_chart(f.bins, f.reference, f.current)]
    if f.cdf and f.cdf.get("x"):
        charts.append(cdf_chart(f.cdf["x"], f.cdf["reference"], f.cdf["current"]))
    is_open = " open" if f.verdict in ("drift", "warn") else ""
    return (
        f'<details id="{_e(anchor or "f-" + f.name)}"{is_open}><summary>{_e(f.name)} {_pill(f.verdict)} '
        f'<span class="small">PSI {_num(f.psi)} &middot; {_e(f.test)} p {_num(f.p_value)}</span></summary>'
        f"<p>{_e(f.reason)}</p>{_stats_line(f)}{_legend()}<div class='charts'>{''.join(charts)}</div></details>"
    )


def _decay_section(decay: dict[str, Any] | None) -> str:
    if not decay:
        return "<p>Not measured: no labelled recent rows were given.</p>"
    head = (
        "<tr><th class='l'>metric</th><th>live</th><th>confidence interval</th><th>validation</th>"
        "<th>decay threshold</th><th class='l'>verdict</th></tr>"
    )
    rows = []
    level = decay.get("confidence_level", 0.95)
    metrics = decay.get("metrics") or {}
    primary = decay.get("metric")
    if not metrics:
        rows.append(
            f"<tr><td class='l'>{_e(primary)}</td><td>&ndash;</td><td>&ndash;</td><td>{_num(decay.get('reference'), 4)}</td>"
            f"<td>{_num(decay.get('threshold'), 4)}</td><td class='l'>{_pill(decay.get('verdict'))}</td></tr>"
        )
    for name, m in metrics.items():
        is_primary = name == primary
        rows.append(
            f"<tr><td class='l'>{'<b>' if is_primary else ''}{_e(name)}{'</b> (primary)' if is_primary else ''}</td>"
            f"<td>{_num(m.get('value'), 4)}</td><td>[{_num(m.get('ci_low'), 4)}, {_num(m.get('ci_high'), 4)}]</td>"
            f"<td>{_num(m.get('reference'), 4)}</td><td>{_num(decay.get('threshold'), 4) if is_primary else '&ndash;'}</td>"
            f"<td class='l'>{_pill(decay.get('verdict')) if is_primary else ''}</td></tr>"
        )
    return (
        f"<p>{_e(decay.get('reason', ''))}</p><table>{head}{''.join(rows)}</table>"
        f"<p class='small'>{decay.get('n', 0):,} labelled rows; {100 * level:.0f}% intervals "
        "(DeLong for ROC AUC, normal approximation of the mean for per-row losses).</p>"
    )


def render_html(
    result: DriftResult,
    decay: dict[str, Any] | None,
    profile: dict[str, Any] | None = None,
    *,
    title: str | None = None,
    meta: dict[str, Any] | None = None,
) -> str:
    """One self-contained HTML page (inline CSS and SVG, no scripts or external links)."""
    dataset = (profile or {}).get("dataset") or (meta or {}).get("dataset") or ""
    title = title or f"Drift report{' - ' + dataset if dataset else ''}"
    meta_line = " &middot; ".join(f"{_e(k)}: <b>{_e(v)}</b>" for k, v in (meta or {}).items())
    counts = f"{result.rows:,} recent rows vs {result.reference_rows:,} reference rows"
    decay_verdict = decay.get("verdict") if decay else None
    cards = (
        f'<div class="card"><b>data drift</b>{_pill(result.verdict)}</div>'
        f'<div class="card"><b>prediction drift</b>{_pill(result.prediction_verdict)}</div>'
        f'<div class="card"><b>decay</b>{_pill(decay_verdict)}</div>'
        f'<div class="card"><b>features</b>{len(result.drifted_features)} drift &middot; '
        f"{len(result.warned_features)} warn &middot; {len(result.features)} monitored</div>"
    )
    reasons = "".join(f"<li>{_e(r)}</li>" for r in result.reasons)
    if decay and decay.get("reason"):
        reasons += f"<li>decay: {_e(decay['reason'])}</li>"
    if result.prediction is not None:
        prediction = _feature_section(result.prediction, anchor="prediction").replace(
            "<details ", "<details open ", 1
        )
    else:
        prediction = (
            "<p>Not measured: no recent scores (or no reference scores in the profile).</p>"
        )
    s = result.settings
    policy = (
        f"PSI bands: warn &ge; {s.get('psi_warn')}, drift &ge; {s.get('psi_drift')} (scores: "
        f"{s.get('prediction_psi_warn')} / {s.get('prediction_psi_drift')}); Benjamini-Hochberg at "
        f"{s.get('alpha')}; a feature alarms only when significant and in a band; below "
        f"{s.get('min_rows')} recent rows: insufficient data."
    )
    features = "".join(
        _feature_section(f)
        for f in sorted(result.features, key=lambda f: (_RANK.get(f.verdict, 9), -(f.psi or 0.0)))
    )
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head><body>'
        f"<h1>{_e(title)}</h1><div class='meta'>{meta_line}{' &middot; ' if meta_line else ''}{counts}</div>"
        f"<div class='cards'>{cards}</div><ul class='reasons'>{reasons}</ul>"
        f"<h2>Features</h2>{_summary_table(result.features)}<p class='small'>{policy}</p>"
        f"<h2>Prediction scores</h2>{prediction}"
        f"<h2>Live performance (decay)</h2>{_decay_section(decay)}"
        f"<h2>Per feature: reference vs current</h2>{features}"
        "</body></html>\n"
    )


def write_reports(
    storage: Storage,
    prefix_uri: str,
    result: DriftResult,
    decay: dict[str, Any] | None,
    profile: dict[str, Any] | None = None,
    *,
    meta: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Write ``report.json`` and ``report.html`` under ``prefix_uri`` (for example
    ``<root>/reports/drift/ds=2026-03-01``), then ``manifest.json`` last, so a reader that
    finds the manifest finds a complete report. Re-running overwrites the same keys; on
    local disk all three are written and synced before any replaces the previous report,
    so a failed write (a full disk) leaves the previous report intact
    (:meth:`~mlops_loop.core.storage.Storage.write_files`). Returns the URIs (small JSON
    for XCom)."""
    from mlops_loop.core.storage import dump_json, join_uri

    body = report_json(result, decay, meta=meta)
    uris = {
        "json": join_uri(prefix_uri, "report.json"),
        "html": join_uri(prefix_uri, "report.html"),
        "manifest": join_uri(prefix_uri, "manifest.json"),
    }
    manifest = {
        "format": REPORT_FORMAT,
        "files": ["report.json", "report.html"],
        "verdict": body["verdict"],
        "decay_verdict": body["decay_verdict"],
        "meta": body["meta"],
    }
    page = render_html(result, decay, profile, meta=meta)
    storage.write_files(
        [
            (uris["json"], dump_json(body)),
            (uris["html"], page.encode("utf-8")),
            (uris["manifest"], dump_json(manifest)),
        ]
    )
    return uris
