"""The headline of section 4: best trained network per (domain, N) vs the training-free pipeline vs the tuned
decoder, the N a network needs to match the pipeline, and the data-efficiency panels."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..config import DOMAINS
from ..errors import DataError
from .nets import ARCHS
from .train import STATUS_OK

PIPELINE_NOTEBOOKS = {"isic": "02_isic", "spleen": "03_spleen", "kvasir": "04_kvasir", "cxr": "05_cxr"}
DECODER_NOTEBOOK = "07_fewshot_decoder"
PENDING = "pending"


# ---------------------------------------------------------------- per-seed scores


def scored(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that count: finished (status ok) runs, 2D cases and whole volumes, unflagged, finite Dice."""
    d = df[df.unit.isin(["case", "volume"]) & (df.flag.fillna("") == "") & np.isfinite(df.dice)]
    return d[d.status == STATUS_OK] if "status" in d else d


def nn_per_seed(df: pd.DataFrame) -> pd.DataFrame:
    """Mean test Dice per domain x arch x init x N x seed (finished runs only)."""
    return scored(df).groupby(["domain", "arch", "init", "n_labels", "seed"], as_index=False).dice.mean()


def nn_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd and seed count of Dice per domain x arch x init x N."""
    g = nn_per_seed(df).groupby(["domain", "arch", "init", "n_labels"]).dice
    out = g.agg(mean="mean", seeds="size").join(g.std(ddof=1).rename("sd")).reset_index()
    rank = {d: DOMAINS.index(d) if d in DOMAINS else len(DOMAINS) + i     # the study's domain order
            for i, d in enumerate(dict.fromkeys(df.domain))}
    return out.sort_values(["domain", "arch", "n_labels"], key=lambda c: c.map(rank) if c.name == "domain" else c,
                           kind="stable").reset_index(drop=True)


def best_nn(curves: pd.DataFrame) -> pd.DataFrame:
    """The arch with the highest mean Dice per (domain, N), with its sd, seeds and init."""
    idx = curves.groupby(["domain", "n_labels"])["mean"].idxmax()
    return curves.loc[idx].reset_index(drop=True)


def envelope_per_seed(df: pd.DataFrame) -> pd.DataFrame:
    """Per domain x seed x N: the best arch's Dice in that seed (the 'best trained NN' curve of one seed)."""
    return nn_per_seed(df).groupby(["domain", "seed", "n_labels"], as_index=False).dice.max()


# ---------------------------------------------------------------- the other columns, read from results files


def unit_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Scored units of another notebook's rows: volumes where a domain has them, else cases; finite Dice."""
    d = df[np.isfinite(df.dice)] if "dice" in df else df.iloc[:0]
    if "unit" not in d:
        return d
    vol = d.groupby("domain").unit.transform(lambda u: (u == "volume").any())
    return d[(vol & (d.unit == "volume")) | (~vol & d.unit.isin(["case"]))]


def pipeline_per_seed(profile: str, domains) -> tuple[pd.DataFrame, dict[str, str]]:
    """Deployed-stage Dice per domain x seed from notebooks 02-05, and per domain where it came from (or 'pending')."""
    from ..results import load_results

    parts, origin = [], {}
    for dom in domains:
        nb = PIPELINE_NOTEBOOKS.get(dom)
        try:
            df = load_results(nb, profile) if nb else None
        except DataError:
            df = None
        rows = None if df is None or "stage" not in df else unit_rows(df[(df.domain == dom) & (df.stage == "deployed")])
        if rows is None or rows.empty:
            origin[dom] = PENDING
            continue
        origin[dom] = nb
        parts.append(rows.groupby(["domain", "seed"], as_index=False).dice.mean())
    cols = ["domain", "seed", "dice"]
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)), origin


def decoder_per_seed(profile: str) -> pd.DataFrame:
    """Tuned-decoder Dice per domain x arm x N x seed from notebook 07 (empty when it has not run)."""
    from ..results import load_results

    try:
        df = load_results(DECODER_NOTEBOOK, profile)
    except DataError:
        return pd.DataFrame(columns=["domain", "arm", "n_labels", "seed", "dice"])
    d = unit_rows(df[(df.decoder == "tuned") & (df.flag.fillna("") == "")])
    return d.groupby(["domain", "arm", "n_labels", "seed"], as_index=False).dice.mean()


