"""Tables and the figure of notebook 07."""
from __future__ import annotations

import pandas as pd

from .. import evaluation as ev
from .experiment import ARM_LABELS
from .tuner import STATUS_FAILED


def fewshot_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd (ev.ACROSS_SEEDS) of Dice per domain x arm x decoder x N, scored units of finished runs only."""
    return (ev.seed_summary(ev.scored_units(df), ["domain", "arm", "decoder", "n_labels"])
            .sort_values(["domain", "arm", "decoder", "n_labels"]))


def summarize_fewshot(df: pd.DataFrame, titles: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per domain x arm: frozen and tuned Dice (ev.ACROSS_SEEDS) at each N, and failed runs."""
    curves, rows = fewshot_curves(df), []
    frozen_gt = curves[(curves.arm == "gt_box") & (curves.decoder == "frozen")].set_index("domain")
    for (dom, arm), g in curves[curves.decoder == "tuned"].groupby(["domain", "arm"], sort=False):
        row = {"domain": (titles or {}).get(dom, dom), "arm": ARM_LABELS.get(arm, arm)}
        for n in sorted(g.n_labels.unique()):
            t = g[g.n_labels == n].iloc[0]
            f = frozen_gt.loc[dom] if arm == "gt_box" else curves[(curves.domain == dom) & (curves.arm == arm) &
                                                                  (curves.decoder == "frozen") & (curves.n_labels == n)].iloc[0]
            row[f"N={n} frozen"] = ev.fmt_mean_sd(f["mean"], f["sd"])
            row[f"N={n} tuned"] = ev.fmt_mean_sd(t["mean"], t["sd"])
        row["failed runs"] = int(df[(df.domain == dom) & (df.arm == arm) & (df.status == STATUS_FAILED)]
                                 [["seed", "n_labels"]].drop_duplicates().shape[0])
        rows.append(row)
    return pd.DataFrame(rows)


def localizer_note(df: pd.DataFrame, titles: dict[str, str] | None = None) -> str:
    """Which localizer the GT-free 'localizer' arm ran with per domain, read from the rows (the route it fitted)."""
    d = df[df.arm == "localizer"] if "localizer" in df else df.iloc[:0]
    parts = [f"{(titles or {}).get(dom, dom)}: {', '.join(sorted(set(g.localizer.dropna())))}"
             for dom, g in d.groupby("domain", sort=False)]
    return ("Domain localizer arm, as fitted on the N labels per domain: " + "; ".join(parts) + "."
            if parts else "Domain localizer arm: no rows.")


def runs_table(df: pd.DataFrame, titles: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per tuning run: status, train/val sizes, epochs run, best epoch (0 = untuned kept), seconds."""
    cols = ["domain", "seed", "arm", "n_labels", "labels_used", "status", "n_train", "n_val", "epochs_run",
            "best_epoch", "tune_s"]
    runs = df[df.decoder == "tuned"][cols].drop_duplicates(["domain", "seed", "arm", "n_labels"])
    return runs.assign(domain=runs.domain.map(lambda d: (titles or {}).get(d, d))).reset_index(drop=True)


def fewshot_plot(curves: pd.DataFrame, titles: dict[str, str] | None = None):
    """Dice vs N per domain: tuned (solid) and frozen (dashed) decoders; GT-box arm blue, domain localizer orange,
    mean train box green."""
    import matplotlib.pyplot as plt

    doms = list(dict.fromkeys(curves.domain))
    fig, axes = plt.subplots(1, len(doms), figsize=(3.4 * len(doms), 3.3), squeeze=False, sharey=True)
    for ax, dom in zip(axes[0], doms):
        g = curves[curves.domain == dom]
        ns = sorted(g[g.decoder == "tuned"].n_labels.unique())
        for arm, color in (("gt_box", "C0"), ("localizer", "C1"), ("mean_box", "C2")):
            for dec, ls in (("tuned", "-"), ("frozen", "--")):
                c = g[(g.arm == arm) & (g.decoder == dec)].sort_values("n_labels")
                if dec == "frozen" and arm == "gt_box" and len(c):
                    c = pd.concat([c.iloc[[0]]] * len(ns)).assign(n_labels=ns)
                if c.empty:
                    continue
                ax.errorbar(c.n_labels, c["mean"], yerr=c["sd"].fillna(0), color=color, ls=ls, marker="o", ms=3,
                            capsize=2, label=f"{dec}, {arm.replace('_', ' ')}")
        ax.set_title((titles or {}).get(dom, dom), fontsize=9)
        ax.set_xlabel("labelled images N")
        ax.set_xticks(ns)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("test Dice")
    axes[0, 0].set_ylim(0, 1)
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
