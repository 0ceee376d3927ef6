"""core/drift.py: measures against independent computations, false-alarm rate, detection,
edge cases and verdicts. Small data only (runs in a few seconds)."""

from __future__ import annotations

import bisect
import json
import math
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from mlops_loop.core.config import DatasetConfig
from mlops_loop.core.drift import MISSING_BIN, UNSEEN_BIN, drift_summary_lines, measure_drift, psi
from mlops_loop.core.profile import ParquetBatches, build_profile
from mlops_loop.core.retrain import should_retrain
from mlops_loop.exceptions import DriftError, ReferenceProfileMissing
from tests.fixtures.drift_frames import COLORS, frame, settings, toy_config


@pytest.fixture(scope="module")
def config() -> DatasetConfig:
    return toy_config()


# --------------------------------------------------------------------------- independent references


def plain_psi(ref_counts: list[float], cur_counts: list[float], eps: float = 1e-4) -> float:
    """Textbook PSI in plain Python."""
    rt, ct = sum(ref_counts), sum(cur_counts)
    total = 0.0
    for r, c in zip(ref_counts, cur_counts, strict=True):
        p, q = max(r / rt, eps), max(c / ct, eps)
        total += (q - p) * math.log(q / p)
    return total


def plain_bin_counts(values: list[float], edges: list[float]) -> list[int]:
    """Counts in [e[i-1], e[i]) bins with open ends, plus a missing bin, in plain Python."""
    counts = [0] * (len(edges) + 2)
    for v in values:
        if v is None or not math.isfinite(v):
            counts[-1] += 1
        else:
            counts[bisect.bisect_right(edges, v)] += 1
    return counts


def test_psi_matches_plain_python_on_known_distributions(config: DatasetConfig) -> None:
    ref, cur = frame(3000, 1), frame(2000, 2, x_shift=0.4)
    profile = build_profile(ref, config, n_bins=10)
    result = measure_drift(profile, cur, config, settings())
    px = profile["features"]["x"]
    ref_counts = plain_bin_counts(ref["x"].tolist(), px["edges"])
    assert ref_counts == [*px["bin_counts"], px["missing"]]
    cur_counts = plain_bin_counts(cur["x"].tolist(), px["edges"])
    fx = result.feature("x")
    assert fx.psi == pytest.approx(plain_psi(ref_counts, cur_counts), rel=1e-12)
    assert len(fx.bins) == len(cur_counts) and fx.bins[-1] == MISSING_BIN
    # Deciles of the reference: each value bin holds about a tenth of the reference.
    shares = np.array(px["bin_counts"][1:-1]) / sum(px["bin_counts"])
    assert np.all(np.abs(shares - 0.1) < 0.01)
    # Normal shifted by 0.4 sd: known PSI about 0.16 (analytic 0.4**2 = 0.16 for large n).
    assert 0.1 < fx.psi < 0.25


def test_psi_function_floors_empty_bins() -> None:
    assert psi([50, 50, 0], [50, 50, 0]) == 0.0
    assert math.isfinite(psi([100, 0], [50, 50]))
    assert psi([100, 0], [50, 50]) == pytest.approx(plain_psi([100, 0], [50, 50]))
    with pytest.raises(DriftError):
        psi([1, 2], [1, 2, 3])


@pytest.mark.parametrize(
    "column", ["x", "k", "z"], ids=["continuous-with-missing", "integer-ties", "skewed"]
)
def test_ks_matches_scipy_two_sample(config: DatasetConfig, column: str) -> None:
    ref, cur = frame(2000, 3), frame(1500, 4, x_shift=0.1)
    profile = build_profile(ref, config)  # 2000 rows < sample size: the sample is all of it
    result = measure_drift(profile, [cur.iloc[:400], cur.iloc[400:]], config, settings())
    f = result.feature(column)
    a = ref[column].dropna().to_numpy(float)
    b = cur[column].dropna().to_numpy(float)
    expected = stats.ks_2samp(a, b, method="asymp")
    assert f.statistic == pytest.approx(expected.statistic, abs=1e-12)
    if column == "x":  # with missing values a missing-rate test joins (Bonferroni of two)
        assert f.test == "ks+missing"
        assert f.p_value <= 2 * expected.pvalue * 1.05 + 1e-12
    else:
        assert f.test == "ks"
        # Stephens' approximation of the same asymptotic distribution (see ks_from_counts).
        assert f.p_value == pytest.approx(expected.pvalue, rel=0.03)


