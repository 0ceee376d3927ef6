"""Seeded generator of a realistic credit-default dataset, one batch per day.

Used by the demo, the tests and the benchmarks; the pipeline itself never imports it.
Features mix numeric and categorical columns, some with missing values where real
application data has them; the label is imbalanced (about 8 % defaults) and depends on
the features through a fixed logistic model, so a model can learn it. ``drift`` shifts
feature distributions (and the label relation a little); ``corrupt`` injects one kind of
bad data the quality gate must catch.
"""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

HOME_OWNERSHIP = ["RENT", "MORTGAGE", "OWN", "OTHER"]
PURPOSES = [
    "debt_consolidation",
    "credit_card",
    "home_improvement",
    "car",
    "medical",
    "small_business",
    "other",
]
REGIONS = ["north", "south", "east", "west", "central"]
TERMS = [12, 24, 36, 48, 60]

Corruption = Literal[
    "none",
    "nulls_in_required",
    "out_of_range",
    "unknown_category",
    "duplicate_ids",
    "text_in_numeric",
    "missing_column",
    "extra_column",
]
CORRUPTIONS: tuple[str, ...] = Corruption.__args__  # type: ignore[attr-defined]


def _seed_for(seed: int, ds: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{ds}".encode()).digest()[:8], "little")


def generate_batch(
    ds: str,
    rows: int = 5_000,
    *,
    seed: int = 42,
    drift: float = 0.0,
    corrupt: Corruption = "none",
) -> pd.DataFrame:
    """One day's applications. Same (ds, rows, seed, drift, corrupt) -> same frame.

    ``drift`` in [0, 1]: 0 is the reference population; 1 is a clearly shifted one
    (younger applicants, lower credit scores, more small-business loans, higher rates).
    """
    rng = np.random.default_rng(_seed_for(seed, ds))
    day = date.fromisoformat(ds)
    n = rows

    age = np.clip(rng.normal(41 - 8 * drift, 11, n), 18, 90).round().astype("int64")
    income = np.round(np.exp(rng.normal(10.8 - 0.25 * drift, 0.55, n)), 2)
    credit_score = np.clip(rng.normal(690 - 45 * drift, 60, n), 300, 850).round().astype("int64")
    term = rng.choice(TERMS, n, p=[0.1, 0.2, 0.4, 0.15, 0.15])
    loan_amount = np.round(np.clip(rng.gamma(2.2, 5_500 * (1 + 0.3 * drift), n), 500, 100_000), 2)
    interest_rate = np.round(np.clip(
        0.04 + (760 - credit_score) / 2_000 + rng.normal(0.0, 0.015, n) + 0.02 * drift, 0.01, 0.36
    ), 4)
    dti = np.round(np.clip(rng.beta(2, 5, n) * 0.8 + 0.05 * drift, 0, 1.5), 4)
    open_accounts = rng.poisson(6 + 2 * drift, n).astype("int64")
    employment = np.round(np.clip(rng.exponential(6, n), 0, 45), 1)
    home = rng.choice(HOME_OWNERSHIP, n, p=[0.4, 0.38, 0.2, 0.02])
    purpose_p = np.array([0.38, 0.22, 0.1, 0.1, 0.06, 0.06, 0.08])
    purpose_p = purpose_p + drift * np.array([-0.1, 0, 0, 0, 0, 0.1, 0])
    purpose = rng.choice(PURPOSES, n, p=purpose_p / purpose_p.sum())
    region = rng.choice(REGIONS, n)
    prior_default = rng.random(n) < (0.04 + 0.03 * drift)

    logit = (
        -2.75
        + 0.012 * (700 - credit_score)
        + 2.2 * (dti - 0.3)
        + 0.00002 * (loan_amount - 12_000)
        - 0.35 * (np.log(income) - 10.8)
        + 9.0 * (interest_rate - 0.1)
        + 1.1 * prior_default
        + 0.35 * (purpose == "small_business")
        - 0.02 * (employment - 6)
        + 0.004 * (term - 36)
        + 0.4 * drift * (home == "RENT")
    )
    default = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype("int64")

    seconds = np.sort(rng.integers(0, 86_400, n))
    ts = pd.Timestamp(day) + pd.to_timedelta(seconds, unit="s")
    ids = [f"{ds.replace('-', '')}-{i:07d}" for i in range(n)]

    df = pd.DataFrame(
        {
            "application_id": ids,
            "applied_at": ts,
            "age": age,
            "annual_income": income,
            "credit_score": credit_score.astype("float64"),
            "loan_amount": loan_amount,
            "loan_term_months": term.astype("int64"),
            "interest_rate": interest_rate,
            "debt_to_income": dti,
            "open_accounts": open_accounts,
            "employment_years": employment,
            "home_ownership": home,
            "purpose": purpose,
            "region": region,
            "prior_default": prior_default,
            "default": default,
        }
    )
    # Missing values where application data has them: self-reported fields and
    # bureau scores for thin-file applicants.
    df.loc[rng.random(n) < 0.06, "employment_years"] = np.nan
    df.loc[rng.random(n) < 0.03, "annual_income"] = np.nan
    df.loc[rng.random(n) < 0.02, "credit_score"] = np.nan
    return _corrupt(df, corrupt, rng)


def _corrupt(df: pd.DataFrame, kind: str, rng: np.random.Generator) -> pd.DataFrame:
    if kind == "none":
        return df
    n = len(df)
    some = rng.choice(n, size=max(1, n // 50), replace=False)
    if kind == "nulls_in_required":
        df.loc[some, "loan_amount"] = np.nan
    elif kind == "out_of_range":
        df.loc[some, "age"] = rng.integers(130, 200, len(some))
    elif kind == "unknown_category":
        df.loc[some, "home_ownership"] = "SPACESHIP"
    elif kind == "duplicate_ids":
        df.loc[some, "application_id"] = df.loc[0, "application_id"]
    elif kind == "text_in_numeric":
        df["loan_amount"] = df["loan_amount"].astype(object)
        df.loc[some, "loan_amount"] = "twelve thousand"
    elif kind == "missing_column":
        df = df.drop(columns=["interest_rate"])
    elif kind == "extra_column":
        df["internal_note"] = "x"
    else:
        raise ValueError(f"unknown corruption {kind!r}; choose one of {CORRUPTIONS}")
    return df


def land_batch(
    df: pd.DataFrame,
    root: str | Path,
    ds: str,
    *,
    fmt: Literal["csv", "parquet"] = "csv",
    files: int = 1,
) -> list[Path]:
    """Write a batch the way an upstream system would land it: raw/ds=<ds>/part-*.{fmt}."""
    folder = Path(root) / "raw" / f"ds={ds}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(df)), files)):
        path = folder / f"part-{i:03d}.{fmt}"
        chunk = df.iloc[part]
        if fmt == "csv":
            chunk.to_csv(path, index=False)
        else:
            chunk.to_parquet(path, index=False)
        paths.append(path)
    return paths
