"""Which rows count, and the one way tables summarise them across seeds.

* Rows that count (:func:`scored_units`): 2D cases and whole volumes (spleen slices and concept-pool rows are
  diagnostics), with a finite Dice (a unit without a prediction, e.g. a failed training run, is left out and
  listed elsewhere), from finished runs where a ``status`` column says so. A flag (a localizer's fallback, no
  trajectory fit) is a diagnostic: the unit counts with its prediction.
* Across seeds (:func:`seed_summary`): the mean over units within each seed, then the mean and the sample sd
  (n - 1) of those per-seed means; one seed has no sd. Every caption says so with :data:`ACROSS_SEEDS`.
* HD95 (:func:`hd95_summary`): the median over units that have a boundary, and how many had none.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

SD_DDOF = 1
ACROSS_SEEDS = "mean ± sd across seeds (sd with n − 1 of the per-seed means over units; one seed: the mean alone)"
COUNTED_UNITS = ("case", "volume")


def scored_units(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that count in tables (module docstring)."""
    if df is None or not len(df):
        return df.iloc[:0] if df is not None else pd.DataFrame()
    keep = df.unit.isin(COUNTED_UNITS) if "unit" in df else pd.Series(True, index=df.index)
    if "dice" in df:
        keep &= np.isfinite(pd.to_numeric(df.dice, errors="coerce"))
    if "status" in df:
        keep &= df.status.fillna("ok") == "ok"
    return df[keep]


def per_seed(df: pd.DataFrame, by: list[str], metric: str = "dice") -> pd.DataFrame:
    """Mean of ``metric`` over the units of each group and seed, with the unit count (columns: by, seed, mean,
    units)."""
    return (df.groupby(list(by) + ["seed"], dropna=False)[metric].agg(["mean", "size"]).reset_index()
            .rename(columns={"size": "units"}))


def seed_summary(df: pd.DataFrame, by: list[str], metric: str = "dice") -> pd.DataFrame:
    """Per group: mean and sd (n - 1) across seeds of the per-seed means, seed count and units per seed."""
    ps = per_seed(df, by, metric)
    if not len(ps):
        return pd.DataFrame(columns=list(by) + ["mean", "sd", "seeds", "units"])
    return ps.groupby(list(by), dropna=False).agg(
        mean=("mean", "mean"), sd=("mean", _sd), seeds=("mean", "size"), units=("units", "max")).reset_index()


def _sd(values) -> float:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(np.std(v, ddof=SD_DDOF)) if len(v) > SD_DDOF else math.nan


def mean_sd(values) -> tuple[float, float, int]:
    """(mean, sd with n - 1 or NaN, count) of the finite values (e.g. one per seed)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return math.nan, math.nan, 0
    return float(v.mean()), _sd(v), len(v)


def fmt_mean_sd(mean: float, sd: float, digits: int = 3) -> str:
    """'0.912 ± 0.004', or just the mean when there is no sd (one seed), '–' without a mean."""
    if mean is None or not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" if sd is None or not np.isfinite(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def seed_cell(df: pd.DataFrame, metric: str = "dice", digits: int = 3) -> str:
    """'mean ± sd' across seeds of the per-seed mean of ``metric`` over ``df``'s rows ('–' when empty)."""
    if df is None or not len(df):
        return "–"
    m, s, _ = mean_sd(df.groupby("seed")[metric].mean())
    return fmt_mean_sd(m, s, digits)


def hd95_summary(values, unit: str = "px", digits: int = 1) -> str:
    """'median 4.1 px (3 of 20 without a boundary)': HD95's median over units with a boundary on both sides,
    and how many had none (one mask empty: no distance is invented)."""
    v = np.asarray(list(values), dtype=float)
    missing = int((~np.isfinite(v)).sum())
    ok = v[np.isfinite(v)]
    head = f"median {np.median(ok):.{digits}f} {unit}" if len(ok) else "no boundary to measure"
    return head + (f" ({missing} of {len(v)} without a boundary)" if missing else "")


def hd95_unit(df: pd.DataFrame) -> str:
    """The HD95 unit of scored rows ('mm', 'px', or 'mm/px' when they mix)."""
    if "hd95_unit" not in df or not len(df):
        return "px"
    units = sorted(set(df.hd95_unit.dropna()))
    return "/".join(units) if units else "px"
