"""What notebook 11 shows from the tidy concept-search results: Dice curves, the lowest-U mode, U vs Dice, flags,
timings, and concept search against the other methods of the study on the same test units, with the labels each used
(the GT-box oracle of notebook 01, the domain pipelines of 02-05, the few-shot tuned decoder of 07)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import evaluation as ev
from .. import viz
from ..concept.hue import EMPTY_U
from ..concept.loop import LOWEST_U_SPLIT
from ..results import PIPELINE_NOTEBOOKS, results_if_run

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


# ---------------------------------------------------------------- figures


def concept_curves(curves: pd.DataFrame, oracle: dict | None = None, titles: dict[str, str] | None = None):
    """Test Dice vs labelled images per domain: HUE (solid) and random (dashed) per start size, GT-box oracle dotted."""
    doms = list(dict.fromkeys(curves.domain))
    fig, axes = viz.domain_panels(doms)
    for ax, dom in zip(axes, doms):
        for (start, strat), g in curves[curves.domain == dom].groupby(["start", "strategy"]):
            g = g.sort_values("round")
            ax.plot(g.n_labelled, g.test_dice, marker="o", ls="-" if strat == "hue" else "--",
                    color="C0" if start == curves.start.min() else "C1", label=f"start {start}, {strat}")
        if oracle and dom in oracle:
            ax.axhline(oracle[dom], color="k", ls=":", lw=1, label="GT-box oracle")
        ax.set_title((titles or {}).get(dom, dom), fontsize=9)
        ax.set_xlabel("labelled images")
        ax.grid(alpha=0.3)
    return viz.finish_dice_panels(fig, axes, "test Dice (no credit)")


def uncertainty_scatter(rows: pd.DataFrame, titles: dict[str, str] | None = None, rho: dict | None = None):
    """HUE uncertainty U vs true Dice per domain, one point per test image (U = 2: empty concept mask)."""
    doms = list(dict.fromkeys(rows.domain))
    fig, axes = viz.domain_panels(doms, width=3.2, height=3.0)
    for ax, dom in zip(axes, doms):
        g = rows[rows.domain == dom]
        ax.scatter(g.u, g.dice, s=12, alpha=0.7)
        title = (titles or {}).get(dom, dom)
        ax.set_title(title + (f"\nrho = {rho[dom]}" if rho and dom in rho else ""), fontsize=8)
        ax.set_xlabel("U (HUE)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("true Dice")
    axes[0].set_ylim(-0.02, 1.02)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- against the other methods of the study

ARMS = {"localizer": "tuned decoder + domain localizer", "gt_box": "tuned decoder, GT box (oracle)",
        "mean_box": "tuned decoder + mean train box"}


def method_rows(profile: str, domains, concept: pd.DataFrame) -> pd.DataFrame:
    """Per-unit rows of every method: domain, seed, case_id, family, method, labels_used, dice (concept search:
    also its strategy and start)."""
    parts = []
    c = ev.scored_units(concept[concept.split == "test"])
    parts.append(c.assign(family="concept search",
                          method=[f"concept, {'HUE' if s == 'hue' else 'random'} selection, start {st}, round {r}"
                                  for s, st, r in zip(c.strategy, c.start, c["round"])],
                          labels_used=c.n_labelled))
    oracle = results_if_run("01_frozen_oracle", profile)
    if oracle is not None:
        o = ev.scored_units(oracle[oracle.method == "gt_box"])
        parts.append(o.assign(family="GT-box oracle", method="frozen decoder, GT box", labels_used=0))
    for dom in domains:
        p = results_if_run(PIPELINE_NOTEBOOKS[dom], profile) if dom in PIPELINE_NOTEBOOKS else None
        if p is not None and "n_labels" in p:
            p = ev.scored_units(p[(p.domain == dom) & (p.stage == "deployed")])
            parts.append(p.assign(family="training-free pipeline",
                                  method=[f"pipeline, N={n}" for n in p.n_labels]))
    dec = results_if_run("07_fewshot_decoder", profile)
    if dec is not None:
        d = ev.scored_units(dec[dec.decoder == "tuned"])
        if "labels_used" not in d:
            d = d.assign(labels_used=d.n_labels)
        parts.append(d.assign(family="few-shot tuned decoder",
                              method=[f"{ARMS.get(a, a)}, N={n}" for a, n in zip(d.arm, d.n_labels)]))
    cols = ["domain", "seed", "unit", "case_id", "family", "method", "labels_used", "dice", "strategy", "start"]
    out = pd.concat([p.reindex(columns=cols) for p in parts if len(p)], ignore_index=True)
    return out[out.domain.isin(list(domains))]


def common_units(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows on the test units every method of a domain scored (per domain: the intersection of their units)."""
    keep = []
    for dom, g in rows.groupby("domain", sort=False):
        sets = [set(zip(m.unit, m.case_id)) for _, m in g.groupby("method")]
        shared = set.intersection(*sets) if sets else set()
        keep.append(g[[(u, c) in shared for u, c in zip(g.unit, g.case_id)]])
    return pd.concat(keep, ignore_index=True) if keep else rows.iloc[:0]