def test_ks_against_a_sample_of_a_larger_reference(config: DatasetConfig) -> None:
    ref, cur = frame(5000, 5), frame(800, 6)
    profile = build_profile(ref, config, sample_size=1000)
    pz = profile["features"]["z"]
    assert sum(pz["sample_counts"]) == 1000 and pz["counts_source"] == "exact"
    assert sum(pz["bin_counts"]) == ref["z"].notna().sum()
    sample = np.repeat(pz["sample_values"], pz["sample_counts"])
    assert np.isin(sample, ref["z"].to_numpy()).all()
    f = measure_drift(profile, cur, config, settings()).feature("z")
    expected = stats.ks_2samp(sample, cur["z"].to_numpy(), method="asymp")
    assert f.statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert f.p_value == pytest.approx(expected.pvalue, rel=0.03)


def test_chi_square_and_jensen_shannon_match_scipy_with_unseen_category(
    config: DatasetConfig,
) -> None:
    ref = frame(3000, 7)
    cur = frame(1000, 8, color_p=[0.25, 0.25, 0.25, 0.25])
    cur.loc[:49, "color"] = "purple"  # never seen in the reference
    cur.loc[50:59, "color"] = None
    profile = build_profile(ref, config)
    f = measure_drift(profile, cur, config, settings()).feature("color")
    assert f.bins == [
        *sorted(COLORS, key=lambda c: -(ref["color"] == c).sum()),
        UNSEEN_BIN,
        MISSING_BIN,
    ]
    ref_counts = [int((ref["color"] == c).sum()) for c in f.bins[:4]] + [0, 0]
    cur_counts = [int((cur["color"] == c).sum()) for c in f.bins[:4]] + [50, 10]
    table = np.array([ref_counts, cur_counts])
    table = table[:, table.sum(axis=0) > 0]
    expected = stats.chi2_contingency(table, correction=False)
    assert f.statistic == pytest.approx(expected.statistic, rel=1e-10)
    assert f.p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    r, c = np.array(ref_counts, float), np.array(cur_counts, float)
    assert f.js_distance == pytest.approx(
        jensenshannon(r / r.sum(), c / c.sum(), base=2), rel=1e-10
    )
    assert f.psi == pytest.approx(plain_psi(ref_counts, cur_counts), rel=1e-12)
    assert f.unseen == {"purple": 50}
    assert f.verdict == "drift" and "purple" in f.reason


def test_measure_drift_same_result_for_frames_arrow_and_batches(
    config: DatasetConfig, tmp_path
) -> None:
    profile = build_profile(frame(3000, 10), config)
    cur = frame(1200, 11, x_shift=0.3)
    path = tmp_path / "cur.parquet"
    pq.write_table(pa.Table.from_pandas(cur, preserve_index=False), path, row_group_size=250)
    a = measure_drift(profile, cur, config, settings()).to_dict()
    others = [
        ParquetBatches(path, batch_size=250),
        ParquetBatches(path, batch_size=300, read_dictionary=["color"]),  # dictionary-encoded
        cur.astype({"color": "category"}),  # pandas categorical
        pa.Table.from_pandas(cur, preserve_index=False),
    ]
    for other in others:
        b = measure_drift(profile, other, config, settings()).to_dict()
        for fa, fb in zip(a["features"], b["features"], strict=True):
            assert fa["psi"] == pytest.approx(fb["psi"], rel=1e-12)
            assert fa["p_value"] == pytest.approx(fb["p_value"], rel=1e-9, abs=1e-300)
            assert fa["verdict"] == fb["verdict"]
            assert fa["current"] == pytest.approx(fb["current"], rel=1e-12)
    json.dumps(a)


