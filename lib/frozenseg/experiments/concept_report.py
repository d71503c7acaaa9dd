"""Tables and picks for notebook 11 from the tidy concept-search results."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import evaluation as ev
from ..concept.hue import EMPTY_U
from ..concept.loop import LOWEST_U_SPLIT

STRATEGY_LABEL = {"hue": "HUE top-k", "random": "random"}


def scored_test(df: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Test rows that count (``evaluation.scored_units``: 2D cases and whole volumes; slices are diagnostics);
    ``split`` picks the mode."""
    return ev.scored_units(df[df.split == split])


def dice_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Per domain x start x strategy x round: test Dice (no credit), pool Dice with and without credit."""
    keys = ["domain", "start", "strategy", "round"]
    test = ev.seed_summary(scored_test(df), keys).rename(columns={"mean": "test_dice", "sd": "test_sd"})
    pool = df[df.split == "pool"]
    credit = ev.seed_summary(pool, keys).rename(columns={"mean": "pool_dice_credited"})
    plain = ev.seed_summary(pool[~pool.labelled.astype(bool)], keys).rename(columns={"mean": "pool_dice_uncorrected"})
    n_lab = df.groupby(keys).n_labelled.first().rename("n_labelled").reset_index()
    out = test[keys + ["test_dice", "test_sd", "units"]].merge(n_lab, on=keys)
    out = out.merge(credit[keys + ["pool_dice_credited"]], on=keys, how="left")
    out = out.merge(plain[keys + ["pool_dice_uncorrected"]], on=keys, how="left")
    low = scored_test(df, LOWEST_U_SPLIT)
    if len(low):
        low = ev.seed_summary(low, keys).rename(columns={"mean": "test_dice_lowest_u", "sd": "lowest_u_sd"})
        out = out.merge(low[keys + ["test_dice_lowest_u", "lowest_u_sd"]], on=keys, how="left")
    else:
        out["test_dice_lowest_u"], out["lowest_u_sd"] = np.nan, np.nan
    return out.sort_values(keys).reset_index(drop=True)


def curve_table(curves: pd.DataFrame, titles: dict | None = None) -> pd.DataFrame:
    """Display table: one row per domain x start x strategy, test Dice per round plus the last round's pool Dice."""
    rows = []
    for (dom, start, strat), g in curves.groupby(["domain", "start", "strategy"], sort=False):
        g = g.sort_values("round")
        row = {"domain": (titles or {}).get(dom, dom), "start": int(start), "selection": STRATEGY_LABEL[strat]}
        for _, r in g.iterrows():
            row[f"N={int(r.n_labelled)}"] = ev.fmt_mean_sd(r.test_dice, r.test_sd)
        last = g.iloc[-1]
        row["pool Dice, corrected images count 1 (source protocol)"] = f"{last.pool_dice_credited:.3f}"
        row["pool Dice, uncorrected images only"] = ("–" if pd.isna(last.pool_dice_uncorrected)
                                                     else f"{last.pool_dice_uncorrected:.3f}")
        rows.append(row)
    return pd.DataFrame(rows)


def lowest_u_table(df: pd.DataFrame, curves: pd.DataFrame, titles: dict | None = None) -> pd.DataFrame:
    """Per domain x start x strategy at the last round: plain last-round test Dice vs each image keeping its
    lowest-U round's mask (GT-free), and the share of test images whose pick is an earlier round."""
    low = df[(df.split == LOWEST_U_SPLIT) & df.get("u_round", pd.Series(index=df.index)).notna()]
    rows = []
    for (dom, start, strat), g in curves.groupby(["domain", "start", "strategy"], sort=False):
        last = g.sort_values("round").iloc[-1]
        picks = low[(low.domain == dom) & (low.start == start) & (low.strategy == strat) & (low["round"] == last["round"])]
        rows.append({"domain": (titles or {}).get(dom, dom), "start": int(start), "selection": STRATEGY_LABEL[strat],
                     "N": int(last.n_labelled), "last-round Dice": ev.fmt_mean_sd(last.test_dice, last.test_sd),
                     "lowest-U round per image (GT-free)": ev.fmt_mean_sd(last.test_dice_lowest_u, last.lowest_u_sd),
                     "images kept from an earlier round": ("–" if picks.empty else
                                                           f"{(picks.u_round < picks['round']).mean():.0%}")})
    return pd.DataFrame(rows)