def comparison_table(rows: pd.DataFrame, titles: dict | None = None) -> pd.DataFrame:
    """One row per domain and method on the common units: labels used, Dice (``evaluation.ACROSS_SEEDS``), units."""
    d = common_units(rows)
    out = []
    for (dom, fam, meth), g in d.groupby(["domain", "family", "method"], sort=False):
        out.append({"domain": (titles or {}).get(dom, dom), "method": meth, "family": fam,
                    "labels used": int(g.labels_used.max()), "Dice": ev.seed_cell(g),
                    "test units": int(g.groupby("seed").size().iloc[0]), "_dice": g.groupby("seed").dice.mean().mean()})
    t = pd.DataFrame(out)
    if t.empty:
        return t
    order = {d: i for i, d in enumerate(dict.fromkeys(t.domain))}
    t = t.sort_values(["domain", "labels used", "_dice"], key=lambda c: c.map(order) if c.name == "domain" else c,
                      kind="stable")
    return t.drop(columns="_dice").reset_index(drop=True)


def matched_table(rows: pd.DataFrame, titles: dict | None = None) -> pd.DataFrame:
    """Per domain and label count L that concept search reached: every selection strategy and start size (one
    column each; no choice among them), the pipeline and the tuned decoder (domain localizer) at N = L where they
    ran, and the oracle; Dice as ``evaluation.ACROSS_SEEDS``; '–' where a method has no run with exactly L labels
    (no number is filled in)."""
    d = common_units(rows)
    out = []
    for dom, g in d.groupby("domain", sort=False):
        concept = g[g.family == "concept search"]
        arms = sorted({(s, int(st)) for s, st in zip(concept.strategy, concept.start)}, key=lambda a: (a[1], a[0]))
        for L in sorted(concept.labels_used.unique()):
            row = {"domain": (titles or {}).get(dom, dom), "labels": int(L)}
            for strat, start in arms:
                c = concept[(concept.labels_used == L) & (concept.strategy == strat) & (concept.start == start)]
                row[f"concept search, {STRATEGY_LABEL[strat]}, start {start}"] = ev.seed_cell(c)
            for fam, label, sel in (("training-free pipeline", "pipeline", None),
                                    ("few-shot tuned decoder", "tuned decoder + domain localizer", ARMS["localizer"])):
                m = g[(g.family == fam) & (g.labels_used == L)]
                if sel is not None:
                    m = m[m.method.str.startswith(sel)]
                row[label] = ev.seed_cell(m)
            row["GT-box oracle (0 labels)"] = ev.seed_cell(g[g.family == "GT-box oracle"])
            out.append(row)
    return pd.DataFrame(out)


def comparison_figure(rows: pd.DataFrame, titles: dict | None = None):
    """Dice vs labels used per domain on the common units: one marker style per method family."""
    d = common_units(rows)
    doms = list(dict.fromkeys(d.domain))
    style = {"concept search": ("C3", "o"), "training-free pipeline": ("k", "s"),
             "few-shot tuned decoder": ("C0", "^"), "GT-box oracle": ("0.5", "*")}
    fig, axes = viz.domain_panels(doms)
    for ax, dom in zip(axes, doms):
        g = d[d.domain == dom]
        m = g.groupby(["family", "method"]).agg(dice=("dice", "mean"), labels=("labels_used", "max")).reset_index()
        for fam, (color, marker) in style.items():
            f = m[m.family == fam]
            if len(f):
                ax.scatter(f["labels"], f["dice"], color=color, marker=marker, s=22, label=fam, alpha=0.85)
        ax.set_title((titles or {}).get(dom, dom), fontsize=9)
        ax.set_xlabel("labels used")
        ax.set_xscale("symlog", linthresh=1)
        ax.grid(alpha=0.3)
    return viz.finish_dice_panels(fig, axes, "test Dice (common units)", legend_size=6.5)