# --------------------------------------------------------------------------- error rates


def test_false_alarm_rate_within_level_over_200_seeds(config: DatasetConfig) -> None:
    s = settings(min_rows=200)
    seeds = 200
    alarms = significant = 0
    for seed in range(seeds):
        profile = build_profile(frame(600, 1000 + seed), config)
        result = measure_drift(profile, frame(300, 5000 + seed), config, s)
        alarms += result.verdict != "none"
        significant += any(f.significant for f in result.features)
    # BH at level alpha controls the family-wise error under the complete null, so "any
    # feature significant" is at most Binomial(200, alpha); this bound fails with p < 1e-6.
    bound = stats.binom.isf(1e-6, seeds, s.alpha)
    assert significant <= bound, (significant, bound)
    assert alarms <= significant


@pytest.mark.parametrize(
    ("shifted", "kwargs"),
    [
        pytest.param("x", {"x_shift": 0.6}, id="numeric-mean-shift"),
        pytest.param("color", {"color_p": [0.1, 0.2, 0.3, 0.4]}, id="categorical-mix"),
    ],
)
def test_known_shift_in_one_feature_is_detected_and_named(
    config: DatasetConfig, shifted: str, kwargs: dict
) -> None:
    profile = build_profile(frame(5000, 20), config)
    result = measure_drift(profile, frame(2000, 21, **kwargs), config, settings())
    assert result.verdict == "drift"
    assert result.drifted_features == [shifted]
    assert result.warned_features == []
    assert any(r.startswith(f"{shifted}: drift") for r in result.reasons)
    assert result.summary_dict()["drifted_features"] == [shifted]
    assert result.summary().startswith("drift verdict: drift")


def test_tiny_significant_change_in_large_sample_is_not_an_alarm(config: DatasetConfig) -> None:
    profile = build_profile(frame(10_000, 30), config)
    f = measure_drift(profile, frame(20_000, 31, x_shift=0.1), config, settings()).feature("x")
    assert f.significant and f.band == "none" and f.verdict == "none"


# --------------------------------------------------------------------------- edge cases


def test_constant_column(config: DatasetConfig) -> None:
    ref = frame(1000, 40).assign(z=3.0)
    profile = build_profile(ref, config)
    pz = profile["features"]["z"]
    assert pz["edges"][0] == 3.0 and pz["edges"][1] == np.nextafter(3.0, np.inf)
    assert pz["bin_counts"] == [0, 1000, 0]
    same = measure_drift(profile, frame(500, 41).assign(z=3.0), config, settings()).feature("z")
    assert same.verdict == "none" and same.psi == pytest.approx(0.0) and same.statistic == 0.0
    for other in (2.0, 4.0):  # values below and above the constant land in their own bins
        cur = frame(500, 41).assign(z=np.where(np.arange(500) < 250, 3.0, other))
        changed = measure_drift(profile, cur, config, settings()).feature("z")
        assert changed.verdict == "drift", changed.reason


def test_all_missing_columns(config: DatasetConfig) -> None:
    profile = build_profile(frame(1000, 50), config)
    cur = frame(600, 51).assign(x=np.nan)
    fx = measure_drift(profile, cur, config, settings()).feature("x")
    assert fx.verdict == "drift" and fx.test == "missing" and fx.missing_current == 1.0
    # Missing in the reference too: nothing changed, no error.
    ref_missing = build_profile(frame(1000, 52).assign(x=np.nan), config)
    assert (
        ref_missing["features"]["x"]["edges"] == [] and ref_missing["features"]["x"]["mean"] is None
    )
    fx2 = measure_drift(ref_missing, cur, config, settings()).feature("x")
    assert fx2.verdict == "none" and fx2.psi == pytest.approx(0.0)
    # Values appear where the reference had none: drift.
    fx3 = measure_drift(ref_missing, frame(600, 53), config, settings()).feature("x")
    assert fx3.verdict == "drift"