def mean_sd(values) -> tuple[float, float, int]:
    """(mean, sd with ddof 1 or NaN, count) of finite values."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if not len(v):
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)


# ---------------------------------------------------------------- the N a network needs


def match_n(ns, dice, target: float) -> float:
    """Smallest N where the curve reaches ``target``, linear in log N between budgets; -inf below the smallest
    budget (already matched), +inf when never matched within the budgets."""
    ns, dice = np.asarray(ns, float), np.asarray(dice, float)
    order = np.argsort(ns)
    ns, dice = ns[order], dice[order]
    if not len(ns) or not np.isfinite(target):
        return math.nan
    if dice[0] >= target:
        return -math.inf
    for i in range(1, len(ns)):
        if dice[i] >= target:
            t = (target - dice[i - 1]) / (dice[i] - dice[i - 1])
            return float(np.exp(np.log(ns[i - 1]) + t * (np.log(ns[i]) - np.log(ns[i - 1]))))
    return math.inf


def match_n_per_seed(envelope: pd.DataFrame, pipeline: pd.DataFrame) -> pd.DataFrame:
    """Per domain x seed: the interpolated N at which that seed's best-NN curve reaches the pipeline."""
    rows = []
    for (dom, seed), g in envelope.groupby(["domain", "seed"]):
        p = pipeline[pipeline.domain == dom]
        same = p[p.seed == seed]
        target = float(same.dice.iloc[0]) if len(same) else (float(p.dice.mean()) if len(p) else math.nan)
        rows.append({"domain": dom, "seed": seed, "target": target, "match_n": match_n(g.n_labels, g.dice, target)})
    return pd.DataFrame(rows, columns=["domain", "seed", "target", "match_n"])


