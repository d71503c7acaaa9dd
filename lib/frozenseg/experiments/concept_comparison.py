"""Concept search against the other methods of the study on the same test units, with the labels each used:
the GT-box oracle (notebook 01), the domain pipelines (02-05), the few-shot tuned decoder (07)."""
from __future__ import annotations

import pandas as pd

from .. import evaluation as ev
from ..results import PIPELINE_NOTEBOOKS, results_if_run
from .concept_report import STRATEGY_LABEL

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
    import matplotlib.pyplot as plt

    d = common_units(rows)
    doms = list(dict.fromkeys(d.domain))
    style = {"concept search": ("C3", "o"), "training-free pipeline": ("k", "s"),
             "few-shot tuned decoder": ("C0", "^"), "GT-box oracle": ("0.5", "*")}
    fig, axes = plt.subplots(1, max(len(doms), 1), figsize=(3.4 * max(len(doms), 1), 3.2), squeeze=False, sharey=True)
    for ax, dom in zip(axes[0], doms):
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
    axes[0, 0].set_ylabel("test Dice (common units)")
    axes[0, 0].set_ylim(0, 1)
    axes[0, -1].legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    return fig