def test_infinite_values_count_as_missing(config: DatasetConfig) -> None:
    profile = build_profile(frame(1000, 55), config)
    cur = frame(400, 56)
    plain = measure_drift(profile, cur, config, settings()).feature("z")
    cur.loc[:39, "z"] = [np.inf, -np.inf] * 20
    f = measure_drift(profile, cur, config, settings()).feature("z")
    assert f.missing_current == pytest.approx(0.1)
    assert f.current_stats["missing"] == 40 and math.isfinite(f.current_stats["mean"])
    assert f.psi > plain.psi


def test_fewer_rows_than_minimum_is_insufficient_not_an_alarm(config: DatasetConfig) -> None:
    profile = build_profile(frame(2000, 60), config)
    result = measure_drift(profile, frame(99, 61, x_shift=3.0), config, settings(min_rows=100))
    assert result.verdict == "insufficient_data"
    assert result.drifted_features == []
    assert {f.verdict for f in result.features} == {"insufficient_data"}
    assert "99 recent rows < min_rows 100" in result.reasons[0]
    assert should_retrain(result, None, None, datetime(2026, 1, 1), settings())[0] is False


def test_measure_drift_without_a_profile_or_with_another_format(config: DatasetConfig) -> None:
    with pytest.raises(ReferenceProfileMissing, match="no reference profile"):
        measure_drift(None, frame(500, 70), config, settings())
    with pytest.raises(DriftError, match="format"):
        measure_drift({"format": 99}, frame(500, 70), config, settings())


def test_missing_column_in_recent_data_is_named(config: DatasetConfig) -> None:
    profile = build_profile(frame(500, 80), config)
    with pytest.raises(DriftError, match="'color'") as info:
        measure_drift(profile, frame(500, 81).drop(columns=["color"]), config, settings())
    assert info.value.feature == "color"


def test_prediction_drift(config: DatasetConfig) -> None:
    rng = np.random.default_rng(90)
    profile = build_profile(frame(1000, 90), config, scores=rng.beta(2, 8, 2000))
    cur = frame(1000, 91)
    same = measure_drift(profile, cur, config, settings(), recent_scores=rng.beta(2, 8, 1500))
    assert same.prediction is not None and same.prediction_verdict == "none"
    shifted = measure_drift(
        profile, cur, config, settings(), recent_scores=[rng.beta(4, 6, 700), rng.beta(4, 6, 800)]
    )
    assert shifted.prediction_verdict == "drift" and shifted.verdict == "drift"
    assert shifted.drifted_features == []
    assert any(r.startswith("prediction scores: drift") for r in shifted.reasons)
    few = measure_drift(profile, cur, config, settings(), recent_scores=rng.beta(4, 6, 50))
    assert few.prediction_verdict == "insufficient_data"


def test_summary_lines_of_a_monitor_result() -> None:
    result = {
        "verdict": "drift",
        "prediction_verdict": "none",
        "decay_verdict": "insufficient_data",
        "model_name": "toy_model",
        "champion_version": "3",
        "rows": 1200,
        "reasons": ["x: drift - PSI 0.31", "color: warn - PSI 0.12"],
        "report_uri": "/r/ds=2026-04-22/report.html",
    }
    assert drift_summary_lines(result) == [
        "drift verdict: drift (prediction: none, decay: insufficient_data); "
        "champion toy_model version 3; 1200 recent rows",
        "  - x: drift - PSI 0.31",
        "  - color: warn - PSI 0.12",
        "report: /r/ds=2026-04-22/report.html",
    ]
    assert drift_summary_lines({"verdict": "no_champion"})[0].startswith(
        "drift verdict: no_champion"
    )
