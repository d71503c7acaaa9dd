"""Bootstrap intervals: one percentile bootstrap, over units, clustered where rows repeat a unit.

Rows that repeat an image (several seeds, start sizes, or candidates of one image) are resampled together:
the resampling unit is the cluster (by default the test unit's id), never the row, so repeats do not narrow the
interval. With fewer than :data:`MIN_UNITS` clusters there is no interval ("n = k, no interval"): resampling a
handful of units says nothing about the spread. When every value is the same the interval is not shown as a
zero-width range but as "all equal".
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np

MIN_UNITS = 5          # fewer resampling units than this: no interval
N_BOOT = 2000          # resamples of a table's interval
LEVEL = 0.95


def interval_note(n_boot: int = N_BOOT, level: float = LEVEL) -> str:
    """The sentence a caption carries about its intervals."""
    return (f"{level:.0%} percentile bootstrap interval over test units ({n_boot} resamples, rows of one image "
            f"resampled together); fewer than {MIN_UNITS} units: no interval")


def cluster_bootstrap(groups: Sequence, stat: Callable[[list], float], n_boot: int = N_BOOT, seed: int = 0,
                      level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of ``stat`` over ``n_boot`` resamples of ``groups`` (one entry per cluster) with
    replacement; NaN when there are fewer than MIN_UNITS groups or no finite resample."""
    if len(groups) < MIN_UNITS or n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(groups), size=(int(n_boot), len(groups)))
    vals = np.array([stat([groups[i] for i in row]) for row in idx], dtype=float)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.quantile(vals, [a, 1 - a])
    return float(lo), float(hi)


def _groups(values, clusters) -> list[np.ndarray]:
    """Values grouped by cluster id (each value its own cluster when ``clusters`` is None), in first-seen order."""
    v = np.asarray(values, dtype=float)
    if clusters is None:
        return [v[i:i + 1] for i in range(len(v))]
    c = np.asarray(clusters)
    if len(c) != len(v):
        raise ValueError(f"{len(c)} cluster ids for {len(v)} values")
    order = list(dict.fromkeys(c.tolist()))
    return [v[c == k] for k in order]


def mean_interval(values, clusters=None, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> dict:
    """Mean of the finite ``values`` and its cluster-bootstrap interval: {'mean', 'lo', 'hi', 'n' (clusters),
    'equal' (every value the same)}."""
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    groups = _groups(v[ok], None if clusters is None else np.asarray(clusters)[ok])
    out = {"mean": float(v[ok].mean()) if ok.any() else float("nan"), "n": len(groups),
           "equal": bool(ok.any() and np.ptp(v[ok]) == 0), "lo": float("nan"), "hi": float("nan")}
    if ok.any() and not out["equal"] and len(groups) >= MIN_UNITS and n_boot > 0:
        # the same resampling as cluster_bootstrap, vectorised: a resample's mean is its clusters' summed values
        # over their summed sizes
        sums = np.array([g.sum() for g in groups])
        sizes = np.array([len(g) for g in groups], dtype=float)
        idx = np.random.default_rng(seed).integers(0, len(groups), size=(int(n_boot), len(groups)))
        a = (1 - level) / 2
        out["lo"], out["hi"] = (float(q) for q in np.quantile(sums[idx].sum(1) / sizes[idx].sum(1), [a, 1 - a]))
    return out


def unit_interval(rows, metric: str = "dice", cluster: str = "case_id", **kw) -> dict:
    """:func:`mean_interval` of a table's scored rows, resampling by test unit (``case_id``) so that the rows of
    several seeds of one unit move together."""
    return mean_interval(rows[metric].to_numpy(float), rows[cluster].to_numpy() if cluster in rows else None, **kw)


def fmt_interval(iv: dict, digits: int = 3) -> str:
    """'0.815 [0.702, 0.913]'; '0.204 (n = 1, no interval)' below MIN_UNITS; '0.982 (n = 20, all equal)'."""
    m = iv.get("mean", float("nan"))
    if not np.isfinite(m):
        return "–"
    head = f"{m:.{digits}f}"
    if iv["n"] < MIN_UNITS:
        return f"{head} (n = {iv['n']}, no interval)"
    if iv.get("equal"):
        return f"{head} (n = {iv['n']}, all equal)"
    if not np.isfinite(iv.get("lo", float("nan"))):
        return f"{head} (n = {iv['n']}, no interval)"
    lo, hi = f"{iv['lo']:.{digits}f}", f"{iv['hi']:.{digits}f}"
    if lo == hi:          # a real but narrower-than-printed spread: say so instead of a zero-width range
        return f"{head} (n = {iv['n']}, interval narrower than {10 ** -digits:g})"
    return f"{head} [{lo}, {hi}]"


def spearman(x, y) -> float:
    """Spearman's rho, NaN when fewer than 3 points or either side is constant."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(x, y).statistic)


def spearman_interval(x, y, clusters=None, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> dict:
    """Spearman rho of x vs y with a cluster-bootstrap interval (pairs of one cluster resampled together);
    {'rho', 'lo', 'hi', 'n' (pairs), 'clusters', 'flag'} with flag 'too_few_cases' or 'constant_input' when rho is
    undefined."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    c = np.arange(len(x)) if clusters is None else np.asarray(clusters)[ok]
    keys = list(dict.fromkeys(c.tolist()))
    out = {"rho": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": int(len(x)), "clusters": len(keys),
           "flag": ""}
    if len(x) < 3:
        return {**out, "flag": "too_few_cases"}
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return {**out, "flag": "constant_input"}
    out["rho"] = spearman(x, y)
    groups = [(x[c == k], y[c == k]) for k in keys]
    out["lo"], out["hi"] = cluster_bootstrap(
        groups, lambda gs: spearman(np.concatenate([g[0] for g in gs]), np.concatenate([g[1] for g in gs])),
        n_boot, seed, level)
    return out


def fmt_ci(v: float, lo: float, hi: float, digits: int = 2) -> str:
    """'+0.41 [+0.12, +0.63]' for a signed statistic; '+0.41 (no interval)' without one; '–' without a value."""
    if not np.isfinite(v):
        return "–"
    if not np.isfinite(lo):
        return f"{v:+.{digits}f} (no interval)"
    return f"{v:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