def oracle_reference(oracle: pd.DataFrame | None, df: pd.DataFrame) -> dict[str, float]:
    """GT-box oracle Dice per domain on the same test units (empty when 01's results are missing)."""
    if oracle is None:
        return {}
    used = set(scored_test(df).case_id)
    o = ev.scored_units(oracle[oracle.method == "gt_box"])
    return o[o.case_id.isin(used)].groupby("domain").dice.mean().to_dict()


def uncertainty_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Per-image test rows with U at each loop's last round (2D cases and spleen slices)."""
    t = df[(df.split == "test") & df.unit.isin(["case", "slice"]) & df.get("u", pd.Series(index=df.index)).notna()]
    last = t.groupby(["domain", "seed", "start", "strategy"])["round"].transform("max")
    return t[t["round"] == last]


def u_clusters(rows: pd.DataFrame) -> np.ndarray:
    """Bootstrap cluster of each U row: its test unit (the image; a spleen slice's volume), so the rows that
    repeat one unit across start sizes and seeds are resampled together."""
    vid = rows["volume_id"] if "volume_id" in rows else pd.Series(None, index=rows.index, dtype=object)
    return np.where(vid.notna(), vid.astype(str), rows.case_id.astype(str))


def correlation_table(df: pd.DataFrame, n_boot: int = 1000, titles: dict | None = None) -> pd.DataFrame:
    """Spearman rho of U vs true Dice per domain (HUE loops, last round, all starts and seeds pooled) with a
    bootstrap interval clustered by test unit (``evaluation.spearman_interval``)."""
    u = uncertainty_rows(df)
    u = u[u.strategy == "hue"]
    rows = []
    for dom, g in u.groupby("domain", sort=False):
        rc = ev.spearman_interval(g.u.to_numpy(), g.dice.to_numpy(), u_clusters(g), n_boot=n_boot, seed=0)
        rows.append({"domain": (titles or {}).get(dom, dom), "key": dom, "images": int(g.case_id.nunique()),
                     "pairs (starts x seeds x images)": rc["n"], "resampled units": rc["clusters"],
                     "Spearman rho (U vs Dice) [interval]": ev.fmt_ci(rc["rho"], rc["lo"], rc["hi"]),
                     "rho": rc["rho"],
                     f"empty concept masks (U = {EMPTY_U:g})":
                         int(g["empty_mask"].astype("boolean").fillna(False).sum()),
                     "flag": rc["flag"]})
    return pd.DataFrame(rows)


def flag_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rounds whose concept was flagged (collapsed to empty masks, or fitted on a single image)."""
    f = df[df.flag != ""].groupby(["domain", "start", "strategy", "flag"])["round"].unique()
    return f.apply(lambda r: ", ".join(str(int(v)) for v in sorted(r))).rename("rounds").reset_index()


def timing_table(times: pd.DataFrame, titles: dict | None = None) -> pd.DataFrame:
    """Seconds per domain: the start fit and each loop (random loops reuse the shared start fit)."""
    t = times.groupby(["domain", "start", "strategy"], sort=False)[["fit_start_s", "loop_s"]].mean().reset_index()
    t["domain"] = t.domain.map(lambda d: (titles or {}).get(d, d))
    return t.round(1)


def extreme_cases(df: pd.DataFrame, domain: str, n: int = 3) -> tuple[pd.DataFrame, pd.DataFrame, tuple]:
    """The ``n`` most and least uncertain test images of a domain (HUE, largest start, first seed, last round)."""
    u = uncertainty_rows(df)
    u = u[(u.domain == domain) & (u.strategy == "hue")]
    key = (int(u.seed.min()), int(u.start.max()))
    u = u[(u.seed == key[0]) & (u.start == key[1])].sort_values(["u", "case_id"])
    return u.tail(n).iloc[::-1], u.head(n), key