def fmt_match(values, ns) -> str:
    """'38 ± 6', '> 100', '≤ 10' or a mix across seeds, e.g. '45 (1/2 seeds; other > 100)'."""
    v = [x for x in values if not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return PENDING
    lo, hi = min(ns), max(ns)
    finite = [x for x in v if np.isfinite(x)]
    above, below = sum(x == math.inf for x in v), sum(x == -math.inf for x in v)
    if not finite:
        return f"> {hi}" if above == len(v) else f"≤ {lo}" if below == len(v) else f"≤ {lo} or > {hi}"
    m, s, k = mean_sd(finite)
    core = f"{m:.0f}" if k == 1 else f"{m:.0f} ± {s:.0f}"
    if k == len(v):
        return core
    rest = ", ".join(x for x, c in ((f"> {hi}", above), (f"≤ {lo}", below)) if c)
    return f"{core} ({k}/{len(v)} seeds; others {rest})"


# ---------------------------------------------------------------- the headline table


def headline(df: pd.DataFrame, pipeline: pd.DataFrame, origin: dict[str, str], decoder: pd.DataFrame,
             titles: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table of strings, boolean frame marking where the pipeline leads the best NN) per domain."""
    from ..results import fmt_mean_sd

    curves, env = nn_curves(df), envelope_per_seed(df)
    best = best_nn(curves)
    ns = sorted(curves.n_labels.unique())
    matches = match_n_per_seed(env, pipeline)
    rows, leads = [], []
    for dom in dict.fromkeys(curves.domain):
        pm, ps, _ = mean_sd(pipeline[pipeline.domain == dom].dice)
        row, lead = {"domain": (titles or {}).get(dom, dom)}, {"domain": False}
        for n in ns:
            b = best[(best.domain == dom) & (best.n_labels == n)]
            key = f"best NN, N={n}"
            if b.empty:
                row[key], lead[key] = "–", False
                continue
            b = b.iloc[0]
            lead[key] = bool(np.isfinite(pm) and pm > b["mean"])
            row[key] = f"{fmt_mean_sd(b['mean'], b['sd'])} ({short(b.arch)}, {b.init})"
        row["training-free pipeline"] = fmt_mean_sd(pm, ps) if np.isfinite(pm) else PENDING
        lead["training-free pipeline"] = lead.get(f"best NN, N={ns[-1]}", False)
        row.update(decoder_cells(decoder, dom))
        row[f"pipeline − best NN at N={ns[-1]}"] = margin_text(pm, best, dom, ns[-1])
        row["N for best NN to match pipeline"] = (fmt_match(matches[matches.domain == dom].match_n, ns)
                                                  if np.isfinite(pm) else PENDING)
        row["pipeline results"] = origin.get(dom, PENDING)
        rows.append(row)
        leads.append(lead)
    table = pd.DataFrame(rows)
    return table, pd.DataFrame(leads).reindex(columns=table.columns, fill_value=False)


def short(arch: str) -> str:
    """Short arch label for table cells."""
    return ARCHS[arch][0] if arch in ARCHS else arch


def decoder_cells(decoder: pd.DataFrame, dom: str) -> dict[str, str]:
    """'tuned decoder, <arm> (N=max)' cells of one domain from notebook 07's rows (or 'pending')."""
    from ..results import fmt_mean_sd

    out = {}
    for arm, label in (("gt_box", "GT box"), ("deployable", "deployable")):
        d = decoder[(decoder.domain == dom) & (decoder.arm == arm)]
        if d.empty:
            out[f"tuned decoder, {label}"] = PENDING
            continue
        n = int(d.n_labels.max())
        m, s, _ = mean_sd(d[d.n_labels == n].dice)
        out[f"tuned decoder, {label}"] = f"{fmt_mean_sd(m, s)} (N={n})"
    return out


def margin_text(pm: float, best: pd.DataFrame, dom: str, n: int) -> str:
    """Signed margin of the pipeline over the best NN at N (positive: the pipeline leads)."""
    b = best[(best.domain == dom) & (best.n_labels == n)]
    if not np.isfinite(pm) or b.empty:
        return PENDING
    return f"{pm - float(b['mean'].iloc[0]):+.3f}"


def mark_leads(table: pd.DataFrame, leads: pd.DataFrame, marker: str = " ★") -> pd.DataFrame:
    """The table with a marker appended where the pipeline leads (the published CSV/HTML cannot carry bold)."""
    out = table.copy()
    for col in table.columns:
        if col in leads:
            out[col] = [f"{v}{marker}" if flag else v for v, flag in zip(table[col], leads[col])]
    return out


def bold_leads(table: pd.DataFrame, leads: pd.DataFrame):
    """A pandas Styler that sets the cells where the pipeline leads in bold (for display in the notebook)."""
    return table.style.apply(lambda col: ["font-weight: bold" if f else "" for f in leads[col.name]], axis=0)


# ---------------------------------------------------------------- figures


def panels(df: pd.DataFrame, pipeline: pd.DataFrame, titles: dict[str, str] | None = None):
    """Per domain: each arch's Dice vs N with a seed band, the pipeline as a flat dashed line, shaded where it
    leads the best NN, and the margin at the largest N labelled."""
    import matplotlib.pyplot as plt

    curves = nn_curves(df)
    doms = list(dict.fromkeys(curves.domain))
    fig, axes = plt.subplots(1, len(doms), figsize=(3.5 * len(doms), 3.4), squeeze=False, sharey=True)
    for ax, dom in zip(axes[0], doms):
        _panel(ax, curves[curves.domain == dom], pipeline[pipeline.domain == dom])
        ax.set_title((titles or {}).get(dom, dom), fontsize=9)
    axes[0, 0].set_ylabel("test Dice")
    axes[0, 0].set_ylim(0, 1)
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _panel(ax, c: pd.DataFrame, p: pd.DataFrame) -> None:
    """One domain's data-efficiency panel."""
    ns = sorted(c.n_labels.unique())
    for arch, g in c.groupby("arch", sort=False):
        g, i = g.sort_values("n_labels"), _color(arch)
        sd = g["sd"].fillna(0).to_numpy()
        ax.plot(g.n_labels, g["mean"], marker="o", ms=3, color=f"C{i}", label=f"{short(arch)} ({g.init.iloc[0]})")
        ax.fill_between(g.n_labels, g["mean"] - sd, g["mean"] + sd, color=f"C{i}", alpha=0.2, lw=0)
    env = c.groupby("n_labels")["mean"].max().reindex(ns)
    pm, ps, _ = mean_sd(p.dice)
    ax.set_xscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("labelled images N")
    ax.grid(alpha=0.3)
    if not np.isfinite(pm):
        ax.text(0.03, 0.04, "pipeline: pending", transform=ax.transAxes, ha="left", fontsize=8, color="0.4")
        return
    ax.axhline(pm, color="k", ls="--", lw=1.2, label="training-free pipeline")
    if np.isfinite(ps):
        ax.axhspan(pm - ps, pm + ps, color="k", alpha=0.06, lw=0)
    ax.fill_between(ns, env.to_numpy(), pm, where=pm > env.to_numpy(), interpolate=True, color="C3", alpha=0.18,
                    lw=0, label="pipeline leads")
    margin = pm - env.iloc[-1]
    ax.annotate(f"pipeline − best NN\n{margin:+.3f} at N={ns[-1]}", xy=(ns[-1], min(pm, env.iloc[-1])),
                xytext=(0, -8), textcoords="offset points", ha="right", va="top", fontsize=7.5)


def _color(arch: str) -> int:
    """Matplotlib colour index of an arch (U-Net C0, SegFormer C1, nnU-Net and others C2)."""
    return list(ARCHS).index(arch) if arch in ARCHS else 2


def curve_plot(curves: pd.DataFrame, titles: dict[str, str] | None = None):
    """Validation Dice vs step of every run (one panel per domain, colour by arch): convergence and early stopping."""
    import matplotlib.pyplot as plt

    doms = list(dict.fromkeys(curves.domain))
    fig, axes = plt.subplots(1, len(doms), figsize=(3.4 * len(doms), 2.8), squeeze=False)
    for ax, dom in zip(axes[0], doms):
        for (arch, n, seed), g in curves[curves.domain == dom].groupby(["arch", "n_labels", "seed"]):
            ax.plot(g.step, g.val_dice, color=f"C{_color(arch)}", alpha=0.5, lw=1)
        ax.set_title((titles or {}).get(dom, dom), fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("validation Dice")
    fig.tight_layout()
    return fig
